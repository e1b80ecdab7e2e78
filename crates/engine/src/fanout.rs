//! Fan-out of a large scheduled run over SQS, and its completion with no coordinator to lose.
//!
//! When a run has more images to copy than one invocation should carry, the scheduled
//! invocation does not copy them. It writes a **run manifest** into the vault's staging area
//! and sends one work item per image to the work queue:
//!
//! ```text
//! <prefix>/staging/runs/<run>.json                          the run manifest (expected images)
//! <prefix>/staging/runs/<run>/done/<repository>/<hex>.json   one per captured image: its records
//! <prefix>/staging/runs/<run>/failed/<repository>/<hex>.json one per image that exhausted retries
//! <prefix>/snapshots/<run>.json                             the snapshot, written once
//! ```
//!
//! A worker that captures an image writes its `done` marker, then LISTs the run's staging
//! prefix. Whoever sees every expected image accounted for (done, or failed on its last
//! delivery) writes the snapshot. Its content is a function of the manifest and the markers
//! alone, and the write is put-once, so workers that race write one snapshot. A run whose
//! items never all report (lost messages, a DLQ redrive that never happened) is finalised by a
//! later scheduled run once it is older than the run timeout: an incomplete snapshot whose
//! failures name every missing image. See docs/decisions/0004-fan-out-completion.md.
//!
//! Every staging object is write-once and locked like the rest of the vault; garbage
//! collection may remove them after their lock expires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{
    Counts, Failure, ImageRecord, LockPolicy, RunInfo, RunMarker, Snapshot, SnapshotId, Vault,
    VaultError, WriteOutcome,
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::backup::{BackupOptions, ImageResult, capture};
use crate::copy::Copier;
use crate::progress::NoProgress;
use crate::source::{Listing, Source, SourceImage};

/// The `action` of a work item body.
pub const WORK_ACTION: &str = "backup-image";

/// SQS takes at most 10 entries per SendMessageBatch.
const SEND_BATCH: usize = 10;

/// Attempts per SendMessageBatch entry before the item is reported as not queued.
const SEND_ATTEMPTS: u32 = 3;

/// Markers read at once while a run is finalised.
const READ_CONCURRENCY: usize = 16;

/// Largest staging document read back.
const MAX_STAGING_BYTES: u64 = 64 * 1024 * 1024;

/// When a scheduled run fans out, and how completion is judged.
#[derive(Clone, Debug)]
pub struct FanoutOptions {
    /// The work queue's URL.
    pub queue_url: String,
    /// Fan out when more than this many images need copying; at or below it, the scheduled
    /// invocation backs up inline.
    pub threshold_images: usize,
    /// A run still missing images this long after it was planned is finalised as incomplete
    /// by the next scheduled run. Longer than maxReceiveCount × the queue's visibility timeout.
    pub run_timeout: Duration,
    /// How far back a scheduled run looks for run manifests without a snapshot.
    pub lookback: Duration,
}

impl FanoutOptions {
    /// Whether `work` images are more than one invocation should carry.
    pub fn should_fan_out(&self, work: usize) -> bool {
        work > self.threshold_images
    }
}

