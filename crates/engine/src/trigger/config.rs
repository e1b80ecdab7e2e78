//! What the triggers run with: the vault, filters and concurrency every front end reads
//! through the one schema (`crate::config`), plus the settings only an event-driven
//! deployment has (the deadline margin, the work queue and fan-out).

use std::time::Duration;

use crate::config::{ConfigError, Settings};
use crate::{Filters, VaultConfig, defaults};

/// Lambda's longest timeout, assumed when the runtime reports no usable deadline.
pub const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Clone, Debug)]
pub struct TriggerConfig {
    pub vault: VaultConfig,
    pub filters: Filters,
    pub image_concurrency: usize,
    /// Endpoint override of the ECR registry (private endpoints, tests). None: the endpoint
    /// GetAuthorizationToken reports, fetched on first use.
    pub registry_url: Option<String>,
    /// Stop starting new images when less than this remains before the invocation deadline.
    pub deadline_margin: Duration,
    /// The `Function` dimension of the metrics.
    pub function_name: String,
    /// The SQS work queue. Without it, scheduled runs always back up inline.
    pub work_queue_url: Option<String>,
    /// A scheduled run fans out when more images than this need copying.
    pub fanout_threshold: usize,
    /// The work queue's maxReceiveCount: a failure on that delivery is final for the run.
    pub work_max_receives: u32,
    /// A fanned-out run still missing images this long after it started is finalised as
    /// incomplete by the next scheduled run.
    pub fanout_run_timeout: Duration,
}

