//! The planner: which images of a listing need registry traffic tonight (the incremental
//! cohort), and which are already in the vault and only need carrying into the new snapshot.
//!
//! The comparison is against a base snapshot (the newest one written by a full listing), by
//! repository + manifest digest. Each snapshot record keeps the manifest's lock watermark
//! ([`ImageRecord::lock_until`]), so for an unchanged image the planner knows, without a
//! request, whether everything it needs is locked long enough for the new snapshot. A nightly
//! run over an unchanged registry is then one LIST and one GET of the base snapshot, no
//! registry traffic beyond the listing, and no per-image S3 request until slack runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use ecr_vault_ecr::RepositorySettings;
use ecr_vault_registry::{Digest, ManifestKind, Reference, RegistryClient, RepoName, Tag};
use ecr_vault_vault::{
    Failure, ImageRecord, LockPolicy, Role, ScopeKind, Snapshot, SnapshotId, Vault,
};
use futures::StreamExt as _;
use serde::Serialize;

use std::sync::Arc;
use std::time::Instant;

use crate::EngineError;
use crate::filter::Filters;
use crate::lease::{Lease, LeaseRequest};
use crate::source::{Listing, Source, SourceImage};

/// How many snapshots, newest first, are read looking for a full-listing base. Push snapshots
/// are small, and a busy registry writes dozens a day between nightly runs.
const BASE_SEARCH_DEPTH: usize = 64;

/// What the planner knows about an unchanged image's locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockCheck {
    /// The recorded watermark covers the new snapshot: carried with no request at all.
    Sufficient,
    /// The recorded watermark ends before the new snapshot's retention: one HEAD, then the
    /// closure's locks are extended where they fall short.
    ExtensionDue,
    /// The base snapshot predates recorded watermarks: one HEAD decides.
    Unknown,
}

/// An image whose digest is already in the base snapshot.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnchangedImage {
    /// As listed now: the current tags, which may have moved since the base snapshot.
    #[serde(flatten)]
    pub image: SourceImage,
    /// Tags the base snapshot recorded for this digest, when they differ from today's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_tags: Option<Vec<Tag>>,
    /// The recorded manifest record (media type, size, watermark) and its referrers.
    #[serde(skip)]
    pub records: Vec<ImageRecord>,
    /// The earliest recorded watermark among the image and its referrers.
    pub lock_until: Option<DateTime<Utc>>,
    pub lock: LockCheck,
}

/// An image of the base snapshot that the listing no longer shows (informational: backup
/// never deletes; garbage collection decides when its blobs may go).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GoneImage {
    pub repository: RepoName,
    pub digest: Digest,
    pub tags: Vec<Tag>,
}

/// An image that needs copying, with the bytes it is expected to bring when known.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewImage {
    #[serde(flatten)]
    pub image: SourceImage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Where [`Plan::bytes_expected`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BytesBasis {
    /// ECR's `imageSizeInBytes` (compressed; a manifest list counts its largest child).
    EcrImageSize,
    /// The new images' manifests were fetched and their distinct blobs summed.
    Manifests,
    /// Not estimated (a generic registry without `--sizes`, or sizes missing).
    Unknown,
    /// No new images: nothing to fetch.
    NothingNew,
}

/// The incremental cohort of one run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The clock every lock decision in this plan used.
    pub planned_at: DateTime<Utc>,
    /// The lock the new snapshot needs on everything it references.
    pub required_until: DateTime<Utc>,
    /// The snapshot compared against; `None` when the vault has none (everything is new).
    pub base_snapshot: Option<SnapshotId>,
    pub new: Vec<NewImage>,
    pub unchanged: Vec<UnchangedImage>,
    pub gone: Vec<GoneImage>,
    /// An upper bound for the new images: blobs already in the vault are not subtracted.
    pub bytes_expected: Option<u64>,
    pub bytes_basis: BytesBasis,
    /// Unchanged images whose recorded watermark falls short of `required_until`.
    pub lock_extensions_due: usize,
    /// Unchanged images without a recorded watermark (one HEAD each).
    pub lock_unknown: usize,
    /// What the run would add: storage per month for the expected bytes and the run's
    /// requests ([`crate::cost::plan_estimate`]); `None` when the bytes are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CostEstimate>,
    /// Listing failures and skips, carried to the run report.
    pub failures: Vec<Failure>,
    pub skipped: Vec<ecr_vault_vault::Skip>,
    pub warnings: Vec<String>,
    /// Repository settings captured by the listing, stored with the snapshot.
    #[serde(skip)]
    pub repositories: Vec<RepositorySettings>,
    /// Full listing, or the few images an event named: what the snapshot records as its scope.
    pub scope: ScopeKind,
    /// The run lease taken before the vault was read ([`crate::lease`]). Carrying an image on
    /// its recorded lock, with no request, is safe against a bypassing GC only under it; a
    /// plan without one has its carried images checked with a HEAD instead.
    #[serde(skip)]
    pub lease: Option<Arc<Lease>>,
    /// Time spent listing the source and comparing with the vault.
    pub list_ms: u64,
    pub plan_ms: u64,
    /// When the run began (before listing), so the report's duration covers the whole run.
    #[serde(skip)]
    pub started: Option<Instant>,
}

