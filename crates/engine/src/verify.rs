//! Verify: prove that snapshots are restorable and still locked, before an incident.
//!
//! For each snapshot checked: the snapshot object and every object its images reference exist,
//! with the size their descriptors state, locked at least until the snapshot's retain-until;
//! and the snapshot itself is locked no longer than the earliest lock among the manifests it
//! names, so it never outlives its content.
//! Manifests are re-hashed always (they are small and parsed anyway); with `deep`, every blob
//! is re-hashed too and any key with more than one version (an overwrite) is reported.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use ecr_vault_registry::manifest::MAX_MANIFEST_BYTES;
use ecr_vault_registry::{Descriptor, Digest, DigestWriter, Manifest, ManifestKind};
use ecr_vault_vault::{Snapshot, Vault};
use serde::Serialize;

use crate::EngineError;
use crate::select::SnapshotSel;

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub snapshots: Vec<String>,
    pub objects_checked: u64,
    pub bytes_rehashed: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Checker<'a> {
    vault: &'a Vault,
    deep: bool,
    /// digest → earliest retain-until found (None: checked and failed).
    checked: BTreeMap<Digest, Option<DateTime<Utc>>>,
    /// digest → the lock its object carries.
    locks: BTreeMap<Digest, DateTime<Utc>>,
    report: VerifyReport,
}

