//! Snapshot records: one immutable OCI index per run.
//!
//! Each captured `repository:tag` is a descriptor annotated with
//! `org.opencontainers.image.ref.name`, so the index doubles as the `index.json` of a
//! downloaded layout that skopeo, oras or crane can read. The run's metadata (source, filters,
//! counts, failures, warnings) rides in the index annotations; stock tools ignore it.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ecr_vault_registry::manifest::{OCI_INDEX, Platform};
use ecr_vault_registry::{Descriptor, Digest, RepoName, Tag};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::store::WriteOutcome;

pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
pub const ANN_REPOSITORY: &str = "dev.ecr-vault.repository";
pub const ANN_TAG: &str = "dev.ecr-vault.tag";
pub const ANN_PUSHED_AT: &str = "dev.ecr-vault.pushed-at";
pub const ANN_ROLE: &str = "dev.ecr-vault.role";
pub const ANN_SUBJECT: &str = "dev.ecr-vault.subject";
pub const ANN_SNAPSHOT: &str = "dev.ecr-vault.snapshot";
pub const ANN_RUN: &str = "dev.ecr-vault.run";
/// The manifest's lock watermark when the snapshot was written (see [`ImageRecord::lock_until`]).
pub const ANN_LOCK_UNTIL: &str = "dev.ecr-vault.lock-until";

/// The time part of a snapshot id: compact, fixed width, so ids sort by time.
const ID_TIME: &str = "%Y%m%dT%H%M%S%3fZ";

/// `YYYYMMDDTHHMMSSmmmZ-<6 hex>`: sorts by time to the millisecond, unique across concurrent
/// runs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn new(now: DateTime<Utc>) -> Self {
        let suffix: u32 = rand::rng().random_range(0..0x100_0000);
        SnapshotId(format!("{}-{suffix:06x}", now.format(ID_TIME)))
    }

    pub fn parse(s: &str) -> Result<Self, VaultError> {
        let bad = || VaultError::Malformed {
            key: s.chars().take(80).collect(),
            reason: "snapshot ids look like 20261124T020000123Z-a1b2c3".into(),
        };
        let (time, suffix) = s.split_once('-').ok_or_else(bad)?;
        if suffix.len() != 6 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        if time.len() != 19 {
            return Err(bad());
        }
        chrono::NaiveDateTime::parse_from_str(time, ID_TIME).map_err(|_| bad())?;
        Ok(SnapshotId(s.to_owned()))
    }

    /// The time the id encodes.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let (time, _) = self.0.split_once('-')?;
        chrono::NaiveDateTime::parse_from_str(time, ID_TIME)
            .ok()
            .map(|t| t.and_utc())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = VaultError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SnapshotId::parse(&s)
    }
}

impl From<SnapshotId> for String {
    fn from(s: SnapshotId) -> String {
        s.0
    }
}

/// Why an entry is in the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An image (or index) listed in the source registry.
    Image,
    /// A manifest whose `subject` is another captured image (signature, SBOM, attestation).
    Referrer,
}

/// One captured manifest under one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub repository: RepoName,
    pub tag: Option<Tag>,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub role: Role,
    pub subject: Option<Digest>,
    /// The manifest's retain-until when this snapshot was written: its lock watermark, no
    /// later than any lock in its closure. It lets the next run's planner decide "locked long
    /// enough" without a request. `None` in snapshots written before the field existed: the
    /// planner then checks with one HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_until: Option<DateTime<Utc>>,
}

/// An image that could not be captured, and why. Strings are kept as given (escaped) because
/// the failure may be that they were invalid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub repository: String,
    pub reference: String,
    pub error: String,
}

/// An image left out on purpose (archived, deleted since the listing, not selected), and why.
/// The same record as a [`Failure`], with `error` holding the reason: reports keep one shape
/// for both lists, but a run with skips is not a failed run.
pub type Skip = Failure;

/// How much of its source a snapshot saw. Retention groups snapshots by scope (restic's
/// `forget --group-by`), so a partial snapshot never displaces a full one, and `latest` is the
/// newest full snapshot overlaid with what newer snapshots captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// A listing of everything the run's filters select (scheduled, fan-out, `ecr-vault backup`).
    Full,
    /// Only the images an event or a work item named (push, work item).
    Partial,
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScopeKind::Full => "full",
            ScopeKind::Partial => "partial",
        })
    }
}

/// The trigger of nightly runs: a complete scheduled snapshot is always a `latest` base, even
/// when the deployment's filters narrow it.
pub const TRIGGER_SCHEDULED: &str = "scheduled";