impl TriggerConfig {
    pub fn from_settings(env: &Settings) -> Result<Self, ConfigError> {
        let secs = |k: &str, default: Duration, min: u64, max: u64| {
            env.int(k, default.as_secs(), min..=max)
                .map(Duration::from_secs)
        };
        Ok(TriggerConfig {
            vault: env.vault(defaults::FUNCTION_PARTS_IN_FLIGHT)?,
            filters: env.filters()?,
            image_concurrency: env.image_concurrency()?,
            registry_url: env.url("ECR_VAULT_REGISTRY_URL")?,
            deadline_margin: secs(
                "ECR_VAULT_DEADLINE_MARGIN_SECS",
                defaults::DEADLINE_MARGIN,
                0,
                86_400,
            )?,
            function_name: env.function_name("ecr-vault-backup"),
            work_queue_url: env.var("ECR_VAULT_WORK_QUEUE_URL"),
            fanout_threshold: env.int(
                "ECR_VAULT_FANOUT_THRESHOLD",
                defaults::FANOUT_THRESHOLD,
                0..=1_000_000,
            )?,
            work_max_receives: env.int(
                "ECR_VAULT_WORK_MAX_RECEIVES",
                defaults::WORK_MAX_RECEIVES,
                1..=1000,
            )?,
            fanout_run_timeout: secs(
                "ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS",
                defaults::FANOUT_RUN_TIMEOUT,
                1,
                30 * 86_400,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ecr_vault_vault::LockMode;

    fn cfg(pairs: &[(&str, &str)]) -> Result<TriggerConfig, ConfigError> {
        TriggerConfig::from_settings(&Settings::from_pairs(pairs))
    }

    #[test]
    fn defaults_follow_the_template() {
        let c = cfg(&[("ECR_VAULT_BUCKET", "my-vault"), ("ECR_VAULT_PREFIX", "")]).unwrap();
        assert_eq!(c.vault.uri, "s3://my-vault");
        assert_eq!(c.vault.lock.mode, LockMode::Compliance);
        assert_eq!(c.vault.lock.retention_days, defaults::RETENTION_DAYS);
        assert_eq!(c.vault.lock.slack_days, 7);
        assert_eq!(c.vault.part_size_mib, 16);
        assert_eq!(c.image_concurrency, 4);
        assert_eq!(c.deadline_margin, Duration::from_secs(60));
        assert!(c.filters.repository("any/thing"));
        assert!(c.registry_url.is_none());
        assert_eq!(c.fanout_threshold, 50);
        assert_eq!(c.work_max_receives, 5);
        assert_eq!(c.fanout_run_timeout, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn reads_every_variable() {
        let c = cfg(&[
            ("ECR_VAULT_BUCKET", "my-vault"),
            ("ECR_VAULT_PREFIX", "ecr/prod/"),
            ("ECR_VAULT_LOCK_MODE", "GOVERNANCE"),
            ("ECR_VAULT_RETENTION_DAYS", "1"),
            ("ECR_VAULT_LOCK_SLACK_DAYS", "0"),
            ("ECR_VAULT_REPOSITORIES", "team/**, other/*"),
            ("ECR_VAULT_EXCLUDE_REPOSITORIES", "team/legacy/**"),
            ("ECR_VAULT_TAGS", "v*"),
            ("ECR_VAULT_EXCLUDE_TAGS", "*-rc*"),
            ("ECR_VAULT_IMAGE_CONCURRENCY", "2"),
            ("ECR_VAULT_PART_SIZE_MIB", "6"),
            ("ECR_VAULT_PARTS_IN_FLIGHT", "3"),
            ("ECR_VAULT_STORAGE_CLASS", "GLACIER_IR"),
            ("ECR_VAULT_REGISTRY_URL", "http://127.0.0.1:5000"),
            ("ECR_VAULT_DEADLINE_MARGIN_SECS", "5"),
            ("AWS_LAMBDA_FUNCTION_NAME", "stack-backup"),
            (
                "ECR_VAULT_WORK_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/work",
            ),
            ("ECR_VAULT_FANOUT_THRESHOLD", "0"),
            ("ECR_VAULT_WORK_MAX_RECEIVES", "2"),
            ("ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS", "60"),
        ])
        .unwrap();
        assert_eq!(c.vault.uri, "s3://my-vault/ecr/prod");
        assert_eq!(c.vault.lock.mode, LockMode::Governance);
        assert!(c.filters.repository("team/app"));
        assert!(c.filters.repository("other/x"));
        assert!(!c.filters.repository("team/legacy/x"));
        assert!(c.filters.tag("v1") && !c.filters.tag("v2-rc1") && !c.filters.tag("dev"));
        assert_eq!(c.vault.parts_in_flight, 3);
        assert_eq!(c.function_name, "stack-backup");
        assert_eq!(c.deadline_margin, Duration::from_secs(5));
        assert!(c.work_queue_url.is_some());
        assert_eq!(c.fanout_threshold, 0);
        assert_eq!(c.work_max_receives, 2);
        assert_eq!(c.fanout_run_timeout, Duration::from_secs(60));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let base = ("ECR_VAULT_BUCKET", "my-vault");
        for (pairs, var) in [
            (vec![], "ECR_VAULT_BUCKET"),
            (
                vec![("ECR_VAULT_BUCKET", "arn:aws:s3:::my-vault")],
                "ECR_VAULT_BUCKET",
            ),
            (
                vec![base, ("ECR_VAULT_PREFIX", "a/../b")],
                "ECR_VAULT_PREFIX",
            ),
            (
                vec![base, ("ECR_VAULT_LOCK_MODE", "LEGAL")],
                "ECR_VAULT_LOCK_MODE",
            ),
            (
                vec![base, ("ECR_VAULT_RETENTION_DAYS", "0")],
                "ECR_VAULT_RETENTION_DAYS",
            ),
            (
                vec![base, ("ECR_VAULT_PART_SIZE_MIB", "4")],
                "ECR_VAULT_PART_SIZE_MIB",
            ),
            (
                vec![base, ("ECR_VAULT_IMAGE_CONCURRENCY", "many")],
                "ECR_VAULT_IMAGE_CONCURRENCY",
            ),
            (
                vec![base, ("ECR_VAULT_STORAGE_CLASS", "DEEP_ARCHIVE")],
                "ECR_VAULT_STORAGE_CLASS",
            ),
            (
                vec![base, ("ECR_VAULT_REPOSITORIES", "[")],
                "ECR_VAULT_REPOSITORIES",
            ),
            (
                vec![base, ("ECR_VAULT_REGISTRY_URL", "ftp://x")],
                "ECR_VAULT_REGISTRY_URL",
            ),
        ] {
            let e = cfg(&pairs).unwrap_err().to_string();
            assert!(e.contains(var), "{pairs:?}: {e}");
        }
    }
}
