//! Layered settings and the typed readers every front end uses.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use ecr_vault_vault::{LockMode, LockPolicy};

use super::{ConfigError, Key, lookup};
use crate::context::{VaultConfig, vault_uri};
use crate::defaults;
use crate::filter::{FilterSpec, Filters};
use crate::gc::GcOptions;

/// A value as given: one string, or a list (a YAML sequence, or a flag given several times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Raw {
    One(String),
    Many(Vec<String>),
}

/// Where a value came from, so an error names what the user typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    /// A config file, by its path as given.
    File(String),
}

type Get = Box<dyn Fn(&Key) -> Option<Raw> + Send + Sync>;
type GetVar = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One source of values.
pub struct Layer {
    origin: Origin,
    get: Get,
    /// An environment layer also answers for names outside the schema (the runtime's own).
    var: Option<GetVar>,
}

impl Layer {
    pub fn new(origin: Origin, get: impl Fn(&Key) -> Option<Raw> + Send + Sync + 'static) -> Self {
        Layer {
            origin,
            get: Box::new(get),
            var: None,
        }
    }

    /// The process environment.
    pub fn env() -> Self {
        Layer::env_from(|k| std::env::var(k).ok())
    }

    /// An environment read through `get` (tests, or a map).
    pub fn env_from(get: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        let var: GetVar = std::sync::Arc::new(get);
        let by_key = var.clone();
        Layer {
            origin: Origin::Env,
            get: Box::new(move |k| k.env.and_then(|e| by_key(e)).map(Raw::One)),
            var: Some(var),
        }
    }

    /// Values the CLI parsed from its flags, by key id (variable name or path).
    pub fn flags(values: Vec<(&'static str, Raw)>) -> Self {
        Layer::new(Origin::Flag, move |k| {
            values
                .iter()
                .find(|(id, _)| *id == k.id())
                .map(|(_, v)| v.clone())
        })
    }

    /// How an error names `key` when its value came from this layer.
    fn name(&self, key: &Key) -> String {
        match &self.origin {
            Origin::Env => key.id().to_owned(),
            Origin::Flag => key.flag.unwrap_or(key.id()).to_owned(),
            Origin::File(f) => format!("{} in {f}", key.path.unwrap_or(key.id())),
        }
    }
}

/// A value with the name of where it was given.
struct Given {
    value: Raw,
    name: String,
}

/// The configuration as layers, highest first. Empty values mean "not set", since
/// CloudFormation cannot leave a variable out.
pub struct Settings {
    layers: Vec<Layer>,
}

impl Settings {
    pub fn new(layers: Vec<Layer>) -> Self {
        Settings { layers }
    }

    /// The process environment only: what a function reads.
    pub fn process() -> Self {
        Settings::new(vec![Layer::env()])
    }

