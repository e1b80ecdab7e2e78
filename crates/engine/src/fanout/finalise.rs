//! Finalising a fanned-out run: its snapshot, built from the manifest and the markers alone
//! and written put-once, so racing finalisers write one snapshot; and the sweep each
//! scheduled run makes for earlier runs that completed unseen or timed out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ecr_vault_registry::{Digest, RepoName};
use ecr_vault_vault::{
    Counts, Failure, ImageRecord, RunInfo, RunMarker, Snapshot, SnapshotId, Vault, VaultError,
    WriteOutcome,
};
use futures::StreamExt as _;
use serde::Serialize;

use super::FanoutOptions;
use super::state::{
    DoneMarker, ExpectedImage, FailedMarker, RunManifest, RunStatus, get_json, marker_key,
    read_manifest, runs_since, status,
};
use crate::EngineError;

/// Markers read at once while a run is finalised.
const READ_CONCURRENCY: usize = 16;

/// A run whose snapshot was written (or was already there).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finalised {
    pub run: SnapshotId,
    pub snapshot_key: String,
    pub complete: bool,
    pub written: bool,
    pub images: usize,
    pub failures: Vec<Failure>,
}

impl Finalised {
    /// One structured log line: a warning when the run ended incomplete.
    pub fn log(&self) {
        let f = self;
        if f.complete {
            tracing::info!(
                run = f.run.as_str(),
                snapshot = f.snapshot_key,
                images = f.images,
                written = f.written,
                "fanned-out run complete: snapshot written"
            );
        } else {
            tracing::warn!(
                run = f.run.as_str(),
                snapshot = f.snapshot_key,
                images = f.images,
                failed = f.failures.len(),
                written = f.written,
                "fanned-out run INCOMPLETE: snapshot written without the failed images"
            );
        }
    }
}

/// Builds the run's snapshot from its manifest and markers and writes it once. Images without
/// a `done` marker are failures: their `failed` marker's error, or `missing_reason`.
pub(super) async fn finalise(
    vault: &Vault,
    manifest: &RunManifest,
    status: &RunStatus,
) -> Result<Finalised, EngineError> {
    let run = &manifest.run;
    let snapshot_key = vault.location().snapshot_key(run);
    let expected: BTreeSet<(RepoName, Digest)> =
        manifest.expected.iter().map(ExpectedImage::key).collect();
    // Markers are read only for expected images: a stray marker cannot add to the snapshot.
    let done_keys: Vec<String> = status
        .done
        .iter()
        .filter(|k| expected.contains(*k))
        .map(|(r, d)| marker_key(vault, run, RunMarker::Done, r, d))
        .collect();
    let failed_keys: Vec<String> = manifest
        .expected
        .iter()
        .map(ExpectedImage::key)
        .filter(|k| !status.done.contains(k) && status.failed.contains(k))
        .map(|(r, d)| marker_key(vault, run, RunMarker::Failed, &r, &d))
        .collect();
    let done: Vec<Result<Option<DoneMarker>, EngineError>> = futures::stream::iter(done_keys)
        .map(|k| async move { get_json::<DoneMarker>(vault, &k).await })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;
    let failed: Vec<Result<Option<FailedMarker>, EngineError>> = futures::stream::iter(failed_keys)
        .map(|k| async move { get_json::<FailedMarker>(vault, &k).await })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;

    let mut records: Vec<ImageRecord> = manifest.carried.clone();
    let mut counts = Counts::default();
    let mut warnings = manifest.warnings.clone();
    let mut captured: BTreeSet<(RepoName, Digest)> = BTreeSet::new();
    for m in done {
        let Some(m) = m? else { continue };
        m.add_to(&mut counts);
        warnings.extend(m.warnings);
        records.extend(m.records);
        captured.insert((m.repository, m.digest));
    }
    let mut errors: BTreeMap<(RepoName, Digest), String> = BTreeMap::new();
    for m in failed {
        if let Some(m) = m? {
            errors.insert((m.repository, m.digest), m.error);
        }
    }
    let mut failures = manifest.failures.clone();
    for e in &manifest.expected {
        let k = e.key();
        if captured.contains(&k) {
            continue;
        }
        let error = errors.remove(&k).unwrap_or_else(|| {
            format!(
                "not backed up: no worker reported this image before the run was finalised \
                 (look for its work item in the dead-letter queue; run {run})"
            )
        });
        failures.push(Failure {
            repository: e.repository.to_string(),
            reference: e.digest.to_string(),
            error: format!("{}: {error}", e.name()),
        });
    }
    let carried_images: BTreeSet<(&RepoName, &Digest)> = manifest
        .carried
        .iter()
        .map(|r| (&r.repository, &r.digest))
        .collect();
    counts.images_unchanged += carried_images.len() as u64;
    counts.images_failed = (manifest.expected.len() - captured.len()) as u64;
    counts.images = counts.images_copied + counts.images_unchanged + counts.images_failed;
    counts.images_skipped = manifest.skipped.len() as u64;
    crate::backup::sort_records(&mut records);
    warnings.sort();
    warnings.dedup();
    let complete = failures.is_empty();
    let lock = vault.options().lock;
    // `..Default::default()` keeps this compiling as optional run fields are added.
    #[allow(clippy::needless_update)]
    let snapshot = Snapshot {
        id: run.clone(),
        // The manifest's time, not now: racing finalisers must produce the same bytes.
        created: manifest.created,
        images: records,
        run: RunInfo {
            trigger: manifest.trigger.clone(),
            source: manifest.source.clone(),
            filters: manifest.filters.clone(),
            complete,
            counts,
            failures: failures.clone(),
            warnings,
            repositories: manifest.repositories.clone(),
            retain_until: Some(lock.required_until(manifest.created)),
            scope: Some(ecr_vault_vault::ScopeKind::Full),
            ..RunInfo::default()
        },
    };
    // Counted from the run's start, like every lock its workers set, and never past the
    // earliest lock among its records.
    let until = crate::backup::snapshot_lock(lock, manifest.created, &snapshot.images);
    let images = snapshot.images.len();
    let written = if vault.head(&snapshot_key).await?.is_some() {
        false
    } else {
        match vault.put_snapshot(&snapshot, until).await {
            // Another finaliser may have written the same bytes since the HEAD: then it did.
            Ok((_, outcome)) => outcome == WriteOutcome::Written,
            // A racing finaliser with other markers in view wrote first: its snapshot stands.
            Err(VaultError::Corrupt { .. }) => false,
            Err(e) => return Err(e.into()),
        }
    };
    crate::lease::release_run(vault, run).await;
    tracing::info!(
        run = run.as_str(),
        snapshot_key,
        complete,
        written,
        images,
        failed = failures.len(),
        "fanned-out run finalised"
    );
    Ok(Finalised {
        run: run.clone(),
        snapshot_key,
        complete,
        written,
        images,
        failures,
    })
}

