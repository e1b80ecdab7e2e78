//! The restore drill function's configuration and schedule logic, as a library so it is tested
//! without a Lambda runtime. The binary (`src/bin_drill.rs`) is the adapter over
//! `ecr_vault_engine::drill`.
//!
//! The function is invoked daily. It drills on `ECR_VAULT_DRILL_DAY_OF_MONTH` (UTC; 0 = every
//! invocation) or when the event says `"force": true`, and on every invocation emits
//! `DrillChecks`, so a broken schedule or function shows as missing checks within days, not a
//! month later (CloudWatch alarms look back at most 7 days).

use chrono::{DateTime, Datelike as _, Utc};
use ecr_vault_fn_common::{ConfigError, Env};
use serde::Deserialize;

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
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(DrillConfig {
            vault_uri: env.vault_uri()?,
            registry_url: env.url("ECR_VAULT_REGISTRY_URL")?,
            // A drill restores at least one image.
            sample: env.int("ECR_VAULT_DRILL_SAMPLE", 5, 1..=1000)?,
            day_of_month: env.int("ECR_VAULT_DRILL_DAY_OF_MONTH", 1, 0..=28)?,
            function_name: env.function_name("ecr-vault-drill"),
        })
    }

    /// Whether this invocation drills.
    pub fn due(&self, event: &DrillEvent, now: DateTime<Utc>) -> bool {
        event.force || self.day_of_month == 0 || now.day() == self.day_of_month
    }
}

/// The schedule's input: `{"action": "drill"}`; a person may add `"force": true` (drill now)
/// and a `"seed"` (repeat an earlier drill's sample).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrillEvent {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl DrillEvent {
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        let e: DrillEvent =
            serde_json::from_value(payload).map_err(|e| format!("invalid drill event: {e}"))?;
        match e.action.as_deref() {
            None | Some("drill") => Ok(e),
            Some(other) => Err(format!(
                "invalid drill event: action {other:?}, expected \"drill\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn cfg(vars: &[(&str, &str)]) -> Result<DrillConfig, String> {
        DrillConfig::from_env(&Env::from_pairs(vars)).map_err(|e| e.to_string())
    }

    #[test]
    fn drills_on_its_day_or_when_forced() {
        let c = cfg(&[("ECR_VAULT_BUCKET", "my-vault")]).unwrap();
        assert_eq!((c.sample, c.day_of_month), (5, 1));
        let first = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        let second = Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap();
        let scheduled = DrillEvent::parse(serde_json::json!({"action": "drill"})).unwrap();
        assert!(c.due(&scheduled, first));
        assert!(!c.due(&scheduled, second));
        let forced = DrillEvent::parse(serde_json::json!({"force": true})).unwrap();
        assert!(c.due(&forced, second));
        let daily = cfg(&[
            ("ECR_VAULT_BUCKET", "my-vault"),
            ("ECR_VAULT_DRILL_DAY_OF_MONTH", "0"),
        ])
        .unwrap();
        assert!(daily.due(&scheduled, second));
    }

    #[test]
    fn bad_configuration_and_events_are_refused() {
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
        assert!(DrillEvent::parse(serde_json::json!({"action": "backup"})).is_err());
        assert!(DrillEvent::parse(serde_json::json!({"forse": true})).is_err());
    }
}
