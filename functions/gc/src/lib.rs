//! The GC function's configuration, a library so that it is tested without a Lambda runtime.

use std::time::Duration;

use ecr_vault_engine::defaults;
use ecr_vault_engine::gc::GcOptions;
use ecr_vault_fn_common::{ConfigError, Env};

/// What the template sets. Governance bypass is deliberately not configurable here: a
/// scheduled job never bypasses a lock (`ecr-vault gc --bypass-governance` is for a person).
#[derive(Clone, Debug)]
pub struct Config {
    pub vault_uri: String,
    pub options: GcOptions,
    /// `ECR_VAULT_GC_APPLY=true` deletes; anything else only reports what would go.
    pub apply: bool,
    /// The `Function` dimension of the metrics.
    pub function_name: String,
}

impl Config {
    /// Reads `ECR_VAULT_BUCKET`, `ECR_VAULT_PREFIX`, `ECR_VAULT_GC_KEEP_LAST`,
    /// `ECR_VAULT_GC_KEEP_DAILY`, `ECR_VAULT_GC_KEEP_MONTHLY`, `ECR_VAULT_GC_UPLOAD_DAYS` and
    /// `ECR_VAULT_GC_APPLY`; the defaults are the CLI's.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let upload_days = env.int(
            "ECR_VAULT_GC_UPLOAD_DAYS",
            defaults::GC_UPLOAD_DAYS,
            0..=36_500,
        )?;
        Ok(Config {
            vault_uri: env.vault_uri()?,
            options: GcOptions {
                // At least one: GC never empties the vault.
                keep_last: env.int(
                    "ECR_VAULT_GC_KEEP_LAST",
                    defaults::GC_KEEP_LAST,
                    1..=100_000,
                )?,
                keep_daily_days: env.int(
                    "ECR_VAULT_GC_KEEP_DAILY",
                    defaults::GC_KEEP_DAILY_DAYS,
                    0..=36_500,
                )?,
                keep_monthly_months: env.int(
                    "ECR_VAULT_GC_KEEP_MONTHLY",
                    defaults::GC_KEEP_MONTHLY_MONTHS,
                    0..=12_000,
                )?,
                abandoned_upload_age: Duration::from_secs(u64::from(upload_days) * 24 * 3600),
                bypass_governance: false,
                ..GcOptions::default()
            },
            apply: env.flag("ECR_VAULT_GC_APPLY", false)?,
            function_name: env.function_name("ecr-vault-gc"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_env(&Env::from_pairs(vars)).map_err(|e| e.to_string())
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
            ("ECR_VAULT_GC_KEEP_LAST", "0", "ECR_VAULT_GC_KEEP_LAST"),
            ("ECR_VAULT_GC_KEEP_DAILY", "-1", "ECR_VAULT_GC_KEEP_DAILY"),
            ("ECR_VAULT_PREFIX", "../x", "ECR_VAULT_PREFIX"),
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
