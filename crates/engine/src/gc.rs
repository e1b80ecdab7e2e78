//! Garbage collection: expire snapshots by policy, then delete what nothing live references
//! and no lock protects. The only code in ecr-vault that deletes.
//!
//! Rules, in the order they are applied:
//! 1. **Snapshots** are ranked within their scope group (full or partial reach, source,
//!    filters: restic's `forget --group-by`), and kept if any rule keeps them there: the last N,
//!    the newest of each day for D days, the newest of each month for M months; each group's
//!    newest is always kept, and so is every snapshot `latest` is made of
//!    ([`crate::select::latest`]). A push snapshot therefore never displaces a full one. An
//!    expired snapshot's record is deleted only once its own lock has expired; until then it
//!    stays live, and so does everything it references.
//! 2. **Blobs, manifests, indexes** (`blobs/sha256/…`) are deleted only when no live snapshot's
//!    closure (snapshot → manifests/indexes → configs, layers, subjects, read from the vault's
//!    own copies) names them **and** the lock of the exact version has expired. Deletion is
//!    `DeleteObject` with the version id, after re-reading that version's retention, so a lock
//!    a concurrent backup extended in between (it extends before it references) wins.
//! 3. **Multipart uploads** older than a threshold are aborted, unless a staging record
//!    (`<prefix>/staging/…`) younger than the threshold names the upload id: a resumable
//!    upload in progress.
//!
//! Everything else (`oci-layout`, `events/` audit records, staging records, unknown keys) is
//! never touched. COMPLIANCE locks are never bypassed; GOVERNANCE locks are bypassed only with
//! [`GcOptions::bypass_governance`], and only while no backup holds a lease
//! ([`crate::lease`]): a running backup may reuse an unreferenced blob without a request, and
//! the lock it relied on is exactly what bypass ignores. A dry run and `apply` compute the same
//! [`GcPlan`].

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Datelike as _, Duration, Utc};
use ecr_vault_registry::manifest::{MAX_MANIFEST_BYTES, kind_of};
use ecr_vault_registry::{Descriptor, Digest, Manifest};
use ecr_vault_vault::{LockMode, ScopeGroup, Snapshot, SnapshotId, Vault, VersionLock};
use serde::Serialize;

use crate::cost::{self, CostEstimate, StorageClass, Usage};
use crate::{EngineError, defaults};

/// What to keep and what GC may do.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Keep the newest N snapshots.
    pub keep_last: usize,
    /// Keep the newest snapshot of each day for this many days.
    pub keep_daily_days: u32,
    /// Keep the newest snapshot of each calendar month for this many months.
    pub keep_monthly_months: u32,
    /// Multipart uploads initiated longer ago than this are abandoned.
    pub abandoned_upload_age: std::time::Duration,
    /// Delete GOVERNANCE-locked versions before their lock expires (needs
    /// `s3:BypassGovernanceRetention`). COMPLIANCE locks are never bypassed. Refused while a
    /// backup holds a lease.
    pub bypass_governance: bool,
    /// How long a GC with bypass may run; it stops bypassing once this has passed, because
    /// backups wait for its lease only that long.
    pub bypass_window: std::time::Duration,
    /// Clock skew tolerated between this host and the hosts that write leases.
    pub lease_skew: std::time::Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            keep_last: defaults::GC_KEEP_LAST,
            keep_daily_days: defaults::GC_KEEP_DAILY_DAYS,
            keep_monthly_months: defaults::GC_KEEP_MONTHLY_MONTHS,
            abandoned_upload_age: std::time::Duration::from_secs(
                u64::from(defaults::GC_UPLOAD_DAYS) * 24 * 3600,
            ),
            bypass_governance: false,
            bypass_window: crate::lease::GC_BYPASS_WINDOW,
            lease_skew: crate::lease::CLOCK_SKEW,
        }
    }
}

/// One object version GC would delete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    /// `snapshot` or `blob`.
    pub kind: &'static str,
    pub storage_class: StorageClass,
    /// Set when the version is still GOVERNANCE-locked and will be deleted with bypass.
    pub bypass_until: Option<DateTime<Utc>>,
}

