//! A worker: captures the images of one work-item batch as an inline run would, leaves a
//! marker for each, and finalises the run when its marker completed the set.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use ecr_vault_registry::{Digest, RepoName};
use ecr_vault_vault::{Counts, RunMarker, Vault};
use futures::StreamExt as _;
use serde::Serialize;

use super::finalise::{Finalised, finalise};
use super::state::{DoneMarker, FailedMarker, RunManifest, marker_key, put_once_json, status};
use crate::EngineError;
use crate::backup::{BackupOptions, ImageResult, capture};
use crate::copy::Copier;
use crate::progress::NoProgress;
use crate::source::{Source, SourceImage};

/// One attempt at capturing an image of a fanned-out run: the image as the source describes
/// it now (looked up from a [`super::WorkItem`]), and whether a failure is final.
#[derive(Clone, Debug)]
pub struct Attempt {
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

/// Captures the images of one fanned-out run, marks each done (or failed on its last
/// delivery), then finalises the run if that made it complete.
pub async fn work(
    source: &Source,
    vault: &Vault,
    manifest: &RunManifest,
    images: Vec<Attempt>,
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
    let captured = capture_batch(source, vault, images, &opts).await;
    let report = mark(vault, manifest, captured, unavailable).await;
    lease.release().await;
    report
}

/// Captures each image with bounded concurrency: its done marker, or why it failed.
async fn capture_batch(
    source: &Source,
    vault: &Vault,
    images: Vec<Attempt>,
    opts: &BackupOptions,
) -> Vec<(Attempt, Result<DoneMarker, String>)> {
    futures::stream::iter(images)
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
        .await
}

/// Leaves a marker per image (failed ones only on their last delivery, or when unavailable),
/// then finalises the run if a marker was written and none is missing.
async fn mark(
    vault: &Vault,
    manifest: &RunManifest,
    results: Vec<(Attempt, Result<DoneMarker, String>)>,
    unavailable: Vec<Unavailable>,
) -> Result<WorkReport, EngineError> {
    let run = &manifest.run;
    let now = Utc::now();
    let mut report = WorkReport::default();
    let mut marked = false;
    for (w, r) in results {
        let (repo, digest) = (&w.image.repo, &w.image.digest);
        let name = format!("{repo}@{digest}");
        match r {
            Ok(marker) => {
                report.counts.images += 1;
                marker.add_to(&mut report.counts);
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
