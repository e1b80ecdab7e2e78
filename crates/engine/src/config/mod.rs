//! One configuration schema for the CLI and the functions.
//!
//! Every setting a user can give has one [`Key`] in [`SCHEMA`]: its path in a config file
//! (`ecr-vault.yaml`), its environment variable (what the SAM template sets for a function),
//! and its flag. [`Settings`] reads them in layers, highest first: flags, the environment, the
//! file; then the defaults in [`crate::defaults`]. The typed readers (`vault`, `filters`,
//! `gc_options`) are the one place a value is parsed and bounded, so a CLI run and a function
//! refuse the same bad value with the same words.

mod file;
mod settings;

pub use file::file_layer;
pub use settings::{Layer, Origin, Raw, Settings};

/// A configuration error: which setting, where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One setting: where it is written in each encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    /// Dotted path in the config file; `None`: not settable from a file (function plumbing
    /// the template wires, such as the work queue's URL).
    pub path: Option<&'static str>,
    /// Environment variable; `None`: file and flag only (a reference that only makes sense
    /// on a workstation, such as an auth file).
    pub env: Option<&'static str>,
    /// The CLI flag, if the CLI takes one.
    pub flag: Option<&'static str>,
    /// A list (YAML sequence, comma-separated in the environment).
    pub list: bool,
    pub what: &'static str,
}

impl Key {
    /// The name used to ask for it: the variable, or the path when there is none.
    pub fn id(&self) -> &'static str {
        self.env.or(self.path).unwrap_or("")
    }
}

const fn key(
    path: Option<&'static str>,
    env: Option<&'static str>,
    flag: Option<&'static str>,
    what: &'static str,
) -> Key {
    Key {
        path,
        env,
        flag,
        list: false,
        what,
    }
}

const fn list(
    path: &'static str,
    env: &'static str,
    flag: &'static str,
    what: &'static str,
) -> Key {
    Key {
        path: Some(path),
        env: Some(env),
        flag: Some(flag),
        list: true,
        what,
    }
}

