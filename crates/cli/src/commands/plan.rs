use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

use ecr_vault_engine::{PlanOptions, aws_config, defaults, open_source, open_vault};

use crate::args::{FilterArgs, LockArgs, Output, RegistryArgs, VaultArgs};
use crate::config::{self, Flags};
use crate::output;

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    lock: LockArgs,
    /// For a plain OCI registry: fetch the new images' manifests to estimate their bytes.
    /// (ECR reports image sizes in its listing, so this costs nothing extra there.)
    #[arg(long)]
    sizes: bool,
    /// Listing requests at once.
    #[arg(long, default_value_t = defaults::BLOB_CONCURRENCY)]
    concurrency: usize,
    /// List every image, not only the totals (text output).
    #[arg(long)]
    verbose: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: PlanArgs, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let mut f = Flags::default();
    a.registry.flags(&mut f);
    a.vault.flags(&mut f);
    a.filters.flags(&mut f);
    a.lock.flags(&mut f);
    let s = config::settings(f, config)?;
    let sdk = aws_config().await;
    let vault = open_vault(&sdk, &s.vault(defaults::PARTS_IN_FLIGHT)?)?;
    let opts = PlanOptions {
        filters: s.filters()?,
        concurrency: a.concurrency,
        fetch_sizes: a.sizes,
        lease: None,
    };
    let source = open_source(&sdk, &a.registry.config(&s)?)
        .await
        .context("connecting to the source registry")?;
    let p = ecr_vault_engine::plan(&source, &vault, &opts).await?;
    output::print(a.output, &p, |p| output::plan(p, a.verbose))?;
    Ok(output::finished(!p.failures.is_empty()))
}
