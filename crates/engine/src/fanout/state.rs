//! What a fanned-out run keeps in the vault's staging area: its manifest, one marker per
//! image, and one repository-complete marker per repository whose images all have one (keys
//! from [`ecr_vault_vault::VaultLocation`]). All of it is write-once; the snapshot is a
//! function of the manifest and the image markers alone.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::{
    Counts, Failure, ImageRecord, RunKey, RunMarker, SnapshotId, Vault, VaultError, WriteOutcome,
};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::source::SourceImage;

/// Largest staging document read back.
const MAX_STAGING_BYTES: u64 = 64 * 1024 * 1024;

/// One image a fanned-out run expects, as its run manifest stores it: what the listing knew,
/// and the tags it is captured under. The queue carries it as a [`super::WorkItem`].
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
    pub(super) fn key(&self) -> (RepoName, Digest) {
        (self.repository.clone(), self.digest.clone())
    }

    pub(super) fn name(&self) -> String {
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
    pub skipped: Vec<ecr_vault_vault::Skip>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Digest>,
}

/// A run manifest with its expected images indexed by repository, built once per manifest
/// read (and kept per container by [`super::read_manifest_cached`]): a worker judges the
/// repositories it touched by looking them up, not by scanning the run.
#[derive(Debug)]
pub struct IndexedManifest {
    pub manifest: RunManifest,
    by_repository: BTreeMap<RepoName, BTreeSet<Digest>>,
}

impl From<RunManifest> for IndexedManifest {
    fn from(manifest: RunManifest) -> Self {
        let mut by_repository: BTreeMap<RepoName, BTreeSet<Digest>> = BTreeMap::new();
        for e in &manifest.expected {
            by_repository
                .entry(e.repository.clone())
                .or_default()
                .insert(e.digest.clone());
        }
        IndexedManifest {
            manifest,
            by_repository,
        }
    }
}

impl IndexedManifest {
    /// The expected images of `repo`; `None` when the run expects none there.
    pub(super) fn expected_in(&self, repo: &RepoName) -> Option<&BTreeSet<Digest>> {
        self.by_repository.get(repo)
    }

    /// Every repository with an expected image: each needs its complete marker.
    pub(super) fn repositories(&self) -> impl Iterator<Item = &RepoName> {
        self.by_repository.keys()
    }
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

impl DoneMarker {
    /// Adds this image's work to a run's or a batch's totals.
    pub(super) fn add_to(&self, c: &mut Counts) {
        if self.copied {
            c.images_copied += 1;
        } else {
            c.images_unchanged += 1;
        }
        c.blobs_written += self.blobs_written;
        c.blobs_existing += self.blobs_existing;
        c.bytes_written += self.bytes_written;
        c.lock_extensions += self.lock_extensions;
    }
}

/// What a worker left for an image whose last delivery failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedMarker {
    pub repository: RepoName,
    pub digest: Digest,
    pub error: String,
}

pub(super) fn manifest_key(vault: &Vault, run: &SnapshotId) -> String {
    vault.location().run_manifest_key(run)
}

pub(super) fn marker_key(
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
pub(super) async fn put_once_json<T: Serialize>(
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

pub(super) async fn get_json<T: for<'de> Deserialize<'de>>(
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

/// The repository-complete marker: which repository, and how its images ended. Only its
/// existence is read back; the counts are for whoever inspects the staging area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CompleteMarker {
    pub repository: RepoName,
    pub done: usize,
    pub failed: usize,
}

/// Whether every expected image of `repo` has a marker: two shallow LISTs of that
/// repository's done and failed markers (a nested repository's markers are a subtree, not
/// listed). `None` while an image is outstanding, else the marker to write.
pub(super) async fn repository_status(
    vault: &Vault,
    run: &IndexedManifest,
    repo: &RepoName,
) -> Result<Option<CompleteMarker>, EngineError> {
    let Some(expected) = run.expected_in(repo) else {
        return Ok(None);
    };
    let loc = vault.location();
    let run_prefix = loc.run_prefix(&run.manifest.run);
    let (mut done, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for (kind, seen) in [
        (RunMarker::Done, &mut done),
        (RunMarker::Failed, &mut failed),
    ] {
        let prefix = loc.run_markers_prefix(&run.manifest.run, kind, repo);
        for o in vault.list_objects(&prefix, None, true).await? {
            let rel = o.key.strip_prefix(&run_prefix);
            if let Some(RunKey::Marker(k, r, d)) = rel.and_then(RunKey::parse)
                && k == kind
                && &r == repo
            {
                seen.insert(d);
            }
        }
    }
    if !expected
        .iter()
        .all(|d| done.contains(d) || failed.contains(d))
    {
        return Ok(None);
    }
    Ok(Some(CompleteMarker {
        repository: repo.clone(),
        done: expected.intersection(&done).count(),
        failed: expected.difference(&done).count(),
    }))
}

/// The repositories of a run that have their complete marker: one LIST, one key per
/// repository.
pub(super) async fn complete_repositories(
    vault: &Vault,
    run: &SnapshotId,
) -> Result<BTreeSet<RepoName>, EngineError> {
    let loc = vault.location();
    let run_prefix = loc.run_prefix(run);
    Ok(vault
        .list_keys(&loc.run_complete_prefix(run))
        .await?
        .into_iter()
        .filter_map(
            |(key, _)| match RunKey::parse(key.strip_prefix(&run_prefix)?) {
                Some(RunKey::Complete(r)) => Some(r),
                _ => None,
            },
        )
        .collect())
}

/// Which expected images of a run have a marker.
#[derive(Debug, Default)]
pub(super) struct RunStatus {
    pub done: BTreeSet<(RepoName, Digest)>,
    pub failed: BTreeSet<(RepoName, Digest)>,
    /// Expected images with neither marker.
    pub missing: Vec<ExpectedImage>,
}

/// One LIST of the run's whole staging prefix: O(images), for finalising only. Repository-
/// complete markers are a worker's shortcut to this, not evidence: they are skipped here.
pub(super) async fn status(
    vault: &Vault,
    manifest: &RunManifest,
) -> Result<RunStatus, EngineError> {
    let prefix = vault.location().run_prefix(&manifest.run);
    let mut s = RunStatus::default();
    for (key, _) in vault.list_keys(&prefix).await? {
        let Some(rel) = key.strip_prefix(&prefix) else {
            continue;
        };
        match RunKey::parse(rel) {
            Some(RunKey::Marker(RunMarker::Done, r, d)) => {
                s.done.insert((r, d));
            }
            Some(RunKey::Marker(RunMarker::Failed, r, d)) => {
                s.failed.insert((r, d));
            }
            Some(RunKey::Complete(_)) => {}
            None => tracing::warn!(key, "unexpected key in a run's staging area; ignored"),
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

/// Run ids of the manifests planned since `since`: one shallow LIST, and since run ids sort by
/// time, older manifests are skipped by the listing itself.
pub(super) async fn runs_since(
    vault: &Vault,
    since: DateTime<Utc>,
) -> Result<Vec<SnapshotId>, EngineError> {
    let prefix = vault.location().runs_prefix();
    let start_after = format!("{prefix}{}", SnapshotId::new(since).as_str());
    let mut out: Vec<SnapshotId> = vault
        .list_objects(&prefix, Some(&start_after), true)
        .await?
        .iter()
        .filter_map(|o| o.key.strip_prefix(&prefix)?.strip_suffix(".json"))
        .filter_map(|name| SnapshotId::parse(name).ok())
        .collect();
    out.sort();
    Ok(out)
}
