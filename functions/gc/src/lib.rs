//! The GC function's configuration, a library so that it is tested without a Lambda runtime.

use ecr_vault_engine::gc::GcOptions;
use ecr_vault_fn_common::{ConfigError, Settings};

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
    /// The vault and keep rules through the engine's one schema (the CLI's reader and
    /// defaults), plus `ECR_VAULT_GC_APPLY`.
    pub fn from_env(env: &Settings) -> Result<Self, ConfigError> {
        Ok(Config {
            vault_uri: env.vault_uri()?,
            options: env.gc_options()?,
            apply: env.flag("ECR_VAULT_GC_APPLY", false)?,
            function_name: env.function_name("ecr-vault-gc"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_env(&Settings::from_pairs(vars)).map_err(|e| e.to_string())
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
