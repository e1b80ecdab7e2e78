//! A backup run: list → plan ([`mod@crate::plan`]) → copy closures → write the snapshot.
//!
//! One bad image never stops the run: its failure is recorded in the snapshot and the report,
//! and every other image goes on. The snapshot lists only images whose closure is in the vault.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use ecr_vault_registry::{Descriptor, Digest, Tag};
use ecr_vault_vault::{
    Counts, Failure, ImageRecord, Role, RunInfo, ScopeKind, Snapshot, SnapshotId, Vault,
};
use futures::StreamExt as _;
use serde::Serialize;

use crate::copy::Copier;
use crate::filter::Filters;
use crate::lease::{Lease, LeaseRequest};
use crate::plan::{Plan, UnchangedImage};
use crate::progress::Progress;
use crate::source::{Listing, Source, SourceImage};
use crate::{EngineError, defaults};

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
            image_concurrency: defaults::IMAGE_CONCURRENCY,
            blob_concurrency: defaults::BLOB_CONCURRENCY,
            trigger: "manual".into(),
            deadline: None,
            deadline_margin: defaults::DEADLINE_MARGIN,
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
    pub skipped: Vec<ecr_vault_vault::Skip>,
    pub deferred: Vec<String>,
    pub warnings: Vec<String>,
    /// The whole run, from before the listing to the snapshot written: the sum of `phases`.
    pub duration_ms: u64,
    pub phases: Phases,
    /// Full listing or partial capture (what retention and `latest` make of the snapshot).
    pub scope: ScopeKind,
    /// Estimated cost of this run: storage it added (per month) and its requests
    /// ([`crate::cost`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CostEstimate>,
}

impl BackupReport {
    /// The report of a run that needed no copy: one image left out, nothing written.
    pub fn skipped_only(skip: ecr_vault_vault::Skip) -> Self {
        BackupReport {
            snapshot: None,
            snapshot_key: None,
            complete: true,
            counts: Counts {
                images_skipped: 1,
                ..Counts::default()
            },
            failures: Vec::new(),
            skipped: vec![skip],
            deferred: Vec::new(),
            warnings: Vec::new(),
            duration_ms: 0,
            phases: Default::default(),
            scope: ecr_vault_vault::ScopeKind::Partial,
            cost: None,
        }
    }

    /// One structured log line for the run, and one per failed image.
    pub fn log(&self, trigger: &str) {
        let r = self;
        tracing::info!(
            trigger,
            snapshot = r.snapshot.as_ref().map(|s| s.as_str()),
            complete = r.complete,
            copied = r.counts.images_copied,
            unchanged = r.counts.images_unchanged,
            failed = r.counts.images_failed,
            deferred = r.deferred.len(),
            bytes = r.counts.bytes_written,
            duration_ms = r.duration_ms,
            list_ms = r.phases.list_ms,
            plan_ms = r.phases.plan_ms,
            copy_ms = r.phases.copy_ms,
            snapshot_ms = r.phases.snapshot_ms,
            scope = %r.scope,
            "backup run finished"
        );
        for f in &r.failures {
            tracing::warn!(
                repository = f.repository,
                reference = f.reference,
                error = f.error,
                "image failed"
            );
        }
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }
}

/// Where a run's time went, in milliseconds; the phases add up to the report's duration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phases {
    /// Listing the source (ECR API or catalog and tags).
    pub list_ms: u64,
    /// Reading the base snapshot and comparing.
    pub plan_ms: u64,
    /// Copying closures and checking locks.
    pub copy_ms: u64,
    /// Repository settings and the snapshot document.
    pub snapshot_ms: u64,
}

impl BackupOptions {
    fn lease_request(&self) -> LeaseRequest {
        LeaseRequest {
            holder: self.trigger.clone(),
            deadline: self.deadline,
        }
    }
}

