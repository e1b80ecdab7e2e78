//! Copying one image's closure from the registry into the vault.
//!
//! Order is the invariant: config and layers (and, for an index, every child manifest with its
//! own closure) are durable and locked before the manifest that names them is written. A
//! manifest in the vault therefore always means a restorable image.
//!
//! Locks are kept in a watermark: a manifest's retain-until is never later than the earliest
//! retain-until in its closure. So for an image already in the vault one HEAD of its manifest
//! answers "is everything it needs locked long enough?", and only when it is not does the copy
//! walk the closure and extend what falls short.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_registry::manifest::{MAX_MANIFEST_BYTES, kind_of};
use ecr_vault_registry::{
    Backoff, Descriptor, Digest, Manifest, ManifestKind, Reference, RegistryClient, RegistryError,
    RepoName,
};
use ecr_vault_vault::{Expected, Vault, VaultError, WriteOutcome};
use futures::future::BoxFuture;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::progress::Progress;

/// Why a copy failed, in words for the run report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CopyError {
    message: Arc<str>,
    deferred: bool,
}

impl CopyError {
    fn new(e: impl std::fmt::Display) -> Self {
        CopyError {
            message: Arc::from(e.to_string()),
            deferred: false,
        }
    }

    /// The copy stopped at the deadline with its progress saved; the image belongs to the
    /// next run, it did not fail.
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }
}

impl From<VaultError> for CopyError {
    fn from(e: VaultError) -> Self {
        CopyError {
            deferred: e.is_deferred(),
            ..CopyError::new(e)
        }
    }
}

impl From<RegistryError> for CopyError {
    fn from(e: RegistryError) -> Self {
        CopyError::new(e)
    }
}

/// Counters for one run, shared by all copies.
#[derive(Default, Debug)]
pub struct CopyStats {
    pub blobs_written: AtomicU64,
    pub blobs_existing: AtomicU64,
    pub manifests_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub lock_extensions: AtomicU64,
}

/// What a copy left in the vault: the object's retain-until (for a manifest, no later than any
/// retain-until in its closure), its media type and size.
#[derive(Clone, Debug)]
pub struct Copied {
    pub until: DateTime<Utc>,
    pub media_type: String,
    pub size: u64,
    /// Whether this run wrote the object (false: it was already in the vault).
    pub written: bool,
}

type Cell = Arc<OnceCell<Result<Copied, CopyError>>>;

/// Copies closures for one run: deduplicates every blob and manifest across all images, bounds
/// concurrent blob transfers, and records warnings.
pub struct Copier {
    pub(crate) vault: Vault,
    pub(crate) registry: RegistryClient,
    /// The run's clock: every lock decision in a run uses the same `now`.
    pub(crate) now: DateTime<Utc>,
    /// Manifests and blobs are cached apart: a layer whose bytes equal a manifest shares its
    /// digest, and copying it as a blob says nothing about that manifest's closure.
    manifests: Mutex<HashMap<Digest, Cell>>,
    blobs: Mutex<HashMap<Digest, Cell>>,
    blob_slots: Semaphore,
    backoff: Backoff,
    pub stats: CopyStats,
    warnings: Mutex<Vec<String>>,
    progress: Arc<dyn Progress>,
    /// No new multipart part starts after this; see [`Copier::with_deadline`].
    stop_at: Option<Instant>,
    /// Set once the registry answered that it has no referrers API: the run stops asking.
    no_referrers_api: std::sync::atomic::AtomicBool,
}

impl Copier {
    pub fn new(
        vault: Vault,
        registry: RegistryClient,
        now: DateTime<Utc>,
        blob_concurrency: usize,
        progress: Arc<dyn Progress>,
    ) -> Self {
        Copier {
            vault,
            registry,
            now,
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            blob_slots: Semaphore::new(blob_concurrency.max(1)),
            backoff: Backoff::default(),
            stats: CopyStats::default(),
            warnings: Mutex::new(Vec::new()),
            progress,
            stop_at: None,
            no_referrers_api: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn referrers_api_unsupported(&self) -> bool {
        self.no_referrers_api.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_referrers_api_unsupported(&self) {
        self.no_referrers_api.store(true, Ordering::Relaxed)
    }

    /// Makes blob uploads stop starting parts once less than `margin` is left before
    /// `deadline`: their state goes to the vault's staging area and the next run continues
    /// them, so a layer too large for one invocation still gets through.
    pub fn with_deadline(mut self, deadline: Option<Instant>, margin: Duration) -> Self {
        self.stop_at = deadline.map(|d| d.checked_sub(margin).unwrap_or(d));
        self
    }

    pub async fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().await)
    }

    pub(crate) async fn warnings_push(&self, w: String) {
        self.warn(w).await
    }

    async fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.warnings.lock().await.push(w);
    }