impl UnchangedImage {
    /// The one rule that splits unchanged images: carried on the recorded watermark, with no
    /// request, when it covers a snapshot taken at `now` and the plan was made under a run
    /// lease (without one, a bypassing GC could pull the lock away meanwhile); otherwise
    /// checked with one HEAD and extended where it falls short.
    pub fn carried_on_record(&self, policy: LockPolicy, now: DateTime<Utc>, leased: bool) -> bool {
        leased && self.lock_until.is_some() && !policy.needs_extension(self.lock_until, now)
    }
}

impl Plan {
    /// Images in the plan: new plus unchanged.
    pub fn len(&self) -> usize {
        self.new.len() + self.unchanged.len()
    }

    /// Images that need a copier or a worker at `now`: the new ones, and the unchanged ones
    /// not [carried on record](UnchangedImage::carried_on_record).
    pub fn work_count(&self, policy: LockPolicy, now: DateTime<Utc>) -> usize {
        let leased = self.lease.is_some();
        self.new.len()
            + self
                .unchanged
                .iter()
                .filter(|u| !u.carried_on_record(policy, now, leased))
                .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Options for [`plan`].
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub filters: Filters,
    /// Listing and manifest fetches at once.
    pub concurrency: usize,
    /// For a generic registry, fetch the new images' manifests to estimate their bytes
    /// (registry traffic proportional to the new images only). ECR sizes come free.
    pub fetch_sizes: bool,
    /// Take a run lease before reading the vault, for a plan that will be executed
    /// ([`crate::backup_plan`], fan-out). A read-only `plan` command takes none.
    pub lease: Option<LeaseRequest>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            filters: Filters::all(),
            concurrency: 8,
            fetch_sizes: false,
            lease: None,
        }
    }
}

/// Lists the source and plans against the vault's newest full-listing snapshot.
pub async fn plan(source: &Source, vault: &Vault, opts: &PlanOptions) -> Result<Plan, EngineError> {
    let started = Instant::now();
    let lease = match &opts.lease {
        Some(req) => Some(Lease::acquire_run(vault, req).await?),
        None => None,
    };
    let listing = source.list(&opts.filters, opts.concurrency.max(4)).await;
    let listed = Instant::now();
    let base = base_snapshot(vault, &source.describe(), &opts.filters).await?;
    let now = Utc::now();
    let mut plan = compare(
        listing,
        base.as_ref(),
        &opts.filters,
        vault.options().lock,
        now,
    );
    // The plan holds what it needs of the base; at 100,000 images the base is the largest
    // thing in memory.
    drop(base);
    if plan.bytes_basis == BytesBasis::Unknown
        && opts.fetch_sizes
        && matches!(source, Source::Registry { .. })
    {
        estimate_from_manifests(source.registry(), &mut plan, opts.concurrency).await;
    }
    plan.cost = crate::cost::plan_estimate(
        &plan,
        crate::cost::StorageClass::of_blobs(vault),
        vault.options().part_size as u64,
    );
    plan.lease = lease;
    plan.timed(started, listed);
    Ok(plan)
}

