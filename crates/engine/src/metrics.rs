//! CloudWatch metrics as Embedded Metric Format (EMF) log lines.
//!
//! Printed to stdout by the functions, CloudWatch Logs turns each line into metrics in the
//! `EcrVault` namespace with one dimension, `Function`, so no `PutMetricData` permission is
//! needed. The alarms in `template.yaml` use exactly this namespace, dimension and names.
//!
//! Every line carries `"level": "FATAL"` ([`EMF_LEVEL`]): with the JSON log format, Lambda's
//! application log-level filter gives a line without a valid `level` the level INFO and drops
//! it below the configured level, so at `ApplicationLogLevel=WARN` metrics (and the alarms on
//! them) would vanish. FATAL is the one level every allowed setting passes. Decision 0010.

use serde_json::{Map, Value, json};

use crate::backup::BackupReport;
use crate::drill::DrillReport;
use crate::fanout::{Finalised, WorkReport};
use crate::gc::GcReport;
use crate::restore::RestoreReport;

/// The `level` of every EMF line: the highest level, so Lambda's log-level filter passes it
/// whatever `ApplicationLogLevel` is set to. Logs Insights queries on errors should add
/// `and not ispresent(_aws)`.
pub const EMF_LEVEL: &str = "FATAL";

/// The metrics namespace.
pub const NAMESPACE: &str = "EcrVault";
/// The one dimension, valued with the function's name.
pub const DIMENSION: &str = "Function";

/// One EMF document (a single line of JSON) for a backup run.
///
/// Metrics: `ImagesBackedUp` (copied now), `ImagesUnchanged`, `ImagesFailed`, `BytesWritten`
/// (Bytes), `BlobsSkipped` (already in the vault, not fetched again), `LockExtensions`,
/// `DurationMs` (Milliseconds) and `FullSnapshots` (1 when `full`: the run wrote a full
/// snapshot; the "no full snapshot" alarm watches it). `trigger`, `snapshot`, `complete` and
/// `imagesDeferred` ride along as properties for Logs Insights; they are not metrics.
pub fn backup_emf(
    report: &BackupReport,
    function_name: &str,
    trigger: &str,
    full: bool,
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
            ("LockExtensions", "Count", c.lock_extensions),
            ("DurationMs", "Milliseconds", report.duration_ms),
            ("FullSnapshots", "Count", u64::from(full)),
        ],
        props,
    )
}

/// One EMF document for a batch of work items of a fanned-out run: what this batch copied,
/// `ImagesFailed` counting only images failed for good (a failed delivery is retried and is
/// not yet a failure), and `FullSnapshots` = 1 when `full` (the caller decides: this batch
/// finished the run complete and wrote its snapshot).
pub fn work_emf(report: &WorkReport, function_name: &str, full: bool, timestamp_ms: i64) -> String {
    let c = &report.counts;
    let mut props = Map::new();
    props.insert("trigger".into(), Value::from("work-item"));
    props.insert(
        "snapshot".into(),
        report
            .finalised
            .as_ref()
            .map_or(Value::Null, |f| Value::from(f.run.as_str())),
    );
    emf(
        function_name,
        timestamp_ms,
        &[
            ("ImagesBackedUp", "Count", c.images_copied),
            ("ImagesUnchanged", "Count", c.images_unchanged),
            ("ImagesFailed", "Count", report.failed_final.len() as u64),
            ("BytesWritten", "Bytes", c.bytes_written),
            ("BlobsSkipped", "Count", c.blobs_existing),
            ("LockExtensions", "Count", c.lock_extensions),
            ("FullSnapshots", "Count", u64::from(full)),
        ],
        props,
    )
}

/// One EMF document for a fanned-out run finalised by a later scheduled invocation (complete,
/// or timed out and written without its failed images): `FullSnapshots` = 1 when `full`.
pub fn finalised_emf(f: &Finalised, function_name: &str, full: bool, timestamp_ms: i64) -> String {
    let mut props = Map::new();
    props.insert("trigger".into(), Value::from("scheduled"));
    props.insert("snapshot".into(), Value::from(f.run.as_str()));
    props.insert("complete".into(), Value::from(f.complete));
    emf(
        function_name,
        timestamp_ms,
        &[("FullSnapshots", "Count", u64::from(full))],
        props,
    )
}

