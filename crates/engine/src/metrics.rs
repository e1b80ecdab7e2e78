//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! Printed to stdout by the functions, CloudWatch Logs turns each line into metrics in the
//! `EcrVault` namespace with one dimension, `Function`, so no `PutMetricData` permission is
//! needed. The alarms on `ImagesFailed` use exactly this namespace, dimension and name.

use serde_json::{Map, Value, json};

use crate::backup::BackupReport;
use crate::gc::GcReport;

/// The metrics namespace.
pub const NAMESPACE: &str = "EcrVault";
/// The one dimension, valued with the function's name.
pub const DIMENSION: &str = "Function";

/// One EMF document (a single line of JSON) for a backup run.
///
/// Metrics: `ImagesBackedUp` (copied now), `ImagesUnchanged`, `ImagesFailed`, `BytesWritten`
/// (Bytes), `BlobsSkipped` (already in the vault, not fetched again) and `DurationMs`
/// (Milliseconds). `trigger`, `snapshot`, `complete` and `imagesDeferred` ride along as
/// properties for Logs Insights; they are not metrics.
pub fn backup_emf(
    report: &BackupReport,
    function_name: &str,
    trigger: &str,
    timestamp_ms: i64,
) -> String {
    let c = &report.counts;
    let mut props = Map::new();
    props.insert("trigger".into(), Value::from(trigger));
    props.insert(
        "snapshot".into(),
        report
            .snapshot
            .as_ref()
            .map_or(Value::Null, |s| Value::from(s.as_str())),
    );
    props.insert("complete".into(), Value::from(report.complete));
    props.insert(
        "imagesDeferred".into(),
        Value::from(report.deferred.len() as u64),
    );
    emf(
        function_name,
        timestamp_ms,
        &[
            ("ImagesBackedUp", "Count", c.images_copied),
            ("ImagesUnchanged", "Count", c.images_unchanged),
            ("ImagesFailed", "Count", c.images_failed),
            ("BytesWritten", "Bytes", c.bytes_written),
            ("BlobsSkipped", "Count", c.blobs_existing),
            ("DurationMs", "Milliseconds", report.duration_ms),
        ],
        props,
    )
}

/// One EMF document for a GC run: `VersionsDeleted`, `BytesReclaimed` (Bytes, what was
/// deleted, or what would be in a dry run), `UploadsAborted`, `GcErrors` and `VersionsHeld`
/// (unreferenced but still locked). `applied` rides along as a property.
pub fn gc_emf(report: &GcReport, function_name: &str, timestamp_ms: i64) -> String {
    let reclaimed = if report.applied {
        report.bytes_deleted
    } else {
        report.plan.bytes_reclaimed
    };
    let mut props = Map::new();
    props.insert("applied".into(), Value::from(report.applied));
    emf(
        function_name,
        timestamp_ms,
        &[
            ("VersionsDeleted", "Count", report.deleted),
            ("BytesReclaimed", "Bytes", reclaimed),
            ("UploadsAborted", "Count", report.uploads_aborted),
            ("GcErrors", "Count", report.errors.len() as u64),
            ("VersionsHeld", "Count", report.plan.held.len() as u64),
        ],
        props,
    )
}