/// A run manifest without a snapshot, as the next scheduled run found it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRun {
    pub run: SnapshotId,
    pub expected: usize,
    pub done: usize,
    pub failed: usize,
}

/// What a scheduled run found among earlier fanned-out runs.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingReport {
    /// Runs finalised now: complete ones whose snapshot was missing, and timed-out ones.
    pub finalised: Vec<Finalised>,
    /// Runs still within their timeout with images outstanding.
    pub pending: Vec<PendingRun>,
}

/// Finds run manifests of the last `lookback` without a snapshot and finalises those that are
/// complete or older than `run_timeout` (then as incomplete). Two LISTs plus, per pending run,
/// one GET and one LIST.
pub async fn finalise_pending(
    vault: &Vault,
    fan: &FanoutOptions,
    now: DateTime<Utc>,
) -> Result<PendingReport, EngineError> {
    // A lookback too long to subtract reaches back to the start of time.
    let since = chrono::Duration::from_std(fan.lookback)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let manifests = runs_since(vault, since).await?;
    if manifests.is_empty() {
        return Ok(PendingReport::default());
    }
    let snapshots: BTreeSet<SnapshotId> = vault.list_snapshots().await?.into_iter().collect();
    let mut out = PendingReport::default();
    let timeout = chrono::Duration::from_std(fan.run_timeout).unwrap_or(chrono::Duration::MAX);
    for run in manifests.into_iter().filter(|r| !snapshots.contains(r)) {
        let Some(manifest) = read_manifest(vault, &run).await? else {
            continue;
        };
        let status = status(vault, &manifest).await?;
        if status.missing.is_empty() || manifest.created + timeout <= now {
            out.finalised
                .push(finalise(vault, &manifest, &status).await?);
        } else {
            out.pending.push(PendingRun {
                run,
                expected: manifest.expected.len(),
                done: status.done.len(),
                failed: status.failed.len(),
            });
        }
    }
    Ok(out)
}