/// Triggers of snapshots written before scopes were recorded that saw only part of the source.
const PARTIAL_TRIGGERS: [&str; 2] = ["push", "work-item"];

/// Snapshots that retention ranks together: same reach, same source, same filters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ScopeGroup {
    pub kind: ScopeKind,
    pub source: String,
    /// The filters as canonical JSON.
    pub filters: String,
}

impl fmt::Display for ScopeGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.source, self.filters)
    }
}

/// Totals for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub images: u64,
    pub images_copied: u64,
    pub images_unchanged: u64,
    pub images_failed: u64,
    pub images_skipped: u64,
    pub blobs_written: u64,
    pub blobs_existing: u64,
    pub bytes_written: u64,
    pub lock_extensions: u64,
}

/// The run metadata kept in the index's `dev.ecr-vault.run` annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    /// `scheduled`, `push`, `manual`, `work-item`.
    pub trigger: String,
    pub source: String,
    pub filters: serde_json::Value,
    pub complete: bool,
    pub counts: Counts,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Digest of the recorded repository settings document, if captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Digest>,
    pub retain_until: Option<DateTime<Utc>>,
    /// Full listing or partial capture. `None` in snapshots written before it was recorded:
    /// [`RunInfo::scope_kind`] then derives it from the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeKind>,
}

impl RunInfo {
    /// The snapshot's reach, recorded or (for older snapshots) derived from the trigger.
    pub fn scope_kind(&self) -> ScopeKind {
        self.scope
            .unwrap_or(if PARTIAL_TRIGGERS.contains(&self.trigger.as_str()) {
                ScopeKind::Partial
            } else {
                ScopeKind::Full
            })
    }

    /// Whether the run's filters select everything (no repository or tag rule at all).
    pub fn unfiltered(&self) -> bool {
        match &self.filters {
            serde_json::Value::Null => true,
            serde_json::Value::Object(m) => m.values().all(|v| match v {
                serde_json::Value::Null => true,
                serde_json::Value::Array(a) => a.is_empty(),
                _ => false,
            }),
            _ => false,
        }
    }

    /// The retention group this run's snapshot belongs to.
    pub fn group(&self) -> ScopeGroup {
        ScopeGroup {
            kind: self.scope_kind(),
            source: self.source.clone(),
            filters: if self.unfiltered() {
                "{}".to_owned()
            } else {
                self.filters.to_string()
            },
        }
    }

    /// Whether a snapshot of this run can be the base of `latest`: a complete full listing
    /// that is either the nightly run or selects everything.
    pub fn is_latest_base(&self) -> bool {
        self.complete
            && self.scope_kind() == ScopeKind::Full
            && (self.trigger == TRIGGER_SCHEDULED || self.unfiltered())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub created: DateTime<Utc>,
    pub images: Vec<ImageRecord>,
    pub run: RunInfo,
}

/// The stored index as it is read: each entry becomes its [`ImageRecord`] as it is parsed, so
/// a large snapshot is never held twice (as entries with an annotation map each, then as
/// records).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexIn {
    #[allow(dead_code)] // required, as in any OCI index, but not used
    schema_version: u32,
    #[allow(dead_code)]
    media_type: String,
    manifests: Vec<RecordIn>,
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryIn {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: EntryAnnotations,
}

/// The annotations a record is read from (the `ANN_*` keys; others, such as the ref name
/// stock tools read, are ignored).
#[derive(Default, Deserialize)]
struct EntryAnnotations {
    #[serde(rename = "dev.ecr-vault.repository")]
    repository: Option<String>,
    #[serde(rename = "dev.ecr-vault.tag")]
    tag: Option<String>,
    #[serde(rename = "dev.ecr-vault.pushed-at")]
    pushed_at: Option<String>,
    #[serde(rename = "dev.ecr-vault.role")]
    role: Option<String>,
    #[serde(rename = "dev.ecr-vault.subject")]
    subject: Option<String>,
    #[serde(rename = "dev.ecr-vault.lock-until")]
    lock_until: Option<String>,
}

fn parse_ts(t: Option<&String>) -> Option<DateTime<Utc>> {
    t.and_then(|p| DateTime::parse_from_rfc3339(p).ok())
        .map(|p| p.with_timezone(&Utc))
}

/// One entry, validated into its record while the index is parsed.
struct RecordIn(ImageRecord);

impl<'de> Deserialize<'de> for RecordIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let e = EntryIn::deserialize(d)?;
        let a = &e.annotations;
        let repository = a
            .repository
            .as_deref()
            .ok_or_else(|| D::Error::custom(format!("{} has no repository", e.digest)))
            .and_then(|r| RepoName::parse(r).map_err(D::Error::custom))?;
        let tag = a
            .tag
            .as_deref()
            .map(|t| Tag::parse(t).map_err(D::Error::custom))
            .transpose()?;
        Ok(RecordIn(ImageRecord {
            repository,
            tag,
            pushed_at: parse_ts(a.pushed_at.as_ref()),
            role: match a.role.as_deref() {
                Some("referrer") => Role::Referrer,
                _ => Role::Image,
            },
            subject: a.subject.as_deref().and_then(|s| Digest::parse(s).ok()),
            lock_until: parse_ts(a.lock_until.as_ref()),
            media_type: e.media_type,
            digest: e.digest,
            size: e.size,
            platform: e.platform,
        }))
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The stored index as it is written: the same fields, in the same order, as [`IndexDoc`],
/// borrowing the records instead of copying them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: EntriesOut<'a>,
    annotations: BTreeMap<&'static str, String>,
}

