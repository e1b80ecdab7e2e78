use std::process::ExitCode;

use clap::Args;
use ecr_vault_engine::{aws_config, open_vault_at};

use crate::args::{Output, VaultArgs};
use crate::output;

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    vault: VaultArgs,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(
    a: SnapshotsArgs,
    config: Option<&std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let vault = open_vault_at(&aws_config().await, &a.vault.uri(config)?)?;
    let rows = ecr_vault_engine::select::summaries(&vault).await?;
    output::print(a.output, rows.as_slice(), output::snapshots)?;
    Ok(ExitCode::SUCCESS)
}