/// One image a run expects, and the tags it is captured under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedImage {
    pub repository: RepoName,
    pub digest: Digest,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl ExpectedImage {
    fn key(&self) -> (RepoName, Digest) {
        (self.repository.clone(), self.digest.clone())
    }

    fn name(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

impl From<&SourceImage> for ExpectedImage {
    fn from(i: &SourceImage) -> Self {
        ExpectedImage {
            repository: i.repo.clone(),
            digest: i.digest.clone(),
            tags: i.tags.clone(),
            pushed_at: i.pushed_at,
            media_type: i.media_type.clone(),
        }
    }
}

/// The staging record of a fanned-out run: everything its snapshot needs besides the markers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunManifest {
    pub version: u32,
    pub run: SnapshotId,
    pub created: DateTime<Utc>,
    pub trigger: String,
    pub source: String,
    pub filters: serde_json::Value,
    /// Images sent as work items; the run is complete when each has a `done` marker.
    pub expected: Vec<ExpectedImage>,
    /// Records of unchanged images, carried into the snapshot as they are.
    #[serde(default)]
    pub carried: Vec<ImageRecord>,
    /// Listing failures and skips, reported with the run.
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub skipped: Vec<Failure>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Digest>,
}

/// What a worker left for one captured image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneMarker {
    pub repository: RepoName,
    pub digest: Digest,
    pub records: Vec<ImageRecord>,
    /// False when the image was already in the vault (a re-delivered item).
    pub copied: bool,
    pub blobs_written: u64,
    pub blobs_existing: u64,
    pub bytes_written: u64,
    pub lock_extensions: u64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What a worker left for an image whose last delivery failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedMarker {
    pub repository: RepoName,
    pub digest: Digest,
    pub error: String,
}

/// The input of a fan-out: a listing or a plan, reduced to what is copied and what is carried.
#[derive(Debug, Default)]
pub struct FanoutInput {
    /// Images that need a worker (new, or whose locks need checking).
    pub work: Vec<SourceImage>,
    /// Records of unchanged images whose locks already cover the new snapshot.
    pub carried: Vec<ImageRecord>,
    pub failures: Vec<Failure>,
    pub skipped: Vec<Failure>,
    pub warnings: Vec<String>,
    pub repositories: Vec<ecr_vault_ecr::RepositorySettings>,
    /// The lease the plan was made under: held until the run's own lease is written.
    pub lease: Option<Arc<crate::lease::Lease>>,
    /// The clock the carry decisions used: the run's time, so that what it carried covers
    /// exactly what its snapshot requires.
    pub decided_at: Option<DateTime<Utc>>,
}

impl FanoutInput {
    /// From the planner: only new images, and unchanged ones whose locks need a look, become
    /// work; unchanged images whose recorded lock covers the new snapshot are carried with
    /// today's tags and cost no request at all.
    pub fn from_plan(plan: crate::plan::Plan, policy: LockPolicy, now: DateTime<Utc>) -> Self {
        let mut work: Vec<SourceImage> = plan.new.into_iter().map(|n| n.image).collect();
        let mut carried = Vec::new();
        // Carrying on a recorded lock is safe only under the lease the plan was made with.
        let leased = plan.lease.is_some();
        for u in plan.unchanged {
            if leased && u.lock_until.is_some() && !policy.needs_extension(u.lock_until, now) {
                carried.extend(crate::backup::carry(&u.image, &u.records));
            } else {
                work.push(u.image);
            }
        }
        FanoutInput {
            work,
            carried,
            failures: plan.failures,
            skipped: plan.skipped,
            warnings: plan.warnings,
            repositories: plan.repositories,
            lease: plan.lease,
            decided_at: Some(now),
        }
    }
}

impl From<Listing> for FanoutInput {
    /// Without a plan every listed image is work: a worker finds an unchanged image with one
    /// HEAD and writes nothing.
    fn from(l: Listing) -> Self {
        FanoutInput {
            work: l.images,
            carried: Vec::new(),
            failures: l.failures,
            skipped: l.skipped,
            warnings: l.warnings,
            repositories: l.repositories,
            lease: None,
            decided_at: None,
        }
    }
}

/// What the scheduled invocation did when it fanned out.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutReport {
    pub run: SnapshotId,
    pub manifest_key: String,
    pub queued: usize,
    pub carried: usize,
    /// Images whose work item could not be sent; the run finalises without them.
    pub not_queued: Vec<Failure>,
    pub failures: Vec<Failure>,
    pub skipped: Vec<Failure>,
    pub warnings: Vec<String>,
}

/// The body of one work item on the queue.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkItemBody<'a> {
    action: &'static str,
    repository: &'a str,
    digest: String,
    tags: Vec<&'a str>,
    run: &'a str,
}

fn manifest_key(vault: &Vault, run: &SnapshotId) -> String {
    vault.location().run_manifest_key(run)
}

fn marker_key(
    vault: &Vault,
    run: &SnapshotId,
    kind: RunMarker,
    repo: &RepoName,
    d: &Digest,
) -> String {
    vault.location().run_marker_key(run, kind, repo, d)
}

