//! Restore: vault → registry (ECR or any OCI registry), byte for byte.
//!
//! Order of work, per the brief: create missing ECR repositories with their recorded
//! settings; skip blobs the target has, mount where it can; push each remaining blob as one
//! streamed PUT straight from the S3 body, verifying sha256 and size on the way (a corrupt
//! vault object is refused and named, and never completes an upload); push child manifests
//! before the indexes that name them, and tags last; check the digests the registry reports.
//! Running the same restore twice moves no bytes the second time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use bytes::Bytes;
use ecr_vault_ecr::RepositorySettings;
use ecr_vault_registry::manifest::MAX_MANIFEST_BYTES;
use ecr_vault_registry::{
    Descriptor, Digest, DigestWriter, Manifest, ManifestKind, Reference, RegistryClient,
    RegistryError, RepoName, Tag, UploadStart,
};
use ecr_vault_vault::{Failure, ImageRecord, Role, Vault};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

use crate::EngineError;
use crate::filter::Filters;
use crate::progress::Progress;
use crate::select::{SnapshotSel, select};
use crate::source::{Source, Target};

/// Renames and retags applied on the way out.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    /// `(from, to)`: `team/app` → `restored/app` renames that repository and everything under
    /// it (`team/app/api` → `restored/app/api`); a `from` ending in `/` rewrites that prefix.
    pub renames: Vec<(String, String)>,
    /// `(from, to)` exact tag renames.
    pub retags: Vec<(String, String)>,
    /// Restore by digest only: push no tags.
    pub digest_only: bool,
}

impl Mapping {
    /// Parses `FROM=TO` pairs.
    pub fn parse_pairs(pairs: &[String], what: &str) -> Result<Vec<(String, String)>, EngineError> {
        pairs
            .iter()
            .map(|p| {
                p.split_once('=')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| EngineError::Config(format!("{what} {p:?}: expected FROM=TO")))
            })
            .collect()
    }

    pub fn repo(&self, r: &RepoName) -> Result<RepoName, EngineError> {
        let name = r.as_str();
        for (from, to) in &self.renames {
            let mapped = if from.ends_with('/') {
                name.strip_prefix(from.as_str())
                    .map(|rest| format!("{to}{rest}"))
            } else if name == from {
                Some(to.clone())
            } else {
                name.strip_prefix(&format!("{from}/"))
                    .map(|rest| format!("{}/{rest}", to.trim_end_matches('/')))
            };
            if let Some(m) = mapped {
                return RepoName::parse(&m).map_err(|e| {
                    EngineError::Config(format!("renaming {name} with {from}={to}: {e}"))
                });
            }
        }
        Ok(r.clone())
    }

    pub fn tag(&self, t: &Tag) -> Result<Tag, EngineError> {
        for (from, to) in &self.retags {
            if t.as_str() == from {
                return Tag::parse(to)
                    .map_err(|e| EngineError::Config(format!("retag {from}={to}: {e}")));
            }
        }
        Ok(t.clone())
    }
}

/// A restore request, as the CLI and the restore function build it.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub snapshot: SnapshotSel,
    pub filters: Filters,
    pub digests: Vec<Digest>,
    pub mapping: Mapping,
    pub dry_run: bool,
    /// Images restored at once.
    pub concurrency: usize,
}

/// One image in the plan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    pub source: String,
    pub target: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub blobs_to_push: u64,
    pub bytes_to_push: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub snapshots: Vec<String>,
    pub dry_run: bool,
    pub repositories_created: Vec<String>,
    pub images: u64,
    pub blobs_pushed: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub bytes_pushed: u64,
    pub manifests_pushed: u64,
    pub manifests_present: u64,
    pub tags_pushed: u64,
    pub tags_unchanged: u64,
    pub failures: Vec<Failure>,
    pub warnings: Vec<String>,
    pub plan: Vec<PlannedImage>,
    pub duration_ms: u64,
}

