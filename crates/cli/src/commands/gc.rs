use std::process::ExitCode;

use clap::Args;
use ecr_vault_engine::gc::GcOptions;
use std::path::PathBuf;

use ecr_vault_engine::{aws_config, open_vault_at};

use crate::args::{Output, VaultArgs};
use crate::config::{self, Flags};
use crate::output;

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Keep the newest N snapshots of each group; at least 1 (the latest is always kept)
    /// [default: 30].
    #[arg(long)]
    keep_last: Option<usize>,
    /// Keep the newest snapshot of each day for this many days [default: 35].
    #[arg(long)]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each month for this many months [default: 12].
    #[arg(long)]
    keep_monthly: Option<u32>,
    /// Abort multipart uploads started more than this many days ago (unless a recent staging
    /// record names them) [default: 7].
    #[arg(long)]
    abandoned_upload_days: Option<u32>,
    /// Delete what the plan lists. Without it, gc only prints the plan.
    #[arg(long)]
    apply: bool,
    /// Delete unreferenced GOVERNANCE-locked versions before their lock expires (needs
    /// s3:BypassGovernanceRetention). COMPLIANCE locks are never bypassed.
    #[arg(long)]
    bypass_governance: bool,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

pub async fn run(a: GcArgs, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let mut f = Flags::default();
    a.vault.flags(&mut f);
    f.one("ECR_VAULT_GC_KEEP_LAST", a.keep_last)
        .one("ECR_VAULT_GC_KEEP_DAILY", a.keep_daily)
        .one("ECR_VAULT_GC_KEEP_MONTHLY", a.keep_monthly)
        .one("ECR_VAULT_GC_UPLOAD_DAYS", a.abandoned_upload_days);
    let s = config::settings(f, config)?;
    let vault = open_vault_at(&aws_config().await, &s.vault_uri()?)?;
    let opts = GcOptions {
        bypass_governance: a.bypass_governance,
        ..s.gc_options()?
    };
    let report = ecr_vault_engine::gc::gc(&vault, &opts, a.apply).await?;
    output::print(a.output, &report, output::gc)?;
    Ok(output::finished(report.failed()))
}