/// Lists the source, plans against the vault's newest full-listing snapshot, and backs up
/// everything the filters select. Unchanged images whose recorded lock suffices are carried
/// into the new snapshot without any request.
pub async fn backup(
    source: &Source,
    vault: &Vault,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport, EngineError> {
    let started = Instant::now();
    // Before the vault is read: what the plan carries on recorded locks stays safe.
    let lease = Lease::acquire_run(vault, &opts.lease_request()).await?;
    let listing = source
        .list(&opts.filters, opts.image_concurrency.max(4))
        .await;
    let listed = Instant::now();
    // An unreadable base costs efficiency, never correctness: without one, every image goes
    // through the copier, which checks the vault before touching the registry.
    let base = crate::plan::base_snapshot(vault, &source.describe(), &opts.filters).await;
    let (base, base_warning) = match base {
        Ok(b) => (b, None),
        Err(e) => (
            None,
            Some(format!(
                "previous snapshot not read ({e}); checking every image"
            )),
        ),
    };
    let mut plan = crate::plan::compare(
        listing,
        base.as_ref(),
        &opts.filters,
        vault.options().lock,
        Utc::now(),
    );
    // The plan copied what it needs of the base; holding it through the run would keep a
    // second copy of every record (the largest thing in memory at 100,000 images).
    drop(base);
    plan.warnings.extend(base_warning);
    plan.lease = Some(lease);
    plan.timed(started, listed);
    backup_plan(source, vault, plan, opts, progress).await
}

/// Backs up the images of a listing (one image from a push event, a batch of work items)
/// without a base snapshot: each image is checked against the vault by the copier.
pub async fn backup_listing(
    source: &Source,
    vault: &Vault,
    listing: Listing,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport, EngineError> {
    let started = Instant::now();
    let lease = Lease::acquire_run(vault, &opts.lease_request()).await?;
    let mut plan = crate::plan::compare(
        listing,
        None,
        &opts.filters,
        vault.options().lock,
        Utc::now(),
    );
    plan.scope = ScopeKind::Partial;
    plan.lease = Some(lease);
    plan.timed(started, started);
    backup_plan(source, vault, plan, opts, progress).await
}

/// One unit of work: an image to capture, an unchanged one whose locks need a look, or an
/// unchanged one carried on its record whose new referrers are looked up.
enum Work {
    New(SourceImage),
    Check(UnchangedImage),
    Carry(UnchangedImage),
}

impl Work {
    fn image(&self) -> &SourceImage {
        match self {
            Work::New(i) => i,
            Work::Check(u) | Work::Carry(u) => &u.image,
        }
    }
}

/// Executes a plan: new images through the copier, unchanged ones carried (or, when their
/// recorded lock falls short or is unknown, checked with one HEAD and extended), then one
/// snapshot naming everything whose closure is in the vault. The run lease is released once
/// the snapshot is written (or the run failed).
pub async fn backup_plan(
    source: &Source,
    vault: &Vault,
    mut plan: Plan,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport, EngineError> {
    // A plan made without a lease decided what to carry before this run was protected:
    // check those images with a HEAD instead of trusting their recorded locks.
    let (lease, carry_on_record) = match plan.lease.take() {
        Some(l) => (l, true),
        None => (
            Lease::acquire_run(vault, &opts.lease_request()).await?,
            false,
        ),
    };
    // Never work past the lease: a bypassing GC may start once it has lapsed.
    let mut opts = opts.clone();
    let work_until = lease.work_until();
    opts.deadline = Some(opts.deadline.map_or(work_until, |d| d.min(work_until)));
    let result = run_plan(source, vault, plan, &opts, progress, carry_on_record).await;
    lease.release().await;
    result
}

async fn run_plan(
    source: &Source,
    vault: &Vault,
    plan: Plan,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
    carry_on_record: bool,
) -> Result<BackupReport, EngineError> {
    let started = plan.started.unwrap_or_else(Instant::now);
    let (list_ms, plan_ms) = (plan.list_ms, plan.plan_ms);
    let now = Utc::now();
    let id = SnapshotId::new(now);
    vault.ensure_layout(now).await?;
    let copier = Copier::new(
        vault.clone(),
        source.registry().clone(),
        now,
        opts.blob_concurrency,
        progress.clone(),
    )
    .with_deadline(opts.deadline, opts.deadline_margin);
    let policy = vault.options().lock;
    let mut failures = plan.failures;
    let mut warnings = plan.warnings;
    let skipped = plan.skipped;
    progress.images_total((plan.new.len() + plan.unchanged.len()) as u64);

    // Decided again with this run's clock: the plan may have been made a while ago.
    let mut carried = Vec::new();
    let mut work: Vec<Work> = plan.new.into_iter().map(|n| Work::New(n.image)).collect();
    // A signature pushed onto an image that did not change is found only by asking: through
    // the OCI referrers API, one request per unchanged image (tag-schema referrers are in the
    // listing already). ECR lists referrers as images of their own.
    let rediscover = opts.referrers && matches!(source, Source::Registry { .. });
    for u in plan.unchanged {
        if u.carried_on_record(policy, now, carry_on_record) {
            if rediscover {
                work.push(Work::Carry(u));
                continue;
            }
            let r = ImageResult::Done {
                records: carry(&u.image, &u.records),
                unchanged: true,
            };
            report_progress(progress.as_ref(), &u.image, &r);
            carried.push(r);
        } else {
            work.push(Work::Check(u));
        }
    }

    let copier = &copier;
    let progress = &progress;
    let mut results: Vec<ImageResult> = futures::stream::iter(work)
        .map(|w| async move {
            if let Some(d) = opts.deadline
                && d.saturating_duration_since(Instant::now()) < opts.deadline_margin
            {
                return ImageResult::Deferred(w.image().clone());
            }
            let r = match &w {
                Work::New(img) => capture(copier, source, img, opts.referrers).await,
                Work::Check(u) => {
                    with_new_referrers(
                        copier,
                        &u.image,
                        check_unchanged(copier, u).await,
                        rediscover,
                    )
                    .await
                }
                Work::Carry(u) => {
                    let carried = ImageResult::Done {
                        records: carry(&u.image, &u.records),
                        unchanged: true,
                    };
                    with_new_referrers(copier, &u.image, carried, true).await
                }
            };
            report_progress(progress.as_ref(), w.image(), &r);
            r
        })
        .buffer_unordered(opts.image_concurrency.max(1))
        .collect()
        .await;
    // Consumed, not drained: an emptied vector keeps its buffer to the end of the run.
    results.extend(carried);

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
    sort_records(&mut records);
    let copied_at = Instant::now();

    let repositories = store_repository_settings(copier, &plan.repositories, &mut warnings).await;

    let complete = failures.is_empty() && deferred.is_empty();
    let lock = vault.options().lock;
    let until = snapshot_lock(lock, now, &records);
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
            scope: Some(plan.scope),
        },
    };
    let (key, _) = vault.put_snapshot(&snapshot, until).await?;
    let done = Instant::now();
    // Consecutive intervals on one clock, so they add up to the whole run; the copy phase
    // starts where planning ended (a gap before it, e.g. the fan-out decision, counts there).
    let ms = |t: Instant| t.saturating_duration_since(started).as_millis() as u64;
    let planned = list_ms + plan_ms;
    let copied = ms(copied_at).max(planned);
    let phases = Phases {
        list_ms,
        plan_ms,
        copy_ms: copied - planned,
        snapshot_ms: ms(done).max(copied) - copied,
    };
    let counts_for_cost = counts.clone();
    Ok(BackupReport {
        snapshot: Some(id),
        snapshot_key: Some(key),
        complete,
        counts,
        failures,
        skipped,
        deferred,
        warnings,
        duration_ms: phases.list_ms + phases.plan_ms + phases.copy_ms + phases.snapshot_ms,
        phases,
        scope: plan.scope,
        cost: Some(crate::cost::run_estimate(
            &counts_for_cost,
            crate::cost::StorageClass::of_blobs(vault),
            vault.options().part_size as u64,
        )),
    })
}

/// A snapshot's retain-until: what it requires (`now + retention`, plus slack when every
/// record allows it), but never later than the earliest lock among the records it names, so
/// the snapshot never outlives its content.
pub(crate) fn snapshot_lock(
    policy: ecr_vault_vault::LockPolicy,
    now: chrono::DateTime<Utc>,
    records: &[ImageRecord],
) -> chrono::DateTime<Utc> {
    records
        .iter()
        .filter_map(|r| r.lock_until)
        .fold(policy.write_until(now), |a, u| a.min(u))
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
        // A blob upload stopped at the deadline with its state staged: the next run
        // continues it, so the image is carried over, not failed.
        Err(e) if e.is_deferred() => return ImageResult::Deferred(img.clone()),
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
        lock_until: Some(copied.until),
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

/// The snapshot records of an unchanged image: its recorded manifest under today's tags, and
/// its recorded referrers as they were.
/// Stores the listing's repository settings as one locked blob, named by the snapshot, so a
/// restore can recreate repositories as they were. `None` when there are none, or when they
/// could not be stored: a warning then, never a failed run.
pub(crate) async fn store_repository_settings(
    copier: &Copier,
    repos: &[ecr_vault_ecr::RepositorySettings],
    warnings: &mut Vec<String>,
) -> Option<Digest> {
    if repos.is_empty() {
        return None;
    }
    let stored = match serde_json::to_vec(repos) {
        Ok(b) => copier
            .put_json_blob(Bytes::from(b), REPOSITORIES_MEDIA_TYPE)
            .await
            .map_err(|e| format!("repository settings not stored: {e}")),
        Err(e) => Err(format!("repository settings not serialized: {e}")),
    };
    stored.map_err(|w| warnings.push(w)).ok()
}

/// The media type of the repository settings blob.
const REPOSITORIES_MEDIA_TYPE: &str = "application/vnd.ecr-vault.repositories.v1+json";

/// Snapshot order: by repository, tag, digest, without duplicates, so the same records always
/// make the same snapshot bytes.
pub(crate) fn sort_records(records: &mut Vec<ImageRecord>) {
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
}

pub(crate) fn carry(img: &SourceImage, recorded: &[ImageRecord]) -> Vec<ImageRecord> {
    let Some((own, referrers)) = recorded.split_first() else {
        return Vec::new();
    };
    let record = |tag: Option<Tag>| ImageRecord {
        tag,
        pushed_at: img.pushed_at.or(own.pushed_at),
        ..own.clone()
    };
    let mut out: Vec<ImageRecord> = if img.tags.is_empty() {
        vec![record(None)]
    } else {
        img.tags.iter().map(|t| record(Some(t.clone()))).collect()
    };
    out.extend(referrers.iter().cloned());
    out
}

/// An unchanged image whose recorded lock falls short or is unknown: one HEAD per recorded
/// manifest (the image and its referrers); the copier extends the closure where the lock
/// really falls short, reading only the vault's own copy. No registry traffic.
async fn check_unchanged(copier: &Copier, u: &UnchangedImage) -> ImageResult {
    let mut checked = Vec::with_capacity(u.records.len());
    for r in &u.records {
        match copier
            .copy_manifest(&r.repository, &r.descriptor(), 0)
            .await
        {
            Ok(c) => checked.push(ImageRecord {
                lock_until: Some(c.until),
                ..r.clone()
            }),
            Err(e) => return ImageResult::Failed(u.image.clone(), e.to_string()),
        }
    }
    ImageResult::Done {
        records: carry(&u.image, &checked),
        unchanged: true,
    }
}

/// Adds to an unchanged image's records the referrers the registry's referrers API names that
/// the records lack, capturing them. Once the API turns out unsupported, the run stops asking.
async fn with_new_referrers(
    copier: &Copier,
    img: &SourceImage,
    result: ImageResult,
    rediscover: bool,
) -> ImageResult {
    let ImageResult::Done {
        mut records,
        unchanged,
    } = result
    else {
        return result;
    };
    if !rediscover || copier.referrers_api_unsupported() {
        return ImageResult::Done { records, unchanged };
    }
    match copier.registry.referrers_api(&img.repo, &img.digest).await {
        Ok(None) => copier.mark_referrers_api_unsupported(),
        Ok(Some(found)) => {
            for d in found {
                if records
                    .iter()
                    .any(|r| r.digest == d.digest && r.role == Role::Referrer)
                {
                    continue;
                }
                match copier.copy_manifest(&img.repo, &d, 0).await {
                    Ok(c) => records.push(referrer_record(img, &img.digest, &d.digest, c)),
                    Err(e) => {
                        copier
                            .warnings_push(format!(
                                "{}@{}: new referrer {} not captured: {e}",
                                img.repo, img.digest, d.digest
                            ))
                            .await
                    }
                }
            }
        }
        Err(e) => {
            copier
                .warnings_push(format!(
                    "{}@{}: referrers not looked up: {e}",
                    img.repo, img.digest
                ))
                .await
        }
    }
    ImageResult::Done { records, unchanged }
}

/// The snapshot record of a referrer of `subject`, captured in `img`'s repository.
fn referrer_record(
    img: &SourceImage,
    subject: &Digest,
    digest: &Digest,
    c: crate::copy::Copied,
) -> ImageRecord {
    ImageRecord {
        repository: img.repo.clone(),
        tag: None,
        media_type: c.media_type,
        digest: digest.clone(),
        size: c.size,
        platform: None,
        pushed_at: None,
        role: Role::Referrer,
        subject: Some(subject.clone()),
        lock_until: Some(c.until),
    }
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
            out.push(referrer_record(img, &subject, &d.digest, c));
            queue.push((d.digest, depth + 1));
        }
    }
    Ok(out)
}