/// Verifies one snapshot, the latest, or every snapshot (`all`).
pub async fn verify(
    vault: &Vault,
    sel: Option<&SnapshotSel>,
    deep: bool,
) -> Result<VerifyReport, EngineError> {
    let ids = match sel {
        None => vault.list_snapshots().await?,
        Some(SnapshotSel::Id(id)) => vec![id.clone()],
        // Every snapshot `latest` is made of.
        Some(SnapshotSel::Latest) => crate::select::latest(vault)
            .await?
            .map(|l| l.ids())
            .unwrap_or_default(),
        Some(SnapshotSel::AsOf(t)) => vault
            .list_snapshots()
            .await?
            .into_iter()
            .rfind(|id| id.time().is_some_and(|st| st <= *t))
            .into_iter()
            .collect(),
    };
    if ids.is_empty() {
        return Err(EngineError::Config(format!(
            "no snapshots to verify in {}",
            vault.location()
        )));
    }
    let mut c = Checker {
        vault,
        deep,
        checked: BTreeMap::new(),
        locks: BTreeMap::new(),
        report: VerifyReport::default(),
    };
    for id in ids {
        let key = vault.location().snapshot_key(&id);
        let Some(snap) = vault.get_snapshot(&id).await? else {
            c.problem(&key, "snapshot listed but unreadable".into());
            continue;
        };
        c.report.snapshots.push(id.to_string());
        c.snapshot(&key, &snap).await;
    }
    if deep {
        c.versions().await?;
    }
    Ok(c.report)
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, problem: String) {
        self.report.problems.push(Problem {
            key: key.to_owned(),
            problem,
        });
    }

    async fn snapshot(&mut self, key: &str, snap: &Snapshot) {
        let required = snap.run.retain_until;
        let own = self.lock_ok(key, required).await.and_then(|(_, u)| u);
        for rec in &snap.images {
            let desc = rec.descriptor();
            self.object(&desc, required, 0).await;
        }
        // Upper bound: content locked less long than its snapshot could be deleted while the
        // snapshot still claims it. S3 stores whole seconds, rounded up.
        let content = snap
            .images
            .iter()
            .filter_map(|r| self.locks.get(&r.digest).map(|u| (r, *u)))
            .min_by_key(|(_, u)| *u);
        if let (Some(own), Some((rec, earliest))) = (own, content)
            && own > earliest + chrono::Duration::seconds(1)
        {
            self.problem(
                key,
                format!(
                    "snapshot locked until {own}, past the lock of {}@{} ({earliest}): it would \
                     outlive its content",
                    rec.repository, rec.digest
                ),
            );
        }
    }

    /// Checks existence, size and lock of a key: its size and lock, `None` if it is missing.
    async fn lock_ok(
        &mut self,
        key: &str,
        required: Option<DateTime<Utc>>,
    ) -> Option<(u64, Option<DateTime<Utc>>)> {
        self.report.objects_checked += 1;
        let state = match self.vault.head(key).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.problem(key, "missing".into());
                return None;
            }
            Err(e) => {
                self.problem(key, format!("unreadable: {e}"));
                return None;
            }
        };
        let until = match state.retain_until {
            Some(u) => Some(u),
            None => self
                .vault
                .retention(key)
                .await
                .ok()
                .flatten()
                .map(|(_, u)| u),
        };
        match (until, required) {
            (None, _) => self.problem(key, "not locked".into()),
            (Some(u), Some(r)) if u < r => {
                self.problem(key, format!("locked until {u}, but its snapshot needs {r}"))
            }
            _ => {}
        }
        Some((state.size, until))
    }

    fn object<'b>(
        &'b mut self,
        desc: &'b Descriptor,
        required: Option<DateTime<Utc>>,
        depth: u32,
    ) -> futures::future::BoxFuture<'b, ()> {
        Box::pin(async move {
            if depth > 8 {
                return;
            }
            if let Some(prev) = self.checked.get(&desc.digest)
                && prev.is_some_and(|p| required.is_none_or(|r| p >= r))
            {
                return;
            }
            let key = self.vault.location().blob_key(&desc.digest);
            let Some((size, until)) = self.lock_ok(&key, required).await else {
                self.checked.insert(desc.digest.clone(), None);
                return;
            };
            if let Some(u) = until {
                self.locks.insert(desc.digest.clone(), u);
            }
            if desc.size != 0 && size != desc.size {
                self.problem(&key, format!("{size} bytes, descriptor says {}", desc.size));
            }
            self.checked.insert(
                desc.digest.clone(),
                required.or(Some(DateTime::<Utc>::MIN_UTC)),
            );
            let is_manifest =
                ecr_vault_registry::manifest::kind_of(&desc.media_type).is_some() || depth == 0;
            if is_manifest {
                match self.vault.get_document(&key, MAX_MANIFEST_BYTES).await {
                    Ok(Some(bytes)) => {
                        self.report.bytes_rehashed += bytes.len() as u64;
                        let ct = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
                        match Manifest::parse(&desc.digest, ct, bytes) {
                            Ok(m) => {
                                for child in &m.references {
                                    let child_depth = match m.kind {
                                        ManifestKind::Index => depth + 1,
                                        ManifestKind::Image => depth + 100,
                                    };
                                    self.object(child, required, child_depth.min(depth + 1))
                                        .await;
                                }
                            }
                            Err(e) => self.problem(&key, format!("corrupt manifest: {e}")),
                        }
                    }
                    Ok(None) => self.problem(&key, "missing".into()),
                    Err(e) => self.problem(&key, format!("unreadable: {e}")),
                }
            } else if self.deep {
                self.rehash(&key, &desc.digest).await;
            }
        })
    }

    async fn rehash(&mut self, key: &str, digest: &Digest) {
        let (_, mut body) = match self.vault.get_stream(key).await {
            Ok(b) => b,
            Err(e) => {
                self.problem(key, format!("unreadable: {e}"));
                return;
            }
        };
        let mut h = DigestWriter::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => h.update(&c),
                Err(e) => {
                    self.problem(key, format!("read failed: {e}"));
                    return;
                }
            }
        }
        self.report.bytes_rehashed += h.len();
        let actual = h.finish();
        if &actual != digest {
            self.problem(key, format!("content hashes to {actual}: corrupt"));
        }
    }

    /// Keys with more than one version were overwritten after the first write.
    async fn versions(&mut self) -> Result<(), EngineError> {
        let loc = self.vault.location();
        let listed = self.vault.list_versions(&loc.key("blobs/")).await?;
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for v in listed.versions {
            *counts.entry(v.key).or_default() += 1;
        }
        for key in &listed.delete_markers {
            self.problem(key, "has a delete marker".into());
        }
        let referenced: HashSet<String> = self.checked.keys().map(|d| loc.blob_key(d)).collect();
        for (k, n) in counts {
            if n > 1 {
                let note = if referenced.contains(&k) {
                    ""
                } else {
                    " (not referenced)"
                };
                self.problem(
                    &k,
                    format!("{n} versions: overwritten after the first write{note}"),
                );
            }
        }
        Ok(())
    }
}
