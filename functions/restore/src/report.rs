//! The error of a restore that left failures: a summary line, then the report as JSON, small
//! enough for an asynchronous invocation's OnFailure record (SNS accepts 256 KiB).

use ecr_vault_engine::RestoreReport;
use serde_json::Value;

/// Failures listed in full in the error; the rest are counted.
const FAILURES_SHOWN: usize = 50;

/// `restore failed for N of M image(s); first: <repo>@<ref>: <error>; report: {...}`. The
/// report keeps every count, the first [`FAILURES_SHOWN`] failures and no plan (the plan lists
/// every image and would not fit).
pub fn failure_message(report: &RestoreReport) -> String {
    let first = report.failures.first().map_or_else(String::new, |f| {
        format!("; first: {}@{}: {}", f.repository, f.reference, f.error)
    });
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("plan");
        m.insert("imagesRestored".into(), Value::from(report.plan.len()));
        m.insert("failuresTotal".into(), Value::from(report.failures.len()));
        if let Some(Value::Array(f)) = m.get_mut("failures") {
            f.truncate(FAILURES_SHOWN);
        }
    }
    format!(
        "restore failed for {} of {} image(s){first}; report: {v}",
        report.failures.len(),
        report.images,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_vault_vault::Failure;

    #[test]
    fn the_error_names_the_first_failure_and_carries_a_bounded_report() {
        let failure = |i: usize| Failure {
            repository: format!("team/app{i}"),
            reference: "sha256:00".into(),
            error: "vault object blobs/sha256/00 is corrupt".into(),
        };
        let report = RestoreReport {
            images: 500,
            failures: (0..200).map(failure).collect(),
            ..Default::default()
        };
        let m = failure_message(&report);
        assert!(
            m.starts_with("restore failed for 200 of 500 image(s); first: team/app0@sha256:00")
        );
        let json = m.split_once("; report: ").unwrap().1;
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["failuresTotal"], 200);
        assert_eq!(v["failures"].as_array().unwrap().len(), FAILURES_SHOWN);
        assert!(v.get("plan").is_none());
        assert!(m.len() < 64 * 1024);
    }
}