/// Writes a small JSON staging document once, locked like everything else. An existing one is
/// kept as it is: the first writer wins, and a re-delivered item changes nothing.
async fn put_once_json<T: Serialize>(
    vault: &Vault,
    key: &str,
    doc: &T,
    now: DateTime<Utc>,
) -> Result<WriteOutcome, EngineError> {
    if vault.head(key).await?.is_some() {
        return Ok(WriteOutcome::Existed);
    }
    let bytes = serde_json::to_vec(doc)
        .map_err(|e| EngineError::Config(format!("serializing {key}: {e}")))?;
    match vault
        .put_document(key, Bytes::from(bytes), "application/json", now)
        .await
    {
        Ok(o) => Ok(o),
        // Another writer got there between our HEAD and PUT with other bytes.
        Err(VaultError::Corrupt { .. }) => Ok(WriteOutcome::Existed),
        Err(e) => Err(e.into()),
    }
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    vault: &Vault,
    key: &str,
) -> Result<Option<T>, EngineError> {
    match vault.get_document(key, MAX_STAGING_BYTES).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            EngineError::Vault(VaultError::Malformed {
                key: key.to_owned(),
                reason: e.to_string(),
            })
        }),
    }
}

/// Reads a run's manifest; `None` when the run did not fan out.
pub async fn read_manifest(
    vault: &Vault,
    run: &SnapshotId,
) -> Result<Option<RunManifest>, EngineError> {
    get_json(vault, &manifest_key(vault, run)).await
}

/// Plans nothing itself: writes the run manifest for `input`, then queues one work item per
/// image. The manifest is durable before the first item is sent, so a worker always finds it.
pub async fn fan_out(
    source: &Source,
    vault: &Vault,
    sqs: &aws_sdk_sqs::Client,
    input: FanoutInput,
    opts: &BackupOptions,
    fan: &FanoutOptions,
) -> Result<FanoutReport, EngineError> {
    let now = input.decided_at.unwrap_or_else(Utc::now);
    let run = SnapshotId::new(now);
    // The run holds the vault until it is finalised (or times out): its carried records were
    // decided on recorded locks, which a bypassing GC must not pull away meanwhile.
    let run_lease =
        crate::lease::Lease::acquire_fanout(vault, &run, &opts.trigger, fan.run_timeout).await;
    if let Some(plan_lease) = &input.lease {
        plan_lease.release().await;
    }
    run_lease?;
    vault.ensure_layout(now).await?;
    let mut warnings = input.warnings;
    let repositories = store_repositories(source, vault, now, &input.repositories).await;
    let repositories = match repositories {
        Ok(d) => d,
        Err(w) => {
            warnings.push(w);
            None
        }
    };
    let mut expected: Vec<ExpectedImage> = input.work.iter().map(ExpectedImage::from).collect();
    expected.sort_by_key(|e| e.key());
    expected.dedup_by_key(|e| e.key());
    let manifest = RunManifest {
        version: 1,
        run: run.clone(),
        created: now,
        trigger: opts.trigger.clone(),
        source: source.describe(),
        filters: serde_json::to_value(opts.filters.spec()).unwrap_or_default(),
        expected,
        carried: input.carried,
        failures: input.failures,
        skipped: input.skipped,
        warnings,
        repositories,
    };
    let key = manifest_key(vault, &run);
    put_once_json(vault, &key, &manifest, now).await?;
    tracing::info!(
        run = run.as_str(),
        key,
        images = manifest.expected.len(),
        carried = manifest.carried.len(),
        "run manifest written; queueing work items"
    );
    let not_queued = send_items(sqs, &fan.queue_url, &run, &manifest.expected).await;
    Ok(FanoutReport {
        run,
        manifest_key: key,
        queued: manifest.expected.len() - not_queued.len(),
        carried: manifest.carried.len(),
        not_queued,
        failures: manifest.failures,
        skipped: manifest.skipped,
        warnings: manifest.warnings,
    })
}

