//! The vault: an S3 bucket with Object Lock holding an OCI image layout.
//!
//! Every write is conditional (`If-None-Match: *`), carries an explicit checksum we computed,
//! and is locked on the write itself. Blob writes verify sha256 and size while the bytes
//! stream, and only a verified blob ever becomes visible (see [`crate::upload`]).

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockRetention, StorageClass};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_registry::Digest;

use crate::error::VaultError;
use crate::location::VaultLocation;
use crate::lock::{LockMode, LockPolicy, from_s3_time, to_s3_time};
use crate::pool::PartPool;

/// Tuning for writes. Peak buffer memory is `part_size × parts_in_flight`, whatever the blob
/// sizes.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    pub lock: LockPolicy,
    /// Size of one multipart part, and the largest blob sent as a single PUT.
    pub part_size: usize,
    /// Part buffers alive at once across all uploads of this vault handle.
    pub parts_in_flight: usize,
    /// Storage class for blobs; manifests, indexes and snapshots always stay STANDARD because
    /// they are read on every run.
    pub blob_storage_class: Option<StorageClass>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            lock: LockPolicy::default(),
            part_size: 16 * 1024 * 1024,
            parts_in_flight: 6,
            blob_storage_class: None,
        }
    }
}

/// User metadata naming what an object was written as (`x-amz-meta-ecr-vault-kind`).
const KIND_META: &str = "ecr-vault-kind";
/// Written by [`Vault::put_manifest_until`] only, after the manifest's closure was durable.
const KIND_MANIFEST: &str = "manifest";

/// State of an object already in the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectState {
    pub size: u64,
    pub content_type: Option<String>,
    pub retain_until: Option<DateTime<Utc>>,
    pub mode: Option<LockMode>,
    pub version_id: Option<String>,
    /// Written as a manifest with its closure ([`Vault::put_manifest_until`]). False for blobs,
    /// and for manifests written before the marker existed.
    pub is_manifest: bool,
    /// The SHA-256 checksum S3 keeps for the object (base64): of the whole object for a single
    /// PUT, a composite `<value>-<parts>` for a multipart upload.
    pub sha256: Option<String>,
}

impl ObjectState {
    /// Whether S3's whole-object SHA-256 contradicts `digest` (a blob written with other
    /// bytes). `false` when S3 kept none or only a composite one, which cannot be compared.
    pub fn contradicts(&self, digest: &Digest) -> bool {
        self.sha256.as_deref().is_some_and(|c| {
            !c.contains('-') && c != base64::engine::general_purpose::STANDARD.encode(digest.raw())
        })
    }
}

/// A handle on one vault. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) loc: VaultLocation,
    pub(crate) opts: VaultOptions,
    pub(crate) parts: Arc<PartPool>,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The object was written now.
    Written,
    /// It was already there (found by HEAD or by a lost conditional write).
    Existed,
}

impl Vault {
    pub fn new(
        s3: aws_sdk_s3::Client,
        loc: VaultLocation,
        opts: VaultOptions,
    ) -> Result<Self, VaultError> {
        const MIN_PART: usize = 5 * 1024 * 1024;
        if opts.part_size < MIN_PART || opts.part_size > 512 * 1024 * 1024 {
            return Err(VaultError::Config(format!(
                "part size {} is outside S3's 5 MiB minimum and our 512 MiB maximum",
                opts.part_size
            )));
        }
        if opts.parts_in_flight == 0 {
            return Err(VaultError::Config(
                "parts in flight must be at least 1".into(),
            ));
        }
        if opts.lock.retention_days == 0 {
            return Err(VaultError::Config(
                "retention must be at least 1 day".into(),
            ));
        }
        let parts = Arc::new(PartPool::new(opts.part_size, opts.parts_in_flight));
        Ok(Vault {
            s3,
            loc,
            opts,
            parts,
        })
    }

    pub fn location(&self) -> &VaultLocation {
        &self.loc
    }

    pub fn options(&self) -> &VaultOptions {
        &self.opts
    }