    /// From `(variable, value)` pairs, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::new(vec![Layer::env_from(move |k| {
            owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })])
    }

    /// The first layer that sets `id` (a variable name or a path). A name outside the
    /// schema (the runtime's own variables) is read from the environment layers only.
    fn given(&self, id: &str) -> Option<Given> {
        let found = |l: &Layer| match lookup(id) {
            Some(key) => (l.get)(key).map(|v| (v, l.name(key))),
            None => l
                .var
                .as_ref()
                .and_then(|var| var(id))
                .map(|v| (Raw::One(v), id.to_owned())),
        };
        self.layers.iter().find_map(|l| {
            let (value, name) = found(l)?;
            let value = match value {
                Raw::One(s) if s.trim().is_empty() => return None,
                Raw::One(s) => Raw::One(s.trim().to_owned()),
                Raw::Many(v) => Raw::Many(v),
            };
            Some(Given { value, name })
        })
    }

    /// The value of a schema key and where it was given (`--flag`, the variable, or the
    /// file's path), for `ecr-vault config check`.
    pub fn source_of(&self, key: &Key) -> Option<(String, String)> {
        let id = key.id();
        let g = self.given(id)?;
        let value = match g.value {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(", "),
        };
        Some((value, g.name))
    }

    /// The trimmed value; a list's items joined by commas.
    pub fn var(&self, id: &str) -> Option<String> {
        self.given(id).map(|g| match g.value {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(","),
        })
    }

    pub fn required(&self, id: &str, what: &str) -> Result<String, ConfigError> {
        self.var(id).ok_or_else(|| {
            let names: Vec<&str> = lookup(id)
                .map(|k| [k.flag, k.env, k.path].into_iter().flatten().collect())
                .unwrap_or_else(|| vec![id]);
            ConfigError(format!("{} is required ({what})", names.join(" / ")))
        })
    }

    /// A whole number within `range`, or `default` when unset.
    pub fn int<T>(&self, id: &str, default: T, range: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(g) = self.given(id) else {
            return Ok(default);
        };
        let v = one(&g)?;
        match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(err(
                &g.name,
                v,
                &format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// `true` or `false`, or `default` when unset.
    pub fn flag(&self, id: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(g) = self.given(id) else {
            return Ok(default);
        };
        match one(&g)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(err(&g.name, v, "must be true or false")),
        }
    }

    /// A list: a sequence as given, or a comma-separated string; empty items dropped.
    pub fn list(&self, id: &str) -> Vec<String> {
        let items = match self.given(id).map(|g| g.value) {
            None => return Vec::new(),
            Some(Raw::Many(v)) => v,
            Some(Raw::One(s)) => s.split(',').map(str::to_owned).collect(),
        };
        items
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// An http:// or https:// URL.
    pub fn url(&self, id: &str) -> Result<Option<String>, ConfigError> {
        let Some(g) = self.given(id) else {
            return Ok(None);
        };
        let u = one(&g)?;
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(err(&g.name, u, "must be an http:// or https:// URL"));
        }
        Ok(Some(u.to_owned()))
    }

    /// A value parsed by its type's `FromStr`, or `None` when unset.
    fn parsed<T: FromStr<Err = String>>(&self, id: &str) -> Result<Option<T>, ConfigError> {
        let Some(g) = self.given(id) else {
            return Ok(None);
        };
        let v = one(&g)?;
        v.parse::<T>().map(Some).map_err(|e| err(&g.name, v, &e))
    }

    /// The vault: `ECR_VAULT_URI` (`--vault`, `vault.uri`), or a bucket and prefix.
    pub fn vault_uri(&self) -> Result<String, ConfigError> {
        if let Some(g) = self.given("ECR_VAULT_URI") {
            let uri = one(&g)?;
            return match uri.strip_prefix("s3://") {
                Some(rest) => {
                    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                    vault_uri(bucket, prefix).map_err(|e| err(&g.name, uri, &e.to_string()))
                }
                None => Err(err(&g.name, uri, "must be s3://bucket[/prefix]")),
            };
        }
        let bucket = self.required(
            "ECR_VAULT_BUCKET",
            "the vault: s3://bucket[/prefix], or a bucket name",
        )?;
        let bucket_name = self.given("ECR_VAULT_BUCKET").map(|g| g.name);
        if bucket.starts_with("arn:") || bucket.contains('/') {
            return Err(err(
                bucket_name.as_deref().unwrap_or("ECR_VAULT_BUCKET"),
                &bucket,
                "must be a bucket name, not an ARN or a path",
            ));
        }
        let prefix = self.var("ECR_VAULT_PREFIX").unwrap_or_default();
        vault_uri(&bucket, &prefix).map_err(|e| {
            ConfigError(format!(
                "vault bucket {bucket:?} / prefix {prefix:?} (ECR_VAULT_BUCKET / \
                 ECR_VAULT_PREFIX): {e} (lower-case bucket of 3-63 characters; prefix \
                 segments of [A-Za-z0-9._-], no empty, '.' or '..' segments)"
            ))
        })
    }

    /// The vault and how to write it. `parts_in_flight` is the caller's default: a
    /// workstation and a function size their buffers differently (see `defaults`).
    pub fn vault(&self, parts_in_flight: usize) -> Result<VaultConfig, ConfigError> {
        let uri = self.vault_uri()?;
        let mode = self
            .parsed::<LockMode>("ECR_VAULT_LOCK_MODE")?
            .unwrap_or(LockMode::Compliance);
        let storage_class = self.storage_class()?;
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
            // The vault's own limits (S3's 5 MiB minimum part, our 512 MiB buffer maximum);
            // the template asks for 6 or more so that ECR's largest layer fits 10,000 parts.
            part_size_mib: self.int("ECR_VAULT_PART_SIZE_MIB", defaults::PART_SIZE_MIB, 5..=512)?,
            parts_in_flight: self.int("ECR_VAULT_PARTS_IN_FLIGHT", parts_in_flight, 1..=1024)?,
            storage_class,
        })
    }

    fn storage_class(&self) -> Result<Option<String>, ConfigError> {
        /// Storage classes a restore can read without a thaw.
        const CLASSES: [&str; 4] = [
            "STANDARD",
            "STANDARD_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
        ];
        let Some(g) = self.given("ECR_VAULT_STORAGE_CLASS") else {
            return Ok(None);
        };
        let sc = one(&g)?;
        if !CLASSES.contains(&sc.to_ascii_uppercase().as_str()) {
            return Err(err(
                &g.name,
                sc,
                "must be STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR (classes \
                 that restore without a thaw)",
            ));
        }
        Ok(Some(sc.to_owned()))
    }

    /// Which repositories and tags a run selects.
    pub fn filters(&self) -> Result<Filters, ConfigError> {
        let ids = [
            "ECR_VAULT_REPOSITORIES",
            "ECR_VAULT_EXCLUDE_REPOSITORIES",
            "ECR_VAULT_TAGS",
            "ECR_VAULT_EXCLUDE_TAGS",
        ];
        let spec = FilterSpec {
            repositories: self.list(ids[0]),
            exclude_repositories: self.list(ids[1]),
            tags: self.list(ids[2]),
            exclude_tags: self.list(ids[3]),
        };
        Filters::new(spec).map_err(|e| {
            let names: Vec<String> = ids
                .iter()
                .filter_map(|id| self.given(id).map(|g| g.name))
                .collect();
            ConfigError(format!("{}: {e}", names.join(" / ")))
        })
    }

    /// GC's keep rules and upload age. Bypass is never read from configuration: it is a
    /// person's decision on one run (`ecr-vault gc --bypass-governance`).
    pub fn gc_options(&self) -> Result<GcOptions, ConfigError> {
        let upload_days = self.int(
            "ECR_VAULT_GC_UPLOAD_DAYS",
            defaults::GC_UPLOAD_DAYS,
            0..=36_500,
        )?;
        Ok(GcOptions {
            // At least one: GC never empties the vault.
            keep_last: self.int(
                "ECR_VAULT_GC_KEEP_LAST",
                defaults::GC_KEEP_LAST,
                1..=100_000,
            )?,
            keep_daily_days: self.int(
                "ECR_VAULT_GC_KEEP_DAILY",
                defaults::GC_KEEP_DAILY_DAYS,
                0..=36_500,
            )?,
            keep_monthly_months: self.int(
                "ECR_VAULT_GC_KEEP_MONTHLY",
                defaults::GC_KEEP_MONTHLY_MONTHS,
                0..=12_000,
            )?,
            abandoned_upload_age: Duration::from_secs(u64::from(upload_days) * 24 * 3600),
            bypass_governance: false,
            ..GcOptions::default()
        })
    }

    /// Images copied at once.
    pub fn image_concurrency(&self) -> Result<usize, ConfigError> {
        self.int(
            "ECR_VAULT_IMAGE_CONCURRENCY",
            defaults::IMAGE_CONCURRENCY,
            1..=1024,
        )
    }

    /// The `Function` dimension of the metrics.
    pub fn function_name(&self, default: &str) -> String {
        self.var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|| default.to_owned())
    }
}