/// An unreferenced version still locked: it stays until its lock expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub mode: Option<LockMode>,
    pub retain_until: DateTime<Utc>,
}

/// A multipart upload GC would abort.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Abandoned {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// A snapshot the policy expires, and whether its record can go now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiredSnapshot {
    pub id: SnapshotId,
    /// The record's lock still holds until then: the snapshot stays live until a later run.
    pub locked_until: Option<DateTime<Utc>>,
}

/// What GC would do, computed the same way for a dry run and for `apply`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcPlan {
    pub computed_at: DateTime<Utc>,
    /// Every snapshot, with the scope group it was ranked in.
    pub groups: Vec<(SnapshotId, ScopeGroup)>,
    /// The snapshots `latest` is made of (all kept).
    pub latest: Vec<SnapshotId>,
    pub snapshots_kept: Vec<SnapshotId>,
    pub snapshots_expired: Vec<ExpiredSnapshot>,
    /// Objects under `blobs/` that live snapshots reference.
    pub referenced_objects: u64,
    /// Versions to delete: expired snapshot records first, then blobs.
    pub delete: Vec<Deletion>,
    /// Unreferenced versions still locked.
    pub held: Vec<Held>,
    pub uploads_to_abort: Vec<Abandoned>,
    /// Old uploads kept because a young staging record names them.
    pub uploads_resumable: u64,
    pub bytes_reclaimed: u64,
    /// Whether GOVERNANCE locks may be bypassed in this run (asked for, and no backup held a
    /// lease).
    pub bypass: bool,
    /// What the plan noticed but does not act on: a referrer whose subject is not in the vault,
    /// bypass refused because a backup is running.
    pub warnings: Vec<String>,
    /// Monthly storage of `blobs/` and `snapshots/` now, and after the plan.
    pub cost_before: CostEstimate,
    pub cost_after: CostEstimate,
}

/// A version or upload that `apply` left alone, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// The outcome of a GC run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub applied: bool,
    pub plan: GcPlan,
    pub deleted: u64,
    pub bytes_deleted: u64,
    pub uploads_aborted: u64,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<Skipped>,
}

impl GcReport {
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// One structured log line for the run.
    pub fn log(&self) {
        tracing::info!(
            applied = self.applied,
            deleted = self.deleted,
            bytes_deleted = self.bytes_deleted,
            would_delete = self.plan.delete.len(),
            bytes_reclaimable = self.plan.bytes_reclaimed,
            uploads_aborted = self.uploads_aborted,
            errors = self.errors.len(),
            "gc finished"
        );
    }

    /// The error of a run that left errors: their number and the first, so an alarm's
    /// reader sees what to look at; `None` when the run left none.
    pub fn failure_message(&self) -> Option<String> {
        let first = self.errors.first()?;
        Some(format!(
            "gc finished with {} error(s); first: {}: {}",
            self.errors.len(),
            first.key,
            first.reason
        ))
    }
}

/// Plans and, with `apply`, carries out a GC run.
pub async fn gc(vault: &Vault, opts: &GcOptions, apply: bool) -> Result<GcReport, EngineError> {
    if apply && opts.bypass_governance {
        // Announce the bypass before deciding anything: a backup that starts from now on waits
        // for this lease, and one already running (seen by the plan) turns bypass off.
        let lease = crate::lease::Lease::acquire_gc(vault, opts.bypass_window).await?;
        let stop_bypass_at = lease.expires() - chrono_span(opts.lease_skew);
        // Boxed: the nested futures are otherwise deep enough to hit the compiler's limit.
        let result = match Box::pin(plan(vault, opts)).await {
            Ok(plan) => Ok(Box::pin(execute(vault, plan, opts, stop_bypass_at)).await),
            Err(e) => Err(e),
        };
        lease.release().await;
        return result;
    }
    let plan = Box::pin(plan(vault, opts)).await?;
    if apply {
        Ok(Box::pin(execute(vault, plan, opts, DateTime::<Utc>::MAX_UTC)).await)
    } else {
        Ok(GcReport {
            applied: false,
            plan,
            deleted: 0,
            bytes_deleted: 0,
            uploads_aborted: 0,
            skipped: Vec::new(),
            errors: Vec::new(),
        })
    }
}