    /// Part buffers this handle has allocated: at most `parts_in_flight` when they are reused
    /// as designed, however many blobs went through it.
    pub fn part_buffers_allocated(&self) -> usize {
        self.parts.allocated()
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// HEAD a key: size and lock, or `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectState>, VaultError> {
        match self
            .s3
            .head_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectState {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                content_type: out.content_type().map(str::to_owned),
                retain_until: out.object_lock_retain_until_date().and_then(from_s3_time),
                mode: out.object_lock_mode().and_then(|m| m.as_str().parse().ok()),
                version_id: out.version_id().map(str::to_owned),
                is_manifest: out
                    .metadata()
                    .and_then(|m| m.get(KIND_META))
                    .is_some_and(|v| v == KIND_MANIFEST),
                sha256: out.checksum_sha256().map(str::to_owned),
            })),
            Err(e) => {
                let err = VaultError::s3("HeadObject", &self.loc.bucket, key, e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    pub async fn head_blob(&self, digest: &Digest) -> Result<Option<ObjectState>, VaultError> {
        self.head(&self.loc.blob_key(digest)).await
    }

    /// Reads the lock with GetObjectRetention, for servers whose HEAD omits it.
    pub async fn retention(
        &self,
        key: &str,
    ) -> Result<Option<(LockMode, DateTime<Utc>)>, VaultError> {
        match self.version_retention(key, None).await {
            Ok(lock) => Ok(lock.and_then(|(mode, until)| Some((mode?, until)))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes sure `key` stays locked for a snapshot taken at `now`. Extends (never shortens)
    /// the lock, with slack, only when it would end too early. Returns whether a call was made.
    pub async fn ensure_locked(
        &self,
        key: &str,
        state: &ObjectState,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        let policy = &self.opts.lock;
        let current = match state.retain_until {
            Some(t) => Some(t),
            None => self.retention(key).await?.map(|(_, t)| t),
        };
        if !policy.needs_extension(current, now) {
            return Ok(false);
        }
        self.set_lock(key, state, policy.write_until(now)).await
    }

    /// Sets `key`'s retain-until to `until` if that is later than its current lock; never
    /// shortens. The mode of an existing lock is kept (COMPLIANCE cannot change anyway).
    pub async fn set_lock(
        &self,
        key: &str,
        state: &ObjectState,
        until: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        if state.retain_until.is_some_and(|t| t >= until) {
            return Ok(false);
        }
        let mode = state.mode.unwrap_or(self.opts.lock.mode);
        let mut req = self
            .s3
            .put_object_retention()
            .bucket(&self.loc.bucket)
            .key(key)
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode.as_retention_mode())
                    .retain_until_date(to_s3_time(until))
                    .build(),
            );
        if let Some(v) = &state.version_id {
            req = req.version_id(v);
        }
        req.send()
            .await
            .map_err(|e| VaultError::s3("PutObjectRetention", &self.loc.bucket, key, e))?;
        tracing::debug!(key, %until, "extended object lock");
        Ok(true)
    }

    /// Writes a small document (manifest, index, snapshot) whose bytes are already in memory,
    /// once, locked for a snapshot taken at `now`.
    pub async fn put_document(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        now: DateTime<Utc>,
    ) -> Result<WriteOutcome, VaultError> {
        self.put_document_until(key, bytes, content_type, self.opts.lock.write_until(now))
            .await
    }

    /// Writes a small document once, locked until `until`: HEAD first, then a conditional PUT
    /// whose `x-amz-checksum-sha256` is the content digest, so S3 re-verifies it. If it exists
    /// (found by the HEAD, or by a conditional PUT that lost a race), its size must match and
    /// its lock is raised to `until` when shorter.
    pub async fn put_document_until(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        until: DateTime<Utc>,
    ) -> Result<WriteOutcome, VaultError> {
        self.put_document_with(key, bytes, content_type, until, &[])
            .await
    }

    /// [`Vault::put_document_until`] for a manifest or index whose closure is durable: it is
    /// marked as such ([`ObjectState::is_manifest`]), so a later run may trust it without
    /// walking its closure. A blob whose bytes happen to equal a manifest never carries it.
    pub async fn put_manifest_until(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        until: DateTime<Utc>,
    ) -> Result<WriteOutcome, VaultError> {
        self.put_document_with(
            key,
            bytes,
            content_type,
            until,
            &[(KIND_META, KIND_MANIFEST)],
        )
        .await
    }

    async fn put_document_with(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        until: DateTime<Utc>,
        metadata: &[(&str, &str)],
    ) -> Result<WriteOutcome, VaultError> {
        let len = bytes.len() as u64;
        if self.head(key).await?.is_none() {
            let outcome = self
                .put_once_meta(key, bytes, content_type, None, until, None, metadata)
                .await?;
            if outcome == WriteOutcome::Written {
                return Ok(outcome);
            }
        }
        // It exists, or another writer won the conditional PUT: check it and lock it for us.
        let state = self.head(key).await?.ok_or_else(|| VaultError::Corrupt {
            key: key.to_owned(),
            reason: "the conditional write said it exists, HEAD says it does not".into(),
        })?;
        if state.size != len {
            return Err(VaultError::Corrupt {
                key: key.to_owned(),
                reason: format!("already exists with {} bytes, expected {len}", state.size),
            });
        }
        self.set_lock(key, &state, until).await?;
        Ok(WriteOutcome::Existed)
    }

    /// The conditional, locked single PUT shared by documents and small blobs. `digest` is the
    /// body's SHA-256 when the caller already computed it while streaming.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_once_meta(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        storage_class: Option<StorageClass>,
        until: DateTime<Utc>,
        digest: Option<&Digest>,
        metadata: &[(&str, &str)],
    ) -> Result<WriteOutcome, VaultError> {
        let computed;
        let digest = match digest {
            Some(d) => d,
            None => {
                computed = Digest::of(&bytes);
                &computed
            }
        };
        let checksum = base64::engine::general_purpose::STANDARD.encode(digest.raw());
        let len = bytes.len() as i64;
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(len)
            // Both the algorithm and the value: moto (like some S3 proxies) refuses a locked
            // write that names no algorithm, and the SDK then sends our value, not its own.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            .if_none_match("*")
            .object_lock_mode(self.opts.lock.mode.as_s3())
            .object_lock_retain_until_date(to_s3_time(until))
            .body(ByteStream::from(bytes));
        if let Some(sc) = storage_class {
            req = req.storage_class(sc);
        }
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        // The SHA-256 checksum protects the body; skip SigV4's second hash of the payload.
        match req.customize().disable_payload_signing().send().await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(e) => {
                let err = VaultError::s3("PutObject", &self.loc.bucket, key, e);
                if err.is_precondition_failed() {
                    Ok(WriteOutcome::Existed)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Reads a whole small object (documents, snapshots) with a size cap.
    pub async fn get_document(&self, key: &str, limit: u64) -> Result<Option<Bytes>, VaultError> {
        let out = match self
            .s3
            .get_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let err = VaultError::s3("GetObject", &self.loc.bucket, key, e);
                return if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        if out.content_length().unwrap_or(0) as u64 > limit {
            return Err(VaultError::Malformed {
                key: key.to_owned(),
                reason: format!("larger than {limit} bytes"),
            });
        }
        let body = out.body.collect().await.map_err(|e| VaultError::S3 {
            op: "GetObject",
            bucket: self.loc.bucket.clone(),
            key: key.to_owned(),
            status: None,
            code: None,
            message: e.to_string(),
        })?;
        Ok(Some(body.into_bytes()))
    }

    /// Streams an object's body (restore, deep verify). Both callers hash every byte with
    /// SHA-256 against the digest in the key and refuse a mismatch before the last byte, so
    /// the SDK's own response check (by default a second SHA-256 over every single-PUT blob)
    /// is switched off here: one SHA-256 pass per byte on restore too.
    pub async fn get_stream(&self, key: &str) -> Result<(u64, ByteStream), VaultError> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                ),
            )
            .send()
            .await
            .map_err(|e| VaultError::s3("GetObject", &self.loc.bucket, key, e))?;
        Ok((out.content_length().unwrap_or(0).max(0) as u64, out.body))
    }

    /// Writes `oci-layout` once, so the vault is an OCI image layout from its first run.
    pub async fn ensure_layout(&self, now: DateTime<Utc>) -> Result<(), VaultError> {
        let key = self.loc.layout_key();
        self.put_document(
            &key,
            Bytes::from_static(br#"{"imageLayoutVersion":"1.0.0"}"#),
            "application/json",
            now,
        )
        .await
        .map(|_| ())
    }

    /// Keys under a prefix (one page at a time, all pages).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, u64)>, VaultError> {
        self.list_keys_from(prefix, None).await
    }

    /// Keys under a prefix that sort after `start_after` (time-ordered names skip the past).
    pub async fn list_keys_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<(String, u64)>, VaultError> {
        self.list_keys_from(prefix, Some(start_after)).await
    }

    async fn list_keys_from(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<(String, u64)>, VaultError> {
        let listed = self.list_objects(prefix, start_after, false).await?;
        Ok(listed.into_iter().map(|o| (o.key, o.size)).collect())
    }

    /// Objects under a prefix, all pages, after `start_after` if given. `shallow` lists only
    /// those directly under it (delimiter `/`), so one LIST skips whole subtrees.
    pub async fn list_objects(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        shallow: bool,
    ) -> Result<Vec<ListedObject>, VaultError> {
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.loc.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .set_delimiter(shallow.then(|| "/".to_owned()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| VaultError::s3("ListObjectsV2", &self.loc.bucket, prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ListedObject {
                        key: k.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        last_modified: o.last_modified().and_then(from_s3_time),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One object from a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}