/// A single value; a list where one is expected is an error naming the setting.
fn one(g: &Given) -> Result<&str, ConfigError> {
    match &g.value {
        Raw::One(s) => Ok(s),
        Raw::Many(_) => Err(ConfigError(format!(
            "{}: must be one value, not a list",
            g.name
        ))),
    }
}

/// `NAME="value": why`, the value cut short so a pasted secret cannot fill the log.
fn err(name: &str, value: &str, why: &str) -> ConfigError {
    let shown: String = value.chars().take(200).collect();
    ConfigError(format!("{name}={shown:?}: {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_means_unset_and_values_are_trimmed() {
        let env = Settings::from_pairs(&[("A", "  "), ("B", " x ")]);
        assert_eq!(env.var("A"), None);
        assert_eq!(env.var("B").as_deref(), Some("x"));
        assert_eq!(env.int("A", 4usize, 1..=9).unwrap(), 4);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_range() {
        let env = Settings::from_pairs(&[("N", "0"), ("F", "yes"), ("U", "ftp://x")]);
        let e = env.int("N", 4usize, 1..=9).unwrap_err().to_string();
        assert!(e.contains("N=\"0\"") && e.contains("from 1 to 9"), "{e}");
        assert!(env.flag("F", false).unwrap_err().to_string().contains("F="));
        assert!(env.url("U").is_err());
    }

    #[test]
    fn the_vault_defaults_are_the_engines() {
        let v = Settings::from_pairs(&[("ECR_VAULT_BUCKET", "my-vault")])
            .vault(defaults::FUNCTION_PARTS_IN_FLIGHT)
            .unwrap();
        assert_eq!(v.uri, "s3://my-vault");
        assert_eq!(v.lock.retention_days, defaults::RETENTION_DAYS);
        assert_eq!(v.parts_in_flight, defaults::FUNCTION_PARTS_IN_FLIGHT);
        let e =
            Settings::from_pairs(&[("ECR_VAULT_BUCKET", "b-1"), ("ECR_VAULT_PREFIX", "a/../b")])
                .vault_uri()
                .unwrap_err()
                .to_string();
        assert!(e.contains("ECR_VAULT_PREFIX"), "{e}");
    }
}
