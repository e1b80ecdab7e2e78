//! A worker: captures the images of one work-item batch as an inline run would, leaves a
//! marker for each, then judges completion in two levels: each repository it wrote markers in
//! (a LIST of that repository's markers, and a complete marker when none is missing), then,
//! if one of them is complete, the run (a LIST of the complete markers, one per repository).
//! Neither LIST grows with the run's images, so a worker's S3 work does not either; only the
//! worker that finalises reads every marker. See docs/decisions/0004-fan-out-completion.md.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;
use ecr_vault_registry::{Digest, RepoName};
use ecr_vault_vault::{Counts, RunMarker, Vault};
use futures::StreamExt as _;
use serde::Serialize;

use super::finalise::{Finalised, finalise};
use super::state::{
    DoneMarker, FailedMarker, IndexedManifest, complete_repositories, marker_key, put_once_json,
    repository_status, status,
};
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
    manifest: &IndexedManifest,
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
/// then judges the repositories it marked, and the run, for completion.
async fn mark(
    vault: &Vault,
    manifest: &IndexedManifest,
    results: Vec<(Attempt, Result<DoneMarker, String>)>,
    unavailable: Vec<Unavailable>,
) -> Result<WorkReport, EngineError> {
    let run = &manifest.manifest.run;
    let now = Utc::now();
    let mut report = WorkReport::default();
    // Repositories with a marker of this batch (written now, or found from a delivery before).
    let mut marked: BTreeSet<RepoName> = BTreeSet::new();
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
                        marked.insert(repo.clone());
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
                        marked.insert(repo.clone());
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
        report
            .failed_final
            .push(format!("{}@{}", u.repository, u.digest));
        marked.insert(u.repository);
    }
    report.finalised = complete(vault, manifest, &marked).await?;
    Ok(report)
}

/// Writes the complete marker of each repository in `marked` that has every expected image
/// marked, then, if there was one, finalises the run when every repository has its complete
/// marker. Each LIST follows this worker's own PUTs at the level it judges: why racing
/// workers cannot all miss the end is in the module docs of [`super`].
async fn complete(
    vault: &Vault,
    manifest: &IndexedManifest,
    marked: &BTreeSet<RepoName>,
) -> Result<Option<Finalised>, EngineError> {
    let run = &manifest.manifest.run;
    let mut any_complete = false;
    for repo in marked {
        let Some(m) = repository_status(vault, manifest, repo).await? else {
            continue;
        };
        let key = vault.location().run_complete_key(run, repo);
        put_once_json(vault, &key, &m, Utc::now()).await?;
        any_complete = true;
    }
    if !any_complete {
        return Ok(None);
    }
    let complete = complete_repositories(vault, run).await?;
    if !manifest.repositories().all(|r| complete.contains(r)) {
        return Ok(None);
    }
    // The markers are the evidence; the complete markers only said it was time to read them.
    let status = status(vault, &manifest.manifest).await?;
    if !status.missing.is_empty() {
        tracing::warn!(
            run = run.as_str(),
            missing = status.missing.len(),
            "every repository is marked complete but images lack a marker; \
             the next scheduled run judges the run"
        );
        return Ok(None);
    }
    Ok(Some(finalise(vault, &manifest.manifest, &status).await?))
}
