use std::process::ExitCode;

use clap::Args;
use ecr_vault_engine::{SnapshotSel, aws_config, open_vault_at};

use crate::args::{Output, VaultArgs};
use crate::output;

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Snapshot id or `latest`; default: every snapshot.
    #[arg(long)]
    snapshot: Option<String>,
    /// Re-hash every blob and report overwritten keys.
    #[arg(long)]
    deep: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: VerifyArgs, config: Option<&std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let sel = a
        .snapshot
        .as_deref()
        .map(|s| SnapshotSel::parse(Some(s), None))
        .transpose()?;
    let vault = open_vault_at(&aws_config().await, &a.vault.uri(config)?)?;
    let report = ecr_vault_engine::verify(&vault, sel.as_ref(), a.deep).await?;
    output::print(a.output, &report, output::verify)?;
    Ok(output::finished(!report.ok()))
}
