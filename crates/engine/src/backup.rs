//! A backup run: list → plan → copy closures → write the snapshot.
//!
//! One bad image never stops the run: its failure is recorded in the snapshot and the report,
//! and every other image goes on. The snapshot lists only images whose closure is in the vault.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use ecr_vault_registry::{Descriptor, Digest};
use ecr_vault_vault::{Counts, Failure, ImageRecord, Role, RunInfo, Snapshot, SnapshotId, Vault};
use futures::StreamExt as _;
use serde::Serialize;

use crate::EngineError;
use crate::copy::Copier;
use crate::filter::Filters;
use crate::progress::Progress;
use crate::source::{Listing, Source, SourceImage};

/// How a backup runs.
#[derive(Clone)]
pub struct BackupOptions {
    pub filters: Filters,
    /// Images copied at once.
    pub image_concurrency: usize,
    /// Blob transfers at once, across all images.
    pub blob_concurrency: usize,
    /// `scheduled`, `push`, `manual`, `work-item`.
    pub trigger: String,
    /// Stop starting new images when less than `deadline_margin` remains before this.
    pub deadline: Option<Instant>,
    pub deadline_margin: Duration,
    /// Look up OCI referrers (signatures, SBOMs) of each newly captured image.
    pub referrers: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            filters: Filters::all(),
            image_concurrency: 4,
            blob_concurrency: 8,
            trigger: "manual".into(),
            deadline: None,
            deadline_margin: Duration::from_secs(60),
            referrers: true,
        }
    }
}

/// What a run did, for the CLI's `--output json`, the functions' responses and metrics.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub snapshot: Option<SnapshotId>,
    pub snapshot_key: Option<String>,
    pub complete: bool,
    pub counts: Counts,
    pub failures: Vec<Failure>,
    pub skipped: Vec<Failure>,
    pub deferred: Vec<String>,
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

impl BackupReport {
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }
}