fn chrono_span(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// The snapshots the policy keeps: the rules of [`keep_snapshots`] applied within each scope
/// group, so snapshots of one reach never push those of another out of the count.
pub fn keep_by_group(
    snapshots: &[(SnapshotId, ScopeGroup)],
    opts: &GcOptions,
    now: DateTime<Utc>,
) -> BTreeSet<SnapshotId> {
    let mut groups: BTreeMap<&ScopeGroup, Vec<SnapshotId>> = BTreeMap::new();
    for (id, g) in snapshots {
        groups.entry(g).or_default().push(id.clone());
    }
    groups
        .into_values()
        .flat_map(|ids| keep_snapshots(&ids, opts, now))
        .collect()
}

/// The snapshots one group's policy keeps, from their ids alone (ids encode the time).
pub fn keep_snapshots(
    ids: &[SnapshotId],
    opts: &GcOptions,
    now: DateTime<Utc>,
) -> BTreeSet<SnapshotId> {
    let mut newest_first = ids.to_vec();
    newest_first.sort();
    newest_first.reverse();
    let mut keep: BTreeSet<SnapshotId> = newest_first
        .iter()
        .take(opts.keep_last.max(1))
        .cloned()
        .collect();
    let daily_from = now - Duration::days(i64::from(opts.keep_daily_days));
    let month_index = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
    let mut days = HashSet::new();
    let mut months = HashSet::new();
    for id in &newest_first {
        let Some(t) = id.time() else {
            keep.insert(id.clone());
            continue;
        };
        if opts.keep_daily_days > 0 && t > daily_from && days.insert(t.date_naive()) {
            keep.insert(id.clone());
        }
        if opts.keep_monthly_months > 0
            && month_index(now) - month_index(t) < i64::from(opts.keep_monthly_months)
            && months.insert(month_index(t))
        {
            keep.insert(id.clone());
        }
    }
    keep
}

#[derive(Clone, Debug)]
struct Version {
    key: String,
    version_id: String,
    size: u64,
    class: StorageClass,
}

impl Version {
    /// Reads this version's lock now: the deletion GC may make, or the lock that holds it.
    async fn judge(
        &self,
        vault: &Vault,
        kind: &'static str,
        now: DateTime<Utc>,
        bypass: bool,
    ) -> Result<Result<Deletion, VersionLock>, EngineError> {
        let lock = vault
            .version_retention(&self.key, Some(&self.version_id))
            .await?;
        Ok(deletable(lock, now, bypass).map(|bypass_until| Deletion {
            key: self.key.clone(),
            version_id: self.version_id.clone(),
            size: self.size,
            kind,
            storage_class: self.class,
            bypass_until,
        }))
    }
}

/// Every version (not delete markers) under `prefix`.
async fn list_versions(vault: &Vault, prefix: &str) -> Result<Vec<Version>, EngineError> {
    let listed = vault.list_versions(prefix).await?;
    Ok(listed
        .versions
        .into_iter()
        .map(|v| Version {
            class: v
                .storage_class
                .as_deref()
                .and_then(StorageClass::parse)
                .unwrap_or(StorageClass::Standard),
            key: v.key,
            version_id: v.version_id,
            size: v.size,
        })
        .collect())
}

/// What GC may do with a version given its lock: `Ok(None)` delete plainly, `Ok(Some(t))`
/// delete with governance bypass (locked until `t`), `Err` keep it (locked).
fn deletable(
    lock: Option<VersionLock>,
    now: DateTime<Utc>,
    bypass_governance: bool,
) -> Result<Option<DateTime<Utc>>, VersionLock> {
    match lock {
        None => Ok(None),
        Some((_, until)) if until <= now => Ok(None),
        Some((Some(LockMode::Governance), until)) if bypass_governance => Ok(Some(until)),
        Some((mode, until)) => Err((mode, until)),
    }
}

/// Computes what GC would do, changing nothing.
pub async fn plan(vault: &Vault, opts: &GcOptions) -> Result<GcPlan, EngineError> {
    let mut warnings = Vec::new();
    // Checked before anything is read: a backup that starts after this sees the GC's lease
    // (written by `gc` before it plans) and waits.
    let mut bypass = opts.bypass_governance;
    if bypass {
        let live = crate::lease::live(
            vault,
            crate::lease::LeaseKind::Run,
            Utc::now(),
            chrono_span(opts.lease_skew),
        )
        .await?;
        if !live.is_empty() {
            bypass = false;
            let names: Vec<String> = live
                .iter()
                .map(|l| format!("{} ({}, until {})", l.id, l.holder, l.expires))
                .collect();
            warnings.push(format!(
                "governance bypass refused: {} backup run(s) hold a lease ({}); only versions \
                 whose lock has expired are deleted. Run gc again when they have finished.",
                live.len(),
                names.join(", ")
            ));
        }
    }
    let now = Utc::now();
    let loc = vault.location();
    let ids = vault.list_snapshots().await?;
    // Every snapshot's scope. An unreadable one is a group of its own, so it is kept (and the
    // closure walk below then stops GC rather than guess).
    let mut groups = Vec::with_capacity(ids.len());
    let mut runs = Vec::with_capacity(ids.len());
    for id in &ids {
        match vault.get_snapshot(id).await {
            Ok(Some(s)) => {
                groups.push((id.clone(), s.run.group()));
                runs.push(s.run);
            }
            Ok(None) | Err(_) => {
                groups.push((
                    id.clone(),
                    ScopeGroup {
                        kind: ecr_vault_vault::ScopeKind::Full,
                        source: format!("unreadable snapshot {id}"),
                        filters: String::new(),
                    },
                ));
                runs.push(ecr_vault_vault::RunInfo {
                    source: format!("unreadable snapshot {id}"),
                    ..Default::default()
                });
            }
        }
    }
    let run_refs: Vec<&ecr_vault_vault::RunInfo> = runs.iter().collect();
    let latest: Vec<SnapshotId> = crate::select::latest_parts(&run_refs)
        .map(|(base, overlays)| {
            std::iter::once(base)
                .chain(overlays)
                .map(|i| ids[i].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut kept = keep_by_group(&groups, opts, now);
    kept.extend(latest.iter().cloned());

    let snapshot_versions = list_versions(vault, &loc.snapshots_prefix()).await?;
    let blob_prefix = loc.key("blobs/sha256/");
    let blob_versions = list_versions(vault, &blob_prefix).await?;

    // Expired snapshots whose every version is unlocked go; the others stay live.
    let mut delete = Vec::new();
    let mut expired = Vec::new();
    let mut live: Vec<SnapshotId> = Vec::new();
    for id in &ids {
        if kept.contains(id) {
            live.push(id.clone());
            continue;
        }
        let key = loc.snapshot_key(id);
        let mut dels = Vec::new();
        let mut locked_until = None;
        for v in snapshot_versions.iter().filter(|v| v.key == key) {
            match v.judge(vault, "snapshot", now, bypass).await? {
                Ok(d) => dels.push(d),
                Err((_, until)) => {
                    locked_until = Some(locked_until.map_or(until, |u: DateTime<Utc>| u.max(until)))
                }
            }
        }
        if locked_until.is_some() {
            live.push(id.clone());
        } else {
            delete.append(&mut dels);
        }
        expired.push(ExpiredSnapshot {
            id: id.clone(),
            locked_until,
        });
    }

    // The closure of every live snapshot, read from the vault's own copies. Anything that
    // cannot be read stops GC: an unknown closure could hide references.
    let mut referenced: HashSet<Digest> = HashSet::new();
    for id in &live {
        let snap = vault.get_snapshot(id).await?.ok_or_else(|| {
            EngineError::Config(format!(
                "snapshot {id} is listed but cannot be read; gc stops rather than guess"
            ))
        })?;
        walk_snapshot(vault, &snap, &mut referenced, &mut warnings).await?;
    }

    let mut held = Vec::new();
    let mut referenced_objects = 0u64;
    let mut before: BTreeMap<StorageClass, Usage> = BTreeMap::new();
    for v in snapshot_versions.iter().chain(&blob_versions) {
        before.entry(v.class).or_default().add(v.size);
    }
    for v in &blob_versions {
        let Some(digest) = v
            .key
            .strip_prefix(&blob_prefix)
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
        else {
            continue; // not a key the vault writes: leave it alone
        };
        if referenced.contains(&digest) {
            referenced_objects += 1;
            continue;
        }
        match v.judge(vault, "blob", now, bypass).await? {
            Ok(d) => delete.push(d),
            Err((mode, retain_until)) => held.push(Held {
                key: v.key.clone(),
                version_id: v.version_id.clone(),
                size: v.size,
                mode,
                retain_until,
            }),
        }
    }
    // Snapshot records first: a crash between the two phases leaves no snapshot naming a
    // deleted blob.
    delete.sort_by(|a, b| (a.kind != "snapshot", a).cmp(&(b.kind != "snapshot", b)));

    let (uploads_to_abort, uploads_resumable) = abandoned_uploads(vault, opts, now).await?;

    let mut after = before.clone();
    for d in &delete {
        if let Some(u) = after.get_mut(&d.storage_class) {
            u.bytes = u.bytes.saturating_sub(d.size);
            u.objects = u.objects.saturating_sub(1);
            if d.size < cost::MIN_BILLABLE_OBJECT {
                u.small_objects = u.small_objects.saturating_sub(1);
                u.small_bytes = u.small_bytes.saturating_sub(d.size);
            }
        }
    }
    let none = BTreeMap::new();
    Ok(GcPlan {
        computed_at: now,
        groups,
        latest,
        bypass,
        warnings,
        snapshots_kept: ids.iter().filter(|i| kept.contains(*i)).cloned().collect(),
        snapshots_expired: expired,
        referenced_objects,
        bytes_reclaimed: delete.iter().map(|d| d.size).sum(),
        delete,
        held,
        uploads_to_abort,
        uploads_resumable,
        cost_before: cost::estimate(&before, &none),
        cost_after: cost::estimate(&after, &none),
    })
}

/// How a walk reached a descriptor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// A manifest the snapshot or an index names, or a config or layer: it must be there.
    Required { is_manifest: bool },
    /// A referrer's subject: a signature may be captured without its subject (the subject's
    /// tag was filtered out), so an absent subject is noted, not fatal.
    Subject,
}

async fn walk_snapshot(
    vault: &Vault,
    snap: &Snapshot,
    referenced: &mut HashSet<Digest>,
    warnings: &mut Vec<String>,
) -> Result<(), EngineError> {
    if let Some(d) = &snap.run.repositories {
        referenced.insert(d.clone());
    }
    let mut stack: Vec<(Descriptor, Edge)> = snap
        .images
        .iter()
        .map(|r| (r.descriptor(), Edge::Required { is_manifest: true }))
        .collect();
    while let Some((desc, edge)) = stack.pop() {
        if !referenced.insert(desc.digest.clone())
            || edge == (Edge::Required { is_manifest: false })
        {
            continue;
        }
        let key = vault.location().blob_key(&desc.digest);
        let Some(bytes) = vault.get_document(&key, MAX_MANIFEST_BYTES).await? else {
            if edge == Edge::Subject {
                referenced.remove(&desc.digest);
                warnings.push(format!(
                    "snapshot {}: a referrer's subject {} is not in the vault (its tag was \
                     not selected, or it was never captured); the referrer is kept",
                    snap.id, desc.digest
                ));
                continue;
            }
            return Err(EngineError::Config(format!(
                "snapshot {} references {} but {key} is missing; run `ecr-vault verify` \
                 (gc stops rather than guess)",
                snap.id, desc.digest
            )));
        };
        let ct = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
        let m = Manifest::parse(&desc.digest, ct, bytes).map_err(|e| {
            EngineError::Config(format!(
                "snapshot {} references {key}, which does not parse ({e}); gc stops rather \
                 than guess",
                snap.id
            ))
        })?;
        for child in &m.references {
            let is_manifest = kind_of(&child.media_type).is_some();
            stack.push((child.clone(), Edge::Required { is_manifest }));
        }
        if let Some(subject) = &m.subject {
            stack.push((subject.clone(), Edge::Subject));
        }
    }
    Ok(())
}

/// Multipart uploads under the vault prefix initiated before the threshold, minus those a
/// young staging record names (matched as a substring, whatever the record's layout).
async fn abandoned_uploads(
    vault: &Vault,
    opts: &GcOptions,
    now: DateTime<Utc>,
) -> Result<(Vec<Abandoned>, u64), EngineError> {
    let loc = vault.location();
    // An age too large to subtract means nothing is old enough.
    let Some(cutoff) = Duration::from_std(opts.abandoned_upload_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
    else {
        return Ok((Vec::new(), 0));
    };
    let mut old: Vec<Abandoned> = vault
        .list_uploads(&loc.key(""))
        .await?
        .into_iter()
        .filter(|u| u.initiated.is_none_or(|t| t <= cutoff))
        .map(|u| Abandoned {
            key: u.key,
            upload_id: u.upload_id,
            initiated: u.initiated,
        })
        .collect();
    if old.is_empty() {
        return Ok((old, 0));
    }
    // Young staging records: the uploads they name are resumable, not abandoned.
    let mut young: Vec<bytes::Bytes> = Vec::new();
    for o in vault
        .list_objects(&loc.staging_prefix(), None, false)
        .await?
    {
        if o.last_modified.is_none_or(|t| t > cutoff)
            && let Some(b) = vault.get_document(&o.key, 16 * 1024 * 1024).await?
        {
            young.push(b);
        }
    }
    let named = |id: &str| {
        !id.is_empty()
            && young
                .iter()
                .any(|b| b.windows(id.len()).any(|w| w == id.as_bytes()))
    };
    let before = old.len();
    old.retain(|u| !named(&u.upload_id));
    let resumable = (before - old.len()) as u64;
    old.sort();
    Ok((old, resumable))
}

/// Carries out a plan: re-checks each version's lock right before deleting it. Bypass stops at
/// `stop_bypass_at`, when backups waiting on this GC's lease may start reusing blobs again.
async fn execute(
    vault: &Vault,
    plan: GcPlan,
    opts: &GcOptions,
    stop_bypass_at: DateTime<Utc>,
) -> GcReport {
    let mut report = GcReport {
        applied: true,
        plan,
        deleted: 0,
        bytes_deleted: 0,
        uploads_aborted: 0,
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    let mut snapshot_left = false;
    for d in report.plan.delete.clone() {
        if d.kind == "blob" && snapshot_left {
            report.skipped.push(Skipped {
                key: d.key,
                reason: "an expired snapshot could not be deleted; blobs wait for the next run"
                    .into(),
            });
            continue;
        }
        let now = Utc::now();
        let lock = match vault.version_retention(&d.key, Some(&d.version_id)).await {
            Ok(l) => l,
            Err(e) => {
                snapshot_left |= d.kind == "snapshot";
                report.errors.push(Skipped {
                    key: d.key,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let may_bypass = report.plan.bypass && opts.bypass_governance && now < stop_bypass_at;
        let bypass = match deletable(lock, now, may_bypass) {
            Ok(b) => b.is_some(),
            Err((mode, until)) => {
                snapshot_left |= d.kind == "snapshot";
                report.skipped.push(Skipped {
                    key: d.key,
                    reason: format!(
                        "locked ({}) until {until} since the plan",
                        mode.map(|m| m.to_string()).unwrap_or_default()
                    ),
                });
                continue;
            }
        };
        match vault.delete_version(&d.key, &d.version_id, bypass).await {
            Ok(_) => {
                tracing::info!(key = %d.key, version = %d.version_id, "gc deleted");
                report.deleted += 1;
                report.bytes_deleted += d.size;
            }
            Err(e) => {
                snapshot_left |= d.kind == "snapshot";
                // A backup may have extended the lock between our check and the delete (it
                // extends before it references): S3 refused, and that is the design working.
                if let Ok(Some((mode, until))) =
                    vault.version_retention(&d.key, Some(&d.version_id)).await
                    && until > Utc::now()
                    && !bypass
                {
                    report.skipped.push(Skipped {
                        key: d.key.clone(),
                        reason: format!(
                            "locked ({}) until {until} since the plan",
                            mode.map(|m| m.to_string()).unwrap_or_default()
                        ),
                    });
                    continue;
                }
                report.errors.push(Skipped {
                    key: d.key.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    for u in report.plan.uploads_to_abort.clone() {
        match vault.abort_upload(&u.key, &u.upload_id).await {
            Ok(true) => report.uploads_aborted += 1,
            // Completed or aborted since the plan.
            Ok(false) => {}
            Err(e) => report.errors.push(Skipped {
                key: u.key.clone(),
                reason: e.to_string(),
            }),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SnapshotId {
        SnapshotId::parse(s).unwrap()
    }

    fn policy(last: usize, daily: u32, monthly: u32) -> GcOptions {
        GcOptions {
            keep_last: last,
            keep_daily_days: daily,
            keep_monthly_months: monthly,
            ..GcOptions::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_latest_snapshot_is_kept_whatever_the_policy() {
        let ids = [
            id("20261101T020000000Z-000001"),
            id("20261102T020000000Z-000002"),
        ];
        let keep = keep_snapshots(&ids, &policy(0, 0, 0), at("2027-06-01T00:00:00Z"));
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec![ids[1].clone()]);
    }

    #[test]
    fn dailies_keep_the_newest_of_each_day_within_the_window() {
        let ids = [
            id("20261120T010000000Z-000001"), // outside a 7-day window
            id("20261128T010000000Z-000002"),
            id("20261128T230000000Z-000003"), // newest of the 28th
            id("20261130T010000000Z-000004"),
            id("20261201T010000000Z-000005"),
        ];
        let keep = keep_snapshots(&ids, &policy(1, 7, 0), at("2026-12-01T12:00:00Z"));
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            vec![ids[2].clone(), ids[3].clone(), ids[4].clone()]
        );
    }

    #[test]
    fn monthlies_keep_the_newest_of_each_month_and_last_n_adds_to_them() {
        let ids = [
            id("20260815T000000000Z-000001"), // three months back: outside 3 months
            id("20260910T000000000Z-000002"),
            id("20260920T000000000Z-000003"),
            id("20261005T000000000Z-000004"),
            id("20261101T000000000Z-000005"),
            id("20261102T000000000Z-000006"),
        ];
        let keep = keep_snapshots(&ids, &policy(2, 0, 3), at("2026-11-15T00:00:00Z"));
        assert_eq!(
            keep.into_iter().collect::<Vec<_>>(),
            vec![
                ids[2].clone(),
                ids[3].clone(),
                ids[4].clone(),
                ids[5].clone()
            ]
        );
    }

    #[test]
    fn partial_snapshots_are_ranked_apart_from_full_ones() {
        let full = ScopeGroup {
            kind: ecr_vault_vault::ScopeKind::Full,
            source: "r".into(),
            filters: "{}".into(),
        };
        let push = ScopeGroup {
            kind: ecr_vault_vault::ScopeKind::Partial,
            ..full.clone()
        };
        let mut snaps = vec![(id("20261101T020000000Z-000001"), full.clone())];
        for i in 0..10 {
            snaps.push((
                id(&format!("20261101T{:02}0000000Z-00000{i}", i + 3)),
                push.clone(),
            ));
        }
        let keep = keep_by_group(&snaps, &policy(1, 0, 0), at("2026-11-02T00:00:00Z"));
        assert!(keep.contains(&snaps[0].0), "the nightly snapshot is kept");
        assert!(keep.contains(&snaps[10].0), "and the newest push");
        assert_eq!(keep.len(), 2);
    }

    #[test]
    fn compliance_locks_are_never_bypassed_and_governance_only_on_request() {
        let now = Utc::now();
        let later = now + Duration::hours(1);
        let earlier = now - Duration::seconds(1);
        assert_eq!(deletable(None, now, false), Ok(None));
        assert_eq!(
            deletable(Some((Some(LockMode::Compliance), earlier)), now, false),
            Ok(None)
        );
        for bypass in [false, true] {
            assert!(deletable(Some((Some(LockMode::Compliance), later)), now, bypass).is_err());
        }
        assert!(deletable(Some((Some(LockMode::Governance), later)), now, false).is_err());
        assert_eq!(
            deletable(Some((Some(LockMode::Governance), later)), now, true),
            Ok(Some(later))
        );
    }
}