/// Every setting. `ecr-vault config keys` prints this table; docs/configuration.md lists it.
pub const SCHEMA: &[Key] = &[
    // Where images come from (or go to, for `restore`).
    key(
        Some("source.registry"),
        Some("ECR_VAULT_REGISTRY"),
        Some("--registry"),
        "`ecr` (listed through the ECR API) or a registry URL",
    ),
    key(
        Some("source.registry_url"),
        Some("ECR_VAULT_REGISTRY_URL"),
        Some("--registry-url"),
        "ECR only: the registry endpoint to use instead of the one ECR reports",
    ),
    key(
        Some("source.registry_id"),
        Some("ECR_VAULT_REGISTRY_ID"),
        Some("--registry-id"),
        "ECR only: the account whose registry is read, when not the caller's",
    ),
    key(
        Some("source.credentials.username"),
        Some("ECR_VAULT_REGISTRY_USERNAME"),
        Some("--username"),
        "OCI registries: the user name; needs a password",
    ),
    key(
        None,
        Some("ECR_VAULT_REGISTRY_PASSWORD"),
        Some("--password"),
        "OCI registries: the password (never in a file; prefer --password-stdin)",
    ),
    key(
        Some("source.credentials.password_env"),
        None,
        None,
        "OCI registries: the environment variable that holds the password",
    ),
    key(
        Some("source.credentials.authfile"),
        None,
        Some("--authfile"),
        "OCI registries: a docker config.json to take credentials from",
    ),
    list(
        "source.repositories",
        "ECR_VAULT_REPOSITORIES",
        "--repository",
        "repository globs to include (`*` within a segment, `**` across); names need no catalog",
    ),
    list(
        "source.exclude_repositories",
        "ECR_VAULT_EXCLUDE_REPOSITORIES",
        "--exclude-repository",
        "repository globs to exclude",
    ),
    list(
        "source.tags",
        "ECR_VAULT_TAGS",
        "--tag",
        "tag globs to include; without any, untagged images are included too",
    ),
    list(
        "source.exclude_tags",
        "ECR_VAULT_EXCLUDE_TAGS",
        "--exclude-tag",
        "tag globs to exclude",
    ),
    // The vault.
    key(
        Some("vault.uri"),
        Some("ECR_VAULT_URI"),
        Some("--vault"),
        "s3://bucket[/prefix]",
    ),
    key(
        Some("vault.bucket"),
        Some("ECR_VAULT_BUCKET"),
        None,
        "the vault's bucket, with vault.prefix (instead of vault.uri)",
    ),
    key(
        Some("vault.prefix"),
        Some("ECR_VAULT_PREFIX"),
        None,
        "the key prefix within vault.bucket",
    ),
    key(
        Some("vault.lock_mode"),
        Some("ECR_VAULT_LOCK_MODE"),
        Some("--lock-mode"),
        "COMPLIANCE (nobody can shorten a lock) or GOVERNANCE (bypass permission can)",
    ),
    key(
        Some("vault.retention_days"),
        Some("ECR_VAULT_RETENTION_DAYS"),
        Some("--retention-days"),
        "days every captured object stays locked",
    ),
    key(
        Some("vault.lock_slack_days"),
        Some("ECR_VAULT_LOCK_SLACK_DAYS"),
        Some("--lock-slack-days"),
        "extra days added when locking, so most runs need no extension",
    ),
    key(
        Some("vault.part_size_mib"),
        Some("ECR_VAULT_PART_SIZE_MIB"),
        Some("--part-size-mib"),
        "multipart part size in MiB (also the largest single PUT)",
    ),
    key(
        Some("vault.parts_in_flight"),
        Some("ECR_VAULT_PARTS_IN_FLIGHT"),
        Some("--parts-in-flight"),
        "part buffers in memory at once",
    ),
    key(
        Some("vault.storage_class"),
        Some("ECR_VAULT_STORAGE_CLASS"),
        Some("--storage-class"),
        "STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR",
    ),
    // How a backup runs.
    key(
        Some("backup.image_concurrency"),
        Some("ECR_VAULT_IMAGE_CONCURRENCY"),
        Some("--image-concurrency"),
        "images copied at once",
    ),
    // What GC keeps.
    key(
        Some("keep.last"),
        Some("ECR_VAULT_GC_KEEP_LAST"),
        Some("--keep-last"),
        "keep the newest N snapshots of each group (at least 1)",
    ),
    key(
        Some("keep.daily_days"),
        Some("ECR_VAULT_GC_KEEP_DAILY"),
        Some("--keep-daily"),
        "keep the newest snapshot of each day for this many days",
    ),
    key(
        Some("keep.monthly_months"),
        Some("ECR_VAULT_GC_KEEP_MONTHLY"),
        Some("--keep-monthly"),
        "keep the newest snapshot of each month for this many months",
    ),
    key(
        Some("keep.abandoned_upload_days"),
        Some("ECR_VAULT_GC_UPLOAD_DAYS"),
        Some("--abandoned-upload-days"),
        "abort multipart uploads older than this many days",
    ),
    // Function plumbing: the template sets these; they have no meaning in a file.
    key(
        None,
        Some("ECR_VAULT_GC_APPLY"),
        None,
        "GC function: `true` deletes, else it only reports",
    ),
    key(
        None,
        Some("ECR_VAULT_DEADLINE_MARGIN_SECS"),
        None,
        "backup function: start no image with less than this left before the deadline",
    ),
    key(
        None,
        Some("ECR_VAULT_WORK_QUEUE_URL"),
        None,
        "backup function: the SQS work queue",
    ),
    key(
        None,
        Some("ECR_VAULT_FANOUT_THRESHOLD"),
        None,
        "backup function: fan out when more images than this need copying",
    ),
    key(
        None,
        Some("ECR_VAULT_WORK_MAX_RECEIVES"),
        None,
        "backup function: the work queue's maxReceiveCount",
    ),
    key(
        None,
        Some("ECR_VAULT_FANOUT_RUN_TIMEOUT_SECS"),
        None,
        "backup function: a fanned-out run still open this long is finalised incomplete",
    ),
    key(
        None,
        Some("ECR_VAULT_APPROVED_REGISTRIES"),
        None,
        "restore function: registries it may push to",
    ),
    key(
        None,
        Some("ECR_VAULT_REGISTRY_SECRET_ARNS"),
        None,
        "restore function: Secrets Manager ARNs it may read target credentials from",
    ),
    key(
        None,
        Some("ECR_VAULT_DRILL_SAMPLE"),
        None,
        "drill function: images restored per drill",
    ),
    key(
        None,
        Some("ECR_VAULT_DRILL_DAY_OF_MONTH"),
        None,
        "drill function: the monthly drill's day (0: every run)",
    ),
];

/// Keys that exist elsewhere but must never be in a config file, with the reason.
pub(crate) const REFUSED: &[(&str, &str)] = &[
    (
        "source.credentials.password",
        "a secret does not belong in a config file: name the variable that holds it \
         (source.credentials.password_env), or use an auth file",
    ),
    (
        "source.platforms",
        "ecr-vault keeps every platform of an image index, so a restore is byte-exact; \
         platforms cannot be selected",
    ),
];

/// The key asked for by variable name or path.
pub fn lookup(id: &str) -> Option<&'static Key> {
    SCHEMA
        .iter()
        .find(|k| k.env == Some(id) || k.path == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_home() {
        let mut seen = std::collections::HashSet::new();
        for k in SCHEMA {
            assert!(k.path.is_some() || k.env.is_some(), "{k:?}");
            for name in [k.path, k.env, k.flag].into_iter().flatten() {
                assert!(seen.insert(name), "{name} is in the schema twice");
            }
            assert_eq!(lookup(k.id()), Some(k));
        }
    }

    /// docs/configuration.md lists every key, so the page stays the schema's.
    #[test]
    fn the_configuration_page_lists_every_key() {
        let page = include_str!("../../../../docs/configuration.md");
        for k in SCHEMA {
            for name in [k.path, k.env, k.flag].into_iter().flatten() {
                assert!(
                    page.contains(&format!("`{name}`")),
                    "{name} is not in docs/configuration.md"
                );
            }
        }
    }
}