    /// Runs `f` once per digest and cache for the whole run; later callers get the first
    /// result.
    async fn once<F>(
        cache: &Mutex<HashMap<Digest, Cell>>,
        digest: &Digest,
        f: F,
    ) -> Result<Copied, CopyError>
    where
        F: std::future::Future<Output = Result<Copied, CopyError>>,
    {
        let cell = {
            let mut done = cache.lock().await;
            done.entry(digest.clone()).or_default().clone()
        };
        cell.get_or_init(|| f).await.clone()
    }

    /// Captures the manifest `desc` from `repo` with its whole closure. The descriptor's media
    /// type and size may be empty/zero when unknown (a top-level image from a listing).
    pub fn copy_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        desc: &'a Descriptor,
        depth: u32,
    ) -> BoxFuture<'a, Result<Copied, CopyError>> {
        Box::pin(async move {
            if depth > 8 {
                return Err(CopyError::new(format!(
                    "{}: index nesting deeper than 8 levels (loop?)",
                    desc.digest
                )));
            }
            Self::once(
                &self.manifests,
                &desc.digest,
                self.copy_manifest_uncached(repo, desc, depth),
            )
            .await
        })
    }

    async fn copy_manifest_uncached(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        depth: u32,
    ) -> Result<Copied, CopyError> {
        let key = self.vault.location().blob_key(&desc.digest);
        if let Some(state) = self.vault.head(&key).await? {
            match self.reuse_manifest(repo, desc, depth, &key, &state).await? {
                Some(c) => return Ok(c),
                // Deleted (by a GC whose plan predates us) between our HEAD and our use of it:
                // capture it again, as if it had never been there.
                None => tracing::warn!(key, "manifest vanished while reused; capturing again"),
            }
        }
        let reference = Reference::Digest(desc.digest.clone());
        let manifest = self
            .with_retry(|| self.registry.get_manifest(repo, &reference))
            .await?;
        if !desc.media_type.is_empty() && manifest.media_type != desc.media_type {
            self.warn(format!(
                "{repo}@{}: descriptor says {}, manifest says {}; keeping the manifest's bytes",
                desc.digest, desc.media_type, manifest.media_type
            ))
            .await;
        }
        let floor = self.closure(repo, &manifest, depth).await?;
        let until = floor.min(self.vault.options().lock.write_until(self.now));
        let outcome = self
            .vault
            .put_manifest_until(&key, manifest.bytes.clone(), &manifest.media_type, until)
            .await?;
        if outcome == WriteOutcome::Written {
            self.stats.manifests_written.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes_written
                .fetch_add(manifest.bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(Copied {
            until,
            size: manifest.bytes.len() as u64,
            media_type: manifest.media_type,
            written: outcome == WriteOutcome::Written,
        })
    }

    /// A manifest already in the vault. Trusted with one HEAD only when it was written as a
    /// manifest (so its closure was durable first) and its lock covers this snapshot; otherwise
    /// its closure is walked from the vault's own copy, copying what is missing and extending
    /// what falls short, children first. `None`: it vanished since the HEAD.
    async fn reuse_manifest(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
        depth: u32,
        key: &str,
        state: &ecr_vault_vault::ObjectState,
    ) -> Result<Option<Copied>, CopyError> {
        let policy = self.vault.options().lock;
        let media_type = state
            .content_type
            .clone()
            .filter(|c| kind_of(c).is_some())
            .unwrap_or_else(|| desc.media_type.clone());
        let until = match state.retain_until {
            Some(u) => Some(u),
            None => self.vault.retention(key).await?.map(|(_, u)| u),
        };
        if let Some(u) = until
            && state.is_manifest
            && !policy.needs_extension(Some(u), self.now)
        {
            return Ok(Some(Copied {
                until: u,
                media_type,
                size: state.size,
                written: false,
            }));
        }
        let Some(bytes) = self.vault.get_document(key, MAX_MANIFEST_BYTES).await? else {
            return Ok(None);
        };
        let manifest = Manifest::parse(&desc.digest, Some(&media_type), bytes)?;
        let floor = self.closure(repo, &manifest, depth).await?;
        let target = floor.min(policy.write_until(self.now));
        if until.is_none_or(|u| u < target) {
            match self.vault.set_lock(key, state, target).await {
                Ok(_) => {
                    self.stats.lock_extensions.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(Copied {
            // A lock already longer than the closure's floor stays as it is: the watermark
            // this run reports is the floor, which the snapshot's lock must not pass.
            until: until.map_or(target, |u| u.min(floor).max(target)),
            media_type: manifest.media_type,
            size: state.size,
            written: false,
        }))
    }

    /// Makes everything `manifest` references durable and locked; returns the earliest
    /// retain-until among them.
    async fn closure(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        depth: u32,
    ) -> Result<DateTime<Utc>, CopyError> {
        let policy = self.vault.options().lock;
        let mut floor = policy.write_until(self.now);
        let results = match manifest.kind {
            ManifestKind::Index => {
                futures::future::join_all(
                    manifest
                        .references
                        .iter()
                        .map(|child| async move {
                            self.copy_manifest(repo, child, depth + 1)
                                .await
                                .map(|c| c.until)
                        }),
                )
                .await
            }
            ManifestKind::Image => {
                futures::future::join_all(manifest.references.iter().map(|blob| async move {
                    match self.copy_blob(repo, blob).await {
                        Err(e) if blob.is_non_distributable() => {
                            self.warn(format!(
                                "{repo}@{}: non-distributable layer {} not copied ({e}); restore needs its URLs {:?}",
                                manifest.digest, blob.digest, blob.urls
                            ))
                            .await;
                            Ok(floor)
                        }
                        other => other.map(|c| c.until),
                    }
                }))
                .await
            }
        };
        for r in results {
            floor = floor.min(r?);
        }
        Ok(floor)
    }

    /// Copies one blob unless the vault has it; extends its lock when it is reused.
    pub async fn copy_blob(&self, repo: &RepoName, desc: &Descriptor) -> Result<Copied, CopyError> {
        Self::once(&self.blobs, &desc.digest, async {
            let (until, written) = self.copy_blob_uncached(repo, desc).await?;
            Ok(Copied {
                until,
                media_type: desc.media_type.clone(),
                size: desc.size,
                written,
            })
        })
        .await
    }

    async fn copy_blob_uncached(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
    ) -> Result<(DateTime<Utc>, bool), CopyError> {
        let key = self.vault.location().blob_key(&desc.digest);
        if let Some(state) = self.vault.head(&key).await? {
            if state.size != desc.size {
                return Err(CopyError::new(format!(
                    "vault object {key} has {} bytes but the descriptor says {}; refusing to reuse it",
                    state.size, desc.size
                )));
            }
            if state.contradicts(&desc.digest) {
                return Err(CopyError::new(format!(
                    "vault object {key} holds other bytes than {} (S3's SHA-256 checksum of it \
                     is {}); refusing to reuse it: run `ecr-vault verify --deep`",
                    desc.digest,
                    state.sha256.as_deref().unwrap_or_default()
                )));
            }
            match self.ensure_locked(&key, &state).await {
                Ok(until) => {
                    self.stats.blobs_existing.fetch_add(1, Ordering::Relaxed);
                    return Ok((until, false));
                }
                // Deleted between our HEAD and the extension (a GC whose plan predates this
                // run): upload it again rather than fail the image.
                Err(e) if e.is_not_found() => {
                    tracing::warn!(
                        key,
                        "blob vanished while its lock was extended; copying again"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        let _slot = self
            .blob_slots
            .acquire()
            .await
            .map_err(|_| CopyError::new("blob pool closed"))?;
        let mut attempt = 0;
        loop {
            match self.transfer(repo, desc).await {
                Ok(until) => return Ok(until),
                Err(e) if e.is_deferred() => return Err(CopyError::from(e)),
                Err(e) if attempt + 1 < self.backoff.attempts && retryable(&e) => {
                    let wait = self.backoff.delay(attempt, None);
                    tracing::warn!(digest = %desc.digest, error = %e, ?wait, "retrying blob");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(CopyError::new(e)),
            }
        }
    }

    async fn transfer(
        &self,
        repo: &RepoName,
        desc: &Descriptor,
    ) -> Result<(DateTime<Utc>, bool), VaultError> {
        // An upload an earlier run stopped at its deadline continues from its last part.
        let staged = self.vault.resume_staged(&desc.digest, desc.size).await?;
        let offset = staged.as_ref().map_or(0, |r| r.bytes_hashed);
        let blob = self.registry.get_blob(repo, &desc.digest, offset).await?;
        if let Some(len) = blob.content_length
            && len != desc.size - offset
        {
            return Err(RegistryError::SizeMismatch {
                what: format!("blob {} from byte {offset}", desc.digest),
                expected: desc.size - offset,
                actual: len,
            }
            .into());
        }
        let progress = self.progress.clone();
        let stream = futures::StreamExt::inspect(blob.stream, move |c| {
            if let Ok(b) = c {
                progress.bytes(b.len() as u64);
            }
        });
        let content_type = if desc.media_type.is_empty() {
            "application/octet-stream"
        } else {
            desc.media_type.as_str()
        };
        let w = self
            .vault
            .put_blob_resumable(
                Expected {
                    digest: &desc.digest,
                    size: desc.size,
                    content_type,
                },
                Box::pin(stream),
                self.now,
                staged,
                self.stop_at,
            )
            .await?;
        match w.outcome {
            WriteOutcome::Written if w.resumed => {
                // Its lock was set when the upload began, in an earlier run: read it and
                // extend it if this snapshot needs more.
                self.stats.blobs_written.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_written
                    .fetch_add(w.bytes_sent, Ordering::Relaxed);
                let key = self.vault.location().blob_key(&desc.digest);
                let state = self
                    .vault
                    .head(&key)
                    .await?
                    .ok_or_else(|| VaultError::Corrupt {
                        key: key.clone(),
                        reason: "completed upload is not visible".into(),
                    })?;
                Ok((self.ensure_locked(&key, &state).await?, true))
            }
            WriteOutcome::Written => {
                self.stats.blobs_written.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_written
                    .fetch_add(w.bytes_sent, Ordering::Relaxed);
                Ok((self.vault.options().lock.write_until(self.now), true))
            }
            WriteOutcome::Existed => {
                // Another writer won the race; its lock may differ, so read it.
                self.stats.blobs_existing.fetch_add(1, Ordering::Relaxed);
                let key = self.vault.location().blob_key(&desc.digest);
                let state = self
                    .vault
                    .head(&key)
                    .await?
                    .ok_or_else(|| VaultError::Corrupt {
                        key: key.clone(),
                        reason: "conditional write said it exists, HEAD says it does not".into(),
                    })?;
                Ok((self.ensure_locked(&key, &state).await?, false))
            }
        }
    }

    /// Extends a reused object's lock if this snapshot needs it; returns its retain-until.
    async fn ensure_locked(
        &self,
        key: &str,
        state: &ecr_vault_vault::ObjectState,
    ) -> Result<DateTime<Utc>, VaultError> {
        let policy = self.vault.options().lock;
        let current = match state.retain_until {
            Some(u) => Some(u),
            None => self.vault.retention(key).await?.map(|(_, u)| u),
        };
        if let Some(u) = current
            && !policy.needs_extension(Some(u), self.now)
        {
            return Ok(u);
        }
        let target = policy.write_until(self.now);
        self.vault.set_lock(key, state, target).await?;
        self.stats.lock_extensions.fetch_add(1, Ordering::Relaxed);
        Ok(target)
    }

    async fn with_retry<T, F, Fut>(&self, f: F) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        // The registry client already retries requests; this covers a body cut short, which
        // shows up as a digest or size mismatch.
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e)
                    if attempt < 2
                        && matches!(
                            e,
                            RegistryError::DigestMismatch { .. } | RegistryError::Transport { .. }
                        ) =>
                {
                    attempt += 1;
                    tokio::time::sleep(self.backoff.delay(attempt, None)).await;
                }
                other => return other,
            }
        }
    }

    /// Writes a small document that is not content-addressed by a registry (settings, audit
    /// records) as a locked blob; returns its digest.
    pub async fn put_json_blob(
        &self,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<Digest, VaultError> {
        let digest = Digest::of(&bytes);
        let key = self.vault.location().blob_key(&digest);
        self.vault
            .put_document(&key, bytes, media_type, self.now)
            .await?;
        Ok(digest)
    }
}

fn retryable(e: &VaultError) -> bool {
    e.is_retryable()
}