/// The newest full-listing snapshot of this source with these filters, among the newest few;
/// else the newest full-listing one; else the newest; `None` for an empty vault. Any base is
/// correct (an image not in it is checked in the vault by the copier); the closest is cheapest.
pub async fn base_snapshot(
    vault: &Vault,
    source: &str,
    filters: &Filters,
) -> Result<Option<Snapshot>, EngineError> {
    let ids = vault.list_snapshots().await?;
    let spec = serde_json::to_value(filters.spec()).unwrap_or_default();
    let mut full = None;
    let mut newest = None;
    for id in ids.iter().rev().take(BASE_SEARCH_DEPTH) {
        let Some(s) = vault.get_snapshot(id).await? else {
            continue;
        };
        if s.run.scope_kind() == ScopeKind::Full {
            let same_filters = s.run.filters == spec || (s.run.unfiltered() && filters.is_all());
            if s.run.source == source && same_filters {
                return Ok(Some(s));
            }
            if full.is_none() {
                full = Some(s);
                newest = None;
                continue;
            }
        }
        // Only a fallback while no full listing is found: holding it beside one would keep a
        // second snapshot in memory for nothing.
        if full.is_none() && newest.is_none() {
            newest = Some(s);
        }
    }
    Ok(full.or(newest))
}

impl Plan {
    /// Records how long listing and planning took, for the run report.
    pub(crate) fn timed(&mut self, started: Instant, listed: Instant) {
        self.started = Some(started);
        self.list_ms = listed.duration_since(started).as_millis() as u64;
        self.plan_ms = listed.elapsed().as_millis() as u64;
    }
}

