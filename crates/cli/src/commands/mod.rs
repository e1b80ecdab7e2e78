//! One file per command: its arguments, then the engine call. Printing is in `output`.

pub mod backup;
pub mod config;
pub mod gc;
pub mod plan;
pub mod restore;
pub mod show;
pub mod snapshots;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::args::Command;

pub async fn run(cmd: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = config.as_ref();
    match cmd {
        Command::Backup(a) => backup::run(a, config).await,
        Command::Plan(a) => plan::run(a, config).await,
        Command::Snapshots(a) => snapshots::run(a, config).await,
        Command::Restore(a) => restore::run(a, config).await,
        Command::Show(a) => show::run(a, config).await,
        Command::Verify(a) => verify::run(a, config).await,
        Command::Gc(a) => gc::run(a, config).await,
        Command::Completions { shell } => {
            let mut cmd = <crate::args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ecr-vault", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(c) => config::run(c, config).await,
        Command::Man => {
            let cmd = <crate::args::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
