use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use ecr_vault_engine::{BackupOptions, VaultConfig, aws_config, defaults, open_source, open_vault};
use ecr_vault_vault::LockMode;

use crate::args::{FilterArgs, LockArgs, Output, RegistryArgs, VaultArgs};
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
    /// COMPLIANCE (nobody can shorten) or GOVERNANCE (bypass permission can).
    #[arg(long, default_value = "compliance", env = "ECR_VAULT_LOCK_MODE")]
    lock_mode: LockMode,
    /// Images copied at once.
    #[arg(long, default_value_t = defaults::IMAGE_CONCURRENCY, env = "ECR_VAULT_IMAGE_CONCURRENCY")]
    image_concurrency: usize,
    /// Blob transfers at once.
    #[arg(long, default_value_t = defaults::BLOB_CONCURRENCY)]
    blob_concurrency: usize,
    /// Multipart part size in MiB (also the largest single PUT).
    #[arg(long, default_value_t = defaults::PART_SIZE_MIB, env = "ECR_VAULT_PART_SIZE_MIB")]
    part_size_mib: usize,
    /// Part buffers in memory at once; peak buffer memory is part size × this.
    #[arg(long, default_value_t = defaults::PARTS_IN_FLIGHT, env = "ECR_VAULT_PARTS_IN_FLIGHT")]
    parts_in_flight: usize,
    /// Storage class for blobs: STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR.
    #[arg(long, env = "ECR_VAULT_STORAGE_CLASS")]
    storage_class: Option<String>,
    /// Do not look up OCI referrers (signatures, SBOMs) of new images.
    #[arg(long)]
    no_referrers: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: BackupArgs) -> anyhow::Result<ExitCode> {
    let sdk = aws_config().await;
    let vault = open_vault(
        &sdk,
        &VaultConfig {
            uri: a.vault.vault.clone(),
            lock: a.lock.policy(a.lock_mode),
            part_size_mib: a.part_size_mib,
            parts_in_flight: a.parts_in_flight,
            storage_class: a.storage_class.clone(),
        },
    )?;
    let opts = BackupOptions {
        filters: a.filters.filters()?,
        image_concurrency: a.image_concurrency,
        blob_concurrency: a.blob_concurrency,
        trigger: "manual".into(),
        referrers: !a.no_referrers,
        ..BackupOptions::default()
    };
    let source = open_source(&sdk, &a.registry.config()?)
        .await
        .context("connecting to the source registry")?;
    let bar = progress::for_output(a.output);
    let report = ecr_vault_engine::backup(&source, &vault, &opts, bar.clone()).await?;
    drop(bar);
    output::print(a.output, &report, output::backup)?;
    Ok(output::finished(report.failed()))
}
