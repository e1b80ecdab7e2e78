//! Choosing what to restore: a snapshot (or "latest"), or a point in time across every
//! snapshot and push capture, narrowed by repository and tag globs and digests.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ecr_vault_registry::Digest;
use ecr_vault_vault::{ImageRecord, Role, Snapshot, SnapshotId, Vault};

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
        SnapshotSel::Latest | SnapshotSel::Id(_) => {
            let snap = match sel {
                SnapshotSel::Id(id) => vault.get_snapshot(id).await?.ok_or_else(|| {
                    EngineError::Config(format!("no snapshot {id} in {}", vault.location()))
                })?,
                _ => vault.latest_snapshot().await?.ok_or_else(|| {
                    EngineError::Config(format!("the vault {} has no snapshots", vault.location()))
                })?,
            };
            push_snapshot_meta(&mut out, &snap);
            snap.images
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
                    let name = match &r.tag {
                        Some(tag) => format!("tag:{tag}"),
                        None => format!("digest:{}", r.digest),
                    };
                    by_name.entry((r.repository.to_string(), name)).or_insert(r);
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