async fn store_repositories(
    source: &Source,
    vault: &Vault,
    now: DateTime<Utc>,
    repos: &[ecr_vault_ecr::RepositorySettings],
) -> Result<Option<Digest>, String> {
    if repos.is_empty() {
        return Ok(None);
    }
    let bytes = serde_json::to_vec(repos)
        .map_err(|e| format!("repository settings not serialized: {e}"))?;
    let copier = Copier::new(
        vault.clone(),
        source.registry().clone(),
        now,
        1,
        Arc::new(NoProgress),
    );
    copier
        .put_json_blob(
            Bytes::from(bytes),
            "application/vnd.ecr-vault.repositories.v1+json",
        )
        .await
        .map(Some)
        .map_err(|e| format!("repository settings not stored: {e}"))
}

/// Sends the work items in batches of 10, retrying entries SQS refused. Returns the images
/// that could not be queued.
async fn send_items(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    run: &SnapshotId,
    images: &[ExpectedImage],
) -> Vec<Failure> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let mut not_queued = Vec::new();
    for chunk in images.chunks(SEND_BATCH) {
        let mut pending: BTreeMap<String, &ExpectedImage> = chunk
            .iter()
            .enumerate()
            .map(|(i, img)| (i.to_string(), img))
            .collect();
        let mut last_error = String::new();
        for attempt in 0..SEND_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = sqs.send_message_batch().queue_url(queue_url);
            for (id, img) in &pending {
                let body = WorkItemBody {
                    action: WORK_ACTION,
                    repository: img.repository.as_str(),
                    digest: img.digest.to_string(),
                    tags: img.tags.iter().map(|t| t.as_str()).collect(),
                    run: run.as_str(),
                };
                let body = match serde_json::to_string(&body) {
                    Ok(b) => b,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                match SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                {
                    Ok(entry) => req = req.entries(entry),
                    Err(e) => last_error = e.to_string(),
                }
            }
            match req.send().await {
                Ok(out) => {
                    for ok in out.successful() {
                        pending.remove(ok.id());
                    }
                    for f in out.failed() {
                        last_error = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                        if f.sender_fault() {
                            // The entry itself is refused; resending will not help.
                            if let Some(img) = pending.remove(f.id()) {
                                not_queued.push(failure(img, &last_error));
                            }
                        }
                    }
                }
                Err(e) => {
                    last_error = format!(
                        "SendMessageBatch: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(&e)
                    );
                }
            }
        }
        for img in pending.into_values() {
            not_queued.push(failure(img, &last_error));
        }
    }
    for f in &not_queued {
        tracing::error!(
            repository = f.repository,
            digest = f.reference,
            error = f.error,
            "work item not queued"
        );
    }
    not_queued
}

fn failure(img: &ExpectedImage, error: &str) -> Failure {
    Failure {
        repository: img.repository.to_string(),
        reference: img.digest.to_string(),
        error: error.to_owned(),
    }
}

/// One image of a work-item batch.
#[derive(Clone, Debug)]
pub struct WorkImage {
    pub image: SourceImage,
    /// This delivery is the last before the DLQ: a failure now is final for the run.
    pub last_attempt: bool,
}

/// An image that cannot be captured at all (gone from the source, archived): final at once.
#[derive(Clone, Debug)]
pub struct Unavailable {
    pub repository: RepoName,
    pub digest: Digest,
    pub reason: String,
}

/// What a worker did with the images of one run.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkReport {
    /// Captured (or found in the vault) and marked done.
    pub done: Vec<String>,
    /// Failed, or not started before the deadline: the message must be redelivered.
    pub retry: Vec<(RepoName, Digest)>,
    /// Images marked failed for the run (last delivery, or unavailable).
    pub failed_final: Vec<String>,
    /// Set when this worker found the run complete and wrote (or found) its snapshot.
    pub finalised: Option<Finalised>,
    /// This batch's totals, for the metrics (`images_failed` counts failed deliveries).
    pub counts: Counts,
}

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

/// Captures the images of one fanned-out run, marks each done (or failed on its last
/// delivery), then finalises the run if that made it complete.
pub async fn work(
    source: &Source,
    vault: &Vault,
    manifest: &RunManifest,
    images: Vec<WorkImage>,
    unavailable: Vec<Unavailable>,
    opts: &BackupOptions,
) -> Result<WorkReport, EngineError> {
    let lease = crate::lease::Lease::acquire_run(
        vault,
        &crate::lease::LeaseRequest {
            holder: "work-item".into(),
            deadline: opts.deadline,
        },
    )
    .await?;
    let mut opts = opts.clone();
    let work_until = lease.work_until();
    opts.deadline = Some(opts.deadline.map_or(work_until, |d| d.min(work_until)));
    let report = work_leased(source, vault, manifest, images, unavailable, &opts).await;
    lease.release().await;
    report
}