/// Compares a listing with a base snapshot. Pure: no I/O, so the whole decision table is
/// unit-tested.
pub fn compare(
    listing: Listing,
    base: Option<&Snapshot>,
    filters: &Filters,
    policy: LockPolicy,
    now: DateTime<Utc>,
) -> Plan {
    // The base's records per (repository, digest): the image's own records (one per tag),
    // and its referrers, found through the subject chain.
    let mut by_image: HashMap<(&RepoName, &Digest), Vec<&ImageRecord>> = HashMap::new();
    let mut referrers_of: HashMap<(&RepoName, &Digest), Vec<&ImageRecord>> = HashMap::new();
    if let Some(b) = base {
        for r in &b.images {
            match (r.role, &r.subject) {
                (Role::Referrer, Some(s)) => {
                    referrers_of.entry((&r.repository, s)).or_default().push(r)
                }
                _ => by_image
                    .entry((&r.repository, &r.digest))
                    .or_default()
                    .push(r),
            }
        }
    }

    let mut new = Vec::new();
    let mut unchanged = Vec::new();
    let mut all_sized = true;
    let mut bytes = 0u64;
    for img in listing.images {
        let Some(recs) = by_image.get(&(&img.repo, &img.digest)) else {
            let size = listing
                .sizes
                .get(&(img.repo.clone(), img.digest.clone()))
                .copied();
            match size {
                Some(s) => bytes = bytes.saturating_add(s),
                None => all_sized = false,
            }
            new.push(NewImage { image: img, size });
            continue;
        };
        // One record for the image itself (any of its tags: media type, size and lock are
        // per digest); its tags are today's, set when the snapshot records are built. Sized
        // for the common case of no referrers: a first `push` reserves four records, which at
        // 100,000 images was 70 MB of empty slots.
        let mut records: Vec<ImageRecord> = Vec::with_capacity(1);
        records.push((*recs[0]).clone());
        let mut queue = vec![img.digest.clone()];
        let mut seen = HashSet::new();
        while let Some(subject) = queue.pop() {
            if !seen.insert(subject.clone()) {
                continue;
            }
            for r in referrers_of
                .get(&(&img.repo, &subject))
                .into_iter()
                .flatten()
            {
                if !records
                    .iter()
                    .any(|x| x.digest == r.digest && x.role == Role::Referrer)
                {
                    records.push((*r).clone());
                    queue.push(r.digest.clone());
                }
            }
        }
        let lock_until = records
            .iter()
            .map(|r| r.lock_until)
            .try_fold(None::<DateTime<Utc>>, |acc, u| {
                u.map(|u| Some(acc.map_or(u, |a| a.min(u))))
            })
            .flatten();
        let lock = match lock_until {
            None => LockCheck::Unknown,
            Some(u) if policy.needs_extension(Some(u), now) => LockCheck::ExtensionDue,
            Some(_) => LockCheck::Sufficient,
        };
        let before: BTreeSet<&Tag> = recs.iter().filter_map(|r| r.tag.as_ref()).collect();
        let after: BTreeSet<&Tag> = img.tags.iter().collect();
        let previous_tags = (before != after).then(|| before.into_iter().cloned().collect());
        unchanged.push(UnchangedImage {
            image: img,
            previous_tags,
            records,
            lock_until,
            lock,
        });
    }

    // Repositories the listing could not read say nothing about what is gone.
    let unreadable: HashSet<&str> = listing
        .failures
        .iter()
        .filter(|f| f.reference.is_empty() || f.reference == "tags")
        .map(|f| f.repository.as_str())
        .collect();
    let everything_failed = unreadable.contains("*");
    // Borrowed from the plan's own lists: at 100,000 images a set of owned names would be
    // one more copy of the listing.
    let listed: HashSet<(&RepoName, &Digest)> = new
        .iter()
        .map(|n| &n.image)
        .chain(unchanged.iter().map(|u| &u.image))
        .map(|i| (&i.repo, &i.digest))
        .collect();
    let mut gone: BTreeMap<(RepoName, Digest), Vec<Tag>> = BTreeMap::new();
    if let Some(b) = base
        && !everything_failed
    {
        for r in b.images.iter().filter(|r| r.role == Role::Image) {
            if listed.contains(&(&r.repository, &r.digest))
                || !filters.repository(r.repository.as_str())
                || unreadable.contains(r.repository.as_str())
            {
                continue;
            }
            let key = (r.repository.clone(), r.digest.clone());
            let tags = gone.entry(key).or_default();
            tags.extend(r.tag.clone());
        }
    }

    let lock_extensions_due = unchanged
        .iter()
        .filter(|u| u.lock == LockCheck::ExtensionDue)
        .count();
    let lock_unknown = unchanged
        .iter()
        .filter(|u| u.lock == LockCheck::Unknown)
        .count();
    let (bytes_expected, bytes_basis) = if new.is_empty() {
        (Some(0), BytesBasis::NothingNew)
    } else if all_sized {
        (Some(bytes), BytesBasis::EcrImageSize)
    } else {
        (None, BytesBasis::Unknown)
    };
    Plan {
        planned_at: now,
        required_until: policy.required_until(now),
        base_snapshot: base.map(|b| b.id.clone()),
        new,
        unchanged,
        gone: gone
            .into_iter()
            .map(|((repository, digest), tags)| GoneImage {
                repository,
                digest,
                tags,
            })
            .collect(),
        bytes_expected,
        bytes_basis,
        lock_extensions_due,
        lock_unknown,
        cost: None,
        failures: listing.failures,
        skipped: listing.skipped,
        warnings: listing.warnings,
        repositories: listing.repositories,
        scope: ScopeKind::Full,
        lease: None,
        list_ms: 0,
        plan_ms: 0,
        started: None,
    }
}

/// Fetches the new images' manifests (children of an index too) and sums their distinct
/// blobs. Failures leave the estimate unknown rather than wrong.
async fn estimate_from_manifests(registry: &RegistryClient, plan: &mut Plan, concurrency: usize) {
    let mut blobs: HashMap<Digest, u64> = HashMap::new();
    let mut per_image = Vec::with_capacity(plan.new.len());
    let results: Vec<_> = futures::stream::iter(plan.new.iter().map(|n| n.image.clone()))
        .map(|img| async move { closure_sizes(registry, &img.repo, &img.digest).await })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    for r in results {
        match r {
            Ok(sizes) => {
                per_image.push(Some(sizes.values().sum::<u64>()));
                blobs.extend(sizes);
            }
            Err(e) => {
                plan.warnings.push(format!("size estimate: {e}"));
                return;
            }
        }
    }
    for (n, s) in plan.new.iter_mut().zip(per_image) {
        n.size = s;
    }
    plan.bytes_expected = Some(blobs.values().sum());
    plan.bytes_basis = BytesBasis::Manifests;
}