struct EntriesOut<'a>(&'a [ImageRecord]);

impl Serialize for EntriesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(EntryOut))
    }
}

/// One record as an [`IndexEntry`].
struct EntryOut<'a>(&'a ImageRecord);

impl Serialize for EntryOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let r = self.0;
        let mut a: BTreeMap<&'static str, String> = BTreeMap::new();
        a.insert(ANN_REPOSITORY, r.repository.to_string());
        if let Some(t) = &r.tag {
            a.insert(ANN_REF_NAME, format!("{}:{t}", r.repository));
            a.insert(ANN_TAG, t.to_string());
        }
        if let Some(p) = r.pushed_at {
            a.insert(ANN_PUSHED_AT, ts(p));
        }
        let role = match r.role {
            Role::Image => "image",
            Role::Referrer => "referrer",
        };
        a.insert(ANN_ROLE, role.to_owned());
        if let Some(subject) = &r.subject {
            a.insert(ANN_SUBJECT, subject.to_string());
        }
        if let Some(u) = r.lock_until {
            a.insert(ANN_LOCK_UNTIL, ts(u));
        }
        let mut e = s.serialize_struct("IndexEntry", 5)?;
        e.serialize_field("mediaType", &r.media_type)?;
        e.serialize_field("digest", &r.digest)?;
        e.serialize_field("size", &r.size)?;
        match &r.platform {
            Some(p) => e.serialize_field("platform", p)?,
            None => e.skip_field("platform")?,
        }
        e.serialize_field("annotations", &a)?;
        e.end()
    }
}

/// Counts what is written, to size the snapshot's buffer exactly.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Snapshot {
    /// The exact bytes stored in the vault (deterministic: sorted annotations, stable order).
    ///
    /// Written straight from the records, one entry at a time, into a buffer of the exact
    /// size: at 100,000 images a whole intermediate index (an annotation map per image) and a
    /// doubling buffer were most of the run's peak memory.
    pub fn to_bytes(&self) -> Result<Bytes, VaultError> {
        let mut annotations = BTreeMap::new();
        annotations.insert(ANN_CREATED, ts(self.created));
        annotations.insert(ANN_SNAPSHOT, self.id.to_string());
        annotations.insert(
            ANN_RUN,
            serde_json::to_string(&self.run).map_err(|e| VaultError::Config(e.to_string()))?,
        );
        let doc = IndexOut {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: EntriesOut(&self.images),
            annotations,
        };
        let err = |e: serde_json::Error| VaultError::Config(e.to_string());
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &doc).map_err(err)?;
        let mut out = Vec::with_capacity(size.0);
        serde_json::to_writer(&mut out, &doc).map_err(err)?;
        Ok(Bytes::from(out))
    }

    /// Reads a stored snapshot back. Every name and digest is re-validated.
    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self, VaultError> {
        let bad = |reason: String| VaultError::Malformed {
            key: key.to_owned(),
            reason,
        };
        let doc: IndexIn = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let id = doc
            .annotations
            .get(ANN_SNAPSHOT)
            .ok_or_else(|| bad("no snapshot id annotation".into()))
            .and_then(|s| SnapshotId::parse(s))?;
        let created = parse_ts(doc.annotations.get(ANN_CREATED))
            .ok_or_else(|| bad("no creation time".into()))?;
        let run: RunInfo = match doc.annotations.get(ANN_RUN) {
            Some(r) => serde_json::from_str(r).map_err(|e| bad(format!("run metadata: {e}")))?,
            None => RunInfo::default(),
        };
        // In place: a record and its newtype have the same layout.
        let images: Vec<ImageRecord> = doc.manifests.into_iter().map(|r| r.0).collect();
        Ok(Snapshot {
            id,
            created,
            images,
            run,
        })
    }
}

