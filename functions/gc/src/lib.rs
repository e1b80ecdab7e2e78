//! The GC function's configuration, a library so that it is tested without a Lambda runtime.

use std::time::Duration;

use ecr_vault_engine::gc::GcOptions;
use ecr_vault_engine::vault_uri;

/// What the template sets. Governance bypass is deliberately not configurable here: a
/// scheduled job never bypasses a lock (`ecr-vault gc --bypass-governance` is for a person).
#[derive(Clone, Debug)]
pub struct Config {
    pub vault_uri: String,
    pub options: GcOptions,
    /// `ECR_VAULT_GC_APPLY=true` deletes; anything else only reports what would go.
    pub apply: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads `ECR_VAULT_BUCKET`, `ECR_VAULT_PREFIX`, `ECR_VAULT_GC_KEEP_LAST`,
    /// `ECR_VAULT_GC_KEEP_DAILY`, `ECR_VAULT_GC_KEEP_MONTHLY`, `ECR_VAULT_GC_UPLOAD_DAYS` and
    /// `ECR_VAULT_GC_APPLY`; the defaults are the CLI's.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let bucket = var("ECR_VAULT_BUCKET").ok_or("ECR_VAULT_BUCKET is required")?;
        let prefix = var("ECR_VAULT_PREFIX").unwrap_or_default();
        let vault_uri = vault_uri(&bucket, &prefix).map_err(|e| e.to_string())?;
        let number = |k: &str, default: u32| -> Result<u32, String> {
            match var(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{k}={v:?}: expected a whole number")),
            }
        };
        let keep_last = number("ECR_VAULT_GC_KEEP_LAST", 30)?;
        if keep_last == 0 {
            return Err("ECR_VAULT_GC_KEEP_LAST=0: keep at least one snapshot".into());
        }
        let apply = match var("ECR_VAULT_GC_APPLY").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(format!("ECR_VAULT_GC_APPLY={v:?}: expected true or false")),
        };
        Ok(Config {
            vault_uri,
            options: GcOptions {
                keep_last: keep_last as usize,
                keep_daily_days: number("ECR_VAULT_GC_KEEP_DAILY", 35)?,
                keep_monthly_months: number("ECR_VAULT_GC_KEEP_MONTHLY", 12)?,
                abandoned_upload_age: Duration::from_secs(
                    u64::from(number("ECR_VAULT_GC_UPLOAD_DAYS", 7)?) * 24 * 3600,
                ),
                bypass_governance: false,
                ..GcOptions::default()
            },
            apply,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_are_a_dry_run_with_the_cli_policy() {
        let c = cfg(&[
            ("ECR_VAULT_BUCKET", "my-vault"),
            ("ECR_VAULT_PREFIX", "ecr/"),
        ])
        .unwrap();
        assert_eq!(c.vault_uri, "s3://my-vault/ecr");
        assert!(!c.apply);
        assert!(!c.options.bypass_governance);
        assert_eq!(c.options.keep_last, 30);
        assert_eq!(c.options.keep_daily_days, 35);
        assert_eq!(c.options.keep_monthly_months, 12);
        assert_eq!(
            c.options.abandoned_upload_age,
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let base = [("ECR_VAULT_BUCKET", "my-vault")];
        for (k, v, expect) in [
            ("ECR_VAULT_GC_APPLY", "yes", "ECR_VAULT_GC_APPLY"),
            ("ECR_VAULT_GC_KEEP_LAST", "0", "keep at least one"),
            ("ECR_VAULT_GC_KEEP_DAILY", "-1", "ECR_VAULT_GC_KEEP_DAILY"),
            ("ECR_VAULT_PREFIX", "../x", "invalid vault location"),
        ] {
            let mut vars = base.to_vec();
            vars.push((k, v));
            let e = cfg(&vars).unwrap_err();
            assert!(e.contains(expect), "{k}={v}: {e}");
        }
        assert!(cfg(&[]).unwrap_err().contains("ECR_VAULT_BUCKET"));
        assert!(
            cfg(&[("ECR_VAULT_BUCKET", "v-1"), ("ECR_VAULT_GC_APPLY", "true")])
                .unwrap()
                .apply
        );
    }
}
