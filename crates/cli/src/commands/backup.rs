use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

use ecr_vault_engine::{BackupOptions, aws_config, defaults, open_source, open_vault};

use crate::args::{FilterArgs, LockArgs, Output, RegistryArgs, VaultArgs};
use crate::config::{self, Flags};
use crate::{output, progress};

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    vault: VaultArgs,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    lock: LockArgs,
    /// COMPLIANCE (nobody can shorten) or GOVERNANCE (bypass permission can) [default:
    /// COMPLIANCE].
    #[arg(long)]
    lock_mode: Option<String>,
    /// Images copied at once [default: 4].
    #[arg(long)]
    image_concurrency: Option<usize>,
    /// Blob transfers at once.
    #[arg(long, default_value_t = defaults::BLOB_CONCURRENCY)]
    blob_concurrency: usize,
    /// Multipart part size in MiB (also the largest single PUT) [default: 16].
    #[arg(long)]
    part_size_mib: Option<usize>,
    /// Part buffers in memory at once; peak buffer memory is part size × this [default: 6].
    #[arg(long)]
    parts_in_flight: Option<usize>,
    /// Storage class for blobs: STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR.
    #[arg(long)]
    storage_class: Option<String>,
    /// Do not look up OCI referrers (signatures, SBOMs) of new images.
    #[arg(long)]
    no_referrers: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: BackupArgs, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let mut f = Flags::default();
    a.registry.flags(&mut f);
    a.vault.flags(&mut f);
    a.filters.flags(&mut f);
    a.lock.flags(&mut f);
    f.one("ECR_VAULT_LOCK_MODE", a.lock_mode.as_ref())
        .one("ECR_VAULT_IMAGE_CONCURRENCY", a.image_concurrency)
        .one("ECR_VAULT_PART_SIZE_MIB", a.part_size_mib)
        .one("ECR_VAULT_PARTS_IN_FLIGHT", a.parts_in_flight)
        .one("ECR_VAULT_STORAGE_CLASS", a.storage_class.as_ref());
    let s = config::settings(f, config)?;
    let sdk = aws_config().await;
    let vault = open_vault(&sdk, &s.vault(defaults::PARTS_IN_FLIGHT)?)?;
    let opts = BackupOptions {
        filters: s.filters()?,
        image_concurrency: s.image_concurrency()?,
        blob_concurrency: a.blob_concurrency,
        trigger: "manual".into(),
        referrers: !a.no_referrers,
        ..BackupOptions::default()
    };
    let source = open_source(&sdk, &a.registry.config(&s)?)
        .await
        .context("connecting to the source registry")?;
    let bar = progress::for_output(a.output);
    let report = ecr_vault_engine::backup(&source, &vault, &opts, bar.clone()).await?;
    drop(bar);
    output::print(a.output, &report, output::backup)?;
    Ok(output::finished(report.failed()))
}