impl ImageRecord {
    /// A descriptor for this record's manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            platform: self.platform.clone(),
            artifact_type: None,
            urls: Vec::new(),
            annotations: Default::default(),
        }
    }
}

/// Largest snapshot document read back: about 700,000 image records (the 100,000-image
/// benchmark's snapshot is 36 MiB). A bound, because a snapshot is parsed whole in memory.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

/// A snapshot this version could not read back is refused before it is written: a run that
/// wrote it would leave a snapshot nothing can restore from.
fn check_readable(key: &str, bytes: &Bytes, images: usize) -> Result<(), VaultError> {
    if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(VaultError::Config(format!(
            "the snapshot {key} of {images} image records is {} bytes, over the {} bytes a \
             snapshot may have to be read back; split the run with repository filters",
            bytes.len(),
            MAX_SNAPSHOT_BYTES
        )));
    }
    Ok(())
}

impl crate::store::Vault {
    /// Writes a snapshot once, locked like everything it references. The outcome tells a
    /// writer that raced another with the same bytes (a fan-out finaliser) that it lost.
    pub async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        until: DateTime<Utc>,
    ) -> Result<(String, WriteOutcome), VaultError> {
        let key = self.location().snapshot_key(&snapshot.id);
        let bytes = snapshot.to_bytes()?;
        check_readable(&key, &bytes, snapshot.images.len())?;
        let outcome = self
            .put_document_until(&key, bytes, OCI_INDEX, until)
            .await?;
        Ok((key, outcome))
    }

    /// Snapshot ids in the vault, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotId>, VaultError> {
        let prefix = self.location().snapshots_prefix();
        let mut ids: Vec<SnapshotId> = self
            .list_keys(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| {
                let name = k.strip_prefix(&prefix)?.strip_suffix(".json")?;
                SnapshotId::parse(name).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub async fn get_snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, VaultError> {
        let key = self.location().snapshot_key(id);
        match self.get_document(&key, MAX_SNAPSHOT_BYTES).await? {
            Some(b) => Snapshot::from_bytes(&key, &b).map(Some),
            None => Ok(None),
        }
    }

    /// The newest snapshot of any scope, if any. Restore's `latest` is not this: see
    /// `ecr_vault_engine::select::latest`.
    pub async fn newest_snapshot(&self) -> Result<Option<Snapshot>, VaultError> {
        match self.list_snapshots().await?.pop() {
            Some(id) => self.get_snapshot(&id).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let now = DateTime::parse_from_rfc3339("2026-11-24T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Snapshot {
            id: SnapshotId::new(now),
            created: now,
            images: vec![ImageRecord {
                repository: RepoName::parse("team/app/api").unwrap(),
                tag: Some(Tag::parse("v1").unwrap()),
                media_type: ecr_vault_registry::manifest::OCI_MANIFEST.into(),
                digest: Digest::of(b"m"),
                size: 1,
                platform: None,
                pushed_at: Some(now),
                role: Role::Image,
                subject: None,
                lock_until: Some(now + chrono::Duration::days(37)),
            }],
            run: RunInfo {
                trigger: "manual".into(),
                complete: true,
                ..Default::default()
            },
        }
    }

    #[test]
    fn snapshot_is_a_valid_oci_index_and_round_trips() {
        let s = sample();
        let bytes = s.to_bytes().unwrap();
        let ix = oci_spec::image::ImageIndex::from_reader(&bytes[..]).unwrap();
        let ann = ix.manifests()[0].annotations().as_ref().unwrap();
        assert_eq!(ann[ANN_REF_NAME], "team/app/api:v1");
        assert_eq!(Snapshot::from_bytes("k", &bytes).unwrap(), s);
        assert_eq!(
            s.to_bytes().unwrap(),
            bytes,
            "serialization is deterministic"
        );
    }

    /// The stored format written the plain way: an annotation map per entry.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct IndexDoc {
        schema_version: u32,
        media_type: String,
        manifests: Vec<IndexEntry>,
        annotations: BTreeMap<String, String>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct IndexEntry {
        media_type: String,
        digest: Digest,
        size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<Platform>,
        annotations: BTreeMap<String, String>,
    }

    /// The index as the stored format defines it, built the plain way (a map per entry),
    /// to hold the streaming writer to the same bytes.
    fn reference_bytes(s: &Snapshot) -> Vec<u8> {
        let manifests = s
            .images
            .iter()
            .map(|r| {
                let mut a = BTreeMap::new();
                a.insert(ANN_REPOSITORY.to_owned(), r.repository.to_string());
                if let Some(t) = &r.tag {
                    a.insert(ANN_REF_NAME.to_owned(), format!("{}:{t}", r.repository));
                    a.insert(ANN_TAG.to_owned(), t.to_string());
                }
                if let Some(p) = r.pushed_at {
                    a.insert(ANN_PUSHED_AT.to_owned(), ts(p));
                }
                let role = match r.role {
                    Role::Image => "image",
                    Role::Referrer => "referrer",
                };
                a.insert(ANN_ROLE.to_owned(), role.to_owned());
                if let Some(d) = &r.subject {
                    a.insert(ANN_SUBJECT.to_owned(), d.to_string());
                }
                if let Some(u) = r.lock_until {
                    a.insert(ANN_LOCK_UNTIL.to_owned(), ts(u));
                }
                IndexEntry {
                    media_type: r.media_type.clone(),
                    digest: r.digest.clone(),
                    size: r.size,
                    platform: r.platform.clone(),
                    annotations: a,
                }
            })
            .collect();
        let mut annotations = BTreeMap::new();
        annotations.insert(ANN_CREATED.to_owned(), ts(s.created));
        annotations.insert(ANN_SNAPSHOT.to_owned(), s.id.to_string());
        annotations.insert(ANN_RUN.to_owned(), serde_json::to_string(&s.run).unwrap());
        serde_json::to_vec(&IndexDoc {
            schema_version: 2,
            media_type: OCI_INDEX.to_owned(),
            manifests,
            annotations,
        })
        .unwrap()
    }

    #[test]
    fn the_streaming_writer_writes_the_index_byte_for_byte() {
        let mut s = sample();
        let mut untagged = s.images[0].clone();
        untagged.tag = None;
        untagged.pushed_at = None;
        untagged.lock_until = None;
        untagged.platform = Some(Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        });
        let mut referrer = s.images[0].clone();
        referrer.role = Role::Referrer;
        referrer.subject = Some(s.images[0].digest.clone());
        s.images.extend([untagged, referrer]);
        let bytes = s.to_bytes().unwrap();
        assert_eq!(bytes.as_ref(), reference_bytes(&s).as_slice());
        assert_eq!(Snapshot::from_bytes("k", &bytes).unwrap(), s);
    }

    #[test]
    fn a_snapshot_too_large_to_read_back_is_not_written() {
        let at_limit = Bytes::from(vec![b' '; MAX_SNAPSHOT_BYTES as usize]);
        assert!(check_readable("k", &at_limit, 1).is_ok());
        let over = Bytes::from(vec![b' '; MAX_SNAPSHOT_BYTES as usize + 1]);
        let e = check_readable("k", &over, 1).unwrap_err().to_string();
        assert!(e.contains("split the run"), "{e}");
    }

    #[test]
    fn snapshots_without_a_lock_watermark_still_read() {
        let mut s = sample();
        s.images[0].lock_until = None;
        let bytes = s.to_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(ANN_LOCK_UNTIL));
        assert_eq!(
            Snapshot::from_bytes("k", &bytes).unwrap().images[0].lock_until,
            None
        );
    }

    #[test]
    fn snapshot_ids_sort_by_time_and_validate() {
        let id = SnapshotId::parse("20261124T020000250Z-abc123").unwrap();
        assert_eq!(
            id.time().unwrap().to_rfc3339(),
            "2026-11-24T02:00:00.250+00:00"
        );
        let now = Utc::now();
        let a = SnapshotId::new(now);
        let b = SnapshotId::new(now + chrono::Duration::milliseconds(1));
        assert!(a < b, "ids of runs 1 ms apart sort by time");
        assert_eq!(SnapshotId::parse(a.as_str()).unwrap(), a);
        assert!(SnapshotId::parse("../../x").is_err());
        assert!(SnapshotId::parse("20261124T020000000Z-zz").is_err());
        assert!(SnapshotId::parse("20261124T020000Z-abc123").is_err());
    }
}
