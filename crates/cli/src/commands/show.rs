use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use ecr_vault_engine::select::{self, LatestView};
use ecr_vault_engine::{aws_config, open_vault_at};
use ecr_vault_vault::SnapshotId;

use crate::args::{Output, VaultArgs};
use crate::output::{self, Invalid};

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// A snapshot id, `latest`, or repository:tag for its capture history.
    what: String,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: ShowArgs, config: Option<&std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let vault = open_vault_at(&aws_config().await, &a.vault.uri(config)?)?;
    if a.what == "latest" {
        let latest = ecr_vault_engine::latest(&vault)
            .await?
            .with_context(|| format!("no snapshots in {}", vault.location()))?;
        let view = LatestView::from(&latest);
        output::print(a.output, &view, |v| {
            output::latest(v, &latest.base.run.trigger)
        })?;
    } else if let Ok(id) = SnapshotId::parse(&a.what) {
        let snap = vault
            .get_snapshot(&id)
            .await?
            .with_context(|| format!("no snapshot {}", a.what))?;
        output::print(a.output, &snap, output::snapshot)?;
    } else {
        // repository:tag → its capture history across snapshots.
        let image = ecr_vault_registry::ImageRef::parse(&a.what)
            .map_err(|e| Invalid(format!("{}: {e}", a.what)))?;
        let rows = select::history(&vault, &image).await?;
        output::print(a.output, rows.as_slice(), output::history)?;
    }
    Ok(ExitCode::SUCCESS)
}
