//! Choosing what to restore: a snapshot (or "latest"), or a point in time across every
//! snapshot and push capture, narrowed by repository and tag globs and digests.
//!
//! **`latest` is the registry as last seen**, not the newest snapshot of any reach: the newest
//! complete full listing (a scheduled run, or one that selects everything; in a vault of
//! filtered runs only, the newest complete one) is the base, and every newer snapshot from the
//! same source overlays it name by name (`repository:tag`, or the digest for untagged records). So a push after the nightly run adds its one image to the
//! registry's picture instead of replacing it, and a filtered `ecr-vault backup --repository X`
//! refreshes X without hiding the rest. `scripts/break-glass.sh` implements the same rule.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ecr_vault_registry::Digest;
use ecr_vault_vault::{ImageRecord, Role, RunInfo, ScopeKind, Snapshot, SnapshotId, Vault};
use serde::Serialize;

use crate::EngineError;
use crate::filter::Filters;

/// Which snapshot(s) to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotSel {
    Latest,
    Id(SnapshotId),
    /// For each `repository:tag`, the newest capture at or before this time, across all
    /// snapshots (scheduled runs and push captures alike).
    AsOf(DateTime<Utc>),
}

impl SnapshotSel {
    /// `latest`, a snapshot id, or (with `as_of`) a time.
    pub fn parse(snapshot: Option<&str>, as_of: Option<&str>) -> Result<Self, EngineError> {
        match (snapshot, as_of) {
            (Some(_), Some(_)) => Err(EngineError::Config(
                "give either a snapshot or an as-of time, not both".into(),
            )),
            (_, Some(t)) => parse_time(t).map(SnapshotSel::AsOf),
            (None, None) | (Some("latest"), None) => Ok(SnapshotSel::Latest),
            (Some(id), None) => Ok(SnapshotSel::Id(SnapshotId::parse(id)?)),
        }
    }
}

/// RFC 3339 (`2026-11-24T02:00:00Z`) or a date (`2026-11-24`, meaning the end of that day).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, EngineError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(23, 59, 59)
    {
        return Ok(t.and_utc());
    }
    Err(EngineError::Config(format!(
        "invalid time {s:?}: use RFC 3339 (2026-11-24T02:00:00Z) or a date (2026-11-24)"
    )))
}

/// The snapshots `latest` is made of: its base and the newer snapshots that overlay it.
#[derive(Debug, Clone)]
pub struct Latest {
    pub base: Snapshot,
    /// Oldest first.
    pub overlays: Vec<Snapshot>,
}

impl Latest {
    /// Every snapshot `latest` reads: garbage collection keeps them all.
    pub fn ids(&self) -> Vec<SnapshotId> {
        std::iter::once(&self.base)
            .chain(&self.overlays)
            .map(|s| s.id.clone())
            .collect()
    }

    /// The overlaid records: for each name, the newest capture.
    pub fn records(&self) -> Vec<ImageRecord> {
        let mut by_name: BTreeMap<(String, String), ImageRecord> = BTreeMap::new();
        for snap in std::iter::once(&self.base).chain(&self.overlays) {
            for r in &snap.images {
                by_name.insert(record_name(r), r.clone());
            }
        }
        by_name.into_values().collect()
    }
}

/// The name a record is captured under: `(repository, tag:<t>)`, or `(repository,
/// digest:<d>)` for untagged records (referrers, untagged images).
fn record_name(r: &ImageRecord) -> (String, String) {
    let name = match &r.tag {
        Some(tag) => format!("tag:{tag}"),
        None => format!("digest:{}", r.digest),
    };
    (r.repository.to_string(), name)
}