/// One EMF document for a restore: `ImagesRestored`, `ImagesFailed` (failures in the report:
/// images, repositories or tags that did not make it), `BytesPushed` (Bytes) and
/// `DurationMs`. A dry run reports what it planned under `dryRun`, with `ImagesRestored` 0.
pub fn restore_emf(report: &RestoreReport, function_name: &str, timestamp_ms: i64) -> String {
    let failed = report.failures.len() as u64;
    let restored = if report.dry_run {
        0
    } else {
        report.plan.len() as u64
    };
    let mut props = Map::new();
    props.insert("dryRun".into(), Value::from(report.dry_run));
    props.insert("snapshots".into(), Value::from(report.snapshots.clone()));
    emf(
        function_name,
        timestamp_ms,
        &[
            ("ImagesRestored", "Count", restored),
            ("ImagesFailed", "Count", failed),
            ("BytesPushed", "Bytes", report.bytes_pushed),
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

/// One EMF document per invocation of the drill function. `DrillChecks` = 1 always: the
/// function runs daily and drills on its day, so a missing check means the schedule or the
/// function is broken (the overdue alarm). With a drill: `DrillRuns` = 1, `DrillsPassed` or
/// `DrillsFailed` = 1, `DrillImages` (sampled), `DrillImagesFailed`, `DurationMs`.
pub fn drill_emf(report: Option<&DrillReport>, function_name: &str, timestamp_ms: i64) -> String {
    let mut props = Map::new();
    let Some(r) = report else {
        return emf(
            function_name,
            timestamp_ms,
            &[("DrillChecks", "Count", 1)],
            props,
        );
    };
    props.insert(
        "snapshot".into(),
        r.snapshot.clone().map_or(Value::Null, Value::from),
    );
    props.insert("seed".into(), Value::from(r.seed));
    emf(
        function_name,
        timestamp_ms,
        &[
            ("DrillChecks", "Count", 1),
            ("DrillRuns", "Count", 1),
            ("DrillsPassed", "Count", u64::from(r.passed)),
            ("DrillsFailed", "Count", u64::from(!r.passed)),
            ("DrillImages", "Count", r.images_sampled),
            ("DrillImagesFailed", "Count", r.failures.len() as u64),
            ("DurationMs", "Milliseconds", r.duration_ms),
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
    doc.insert("level".into(), Value::from(EMF_LEVEL));
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
            true,
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
            ("LockExtensions", "Count", 0),
            ("DurationMs", "Milliseconds", 4321),
            ("FullSnapshots", "Count", 1),
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
        let v: Value = serde_json::from_str(&backup_emf(&r, "f", "push", false, 0)).unwrap();
        assert_eq!(v["snapshot"], Value::Null);
        assert_eq!(v["FullSnapshots"], 0);
        assert_eq!(v["ImagesFailed"], 0);
        assert_eq!(v["DurationMs"], 0);
    }

    #[test]
    fn every_line_carries_a_level_that_lambdas_filter_always_passes() {
        let r = report();
        let restore = RestoreReport::default();
        for line in [
            backup_emf(&r, "f", "push", false, 0),
            restore_emf(&restore, "f", 0),
        ] {
            let v: Value = serde_json::from_str(&line).unwrap();
            // FATAL is the highest of the levels ApplicationLogLevel accepts.
            assert_eq!(v["level"], "FATAL", "{line}");
        }
    }

    #[test]
    fn restore_line_counts_failures_and_restored_images() {
        use crate::restore::PlannedImage;
        use ecr_vault_vault::Failure;
        let digest: ecr_vault_registry::Digest =
            format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let planned = PlannedImage {
            source: "team/a@x".into(),
            target: "team/a".into(),
            digest,
            tags: vec![],
            blobs_to_push: 1,
            bytes_to_push: 10,
        };
        let mut r = RestoreReport {
            images: 2,
            bytes_pushed: 10,
            plan: vec![planned],
            failures: vec![Failure {
                repository: "team/b".into(),
                reference: "sha256:00".into(),
                error: "vault object is corrupt".into(),
            }],
            duration_ms: 9,
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&restore_emf(&r, "restore", 1)).unwrap();
        assert_eq!(v["ImagesRestored"], 1);
        assert_eq!(v["ImagesFailed"], 1);
        assert_eq!(v["BytesPushed"], 10);
        assert_eq!(v["DurationMs"], 9);
        assert_eq!(v["Function"], "restore");
        r.dry_run = true;
        let v: Value = serde_json::from_str(&restore_emf(&r, "restore", 1)).unwrap();
        assert_eq!(v["ImagesRestored"], 0, "a dry run restores nothing");
        assert_eq!(v["dryRun"], true);
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
        // The same report fails the gc function only when it left errors.
        assert!(r.failure_message().is_none());
        r.errors.push(crate::gc::Skipped {
            key: "blobs/sha256/00".into(),
            reason: "AccessDenied".into(),
        });
        assert_eq!(
            r.failure_message().as_deref(),
            Some("gc finished with 1 error(s); first: blobs/sha256/00: AccessDenied")
        );
    }
}