async fn work_leased(
    source: &Source,
    vault: &Vault,
    manifest: &RunManifest,
    images: Vec<WorkImage>,
    unavailable: Vec<Unavailable>,
    opts: &BackupOptions,
) -> Result<WorkReport, EngineError> {
    let run = &manifest.run;
    let results: Vec<(WorkImage, Result<DoneMarker, String>)> = futures::stream::iter(images)
        .map(|w| async move {
            if let Some(d) = opts.deadline
                && d.saturating_duration_since(Instant::now()) < opts.deadline_margin
            {
                return (
                    w,
                    Err("not started: the invocation ran out of time".to_owned()),
                );
            }
            // One copier per image, so the marker's counts are this image's own.
            let now = Utc::now();
            // With the deadline, a blob too big for this invocation stages its upload and the
            // item's redelivery resumes it instead of starting over.
            let copier = Copier::new(
                vault.clone(),
                source.registry().clone(),
                now,
                opts.blob_concurrency,
                Arc::new(NoProgress),
            )
            .with_deadline(opts.deadline, opts.deadline_margin);
            let r = match capture(&copier, source, &w.image, opts.referrers).await {
                ImageResult::Done { records, unchanged } => {
                    let s = &copier.stats;
                    Ok(DoneMarker {
                        repository: w.image.repo.clone(),
                        digest: w.image.digest.clone(),
                        records,
                        copied: !unchanged,
                        blobs_written: s.blobs_written.load(Ordering::Relaxed),
                        blobs_existing: s.blobs_existing.load(Ordering::Relaxed),
                        bytes_written: s.bytes_written.load(Ordering::Relaxed),
                        lock_extensions: s.lock_extensions.load(Ordering::Relaxed),
                        warnings: copier.take_warnings().await,
                    })
                }
                ImageResult::Failed(_, e) => Err(e),
                ImageResult::Deferred(_) => {
                    Err("not started: the invocation ran out of time".to_owned())
                }
            };
            (w, r)
        })
        .buffer_unordered(opts.image_concurrency.max(1))
        .collect()
        .await;

    let now = Utc::now();
    let mut report = WorkReport::default();
    let mut marked = false;
    for (w, r) in results {
        let (repo, digest) = (&w.image.repo, &w.image.digest);
        let name = format!("{repo}@{digest}");
        match r {
            Ok(marker) => {
                let c = &mut report.counts;
                c.images += 1;
                if marker.copied {
                    c.images_copied += 1;
                } else {
                    c.images_unchanged += 1;
                }
                c.blobs_written += marker.blobs_written;
                c.blobs_existing += marker.blobs_existing;
                c.bytes_written += marker.bytes_written;
                c.lock_extensions += marker.lock_extensions;
                let key = marker_key(vault, run, RunMarker::Done, repo, digest);
                match put_once_json(vault, &key, &marker, now).await {
                    Ok(_) => {
                        marked = true;
                        report.done.push(name);
                    }
                    Err(e) => {
                        // Captured but not recorded: the redelivery finds it in the vault.
                        tracing::warn!(image = name, error = %e, "done marker not written");
                        report.retry.push((repo.clone(), digest.clone()));
                    }
                }
            }
            Err(error) => {
                report.counts.images += 1;
                report.counts.images_failed += 1;
                tracing::warn!(
                    image = name,
                    error,
                    last = w.last_attempt,
                    "work item failed"
                );
                report.retry.push((repo.clone(), digest.clone()));
                if w.last_attempt {
                    let m = FailedMarker {
                        repository: repo.clone(),
                        digest: digest.clone(),
                        error,
                    };
                    let key = marker_key(vault, run, RunMarker::Failed, repo, digest);
                    if put_once_json(vault, &key, &m, now).await.is_ok() {
                        marked = true;
                        report.failed_final.push(name);
                    }
                }
            }
        }
    }
    for u in unavailable {
        let m = FailedMarker {
            repository: u.repository.clone(),
            digest: u.digest.clone(),
            error: u.reason,
        };
        let key = marker_key(vault, run, RunMarker::Failed, &u.repository, &u.digest);
        put_once_json(vault, &key, &m, now).await?;
        marked = true;
        report
            .failed_final
            .push(format!("{}@{}", u.repository, u.digest));
    }
    if marked {
        let status = status(vault, manifest).await?;
        if status.missing.is_empty() {
            report.finalised = Some(finalise(vault, manifest, &status).await?);
        }
    }
    Ok(report)
}