/// Every blob (and manifest) an image needs, by digest, with its size.
async fn closure_sizes(
    registry: &RegistryClient,
    repo: &RepoName,
    digest: &Digest,
) -> Result<HashMap<Digest, u64>, String> {
    let mut out = HashMap::new();
    let mut queue = vec![(digest.clone(), 0u32)];
    while let Some((d, depth)) = queue.pop() {
        if depth > 8 || out.contains_key(&d) {
            continue;
        }
        let m = registry
            .get_manifest(repo, &Reference::Digest(d.clone()))
            .await
            .map_err(|e| format!("{repo}@{d}: {e}"))?;
        out.insert(d, m.bytes.len() as u64);
        for r in &m.references {
            match m.kind {
                ManifestKind::Index => queue.push((r.digest.clone(), depth + 1)),
                ManifestKind::Image => {
                    out.insert(r.digest.clone(), r.size);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::filter::FilterSpec;
    use chrono::Duration;
    use ecr_vault_vault::{LockMode, RunInfo};

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }
    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }
    fn img(r: &str, d: &[u8], tags: &[&str]) -> SourceImage {
        SourceImage {
            repo: repo(r),
            digest: Digest::of(d),
            tags: tags.iter().map(|t| tag(t)).collect(),
            pushed_at: None,
            media_type: None,
        }
    }
    fn record(r: &str, d: &[u8], t: Option<&str>, until: Option<DateTime<Utc>>) -> ImageRecord {
        ImageRecord {
            repository: repo(r),
            tag: t.map(tag),
            media_type: ecr_vault_registry::manifest::OCI_MANIFEST.into(),
            digest: Digest::of(d),
            size: 500,
            platform: None,
            pushed_at: None,
            role: Role::Image,
            subject: None,
            lock_until: until,
        }
    }
    fn policy() -> LockPolicy {
        LockPolicy {
            mode: LockMode::Compliance,
            retention_days: 30,
            slack_days: 7,
            ..LockPolicy::default()
        }
    }
    fn snapshot(now: DateTime<Utc>, images: Vec<ImageRecord>) -> Snapshot {
        Snapshot {
            id: SnapshotId::new(now),
            created: now,
            images,
            run: RunInfo {
                trigger: "scheduled".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_empty_vault_makes_everything_new() {
        let now = Utc::now();
        let listing = Listing {
            images: vec![img("a", b"1", &["v1"]), img("b", b"2", &[])],
            ..Listing::default()
        };
        let p = compare(listing, None, &Filters::all(), policy(), now);
        assert_eq!(p.new.len(), 2);
        assert!(p.unchanged.is_empty() && p.gone.is_empty());
        assert_eq!(p.bytes_basis, BytesBasis::Unknown);
        assert_eq!(p.bytes_expected, None);
    }

    #[test]
    fn unchanged_digests_are_carried_with_their_new_tags_and_locks_decided_without_requests() {
        let now = Utc::now();
        let fresh = now + Duration::days(36); // written last night: 30 + 7 - 1
        let stale = now + Duration::days(29); // slack used up
        let base = snapshot(
            now - Duration::days(1),
            vec![
                record("a", b"1", Some("v1"), Some(fresh)),
                record("a", b"1", Some("latest"), Some(fresh)),
                record("a", b"2", Some("v2"), Some(stale)),
                record("b", b"3", None, None),
                record("b", b"4", Some("old"), Some(fresh)),
            ],
        );
        let listing = Listing {
            images: vec![
                img("a", b"1", &["v1"]),           // `latest` moved away
                img("a", b"2", &["v2", "latest"]), // ...to here
                img("b", b"3", &[]),
                img("b", b"5", &["new"]),
            ],
            ..Listing::default()
        };
        let p = compare(listing, Some(&base), &Filters::all(), policy(), now);
        assert_eq!(p.base_snapshot, Some(base.id.clone()));
        let lock_of = |d: &[u8]| {
            p.unchanged
                .iter()
                .find(|u| u.image.digest == Digest::of(d))
                .map(|u| u.lock)
        };
        assert_eq!(lock_of(b"1"), Some(LockCheck::Sufficient));
        assert_eq!(lock_of(b"2"), Some(LockCheck::ExtensionDue));
        assert_eq!(lock_of(b"3"), Some(LockCheck::Unknown));
        assert_eq!((p.lock_extensions_due, p.lock_unknown), (1, 1));
        let moved = p
            .unchanged
            .iter()
            .find(|u| u.image.digest == Digest::of(b"2"))
            .unwrap();
        assert_eq!(moved.image.tags, vec![tag("v2"), tag("latest")]);
        assert_eq!(moved.previous_tags, Some(vec![tag("v2")]));
        assert_eq!(p.new.len(), 1);
        assert_eq!(p.new[0].image.digest, Digest::of(b"5"));
        assert_eq!(p.gone.len(), 1);
        assert_eq!(p.gone[0].digest, Digest::of(b"4"));
        assert_eq!(p.gone[0].tags, vec![tag("old")]);
    }

    #[test]
    fn referrers_travel_with_their_subject_and_their_locks_count() {
        let now = Utc::now();
        let fresh = now + Duration::days(36);
        let mut sig = record("a", b"sig", None, Some(now + Duration::days(1)));
        sig.role = Role::Referrer;
        sig.subject = Some(Digest::of(b"1"));
        let mut sig_of_sig = record("a", b"sig2", None, Some(fresh));
        sig_of_sig.role = Role::Referrer;
        sig_of_sig.subject = Some(Digest::of(b"sig"));
        let base = snapshot(
            now,
            vec![record("a", b"1", Some("v1"), Some(fresh)), sig, sig_of_sig],
        );
        let listing = Listing {
            images: vec![img("a", b"1", &["v1"])],
            ..Listing::default()
        };
        let p = compare(listing, Some(&base), &Filters::all(), policy(), now);
        let u = &p.unchanged[0];
        assert_eq!(
            u.records.len(),
            3,
            "the image, its referrer, and the referrer's"
        );
        assert_eq!(
            u.lock,
            LockCheck::ExtensionDue,
            "a referrer's short lock counts"
        );
        assert!(
            p.gone.is_empty(),
            "referrers are not listed images, so never gone"
        );
    }

    #[test]
    fn ecr_sizes_sum_for_new_images_and_gone_respects_filters_and_unreadable_repositories() {
        let now = Utc::now();
        let base = snapshot(
            now,
            vec![
                record("team/a", b"1", Some("v1"), None),
                record("other/b", b"2", Some("v1"), None),
                record("team/c", b"3", Some("v1"), None),
            ],
        );
        let mut listing = Listing {
            images: vec![img("team/a", b"9", &["v2"]), img("team/a", b"8", &["v3"])],
            failures: vec![Failure {
                repository: "team/c".into(),
                reference: String::new(),
                error: "throttled".into(),
            }],
            ..Listing::default()
        };
        listing
            .sizes
            .insert((repo("team/a"), Digest::of(b"9")), 1000);
        listing.sizes.insert((repo("team/a"), Digest::of(b"8")), 24);
        let filters = Filters::new(FilterSpec {
            repositories: vec!["team/**".into()],
            ..Default::default()
        })
        .unwrap();
        let p = compare(listing, Some(&base), &filters, policy(), now);
        assert_eq!(p.bytes_expected, Some(1024));
        assert_eq!(p.bytes_basis, BytesBasis::EcrImageSize);
        let gone: Vec<_> = p.gone.iter().map(|g| g.repository.as_str()).collect();
        assert_eq!(
            gone,
            vec!["team/a"],
            "other/b is filtered out, team/c unreadable"
        );
    }

    #[test]
    fn a_plan_prints_as_json_with_its_figures() {
        let now = Utc::now();
        let listing = Listing {
            images: vec![img("a", b"1", &["v1"])],
            ..Listing::default()
        };
        let p = compare(listing, None, &Filters::all(), policy(), now);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["new"][0]["repository"], "a");
        assert_eq!(v["new"][0]["tags"][0], "v1");
        assert!(v["bytesExpected"].is_null());
        assert_eq!(v["lockExtensionsDue"], 0);
    }
}
