use std::process::ExitCode;

use clap::Args;
use ecr_vault_engine::gc::GcOptions;
use ecr_vault_engine::{aws_config, defaults, open_vault_at};

use crate::args::{Output, VaultArgs};
use crate::output;

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Keep the newest N snapshots (the latest is always kept).
    #[arg(long, default_value_t = defaults::GC_KEEP_LAST, env = "ECR_VAULT_GC_KEEP_LAST")]
    keep_last: usize,
    /// Keep the newest snapshot of each day for this many days.
    #[arg(long, default_value_t = defaults::GC_KEEP_DAILY_DAYS, env = "ECR_VAULT_GC_KEEP_DAILY")]
    keep_daily: u32,
    /// Keep the newest snapshot of each month for this many months.
    #[arg(long, default_value_t = defaults::GC_KEEP_MONTHLY_MONTHS, env = "ECR_VAULT_GC_KEEP_MONTHLY")]
    keep_monthly: u32,
    /// Abort multipart uploads started more than this many days ago (unless a recent staging
    /// record names them).
    #[arg(long, default_value_t = defaults::GC_UPLOAD_DAYS, env = "ECR_VAULT_GC_UPLOAD_DAYS")]
    abandoned_upload_days: u32,
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

pub async fn run(a: GcArgs) -> anyhow::Result<ExitCode> {
    let vault = open_vault_at(&aws_config().await, &a.vault.vault)?;
    let opts = GcOptions {
        keep_last: a.keep_last,
        keep_daily_days: a.keep_daily,
        keep_monthly_months: a.keep_monthly,
        abandoned_upload_age: std::time::Duration::from_secs(
            u64::from(a.abandoned_upload_days) * 24 * 3600,
        ),
        bypass_governance: a.bypass_governance,
        ..GcOptions::default()
    };
    let report = ecr_vault_engine::gc::gc(&vault, &opts, a.apply).await?;
    output::print(a.output, &report, output::gc)?;
    Ok(output::finished(report.failed()))
}