/// Failures listed in full in [`RestoreReport::failure_message`]; the rest are counted.
pub const FAILURES_SHOWN: usize = 50;

impl RestoreReport {
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// One structured log line for the restore.
    pub fn log(&self) {
        tracing::info!(
            images = self.images,
            bytes = self.bytes_pushed,
            failures = self.failures.len(),
            dry_run = self.dry_run,
            "restore finished"
        );
    }

    /// The error of a restore that left failures, small enough for an asynchronous
    /// invocation's OnFailure record (SNS accepts 256 KiB):
    /// `restore failed for N of M image(s); first: <repo>@<ref>: <error>; report: {...}`. The
    /// report keeps every count, the first [`FAILURES_SHOWN`] failures and no plan (the plan
    /// lists every image and would not fit).
    pub fn failure_message(&self) -> String {
        use serde_json::Value;
        let first = self.failures.first().map_or_else(String::new, |f| {
            format!("; first: {}@{}: {}", f.repository, f.reference, f.error)
        });
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("plan");
            m.insert("imagesRestored".into(), Value::from(self.plan.len()));
            m.insert("failuresTotal".into(), Value::from(self.failures.len()));
            if let Some(Value::Array(f)) = m.get_mut("failures") {
                f.truncate(FAILURES_SHOWN);
            }
        }
        format!(
            "restore failed for {} of {} image(s){first}; report: {v}",
            self.failures.len(),
            self.images,
        )
    }
}

/// A node of a closure in push order: blobs, then manifests children-first.
enum Node {
    Blob(Descriptor),
    Manifest(Manifest),
}

struct Restorer<'a> {
    vault: &'a Vault,
    target: &'a RegistryClient,
    dry_run: bool,
    manifests: Mutex<HashMap<Digest, Manifest>>,
    /// Blobs known present per target repository (pushed, mounted or found).
    present: Mutex<HashSet<(RepoName, Digest)>>,
    /// Where each blob was pushed first in this run, for cross-repository mounts.
    pushed_in: Mutex<HashMap<Digest, RepoName>>,
    blob_slots: Semaphore,
    report: StdMutex<RestoreReport>,
    progress: Arc<dyn Progress>,
}

