use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use ecr_vault_engine::{
    Mapping, RestoreRequest, SnapshotSel, aws_config, open_source, open_vault_at,
};

use std::path::PathBuf;

use ecr_vault_engine::config::{Layer, Settings};

use crate::args::{FilterArgs, Output, RegistryArgs, VaultArgs};
use crate::config::{self, Flags};
use crate::output::{self, Invalid};
use crate::progress;

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Snapshot id, or `latest`.
    #[arg(long)]
    snapshot: Option<String>,
    /// Restore each repository:tag as it was at this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    as_of: Option<String>,
    /// Only these image digests (repeatable).
    #[arg(long = "digest", value_name = "DIGEST")]
    digests: Vec<String>,
    /// Rename repositories: FROM=TO (FROM and everything under it), or PREFIX/=NEWPREFIX/.
    #[arg(long = "rename", value_name = "FROM=TO")]
    renames: Vec<String>,
    /// Rename tags: FROM=TO.
    #[arg(long = "retag", value_name = "FROM=TO")]
    retags: Vec<String>,
    /// Push manifests by digest only, no tags.
    #[arg(long)]
    digest_only: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Images restored at once.
    #[arg(long, default_value_t = ecr_vault_engine::defaults::IMAGE_CONCURRENCY)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: RestoreArgs, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let mut f = Flags::default();
    a.vault.flags(&mut f);
    a.filters.flags(&mut f);
    let s = config::settings(f, config)?;
    // The target is chosen per restore, never taken from the file's source: a restore into
    // the registry a file names for backups must be asked for.
    let mut f = Flags::default();
    a.registry.flags(&mut f);
    let target_settings = Settings::new(vec![Layer::flags(f.into_inner()), Layer::env()]);
    let digests = a
        .digests
        .iter()
        .map(|d| {
            ecr_vault_registry::Digest::parse(d).map_err(|e| Invalid(format!("--digest {d}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let req = RestoreRequest {
        snapshot: SnapshotSel::parse(a.snapshot.as_deref(), a.as_of.as_deref())?,
        filters: s.filters()?,
        digests,
        mapping: Mapping {
            renames: Mapping::parse_pairs(&a.renames, "--rename")?,
            retags: Mapping::parse_pairs(&a.retags, "--retag")?,
            digest_only: a.digest_only,
        },
        dry_run: a.dry_run,
        concurrency: a.concurrency,
    };
    let sdk = aws_config().await;
    let vault = open_vault_at(&sdk, &s.vault_uri()?)?;
    let target = open_source(&sdk, &a.registry.config(&target_settings)?)
        .await
        .context("connecting to the target registry")?;
    let bar = progress::for_output(a.output);
    let report = ecr_vault_engine::restore(&vault, &target, &req, bar.clone()).await?;
    drop(bar);
    output::print(a.output, &report, output::restore)?;
    Ok(output::finished(report.failed()))
}