/// Lists the source and backs up everything the filters select.
pub async fn backup(
    source: &Source,
    vault: &Vault,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport, EngineError> {
    let listing = source
        .list(&opts.filters, opts.image_concurrency.max(4))
        .await;
    backup_listing(source, vault, listing, opts, progress).await
}

/// Backs up the images of a listing (a full listing, or one image from a push event).
pub async fn backup_listing(
    source: &Source,
    vault: &Vault,
    listing: Listing,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport, EngineError> {
    let started = Instant::now();
    let now = Utc::now();
    let id = SnapshotId::new(now);
    vault.ensure_layout(now).await?;
    let copier = Copier::new(
        vault.clone(),
        source.registry().clone(),
        now,
        opts.blob_concurrency,
        progress.clone(),
    );
    let mut failures = listing.failures;
    let mut warnings = listing.warnings;
    let skipped = listing.skipped;
    let images = listing.images;
    progress.images_total(images.len() as u64);

    let copier = &copier;
    let progress = &progress;
    let results: Vec<ImageResult> = futures::stream::iter(images)
        .map(|img| async move {
            if let Some(d) = opts.deadline
                && d.saturating_duration_since(Instant::now()) < opts.deadline_margin
            {
                return ImageResult::Deferred(img);
            }
            let r = capture(copier, source, &img, opts.referrers).await;
            report_progress(progress.as_ref(), &img, &r);
            r
        })
        .buffer_unordered(opts.image_concurrency.max(1))
        .collect()
        .await;

    let mut records = Vec::new();
    let mut counts = Counts::default();
    let mut deferred = Vec::new();
    for r in results {
        counts.images += 1;
        match r {
            ImageResult::Done {
                records: mut recs,
                unchanged,
            } => {
                if unchanged {
                    counts.images_unchanged += 1;
                } else {
                    counts.images_copied += 1;
                }
                records.append(&mut recs);
            }
            ImageResult::Failed(img, e) => {
                counts.images_failed += 1;
                failures.push(Failure {
                    repository: img.repo.to_string(),
                    reference: img.digest.to_string(),
                    error: e,
                });
            }
            ImageResult::Deferred(img) => deferred.push(format!("{}@{}", img.repo, img.digest)),
        }
    }
    counts.images_skipped = skipped.len() as u64;
    let s = &copier.stats;
    counts.blobs_written = s.blobs_written.load(Ordering::Relaxed);
    counts.blobs_existing = s.blobs_existing.load(Ordering::Relaxed);
    counts.bytes_written = s.bytes_written.load(Ordering::Relaxed);
    counts.lock_extensions = s.lock_extensions.load(Ordering::Relaxed);
    warnings.extend(copier.take_warnings().await);
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

    let repositories = if listing.repositories.is_empty() {
        None
    } else {
        match serde_json::to_vec(&listing.repositories) {
            Ok(b) => match copier
                .put_json_blob(
                    Bytes::from(b),
                    "application/vnd.ecr-vault.repositories.v1+json",
                )
                .await
            {
                Ok(d) => Some(d),
                Err(e) => {
                    warnings.push(format!("repository settings not stored: {e}"));
                    None
                }
            },
            Err(e) => {
                warnings.push(format!("repository settings not serialized: {e}"));
                None
            }
        }
    };

    let complete = failures.is_empty() && deferred.is_empty();
    let lock = vault.options().lock;
    // The snapshot is locked no longer than the earliest lock among what it references, so
    // the snapshot never outlives its content.
    let until = lock.write_until(now);
    let snapshot = Snapshot {
        id: id.clone(),
        created: now,
        images: records,
        run: RunInfo {
            trigger: opts.trigger.clone(),
            source: source.describe(),
            filters: serde_json::to_value(opts.filters.spec()).unwrap_or_default(),
            complete,
            counts: counts.clone(),
            failures: failures.clone(),
            warnings: warnings.clone(),
            repositories,
            retain_until: Some(lock.required_until(now)),
        },
    };
    let key = vault.put_snapshot(&snapshot, until).await?;
    Ok(BackupReport {
        snapshot: Some(id),
        snapshot_key: Some(key),
        complete,
        counts,
        failures,
        skipped,
        deferred,
        warnings,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

pub(crate) enum ImageResult {
    Done {
        records: Vec<ImageRecord>,
        unchanged: bool,
    },
    Failed(SourceImage, String),
    Deferred(SourceImage),
}

fn report_progress(progress: &dyn Progress, img: &SourceImage, r: &ImageResult) {
    let outcome = match r {
        ImageResult::Done {
            unchanged: true, ..
        } => "unchanged",
        ImageResult::Done { .. } => "copied",
        ImageResult::Failed(..) => "failed",
        ImageResult::Deferred(_) => "deferred",
    };
    let image = format!("{}@{}", img.repo, img.digest);
    tracing::info!(%image, outcome, "image");
    progress.image_done(&image, outcome);
}

/// Captures one image and, for a newly captured one, its referrers.
pub(crate) async fn capture(
    copier: &Copier,
    source: &Source,
    img: &SourceImage,
    referrers: bool,
) -> ImageResult {
    let desc = Descriptor {
        media_type: img.media_type.clone().unwrap_or_default(),
        digest: img.digest.clone(),
        size: 0,
        platform: None,
        artifact_type: None,
        urls: Vec::new(),
        annotations: Default::default(),
    };
    let copied = match copier.copy_manifest(&img.repo, &desc, 0).await {
        Ok(c) => c,
        Err(e) => return ImageResult::Failed(img.clone(), e.to_string()),
    };
    let unchanged = !copied.written;
    let record = |tag| ImageRecord {
        repository: img.repo.clone(),
        tag,
        media_type: copied.media_type.clone(),
        digest: img.digest.clone(),
        size: copied.size,
        platform: None,
        pushed_at: img.pushed_at,
        role: Role::Image,
        subject: None,
    };
    let mut records: Vec<ImageRecord> = if img.tags.is_empty() {
        vec![record(None)]
    } else {
        img.tags.iter().map(|t| record(Some(t.clone()))).collect()
    };
    // Referrers of a new image (signatures, SBOMs). ECR lists them as images of their own.
    if referrers && !unchanged && matches!(source, Source::Registry { .. }) {
        match referrer_records(copier, img).await {
            Ok(mut r) => records.append(&mut r),
            Err(e) => {
                copier
                    .warnings_push(format!(
                        "{}@{}: referrers not captured: {e}",
                        img.repo, img.digest
                    ))
                    .await
            }
        }
    }
    ImageResult::Done { records, unchanged }
}

async fn referrer_records(copier: &Copier, img: &SourceImage) -> Result<Vec<ImageRecord>, String> {
    let mut out = Vec::new();
    let mut queue: Vec<(Digest, u32)> = vec![(img.digest.clone(), 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((subject, depth)) = queue.pop() {
        if depth > 3 || !seen.insert(subject.clone()) {
            continue;
        }
        let found = copier
            .registry
            .referrers(&img.repo, &subject)
            .await
            .map_err(|e| e.to_string())?;
        for d in found.manifests {
            let c = copier
                .copy_manifest(&img.repo, &d, 0)
                .await
                .map_err(|e| format!("referrer {}: {e}", d.digest))?;
            out.push(ImageRecord {
                repository: img.repo.clone(),
                tag: None,
                media_type: c.media_type,
                digest: d.digest.clone(),
                size: c.size,
                platform: None,
                pushed_at: None,
                role: Role::Referrer,
                subject: Some(subject.clone()),
            });
            queue.push((d.digest, depth + 1));
        }
    }
    Ok(out)
}
