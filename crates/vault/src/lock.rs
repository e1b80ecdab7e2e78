//! Object Lock policy: which mode, how long, and when a reused object needs its lock extended.
//!
//! A snapshot taken at `now` needs every object it references locked until at least
//! `now + retention`. New objects are locked until `now + retention + slack`; a reused object
//! is extended only when its lock ends before `now + retention`, again to `+ slack`. With slack
//! of a week, a blob reused every night is extended about once a week, not every night.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    /// Nobody, root included, can shorten or remove the lock.
    Compliance,
    /// Holders of `s3:BypassGovernanceRetention` can; everyone else cannot.
    Governance,
}

impl LockMode {
    pub fn as_s3(self) -> aws_sdk_s3::types::ObjectLockMode {
        match self {
            LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
            LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
        }
    }
}

impl LockMode {
    pub fn as_retention_mode(self) -> aws_sdk_s3::types::ObjectLockRetentionMode {
        match self {
            LockMode::Compliance => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
            LockMode::Governance => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        })
    }
}

impl FromStr for LockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "COMPLIANCE" => Ok(LockMode::Compliance),
            "GOVERNANCE" => Ok(LockMode::Governance),
            _ => Err(format!(
                "lock mode must be COMPLIANCE or GOVERNANCE, not {s:?}"
            )),
        }
    }
}

/// What [`LockPolicy::retention_days`] and [`LockPolicy::slack_days`] count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionUnit {
    /// The user-facing unit (CLI, environment, template).
    #[default]
    Days,
    /// Only so that tests on the local stack can watch a lock expire (garbage collection)
    /// within seconds; no CLI flag or environment variable selects it.
    Seconds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// How long a snapshot's content stays locked, in `unit`s (days unless a test says so).
    pub retention_days: u32,
    /// Extra time added when locking or extending, in `unit`s.
    pub slack_days: u32,
    #[serde(default)]
    pub unit: RetentionUnit,
}

/// Days a snapshot and its closure stay locked by default. It covers garbage collection's
/// default daily window (35 days), so everything the default keep policy keeps is also locked.
pub const DEFAULT_RETENTION_DAYS: u32 = 35;
/// Extra days added when a lock is written or extended, so most runs need no extension call.
pub const DEFAULT_SLACK_DAYS: u32 = 7;

impl Default for LockPolicy {
    fn default() -> Self {
        LockPolicy {
            mode: LockMode::Compliance,
            retention_days: DEFAULT_RETENTION_DAYS,
            slack_days: DEFAULT_SLACK_DAYS,
            unit: RetentionUnit::Days,
        }
    }
}

impl LockPolicy {
    /// A policy counted in seconds, for tests that need locks to expire while they run.
    pub fn seconds(mode: LockMode, retention_secs: u32, slack_secs: u32) -> Self {
        LockPolicy {
            mode,
            retention_days: retention_secs,
            slack_days: slack_secs,
            unit: RetentionUnit::Seconds,
        }
    }

    fn span(&self, n: u32) -> Duration {
        match self.unit {
            RetentionUnit::Days => Duration::days(i64::from(n)),
            RetentionUnit::Seconds => Duration::seconds(i64::from(n)),
        }
    }

    /// The retention period as a duration.
    pub fn retention(&self) -> Duration {
        self.span(self.retention_days)
    }

    /// The slack as a duration.
    pub fn slack(&self) -> Duration {
        self.span(self.slack_days)
    }

    /// The lock a snapshot taken at `now` needs on everything it references.
    pub fn required_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.retention()
    }

    /// The lock to put on a new or extended object: the requirement plus slack.
    pub fn write_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.required_until(now) + self.slack()
    }

    /// Whether an object locked until `current` needs extending for a snapshot at `now`.
    pub fn needs_extension(&self, current: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        current.is_none_or(|c| c < self.required_until(now))
    }
}

/// Converts to the SDK's timestamp at whole seconds (what S3 stores), rounding **up**: a lock
/// must never end before the instant asked for. Truncating made every lock end up to a second
/// early, so with no slack `verify` found objects locked short of their snapshot's need.
pub fn to_s3_time(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    aws_smithy_types::DateTime::from_secs(secs)
}

pub fn from_s3_time(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_only_when_the_lock_would_end_too_early() {
        let p = LockPolicy {
            mode: LockMode::Compliance,
            retention_days: 30,
            slack_days: 7,
            unit: RetentionUnit::Days,
        };
        let now = Utc::now();
        let written = p.write_until(now);
        // Six nights later the slack still covers the requirement: no call needed.
        assert!(!p.needs_extension(Some(written), now + Duration::days(6)));
        // After the slack is used up, extension is due.
        assert!(p.needs_extension(Some(written), now + Duration::days(8)));
        assert!(p.needs_extension(None, now));
    }

    #[test]
    fn seconds_policy_counts_seconds_and_days_stay_the_default() {
        let now = Utc::now();
        let s = LockPolicy::seconds(LockMode::Governance, 3, 1);
        assert_eq!(s.write_until(now) - now, Duration::seconds(4));
        let d = LockPolicy::default();
        assert_eq!(d.required_until(now) - now, Duration::days(35));
        // Stored policies without a unit read as days.
        let old: LockPolicy =
            serde_json::from_str(r#"{"mode":"COMPLIANCE","retention_days":2,"slack_days":1}"#)
                .unwrap();
        assert_eq!(old.unit, RetentionUnit::Days);
    }

    #[test]
    fn s3_time_never_ends_a_lock_early() {
        let whole = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(to_s3_time(whole).secs(), 1_800_000_000);
        let later = DateTime::from_timestamp(1_800_000_000, 1).unwrap();
        assert_eq!(to_s3_time(later).secs(), 1_800_000_001);
        let back = from_s3_time(&to_s3_time(later)).unwrap();
        assert!(back >= later);
    }

    #[test]
    fn parses_modes() {
        assert_eq!(
            "compliance".parse::<LockMode>().unwrap(),
            LockMode::Compliance
        );
        assert_eq!(
            "GOVERNANCE".parse::<LockMode>().unwrap(),
            LockMode::Governance
        );
        assert!("legal".parse::<LockMode>().is_err());
    }
}