/// Restores the selection into `target`.
pub async fn restore(
    vault: &Vault,
    target: &Target,
    req: &RestoreRequest,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport, EngineError> {
    let started = Instant::now();
    let selected = select(vault, &req.snapshot, &req.filters, &req.digests).await?;
    let r = Restorer {
        vault,
        target: target.registry(),
        dry_run: req.dry_run,
        manifests: Mutex::new(HashMap::new()),
        present: Mutex::new(HashSet::new()),
        pushed_in: Mutex::new(HashMap::new()),
        blob_slots: Semaphore::new(4),
        report: StdMutex::new(RestoreReport {
            snapshots: selected.snapshots.iter().map(|s| s.to_string()).collect(),
            dry_run: req.dry_run,
            ..Default::default()
        }),
        progress,
    };

    // Group records into images per target repository: one digest, its tags.
    let mut images: BTreeMap<(RepoName, Digest), (ImageRecord, RepoName, BTreeSet<Tag>)> =
        BTreeMap::new();
    for rec in &selected.records {
        let target_repo = match req.mapping.repo(&rec.repository) {
            Ok(t) => t,
            Err(e) => {
                r.fail(rec.repository.as_str(), &rec.digest.to_string(), e);
                continue;
            }
        };
        let entry = images
            .entry((target_repo.clone(), rec.digest.clone()))
            .or_insert_with(|| (rec.clone(), target_repo, BTreeSet::new()));
        if let (Some(t), false) = (&rec.tag, req.mapping.digest_only) {
            match req.mapping.tag(t) {
                Ok(t) => {
                    entry.2.insert(t);
                }
                Err(e) => r.fail(rec.repository.as_str(), t.as_str(), e),
            }
        }
    }

    if let Source::Ecr { ecr, .. } = target {
        let repos: BTreeSet<(RepoName, RepoName)> = images
            .values()
            .map(|(rec, to, _)| (rec.repository.clone(), to.clone()))
            .collect();
        r.create_repositories(ecr, &selected.settings, &repos).await;
    }

    progress_total(&r, images.len() as u64);
    // Subjects before their referrers, so registries that check `subject` find it.
    let (subjects, referrers): (Vec<_>, Vec<_>) = images
        .into_values()
        .partition(|(rec, _, _)| rec.role == Role::Image);
    for batch in [subjects, referrers] {
        let r = &r;
        futures::stream::iter(batch)
            .for_each_concurrent(req.concurrency.max(1), |(rec, to, tags)| async move {
                let label = format!("{}@{}", rec.repository, rec.digest);
                match r.restore_image(&rec, &to, &tags).await {
                    Ok(()) => r
                        .progress
                        .image_done(&label, if r.dry_run { "planned" } else { "restored" }),
                    Err(e) => {
                        r.progress.image_done(&label, "failed");
                        r.fail(
                            &format!("{} → {to}", rec.repository),
                            &rec.digest.to_string(),
                            e,
                        );
                    }
                }
            })
            .await;
    }
    let mut report = r.report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn progress_total(r: &Restorer<'_>, n: u64) {
    r.progress.images_total(n);
    r.with_report(|rep| rep.images = n);
}

impl Restorer<'_> {
    fn with_report(&self, f: impl FnOnce(&mut RestoreReport)) {
        let mut g = self.report.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    fn fail(&self, repo: &str, reference: &str, e: impl std::fmt::Display) {
        tracing::warn!(repo, reference, error = %e, "restore failure");
        self.with_report(|r| {
            r.failures.push(Failure {
                repository: repo.to_owned(),
                reference: reference.to_owned(),
                error: e.to_string(),
            })
        });
    }

    fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.with_report(|r| r.warnings.push(w));
    }

    async fn create_repositories(
        &self,
        ecr: &ecr_vault_ecr::Ecr,
        settings_docs: &[Digest],
        repos: &BTreeSet<(RepoName, RepoName)>,
    ) {
        // Newest settings document first: the first record of a repository wins.
        let mut settings: HashMap<String, RepositorySettings> = HashMap::new();
        for d in settings_docs {
            let key = self.vault.location().blob_key(d);
            match self.vault.get_document(&key, 64 * 1024 * 1024).await {
                Ok(Some(b)) => match serde_json::from_slice::<Vec<RepositorySettings>>(&b) {
                    Ok(list) => {
                        for s in list {
                            settings.entry(s.name.clone()).or_insert(s);
                        }
                    }
                    Err(e) => self.warn(format!("repository settings {d} unreadable: {e}")),
                },
                Ok(None) => self.warn(format!("repository settings {d} missing from the vault")),
                Err(e) => self.warn(format!("repository settings {d}: {e}")),
            }
        }
        let existing: HashSet<String> = match ecr.list_repositories().await {
            Ok(list) => list
                .iter()
                .filter_map(|r| r.repository_name().map(str::to_owned))
                .collect(),
            Err(e) => {
                self.warn(format!("cannot list target repositories: {e}"));
                HashSet::new()
            }
        };
        let mut done = HashSet::new();
        for (from, to) in repos {
            if existing.contains(to.as_str()) || !done.insert(to.clone()) {
                continue;
            }
            let recorded = settings.get(from.as_str()).cloned().map(|mut s| {
                s.name = to.to_string();
                s
            });
            if recorded.is_none() {
                self.warn(format!(
                    "no recorded settings for {from}; creating {to} with defaults"
                ));
            }
            if self.dry_run {
                self.with_report(|r| r.repositories_created.push(to.to_string()));
                continue;
            }
            match ecr.create_repository(to.as_str(), recorded.as_ref()).await {
                Ok(true) => self.with_report(|r| r.repositories_created.push(to.to_string())),
                Ok(false) => {}
                Err(e) => self.fail(to.as_str(), "", format!("creating the repository: {e}")),
            }
        }
    }

    /// Reads and verifies a manifest from the vault (cached for the run).
    async fn manifest(&self, desc: &Descriptor) -> Result<Manifest, EngineError> {
        if let Some(m) = self.manifests.lock().await.get(&desc.digest) {
            return Ok(m.clone());
        }
        let key = self.vault.location().blob_key(&desc.digest);
        let bytes = self
            .vault
            .get_document(&key, MAX_MANIFEST_BYTES)
            .await?
            .ok_or_else(|| EngineError::Config(format!("{key} is missing from the vault")))?;
        // Parsing checks the bytes against the digest: a tampered manifest is refused here.
        let ct = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
        let m = Manifest::parse(&desc.digest, ct, bytes)
            .map_err(|e| EngineError::Config(format!("vault object {key} is corrupt: {e}")))?;
        self.manifests
            .lock()
            .await
            .insert(desc.digest.clone(), m.clone());
        Ok(m)
    }

    /// The closure of `desc` in push order (children before parents), deduplicated.
    async fn closure(&self, desc: &Descriptor) -> Result<Vec<Node>, EngineError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![(desc.clone(), false, 0u32)];
        while let Some((d, expanded, depth)) = stack.pop() {
            if depth > 8 {
                return Err(EngineError::Config(format!(
                    "{}: nesting deeper than 8",
                    d.digest
                )));
            }
            let m = self.manifest(&d).await?;
            if expanded {
                out.push(Node::Manifest(m));
                continue;
            }
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            stack.push((d.clone(), true, depth));
            match m.kind {
                ManifestKind::Index => {
                    for c in m.references.iter().rev() {
                        stack.push((c.clone(), false, depth + 1));
                    }
                }
                ManifestKind::Image => {
                    for b in &m.references {
                        if seen.insert(b.digest.clone()) {
                            out.push(Node::Blob(b.clone()));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn restore_image(
        &self,
        rec: &ImageRecord,
        to: &RepoName,
        tags: &BTreeSet<Tag>,
    ) -> Result<(), EngineError> {
        let top = rec.descriptor();
        let nodes = self.closure(&top).await?;
        let mut planned = PlannedImage {
            source: format!("{}@{}", rec.repository, rec.digest),
            target: to.to_string(),
            digest: rec.digest.clone(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            blobs_to_push: 0,
            bytes_to_push: 0,
        };
        // Blobs, several at a time.
        let blobs: Vec<&Descriptor> = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Blob(d) => Some(d),
                Node::Manifest(_) => None,
            })
            .collect();
        let results = futures::future::join_all(blobs.iter().map(|d| self.blob(to, d))).await;
        for (d, r) in blobs.iter().zip(results) {
            match r {
                Ok(true) => {
                    planned.blobs_to_push += 1;
                    planned.bytes_to_push += d.size;
                }
                Ok(false) => {}
                Err(e) if d.is_non_distributable() => self.warn(format!(
                    "{to}: non-distributable layer {} not restored: {e}",
                    d.digest
                )),
                Err(e) => return Err(e),
            }
        }
        // Manifests, children first; then tags.
        for n in &nodes {
            if let Node::Manifest(m) = n {
                self.push_manifest(to, m, &Reference::Digest(m.digest.clone()), rec)
                    .await?;
            }
        }
        let Some(top_manifest) = nodes.iter().rev().find_map(|n| match n {
            Node::Manifest(m) if m.digest == rec.digest => Some(m),
            _ => None,
        }) else {
            return Err(EngineError::Config(format!(
                "{}: closure has no top manifest",
                rec.digest
            )));
        };
        for t in tags {
            self.push_manifest(to, top_manifest, &Reference::Tag(t.clone()), rec)
                .await?;
        }
        self.with_report(|r| r.plan.push(planned));
        Ok(())
    }

    /// Makes `d` present in `repo`. Returns whether bytes had to be (or, dry, would be) pushed.
    async fn blob(&self, repo: &RepoName, d: &Descriptor) -> Result<bool, EngineError> {
        let key = (repo.clone(), d.digest.clone());
        if self.present.lock().await.contains(&key) {
            return Ok(false);
        }
        let _slot = self
            .blob_slots
            .acquire()
            .await
            .map_err(|_| EngineError::Config("blob pool closed".into()))?;
        if let Some(size) = self.target.head_blob(repo, &d.digest).await? {
            if size != d.size && size != 0 {
                self.warn(format!(
                    "{repo}: target has {} with {size} bytes, descriptor says {}",
                    d.digest, d.size
                ));
            }
            self.with_report(|r| r.blobs_present += 1);
            self.present.lock().await.insert(key);
            return Ok(false);
        }
        if self.dry_run {
            return Ok(true);
        }
        let from = self.pushed_in.lock().await.get(&d.digest).cloned();
        // The streamed PUT is one-shot, so a dropped connection (to S3 or to the registry)
        // restarts the whole blob in a fresh upload session, with bounded jittered backoff.
        // A corrupt vault object is never retried: it fails the image at once.
        let backoff = ecr_vault_registry::Backoff::default();
        let mut attempt = 0;
        loop {
            let location = match self
                .target
                .start_upload(repo, from.as_ref().map(|f| (&d.digest, f)))
                .await?
            {
                UploadStart::Mounted => {
                    self.with_report(|r| r.blobs_mounted += 1);
                    self.present.lock().await.insert(key);
                    return Ok(false);
                }
                UploadStart::Location(l) => l,
            };
            match self.push_blob(repo, d, location).await {
                Ok(()) => break,
                Err(EngineError::Registry(e))
                    if e.is_retryable() && attempt + 1 < backoff.attempts =>
                {
                    let wait = backoff.delay(attempt, e.retry_after());
                    tracing::warn!(%repo, digest = %d.digest, error = %e, ?wait, "blob push failed; restarting it");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.with_report(|r| {
            r.blobs_pushed += 1;
            r.bytes_pushed += d.size;
        });
        self.pushed_in
            .lock()
            .await
            .entry(d.digest.clone())
            .or_insert_with(|| repo.clone());
        self.present.lock().await.insert(key);
        Ok(true)
    }

    /// One streamed PUT from the S3 body, verified as it flows: if the vault's bytes do not
    /// hash to the digest or have the wrong length, the body fails before it ends, so the
    /// registry never completes the upload.
    async fn push_blob(
        &self,
        repo: &RepoName,
        d: &Descriptor,
        location: url::Url,
    ) -> Result<(), EngineError> {
        let key = self.vault.location().blob_key(&d.digest);
        let (len, body) = self.vault.get_stream(&key).await?;
        if len != d.size {
            return Err(EngineError::Config(format!(
                "vault object {key} is corrupt: {len} bytes, descriptor says {}",
                d.size
            )));
        }
        let verdict: Arc<StdMutex<Option<String>>> = Arc::new(StdMutex::new(None));
        let v = verdict.clone();
        let expected = d.digest.clone();
        let size = d.size;
        let what = key.clone();
        let progress = self.progress.clone();
        let stream = futures::stream::unfold(
            (body, DigestWriter::new(), false),
            move |(mut body, mut hasher, done)| {
                let v = v.clone();
                let expected = expected.clone();
                let what = what.clone();
                let progress = progress.clone();
                async move {
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            hasher.update(&chunk);
                            progress.bytes(chunk.len() as u64);
                            let n = hasher.len();
                            // Judge at the last byte, before handing it over: the HTTP client
                            // stops polling once Content-Length bytes are out.
                            let bad = if n > size {
                                Some(format!(
                                    "vault object {what} is corrupt: longer than {size} bytes"
                                ))
                            } else if n == size {
                                let actual = hasher.clone().finish();
                                (actual != expected).then(|| {
                                    format!("vault object {what} is corrupt: its bytes hash to {actual}, expected {expected}")
                                })
                            } else {
                                None
                            };
                            if let Some(msg) = bad {
                                *v.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                                return Some((
                                    Err(std::io::Error::other(msg)),
                                    (body, hasher, true),
                                ));
                            }
                            Some((Ok(chunk), (body, hasher, false)))
                        }
                        Some(Err(e)) => Some((
                            Err(std::io::Error::other(e.to_string())),
                            (body, hasher, true),
                        )),
                        None => {
                            let n = hasher.len();
                            let actual = hasher.clone().finish();
                            if n == size && actual == expected {
                                return None;
                            }
                            let msg = format!(
                                "vault object {what} is corrupt: {n} bytes hashing to {actual}, expected {size} bytes of {expected}"
                            );
                            *v.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                            Some((Err(std::io::Error::other(msg)), (body, hasher, true)))
                        }
                    }
                }
            },
        );
        let result = self
            .target
            .put_blob(
                repo,
                location,
                &d.digest,
                d.size,
                reqwest::Body::wrap_stream(stream),
            )
            .await;
        if let Some(msg) = verdict.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(EngineError::Config(msg));
        }
        Ok(result?)
    }

    async fn push_manifest(
        &self,
        repo: &RepoName,
        m: &Manifest,
        reference: &Reference,
        rec: &ImageRecord,
    ) -> Result<(), EngineError> {
        let existing = self.target.head_manifest(repo, reference).await?;
        if let Some(h) = &existing
            && h.digest.as_ref() == Some(&m.digest)
        {
            self.with_report(|r| match reference {
                Reference::Tag(_) => r.tags_unchanged += 1,
                Reference::Digest(_) => r.manifests_present += 1,
            });
            return Ok(());
        }
        if self.dry_run {
            return Ok(());
        }
        match self
            .target
            .put_manifest(repo, reference, &m.media_type, Bytes::clone(&m.bytes))
            .await
        {
            Ok(()) => {
                self.with_report(|r| match reference {
                    Reference::Tag(_) => r.tags_pushed += 1,
                    Reference::Digest(_) => r.manifests_pushed += 1,
                });
                // Check the registry now serves exactly these bytes under the reference.
                if let Reference::Tag(_) = reference
                    && let Some(h) = self.target.head_manifest(repo, reference).await?
                    && let Some(d) = h.digest
                    && d != m.digest
                {
                    return Err(EngineError::Registry(RegistryError::DigestMismatch {
                        what: format!("{repo}:{reference} after push"),
                        expected: m.digest.to_string(),
                        actual: d.to_string(),
                    }));
                }
                Ok(())
            }
            Err(e)
                if matches!(reference, Reference::Tag(_))
                    && existing.is_some()
                    && matches!(e.status(), Some(400 | 409)) =>
            {
                // ECR refuses to move a tag under IMMUTABLE tag mutability.
                self.warn(format!(
                    "{repo}:{reference} already points at another image and the registry refused to move it (tag immutability?): {e}"
                ));
                Ok(())
            }
            Err(e)
                if rec.role == Role::Referrer
                    && m.subject.is_some()
                    && matches!(e.status(), Some(400 | 405)) =>
            {
                self.warn(format!(
                    "{repo}@{}: the registry rejected a manifest with a subject ({e}); referrer not restored",
                    m.digest
                ));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_first_failure_and_carries_a_bounded_report() {
        let failure = |i: usize| Failure {
            repository: format!("team/app{i}"),
            reference: "sha256:00".into(),
            error: "vault object blobs/sha256/00 is corrupt".into(),
        };
        let report = RestoreReport {
            images: 500,
            failures: (0..200).map(failure).collect(),
            ..Default::default()
        };
        let m = report.failure_message();
        assert!(
            m.starts_with("restore failed for 200 of 500 image(s); first: team/app0@sha256:00")
        );
        let json = m.split_once("; report: ").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["failuresTotal"], 200);
        assert_eq!(v["failures"].as_array().unwrap().len(), FAILURES_SHOWN);
        assert!(v.get("plan").is_none());
        assert!(m.len() < 64 * 1024);
    }
}