/// The EMF envelope: each `(name, unit, value)` declared under `_aws` and set at the root
/// (CloudWatch needs both), plus `properties` that are logged but not metrics.
fn emf(
    function_name: &str,
    timestamp_ms: i64,
    metrics: &[(&str, &str, u64)],
    properties: Map<String, Value>,
) -> String {
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": metrics
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert(DIMENSION.into(), Value::from(function_name));
    for (name, _, value) in metrics {
        doc.insert((*name).into(), Value::from(*value));
    }
    doc.extend(properties);
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_vault_vault::{Counts, SnapshotId};

    fn report() -> BackupReport {
        BackupReport {
            snapshot: Some(SnapshotId::parse("20261124T020000000Z-abc123").unwrap()),
            snapshot_key: Some("snapshots/20261124T020000000Z-abc123.json".into()),
            complete: false,
            counts: Counts {
                images: 7,
                images_copied: 3,
                images_unchanged: 2,
                images_failed: 1,
                images_skipped: 0,
                blobs_written: 9,
                blobs_existing: 11,
                bytes_written: 123_456_789,
                lock_extensions: 0,
            },
            failures: Vec::new(),
            skipped: Vec::new(),
            deferred: vec!["team/app@sha256:00".into()],
            warnings: Vec::new(),
            duration_ms: 4321,
            phases: Default::default(),
            scope: ecr_vault_vault::ScopeKind::Full,
            cost: None,
        }
    }

    #[test]
    fn emf_line_declares_every_metric_with_its_unit_and_value() {
        let line = backup_emf(
            &report(),
            "ecr-vault-backup",
            "scheduled",
            1_795_485_600_000,
        );
        assert!(!line.contains('\n'), "one line");
        let v: Value = serde_json::from_str(&line).unwrap();
        let aws = &v["_aws"];
        assert_eq!(aws["Timestamp"], 1_795_485_600_000_i64);
        let cw = &aws["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "EcrVault");
        assert_eq!(cw["Dimensions"], json!([["Function"]]));
        assert_eq!(v["Function"], "ecr-vault-backup");
        let expected = [
            ("ImagesBackedUp", "Count", 3),
            ("ImagesUnchanged", "Count", 2),
            ("ImagesFailed", "Count", 1),
            ("BytesWritten", "Bytes", 123_456_789),
            ("BlobsSkipped", "Count", 11),
            ("DurationMs", "Milliseconds", 4321),
        ];
        let declared = cw["Metrics"].as_array().unwrap();
        assert_eq!(declared.len(), expected.len());
        for (name, unit, value) in expected {
            assert!(
                declared.contains(&json!({"Name": name, "Unit": unit})),
                "{name} not declared with unit {unit}: {declared:?}"
            );
            // Every declared metric needs a numeric member of the same name at the root.
            assert_eq!(v[name], value, "{name}");
        }
        assert_eq!(v["trigger"], "scheduled");
        assert_eq!(v["snapshot"], "20261124T020000000Z-abc123");
        assert_eq!(v["imagesDeferred"], 1);
    }

    #[test]
    fn a_run_without_snapshot_still_emits_zeroes() {
        let mut r = report();
        r.snapshot = None;
        r.counts = Counts::default();
        r.duration_ms = 0;
        let v: Value = serde_json::from_str(&backup_emf(&r, "f", "push", 0)).unwrap();
        assert_eq!(v["snapshot"], Value::Null);
        assert_eq!(v["ImagesFailed"], 0);
        assert_eq!(v["DurationMs"], 0);
    }

    #[test]
    fn gc_line_reports_what_was_deleted_or_would_be() {
        use crate::gc::{GcPlan, GcReport};
        let none = crate::cost::estimate(&Default::default(), &Default::default());
        let mut r = GcReport {
            applied: false,
            plan: GcPlan {
                computed_at: chrono::Utc::now(),
                groups: Vec::new(),
                latest: Vec::new(),
                bypass: false,
                warnings: Vec::new(),
                snapshots_kept: Vec::new(),
                snapshots_expired: Vec::new(),
                referenced_objects: 4,
                delete: Vec::new(),
                held: Vec::new(),
                uploads_to_abort: Vec::new(),
                uploads_resumable: 0,
                bytes_reclaimed: 500,
                cost_before: none.clone(),
                cost_after: none,
            },
            deleted: 0,
            bytes_deleted: 0,
            uploads_aborted: 0,
            skipped: Vec::new(),
            errors: Vec::new(),
        };
        let v: Value = serde_json::from_str(&gc_emf(&r, "gc", 7)).unwrap();
        assert_eq!(v["BytesReclaimed"], 500, "a dry run reports what would go");
        assert_eq!(v["applied"], false);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        r.applied = true;
        r.deleted = 2;
        r.bytes_deleted = 300;
        let v: Value = serde_json::from_str(&gc_emf(&r, "gc", 7)).unwrap();
        assert_eq!(v["BytesReclaimed"], 300, "an applied run reports what went");
        assert_eq!(v["VersionsDeleted"], 2);
    }
}