/// Which expected images of a run have a marker.
#[derive(Debug, Default)]
struct RunStatus {
    done: BTreeSet<(RepoName, Digest)>,
    failed: BTreeSet<(RepoName, Digest)>,
    /// Expected images with neither marker.
    missing: Vec<ExpectedImage>,
}

/// One LIST of the run's staging prefix.
async fn status(vault: &Vault, manifest: &RunManifest) -> Result<RunStatus, EngineError> {
    let prefix = vault.location().run_prefix(&manifest.run);
    let mut s = RunStatus::default();
    for (key, _) in vault.list_keys(&prefix).await? {
        let Some(rel) = key.strip_prefix(&prefix) else {
            continue;
        };
        match RunMarker::parse(rel) {
            Some((RunMarker::Done, r, d)) => {
                s.done.insert((r, d));
            }
            Some((RunMarker::Failed, r, d)) => {
                s.failed.insert((r, d));
            }
            _ => tracing::warn!(key, "unexpected key in a run's staging area; ignored"),
        }
    }
    s.missing = manifest
        .expected
        .iter()
        .filter(|e| {
            let k = e.key();
            !s.done.contains(&k) && !s.failed.contains(&k)
        })
        .cloned()
        .collect();
    Ok(s)
}

/// Builds the run's snapshot from its manifest and markers and writes it once. Images without
/// a `done` marker are failures: their `failed` marker's error, or `missing_reason`.
async fn finalise(
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
        if m.copied {
            counts.images_copied += 1;
        } else {
            counts.images_unchanged += 1;
        }
        counts.blobs_written += m.blobs_written;
        counts.blobs_existing += m.blobs_existing;
        counts.bytes_written += m.bytes_written;
        counts.lock_extensions += m.lock_extensions;
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
    records.sort_by(|a, b| {
        (
            a.repository.as_str(),
            a.tag.as_ref().map(|t| t.as_str()),
            &a.digest,
        )
            .cmp(&(
                b.repository.as_str(),
                b.tag.as_ref().map(|t| t.as_str()),
                &b.digest,
            ))
    });
    records.dedup();
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
            Ok(_) => true,
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
    let prefix = vault.location().runs_prefix();
    let since = now - chrono::Duration::from_std(fan.lookback).unwrap_or(chrono::Duration::MAX);
    // Run ids sort by time, so manifests older than the lookback are skipped by the listing.
    let start_after = format!("{prefix}{}", SnapshotId::new(since).as_str());
    let manifests = list_manifests(vault, &prefix, &start_after).await?;
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

/// Run ids of the manifests directly under `staging/runs/`, after `start_after`.
async fn list_manifests(
    vault: &Vault,
    prefix: &str,
    start_after: &str,
) -> Result<Vec<SnapshotId>, EngineError> {
    let mut out: Vec<SnapshotId> = vault
        .list_objects(prefix, Some(start_after), true)
        .await?
        .iter()
        .filter_map(|o| o.key.strip_prefix(prefix)?.strip_suffix(".json"))
        .filter_map(|name| SnapshotId::parse(name).ok())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans_out_only_above_the_threshold() {
        let f = FanoutOptions {
            queue_url: "http://127.0.0.1/q".into(),
            threshold_images: 2,
            run_timeout: Duration::from_secs(60),
            lookback: Duration::from_secs(60),
        };
        assert!(!f.should_fan_out(2));
        assert!(f.should_fan_out(3));
    }
}