/// Finds `latest`: reads snapshots newest first until a base (see [`latest_parts`]).
pub async fn latest(vault: &Vault) -> Result<Option<Latest>, EngineError> {
    let ids = vault.list_snapshots().await?;
    let mut read: Vec<Snapshot> = Vec::new();
    for id in ids.iter().rev() {
        // A snapshot listed but gone (expired between LIST and GET) is simply not part of it.
        let Some(snap) = vault.get_snapshot(id).await? else {
            continue;
        };
        let base = snap.run.is_latest_base();
        read.push(snap);
        if base {
            break;
        }
    }
    read.reverse();
    let runs: Vec<&RunInfo> = read.iter().map(|s| &s.run).collect();
    let Some((base, overlays)) = latest_parts(&runs) else {
        return Ok(None);
    };
    let mut read: Vec<Option<Snapshot>> = read.into_iter().map(Some).collect();
    let Some(base) = read[base].take() else {
        return Ok(None);
    };
    Ok(Some(Latest {
        base,
        overlays: overlays
            .into_iter()
            .filter_map(|i| read[i].take())
            .collect(),
    }))
}

/// The rule behind `latest`, over run metadata of snapshots oldest first: the index of the
/// base and the indexes of the newer snapshots from the same source that overlay it. The base
/// is the newest [`RunInfo::is_latest_base`]; in a vault that has none (every run filtered),
/// the newest complete full listing; in one without even that, the oldest snapshot.
pub fn latest_parts(runs: &[&RunInfo]) -> Option<(usize, Vec<usize>)> {
    if runs.is_empty() {
        return None;
    }
    let base = runs
        .iter()
        .rposition(|r| r.is_latest_base())
        .or_else(|| {
            runs.iter()
                .rposition(|r| r.complete && r.scope_kind() == ScopeKind::Full)
        })
        .unwrap_or(0);
    let overlays = (base + 1..runs.len())
        .filter(|&i| runs[i].source == runs[base].source)
        .collect();
    Some((base, overlays))
}

/// One line of `ecr-vault snapshots`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    pub id: SnapshotId,
    pub created: DateTime<Utc>,
    pub trigger: String,
    pub scope: ScopeKind,
    pub filters: serde_json::Value,
    /// A full listing narrowed by filters: its own retention group.
    pub filtered: bool,
    pub complete: bool,
    pub images: usize,
    pub bytes_written: u64,
    pub failures: usize,
    /// Part of `latest` (its base or an overlay).
    pub in_latest: bool,
}

/// Every snapshot, oldest first, with its scope and whether `latest` reads it.
pub async fn summaries(vault: &Vault) -> Result<Vec<SnapshotSummary>, EngineError> {
    let mut snaps = Vec::new();
    for id in vault.list_snapshots().await? {
        if let Some(s) = vault.get_snapshot(&id).await? {
            snaps.push(s);
        }
    }
    let runs: Vec<&RunInfo> = snaps.iter().map(|s| &s.run).collect();
    let mut in_latest = vec![false; snaps.len()];
    if let Some((base, overlays)) = latest_parts(&runs) {
        for i in std::iter::once(base).chain(overlays) {
            in_latest[i] = true;
        }
    }
    Ok(snaps
        .into_iter()
        .zip(in_latest)
        .map(|(s, in_latest)| SnapshotSummary {
            created: s.created,
            trigger: s.run.trigger.clone(),
            scope: s.run.scope_kind(),
            filters: s.run.filters.clone(),
            filtered: !s.run.unfiltered(),
            complete: s.run.complete,
            images: s.images.len(),
            bytes_written: s.run.counts.bytes_written,
            failures: s.run.failures.len(),
            in_latest,
            id: s.id,
        })
        .collect())
}

/// One capture of a repository (or repository:tag), for `show repo:tag`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    pub snapshot: SnapshotId,
    pub created: chrono::DateTime<chrono::Utc>,
    pub tag: Option<ecr_vault_registry::Tag>,
    pub digest: Digest,
    pub pushed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every capture of `image`'s repository (and tag, when it names one), oldest snapshot first.
pub async fn history(
    vault: &Vault,
    image: &ecr_vault_registry::ImageRef,
) -> Result<Vec<Capture>, EngineError> {
    let mut rows = Vec::new();
    for id in vault.list_snapshots().await? {
        let Some(s) = vault.get_snapshot(&id).await? else {
            continue;
        };
        for i in s.images {
            if i.repository == image.repo && (image.tag.is_none() || i.tag == image.tag) {
                rows.push(Capture {
                    snapshot: s.id.clone(),
                    created: s.created,
                    tag: i.tag,
                    digest: i.digest,
                    pushed_at: i.pushed_at,
                });
            }
        }
    }
    Ok(rows)
}

