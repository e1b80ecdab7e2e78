//! One file per command: its arguments, then the engine call. Printing is in `output`.

pub mod backup;
pub mod gc;
pub mod plan;
pub mod restore;
pub mod show;
pub mod snapshots;
pub mod verify;

use std::process::ExitCode;

use crate::args::Command;

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Backup(a) => backup::run(a).await,
        Command::Plan(a) => plan::run(a).await,
        Command::Snapshots(a) => snapshots::run(a).await,
        Command::Restore(a) => restore::run(a).await,
        Command::Show(a) => show::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Gc(a) => gc::run(a).await,
        Command::Completions { shell } => {
            let mut cmd = <crate::args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ecr-vault", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <crate::args::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
