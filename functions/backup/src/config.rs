//! Configuration, only from the environment the SAM template sets (docs/deploy.md, "Runtime
//! contract"). Everything is validated at cold start: a bad value stops the function with a
//! message that names the variable, before any event is touched.

use std::time::Duration;

use ecr_vault_engine::{FilterSpec, Filters, VaultConfig, vault_uri};
use ecr_vault_vault::{LockMode, LockPolicy};

/// Lambda's longest timeout, assumed when the runtime reports no usable deadline.
pub const MAX_LAMBDA_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Clone, Debug)]
pub struct Config {
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

/// A configuration error: which variable, and why.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &str, value: &str, why: &str) -> ConfigError {
    let shown: String = value.chars().take(200).collect();
    ConfigError(format!("{var}={shown:?}: {why}"))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty value means "not set": CloudFormation cannot leave a variable out.
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let bucket = var("ECR_VAULT_BUCKET").ok_or_else(|| {
            ConfigError("ECR_VAULT_BUCKET is required (the vault bucket's name)".into())
        })?;
        if bucket.starts_with("arn:") || bucket.contains('/') {
            return Err(err(
                "ECR_VAULT_BUCKET",
                &bucket,
                "must be a bucket name, not an ARN or a path",
            ));
        }
        let prefix = var("ECR_VAULT_PREFIX").unwrap_or_default();
        // The same URI rule as the restore and gc functions (engine::vault_uri).
        let uri = vault_uri(&bucket, &prefix).map_err(|_| {
            ConfigError(format!(
                "ECR_VAULT_BUCKET={bucket:?} / ECR_VAULT_PREFIX={prefix:?}: not a valid bucket \
                 name and key prefix (lower-case bucket of 3-63 characters; prefix segments of \
                 [A-Za-z0-9._-], no empty, '.' or '..' segments)"
            ))
        })?;

        let mode = match var("ECR_VAULT_LOCK_MODE") {
            None => LockMode::Compliance,
            Some(m) => m
                .parse::<LockMode>()
                .map_err(|e| err("ECR_VAULT_LOCK_MODE", &m, &e))?,
        };
        let retention_days = int(&var, "ECR_VAULT_RETENTION_DAYS", 30, 1, 36_500)?;
        let slack_days = int(&var, "ECR_VAULT_LOCK_SLACK_DAYS", 7, 0, 36_500)?;
        let part_size_mib = int(&var, "ECR_VAULT_PART_SIZE_MIB", 16, 6, 5120)?;
        let parts_in_flight = int(&var, "ECR_VAULT_PARTS_IN_FLIGHT", 4, 1, 1024)?;
        let image_concurrency = int(&var, "ECR_VAULT_IMAGE_CONCURRENCY", 4, 1, 1024)?;
        let storage_class = var("ECR_VAULT_STORAGE_CLASS");
        if let Some(sc) = &storage_class
            && !matches!(
                sc.to_ascii_uppercase().as_str(),
                "STANDARD" | "STANDARD_IA" | "INTELLIGENT_TIERING" | "GLACIER_IR"
            )
        {
            return Err(err(
                "ECR_VAULT_STORAGE_CLASS",
                sc,
                "must be STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR \
                 (classes that restore without a thaw)",
            ));
        }

        let globs = |k: &str| -> Vec<String> {
            var(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let spec = FilterSpec {
            repositories: globs("ECR_VAULT_REPOSITORIES"),
            exclude_repositories: globs("ECR_VAULT_EXCLUDE_REPOSITORIES"),
            tags: globs("ECR_VAULT_TAGS"),
            exclude_tags: globs("ECR_VAULT_EXCLUDE_TAGS"),
        };
        let filters = Filters::new(spec).map_err(|e| {
            ConfigError(format!(
                "ECR_VAULT_REPOSITORIES / ECR_VAULT_EXCLUDE_REPOSITORIES / ECR_VAULT_TAGS / \
                 ECR_VAULT_EXCLUDE_TAGS: {e}"
            ))
        })?;

        let registry_url = var("ECR_VAULT_REGISTRY_URL");
        if let Some(u) = &registry_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(err(
                "ECR_VAULT_REGISTRY_URL",
                u,
                "must be an http:// or https:// URL",
            ));
        }
        let margin = int(&var, "ECR_VAULT_DEADLINE_MARGIN_SECS", 60, 0, 86_400)?;
        let fanout_threshold = int(&var, "ECR_VAULT_FANOUT_THRESHOLD", 50, 0, 1_000_000)?;
        let work_max_receives = int(&var, "ECR_VAULT_WORK_MAX_RECEIVES", 5, 1, 1000)?;
        let run_timeout = int(
            &var,
            "ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS",
            12 * 3600,
            1,
            30 * 86_400,
        )?;

        Ok(Config {
            vault: VaultConfig {
                uri,
                lock: LockPolicy {
                    mode,
                    retention_days: retention_days as u32,
                    slack_days: slack_days as u32,
                    ..LockPolicy::default()
                },
                part_size_mib,
                parts_in_flight,
                storage_class,
            },
            filters,
            image_concurrency,
            registry_url,
            deadline_margin: Duration::from_secs(margin as u64),
            function_name: var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "ecr-vault-backup".into()),
            work_queue_url: var("ECR_VAULT_WORK_QUEUE_URL"),
            fanout_threshold,
            work_max_receives: work_max_receives as u32,
            fanout_run_timeout: Duration::from_secs(run_timeout as u64),
        })
    }
}

fn int(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(err(
                name,
                &v,
                &format!("must be an integer from {min} to {max}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_template() {
        let c = cfg(&[("ECR_VAULT_BUCKET", "my-vault"), ("ECR_VAULT_PREFIX", "")]).unwrap();
        assert_eq!(c.vault.uri, "s3://my-vault");
        assert_eq!(c.vault.lock.mode, LockMode::Compliance);
        assert_eq!(c.vault.lock.retention_days, 30);
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
                vec![base, ("ECR_VAULT_PART_SIZE_MIB", "5")],
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