/// `latest` as `show latest` prints it: which snapshots, and the images they make up.
#[derive(Debug, Serialize)]
pub struct LatestView {
    pub base: SnapshotId,
    pub overlays: Vec<SnapshotId>,
    pub images: Vec<ImageRecord>,
}

impl From<&Latest> for LatestView {
    fn from(l: &Latest) -> Self {
        LatestView {
            base: l.base.id.clone(),
            overlays: l.overlays.iter().map(|s| s.id.clone()).collect(),
            images: l.records(),
        }
    }
}

/// What was selected, and from which snapshots.
#[derive(Debug, Default)]
pub struct Selected {
    pub snapshots: Vec<SnapshotId>,
    pub records: Vec<ImageRecord>,
    /// Repository settings documents of the snapshots read (newest first).
    pub settings: Vec<Digest>,
}

/// Reads the chosen snapshot(s) and applies the filters. Referrers follow their subject.
pub async fn select(
    vault: &Vault,
    sel: &SnapshotSel,
    filters: &Filters,
    digests: &[Digest],
) -> Result<Selected, EngineError> {
    let mut out = Selected::default();
    let candidates: Vec<ImageRecord> = match sel {
        SnapshotSel::Id(id) => {
            let snap = vault.get_snapshot(id).await?.ok_or_else(|| {
                EngineError::Config(format!("no snapshot {id} in {}", vault.location()))
            })?;
            push_snapshot_meta(&mut out, &snap);
            snap.images
        }
        SnapshotSel::Latest => {
            let latest = latest(vault).await?.ok_or_else(|| {
                EngineError::Config(format!("the vault {} has no snapshots", vault.location()))
            })?;
            // Newest first, like the as-of path: the newest settings win.
            for snap in latest.overlays.iter().rev().chain([&latest.base]) {
                push_snapshot_meta(&mut out, snap);
            }
            latest.records()
        }
        SnapshotSel::AsOf(t) => {
            let mut ids = vault.list_snapshots().await?;
            ids.retain(|id| id.time().is_some_and(|st| st <= *t));
            ids.reverse(); // newest first
            if ids.is_empty() {
                return Err(EngineError::Config(format!(
                    "no snapshot at or before {t} in {}",
                    vault.location()
                )));
            }
            // Newest capture of each name wins; untagged records are keyed by digest.
            let mut by_name: BTreeMap<(String, String), ImageRecord> = BTreeMap::new();
            for id in ids {
                let Some(snap) = vault.get_snapshot(&id).await? else {
                    continue;
                };
                if snap.created > *t {
                    continue;
                }
                push_snapshot_meta(&mut out, &snap);
                for r in snap.images {
                    by_name.entry(record_name(&r)).or_insert(r);
                }
            }
            by_name.into_values().collect()
        }
    };
    let digest_set: HashSet<&Digest> = digests.iter().collect();
    let keep = |r: &ImageRecord| {
        filters.repository(r.repository.as_str())
            && (digest_set.is_empty() || digest_set.contains(&r.digest))
            && match &r.tag {
                Some(t) => filters.tag(t.as_str()),
                None => !filters.has_tag_filter() || !digest_set.is_empty(),
            }
    };
    let mut chosen: Vec<ImageRecord> = candidates
        .iter()
        .filter(|r| r.role == Role::Image && keep(r))
        .cloned()
        .collect();
    let subjects: HashSet<(String, Digest)> = chosen
        .iter()
        .map(|r| (r.repository.to_string(), r.digest.clone()))
        .collect();
    // Referrers and cosign attachment tags go with the images they describe.
    chosen.extend(candidates.into_iter().filter(|r| {
        let subject = match (
            &r.role,
            &r.subject,
            r.tag.as_ref().and_then(|t| t.attached_subject()),
        ) {
            (Role::Referrer, Some(s), _) => Some(s.clone()),
            (Role::Image, _, Some(s)) => Some(s),
            _ => None,
        };
        subject.is_some_and(|s| subjects.contains(&(r.repository.to_string(), s)))
            && !(r.role == Role::Image && keep(r))
    }));
    out.records = chosen;
    Ok(out)
}

