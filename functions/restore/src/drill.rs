//! The restore drill function's configuration, as a library so it is tested without a Lambda
//! runtime. The binary (`src/bin_drill.rs`) is the adapter over `ecr_vault_engine::drill`,
//! which also holds the schedule ([`ecr_vault_engine::drill::DrillEvent`]).

use ecr_vault_fn_common::{ConfigError, Settings};

#[derive(Clone, Debug)]
pub struct DrillConfig {
    pub vault_uri: String,
    pub registry_url: Option<String>,
    /// Images restored per drill.
    pub sample: usize,
    /// Day of the month (1-28) the drill runs; 0 = every invocation.
    pub day_of_month: u32,
    /// The `Function` dimension of the metrics.
    pub function_name: String,
}

impl DrillConfig {
    /// Reads `ECR_VAULT_BUCKET`, `ECR_VAULT_PREFIX`, `ECR_VAULT_REGISTRY_URL`,
    /// `ECR_VAULT_DRILL_SAMPLE` (default 5) and `ECR_VAULT_DRILL_DAY_OF_MONTH` (default 1).
    pub fn from_env(env: &Settings) -> Result<Self, ConfigError> {
        Ok(DrillConfig {
            vault_uri: env.vault_uri()?,
            registry_url: env.url("ECR_VAULT_REGISTRY_URL")?,
            // A drill restores at least one image.
            sample: env.int("ECR_VAULT_DRILL_SAMPLE", 5, 1..=1000)?,
            day_of_month: env.int("ECR_VAULT_DRILL_DAY_OF_MONTH", 1, 0..=28)?,
            function_name: env.function_name("ecr-vault-drill"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<DrillConfig, String> {
        DrillConfig::from_env(&Settings::from_pairs(vars)).map_err(|e| e.to_string())
    }

    #[test]
    fn drills_monthly_by_default_and_daily_on_zero() {
        let c = cfg(&[("ECR_VAULT_BUCKET", "my-vault")]).unwrap();
        assert_eq!((c.sample, c.day_of_month), (5, 1));
        let daily = cfg(&[
            ("ECR_VAULT_BUCKET", "my-vault"),
            ("ECR_VAULT_DRILL_DAY_OF_MONTH", "0"),
        ])
        .unwrap();
        assert_eq!(daily.day_of_month, 0);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(cfg(&[]).unwrap_err().contains("ECR_VAULT_BUCKET"));
        for (k, v) in [
            ("ECR_VAULT_DRILL_SAMPLE", "0"),
            ("ECR_VAULT_DRILL_SAMPLE", "x"),
            ("ECR_VAULT_DRILL_DAY_OF_MONTH", "31"),
        ] {
            assert!(
                cfg(&[("ECR_VAULT_BUCKET", "my-vault"), (k, v)]).is_err(),
                "{k}={v}"
            );
        }
    }
}
