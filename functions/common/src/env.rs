//! The functions' configuration, read only from the environment the SAM template sets
//! (docs/deploy.md, "Runtime contract"). Every function reads it at cold start, so a bad value
//! stops the function with a message that names the variable, before any event is touched.
//! Defaults come from `ecr_vault_engine::defaults`, the CLI's too.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ecr_vault_engine::{VaultConfig, defaults, vault_uri};
use ecr_vault_vault::{LockMode, LockPolicy};

/// A configuration error: which variable, and why.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// `VAR="value": why`, the value cut short so a pasted secret cannot fill the log.
fn err(var: &str, value: &str, why: &str) -> ConfigError {
    let shown: String = value.chars().take(200).collect();
    ConfigError(format!("{var}={shown:?}: {why}"))
}

/// Storage classes a restore can read without a thaw.
const STORAGE_CLASSES: [&str; 4] = [
    "STANDARD",
    "STANDARD_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
];

/// Reads one variable.
type Lookup = Box<dyn Fn(&str) -> Option<String>>;

/// A view of the environment: the process's, or a map in tests.
pub struct Env {
    get: Lookup,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env::from_fn(|k| std::env::var(k).ok())
    }

    pub fn from_fn(get: impl Fn(&str) -> Option<String> + 'static) -> Self {
        Env { get: Box::new(get) }
    }

    /// From `(name, value)` pairs, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::from_fn(move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    /// The trimmed value; an empty one means "not set", since CloudFormation cannot leave a
    /// variable out.
    pub fn var(&self, k: &str) -> Option<String> {
        (self.get)(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, k: &str, what: &str) -> Result<String, ConfigError> {
        self.var(k)
            .ok_or_else(|| ConfigError(format!("{k} is required ({what})")))
    }

    /// A whole number within `range`, or `default` when unset.
    pub fn int<T>(&self, k: &str, default: T, range: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.var(k) {
            None => Ok(default),
            Some(v) => match v.parse::<T>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(err(
                    k,
                    &v,
                    &format!(
                        "must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
        }
    }

    /// `true` or `false`, or `default` when unset.
    pub fn flag(&self, k: &str, default: bool) -> Result<bool, ConfigError> {
        match self.var(k).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(err(k, v, "must be true or false")),
        }
    }

    /// A comma-separated list, empty items dropped.
    pub fn list(&self, k: &str) -> Vec<String> {
        self.var(k)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An http:// or https:// URL.
    pub fn url(&self, k: &str) -> Result<Option<String>, ConfigError> {
        match self.var(k) {
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                Err(err(k, &u, "must be an http:// or https:// URL"))
            }
            u => Ok(u),
        }
    }

    /// `s3://bucket[/prefix]` from `ECR_VAULT_BUCKET` and `ECR_VAULT_PREFIX`.
    pub fn vault_uri(&self) -> Result<String, ConfigError> {
        let bucket = self.required("ECR_VAULT_BUCKET", "the vault bucket's name")?;
        if bucket.starts_with("arn:") || bucket.contains('/') {
            return Err(err(
                "ECR_VAULT_BUCKET",
                &bucket,
                "must be a bucket name, not an ARN or a path",
            ));
        }
        let prefix = self.var("ECR_VAULT_PREFIX").unwrap_or_default();
        vault_uri(&bucket, &prefix).map_err(|e| {
            ConfigError(format!(
                "ECR_VAULT_BUCKET={bucket:?} / ECR_VAULT_PREFIX={prefix:?}: {e} (lower-case \
                 bucket of 3-63 characters; prefix segments of [A-Za-z0-9._-], no empty, '.' or \
                 '..' segments)"
            ))
        })
    }

    /// The vault and how to write it: location, lock policy, parts and storage class.
    pub fn vault(&self) -> Result<VaultConfig, ConfigError> {
        let uri = self.vault_uri()?;
        let mode = match self.var("ECR_VAULT_LOCK_MODE") {
            None => LockMode::Compliance,
            Some(m) => m
                .parse::<LockMode>()
                .map_err(|e| err("ECR_VAULT_LOCK_MODE", &m, &e))?,
        };
        let storage_class = self.var("ECR_VAULT_STORAGE_CLASS");
        if let Some(sc) = &storage_class
            && !STORAGE_CLASSES.contains(&sc.to_ascii_uppercase().as_str())
        {
            return Err(err(
                "ECR_VAULT_STORAGE_CLASS",
                sc,
                "must be STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR \
                 (classes that restore without a thaw)",
            ));
        }
        Ok(VaultConfig {
            uri,
            lock: LockPolicy {
                mode,
                retention_days: self.int(
                    "ECR_VAULT_RETENTION_DAYS",
                    defaults::RETENTION_DAYS,
                    1..=36_500,
                )?,
                slack_days: self.int(
                    "ECR_VAULT_LOCK_SLACK_DAYS",
                    defaults::LOCK_SLACK_DAYS,
                    0..=36_500,
                )?,
                ..LockPolicy::default()
            },
            part_size_mib: self.int(
                "ECR_VAULT_PART_SIZE_MIB",
                defaults::PART_SIZE_MIB,
                6..=5120,
            )?,
            parts_in_flight: self.int(
                "ECR_VAULT_PARTS_IN_FLIGHT",
                defaults::FUNCTION_PARTS_IN_FLIGHT,
                1..=1024,
            )?,
            storage_class,
        })
    }

    /// The `Function` dimension of the metrics.
    pub fn function_name(&self, default: &str) -> String {
        self.var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|| default.to_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_means_unset_and_values_are_trimmed() {
        let env = Env::from_pairs(&[("A", "  "), ("B", " x ")]);
        assert_eq!(env.var("A"), None);
        assert_eq!(env.var("B").as_deref(), Some("x"));
        assert_eq!(env.int("A", 4usize, 1..=9).unwrap(), 4);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_range() {
        let env = Env::from_pairs(&[("N", "0"), ("F", "yes"), ("U", "ftp://x")]);
        let e = env.int("N", 4usize, 1..=9).unwrap_err().to_string();
        assert!(e.contains("N=\"0\"") && e.contains("from 1 to 9"), "{e}");
        assert!(env.flag("F", false).unwrap_err().to_string().contains("F="));
        assert!(env.url("U").is_err());
    }

    #[test]
    fn the_vault_defaults_are_the_engines() {
        let v = Env::from_pairs(&[("ECR_VAULT_BUCKET", "my-vault")])
            .vault()
            .unwrap();
        assert_eq!(v.uri, "s3://my-vault");
        assert_eq!(v.lock.retention_days, defaults::RETENTION_DAYS);
        assert_eq!(v.parts_in_flight, defaults::FUNCTION_PARTS_IN_FLIGHT);
        let e = Env::from_pairs(&[("ECR_VAULT_BUCKET", "b-1"), ("ECR_VAULT_PREFIX", "a/../b")])
            .vault_uri()
            .unwrap_err()
            .to_string();
        assert!(e.contains("ECR_VAULT_PREFIX"), "{e}");
    }
}