fn push_snapshot_meta(out: &mut Selected, snap: &Snapshot) {
    out.snapshots.push(snap.id.clone());
    if let Some(d) = &snap.run.repositories {
        out.settings.push(d.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(trigger: &str, complete: bool, filters: serde_json::Value) -> RunInfo {
        RunInfo {
            trigger: trigger.into(),
            source: "registry".into(),
            complete,
            filters,
            ..RunInfo::default()
        }
    }

    fn all() -> serde_json::Value {
        serde_json::json!({"repositories": [], "tags": []})
    }

    fn only_x() -> serde_json::Value {
        serde_json::json!({"repositories": ["x"]})
    }

    #[test]
    fn latest_is_the_newest_complete_full_listing_with_everything_newer() {
        let runs = [
            run("scheduled", true, all()),
            run("push", true, all()),
            run("manual", true, all()),
            run("push", true, all()),
            run("manual", true, only_x()),
            run("scheduled", false, all()),
        ];
        let refs: Vec<&RunInfo> = runs.iter().collect();
        // The unfiltered manual run is the base; the filtered run, the push and the incomplete
        // nightly run after it overlay it, none of them replaces it.
        assert_eq!(latest_parts(&refs), Some((2, vec![3, 4, 5])));
    }

    #[test]
    fn a_filtered_nightly_run_is_a_base_and_a_filtered_manual_run_is_not() {
        let runs = [
            run("scheduled", true, only_x()),
            run("manual", true, only_x()),
        ];
        let refs: Vec<&RunInfo> = runs.iter().collect();
        assert_eq!(latest_parts(&refs), Some((0, vec![1])));
    }

    #[test]
    fn without_a_base_the_newest_full_listing_then_the_oldest_snapshot_is_used() {
        let filtered = [run("manual", true, only_x()), run("manual", true, only_x())];
        let refs: Vec<&RunInfo> = filtered.iter().collect();
        assert_eq!(latest_parts(&refs), Some((1, vec![])));
        let pushes = [run("push", true, all()), run("push", true, all())];
        let refs: Vec<&RunInfo> = pushes.iter().collect();
        assert_eq!(latest_parts(&refs), Some((0, vec![1])));
        assert_eq!(latest_parts(&[]), None);
    }

    #[test]
    fn snapshots_of_another_source_do_not_overlay_latest() {
        let mut other = run("push", true, all());
        other.source = "another registry".into();
        let runs = [
            run("scheduled", true, all()),
            other,
            run("push", true, all()),
        ];
        let refs: Vec<&RunInfo> = runs.iter().collect();
        assert_eq!(latest_parts(&refs), Some((0, vec![2])));
    }

    #[test]
    fn scope_is_recorded_or_derived_from_the_trigger() {
        assert_eq!(run("push", true, all()).scope_kind(), ScopeKind::Partial);
        assert_eq!(
            run("work-item", true, all()).scope_kind(),
            ScopeKind::Partial
        );
        assert_eq!(run("scheduled", true, all()).scope_kind(), ScopeKind::Full);
        let mut r = run("manual", true, all());
        r.scope = Some(ScopeKind::Partial);
        assert_eq!(r.scope_kind(), ScopeKind::Partial);
        assert!(run("manual", true, serde_json::Value::Null).unfiltered());
        assert!(!run("manual", true, only_x()).unfiltered());
        assert_ne!(
            run("manual", true, only_x()).group(),
            run("manual", true, all()).group()
        );
        assert_eq!(
            run("manual", true, all()).group(),
            run("scheduled", true, serde_json::Value::Null).group()
        );
    }
}
