//! Verified, streaming blob writes: registry bytes → bounded part buffers → S3.
//!
//! The blob's sha256 and length are computed as the bytes pass. A blob up to one part is
//! buffered, checked and sent as a single conditional PUT whose checksum is the digest itself.
//! A larger blob goes up as a multipart upload whose parts are sent while later bytes are still
//! arriving, each part with its CRC64NVME checksum, and CompleteMultipartUpload carries the
//! whole object's CRC64NVME (FULL_OBJECT), combined from the parts' without another pass. S3
//! checks both; the SHA-256 of the stream stays the one end-to-end check, so every byte is
//! SHA-256-hashed once (decision 0011). Complete, the only step that makes the object visible,
//! is called after the whole-blob digest and size match, and the upload is aborted otherwise.
//! Part buffers come from the vault's shared permit pool, so memory is bounded by
//! configuration, never by layer size.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ecr_vault_registry::{Digest, DigestWriter, RegistryError};
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use std::time::Instant;

use crate::error::VaultError;
use crate::lock::to_s3_time;
use crate::pool::PartSlot;
use crate::staging::{RECORD_VERSION, ResumableSha256, StagedPart, StagingRecord};
use crate::store::{Vault, WriteOutcome};

/// What was expected of the incoming bytes.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub content_type: &'a str,
}

/// The result of a blob write.
#[derive(Clone, Copy, Debug)]
pub struct BlobWrite {
    pub outcome: WriteOutcome,
    /// Bytes sent to S3 by this call (0 when the object already existed).
    pub bytes_sent: u64,
    /// It completed an upload that an earlier run started (its lock dates from that run).
    pub resumed: bool,
}

/// Where a multipart upload starts: fresh, or from a staging record.
struct Start {
    upload_id: String,
    part_size: usize,
    retain_until: DateTime<Utc>,
    created: DateTime<Utc>,
    hasher: ResumableSha256,
    parts: Vec<CompletedPart>,
}

/// How streaming the parts ended.
enum Streamed {
    Done(Vec<CompletedPart>),
    /// Stopped at a part boundary: the parts so far and the SHA-256 state after them.
    Stopped {
        parts: Vec<CompletedPart>,
        state: ([u32; 8], u64),
    },
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// CRC64NVME as S3 writes it: base64 of the eight big-endian bytes.
pub(crate) fn crc64_b64(crc: u64) -> String {
    b64(&crc.to_be_bytes())
}

/// The inverse of [`crc64_b64`]; `None` for anything that is not eight bytes of base64.
pub(crate) fn crc64_from_b64(text: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// The whole object's CRC64NVME from its parts' (in part order, every part `part_size` bytes
/// but the last): CRCs combine, so no byte is read again.
fn full_object_crc64(parts: &[CompletedPart], part_size: u64, size: u64) -> Option<u64> {
    let mut full: Option<u64> = None;
    let mut offset = 0u64;
    for p in parts {
        let crc = crc64_from_b64(p.checksum_crc64_nvme()?)?;
        let len = part_size.min(size.checked_sub(offset)?);
        offset += len;
        full = Some(match full {
            None => crc,
            Some(prev) => {
                crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc64Nvme, prev, crc, len)
            }
        });
    }
    (offset == size).then_some(full).flatten()
}

impl Vault {
    /// Streams one blob into `blobs/sha256/<hex>`, verifying digest and size on the way.
    /// The caller HEADs first; this still writes conditionally, so a race with another writer
    /// ends in [`WriteOutcome::Existed`], never in a second version.
    pub async fn put_blob<S>(
        &self,
        expected: Expected<'_>,
        mut stream: S,
        now: DateTime<Utc>,
    ) -> Result<BlobWrite, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        let key = self.loc.blob_key(expected.digest);
        if expected.size <= self.opts.part_size as u64 {
            let PartSlot { permit, mut buf } = self.parts.acquire(expected.size as usize).await?;
            let mut hasher = DigestWriter::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                check_not_longer(&expected, hasher.len() + chunk.len() as u64)?;
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            check_complete(&expected, hasher)?;
            let body = buf.take().freeze();
            // The stream's hash was just checked equal to the digest: no second pass over the
            // bytes for the checksum header.
            let outcome = self
                .put_once_meta(
                    &key,
                    body.clone(),
                    expected.content_type,
                    self.opts.blob_storage_class.clone(),
                    self.opts.lock.write_until(now),
                    Some(expected.digest),
                    &[],
                )
                .await;
            self.parts.recycle(body);
            drop(permit);
            let outcome = outcome?;
            let bytes_sent = if outcome == WriteOutcome::Written {
                expected.size
            } else {
                0
            };
            return Ok(BlobWrite {
                outcome,
                bytes_sent,
                resumed: false,
            });
        }
        self.put_multipart(&key, expected, stream, now, None, None)
            .await
    }

    /// Like [`Vault::put_blob`], but a multipart upload may start from a staging record (see
    /// [`crate::staging`]; `stream` then yields the blob from `record.bytes_hashed`) and stops
    /// starting parts at `stop_at`: in-flight parts finish, the state is saved in the staging
    /// area, and the call returns [`VaultError::Deferred`].
    pub async fn put_blob_resumable<S>(
        &self,
        expected: Expected<'_>,
        stream: S,
        now: DateTime<Utc>,
        staged: Option<StagingRecord>,
        stop_at: Option<Instant>,
    ) -> Result<BlobWrite, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        if staged.is_none() && expected.size <= self.opts.part_size as u64 {
            return self.put_blob(expected, stream, now).await;
        }
        let key = self.loc.blob_key(expected.digest);
        self.put_multipart(&key, expected, stream, now, staged, stop_at)
            .await
    }

    /// The staging record for this blob, confirmed against S3 with ListParts. When the upload
    /// is gone or does not hold the recorded parts, the record (and the upload) are dropped and
    /// `None` tells the caller to start over.
    pub async fn resume_staged(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<StagingRecord>, VaultError> {
        if size <= self.opts.part_size as u64 {
            // Never staged: single PUTs have no state to keep. Saves a GET per small blob.
            return Ok(None);
        }
        let Some(record) = self.read_staging(digest, size).await? else {
            return Ok(None);
        };
        match self.listed_parts(&record).await {
            Ok(listed) => {
                let intact = record.parts.iter().all(|p| {
                    listed
                        .get(&p.part_number)
                        .is_some_and(|(etag, sz)| etag == &p.etag && *sz == p.size)
                });
                if intact {
                    return Ok(Some(record));
                }
                tracing::warn!(key = %record.key, "staged upload lost parts; starting over");
                self.abort(&record.key, &record.upload_id).await;
            }
            Err(e) if e.is_not_found() => {
                tracing::info!(key = %record.key, "staged upload is gone; starting over");
            }
            Err(e) => return Err(e),
        }
        self.forget_staging(digest).await;
        Ok(None)
    }

    async fn listed_parts(
        &self,
        record: &StagingRecord,
    ) -> Result<std::collections::HashMap<i32, (String, u64)>, VaultError> {
        let mut out = std::collections::HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_parts()
                .bucket(&self.loc.bucket)
                .key(&record.key)
                .upload_id(&record.upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| VaultError::s3("ListParts", &self.loc.bucket, &record.key, e))?;
            for p in page.parts() {
                if let Some(n) = p.part_number() {
                    out.insert(
                        n,
                        (
                            p.e_tag().unwrap_or_default().to_owned(),
                            p.size().unwrap_or(0).max(0) as u64,
                        ),
                    );
                }
            }
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn put_multipart<S>(
        &self,
        key: &str,
        expected: Expected<'_>,
        mut stream: S,
        now: DateTime<Utc>,
        staged: Option<StagingRecord>,
        stop_at: Option<Instant>,
    ) -> Result<BlobWrite, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        let bucket = &self.loc.bucket;
        const MAX_PARTS: u64 = 10_000;
        let resumed = staged.is_some();
        let start = match staged {
            Some(record) => {
                let hasher = record.hasher().ok_or_else(|| {
                    VaultError::Config(format!("staging record for {key} has a bad state"))
                })?;
                Start {
                    upload_id: record.upload_id.clone(),
                    part_size: record.part_size as usize,
                    retain_until: record.retain_until,
                    created: record.created,
                    hasher,
                    parts: record
                        .parts
                        .iter()
                        .map(|p| {
                            CompletedPart::builder()
                                .part_number(p.part_number)
                                .e_tag(&p.etag)
                                .checksum_crc64_nvme(&p.checksum_crc64nvme)
                                .build()
                        })
                        .collect(),
                }
            }
            None => {
                if expected.size.div_ceil(self.opts.part_size as u64) > MAX_PARTS {
                    return Err(VaultError::Config(format!(
                        "blob {} of {} bytes needs more than {MAX_PARTS} parts of {} bytes; raise the part size",
                        expected.digest, expected.size, self.opts.part_size
                    )));
                }
                let retain_until = self.opts.lock.write_until(now);
                let mut create = self
                    .s3
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .content_type(expected.content_type)
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .checksum_type(ChecksumType::FullObject)
                    .object_lock_mode(self.opts.lock.mode.as_s3())
                    .object_lock_retain_until_date(to_s3_time(retain_until));
                if let Some(sc) = &self.opts.blob_storage_class {
                    create = create.storage_class(sc.clone());
                }
                let upload_id = create
                    .send()
                    .await
                    .map_err(|e| VaultError::s3("CreateMultipartUpload", bucket, key, e))?
                    .upload_id()
                    .map(str::to_owned)
                    .ok_or_else(|| VaultError::S3 {
                        op: "CreateMultipartUpload",
                        bucket: bucket.clone(),
                        key: key.to_owned(),
                        status: None,
                        code: None,
                        message: "no upload id in the response".into(),
                    })?;
                Start {
                    upload_id,
                    part_size: self.opts.part_size,
                    retain_until,
                    created: Utc::now(),
                    hasher: ResumableSha256::new(),
                    parts: Vec::new(),
                }
            }
        };
        let upload_id = start.upload_id.clone();
        let offset = start.hasher.len();
        let (retain_until, created, part_size) =
            (start.retain_until, start.created, start.part_size as u64);

        let parts = match self
            .stream_parts(key, &expected, &mut stream, start, stop_at)
            .await
        {
            Ok(Streamed::Done(parts)) => parts,
            Ok(Streamed::Stopped { parts, state }) => {
                return Err(self
                    .defer(
                        key,
                        &expected,
                        &upload_id,
                        part_size,
                        parts,
                        state,
                        retain_until,
                        created,
                    )
                    .await);
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                if resumed {
                    self.forget_staging(expected.digest).await;
                }
                return Err(e);
            }
        };
        let Some(full_crc) = full_object_crc64(&parts, part_size, expected.size) else {
            self.abort(key, &upload_id).await;
            if resumed {
                self.forget_staging(expected.digest).await;
            }
            return Err(VaultError::Config(format!(
                "parts of {key} do not add up to {} bytes with CRC64NVME checksums",
                expected.size
            )));
        };
        let complete = self
            .s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .if_none_match("*")
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc64_nvme(crc64_b64(full_crc))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        let result = match complete {
            Ok(_) => Ok(BlobWrite {
                outcome: WriteOutcome::Written,
                bytes_sent: expected.size - offset,
                resumed,
            }),
            Err(e) => {
                let err = VaultError::s3("CompleteMultipartUpload", bucket, key, e);
                self.abort(key, &upload_id).await;
                if err.is_precondition_failed() {
                    Ok(BlobWrite {
                        outcome: WriteOutcome::Existed,
                        bytes_sent: 0,
                        resumed,
                    })
                } else {
                    Err(err)
                }
            }
        };
        if resumed {
            self.forget_staging(expected.digest).await;
        }
        result
    }

    /// Best effort: the deployed backup role may not delete at all (the template denies it
    /// every `DeleteObject`), and a stale record only costs the next copy of this blob one GET
    /// and one ListParts before it starts over. A failed delete must never fail the blob.
    async fn forget_staging(&self, digest: &Digest) {
        if let Err(e) = self.delete_staging(digest).await {
            tracing::warn!(%digest, error = %e, "could not remove staging record");
        }
    }

    /// Saves the state of an upload stopped at a part boundary; returns the error to report.
    #[allow(clippy::too_many_arguments)]
    async fn defer(
        &self,
        key: &str,
        expected: &Expected<'_>,
        upload_id: &str,
        part_size: u64,
        parts: Vec<CompletedPart>,
        state: ([u32; 8], u64),
        retain_until: DateTime<Utc>,
        created: DateTime<Utc>,
    ) -> VaultError {
        let (words, bytes_hashed) = state;
        let record = StagingRecord {
            version: RECORD_VERSION,
            digest: expected.digest.clone(),
            size: expected.size,
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part_size,
            parts: parts
                .iter()
                .map(|p| StagedPart {
                    part_number: p.part_number().unwrap_or(0),
                    etag: p.e_tag().unwrap_or_default().to_owned(),
                    checksum_crc64nvme: p.checksum_crc64_nvme().unwrap_or_default().to_owned(),
                    size: part_size,
                })
                .collect(),
            bytes_hashed,
            sha256_state: StagingRecord::encode_state(&words),
            retain_until,
            created,
            updated: Utc::now(),
        };
        match self.write_staging(&record).await {
            Ok(()) => {
                tracing::info!(
                    key,
                    parts = parts.len(),
                    bytes_hashed,
                    "upload deferred to the next run"
                );
                VaultError::Deferred {
                    key: key.to_owned(),
                    done: bytes_hashed,
                    size: expected.size,
                }
            }
            Err(e) => {
                // Without a record nobody could continue it: abort so nothing is orphaned.
                self.abort(key, upload_id).await;
                e
            }
        }
    }

    /// Reads the stream into parts and uploads each as soon as it is full, several at a time.
    /// The hasher sees exactly the bytes put into parts, so at a part boundary its state is the
    /// state after those parts, which is what a deferral saves.
    async fn stream_parts<S>(
        &self,
        key: &str,
        expected: &Expected<'_>,
        stream: &mut S,
        start: Start,
        stop_at: Option<Instant>,
    ) -> Result<Streamed, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        let part_size = start.part_size;
        let upload_id = start.upload_id;
        let mut hasher = start.hasher;
        let mut done = start.parts;
        let mut part_number = done.len() as i32;
        let mut tasks: JoinSet<Result<CompletedPart, VaultError>> = JoinSet::new();
        let PartSlot { permit, mut buf } = self.parts.acquire(part_size).await?;
        let mut permit = Some(permit);
        let mut seen = hasher.len();
        // The part's CRC is taken chunk by chunk beside the SHA-256, while the bytes are still
        // in cache: a pass over the finished part would read 16 MiB back from memory.
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);

        let mut finished = false;
        while !finished {
            let chunk = match stream.next().await {
                Some(c) => c?,
                None => {
                    finished = true;
                    Bytes::new()
                }
            };
            seen += chunk.len() as u64;
            check_not_longer(expected, seen)?;
            let mut rest = chunk;
            loop {
                let room = part_size - buf.len();
                let take = rest.split_to(room.min(rest.len()));
                hasher.update(&take);
                crc.update(&take);
                buf.extend_from_slice(&take);
                let full = buf.len() == part_size;
                let last = finished && !buf.is_empty();
                if !(full || last) {
                    break;
                }
                part_number += 1;
                let body = buf.take().freeze();
                let p = permit.take();
                tasks.spawn(self.clone().upload_part(
                    key.to_owned(),
                    upload_id.clone(),
                    part_number,
                    body,
                    crc.finalize_reset(),
                    p,
                ));
                // Surface a failed part early instead of streaming the rest of the blob.
                while let Some(r) = tasks.try_join_next() {
                    done.push(joined(r)?);
                }
                if rest.is_empty() && finished {
                    break;
                }
                let slot = self.parts.acquire(part_size).await?;
                permit = Some(slot.permit);
                buf = slot.buf;
                if let Some(stop) = stop_at
                    && Instant::now() >= stop
                    && hasher.len() < expected.size
                {
                    // Out of time: start no new part; finish the ones in flight and hand back
                    // the state at this boundary.
                    drop(buf);
                    drop(permit);
                    while let Some(r) = tasks.join_next().await {
                        done.push(joined(r)?);
                    }
                    done.sort_by_key(|p| p.part_number());
                    let state = hasher.boundary_state().ok_or_else(|| {
                        VaultError::Config("part boundary is not a SHA-256 block boundary".into())
                    })?;
                    return Ok(Streamed::Stopped { parts: done, state });
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        drop(buf);
        drop(permit);
        check_complete(expected, hasher)?;
        while let Some(r) = tasks.join_next().await {
            done.push(joined(r)?);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(Streamed::Done(done))
    }

    async fn upload_part(
        self,
        key: String,
        upload_id: String,
        part_number: i32,
        body: Bytes,
        crc: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<CompletedPart, VaultError> {
        // `crc` (SIMD CRC64NVME of `body`, many times the speed of SHA-256) guards the part's
        // transfer; the blob's SHA-256, computed once as the bytes stream, is the end-to-end
        // check.
        let checksum = crc64_b64(crc);
        let out = self
            .s3
            .upload_part()
            .bucket(&self.loc.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(part_number)
            .content_length(body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(&checksum)
            .body(ByteStream::from(body.clone()))
            // The part's CRC64NVME protects the transfer and the blob's SHA-256 the content;
            // SigV4's payload hash would hash every byte again (22 % of CPU in the profile).
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| VaultError::s3("UploadPart", &self.loc.bucket, &key, e));
        // Back to the pool before the permit goes, so the next part finds it.
        self.parts.recycle(body);
        drop(permit);
        let out = out?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            // Ours, not S3's echo: S3 verified the part against it, and Complete combines them.
            .checksum_crc64_nvme(checksum)
            .build())
    }

    /// Best effort: an upload that is not aborted here is invisible anyway and is removed by
    /// the bucket's abort-incomplete-multipart lifecycle rule or `gc`.
    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.abort_upload(key, upload_id).await {
            tracing::warn!(key, error = %e, "could not abort multipart upload");
        }
    }
}

fn joined(
    r: Result<Result<CompletedPart, VaultError>, tokio::task::JoinError>,
) -> Result<CompletedPart, VaultError> {
    r.map_err(|e| VaultError::Config(format!("part upload task failed: {e}")))?
}

fn check_not_longer(expected: &Expected<'_>, seen: u64) -> Result<(), VaultError> {
    if seen > expected.size {
        return Err(RegistryError::SizeMismatch {
            what: format!("blob {}", expected.digest),
            expected: expected.size,
            actual: seen,
        }
        .into());
    }
    Ok(())
}

/// A finished hash: both hashers report length and digest.
trait Hashed {
    fn hashed_len(&self) -> u64;
    fn digest(self) -> Digest;
}

impl Hashed for DigestWriter {
    fn hashed_len(&self) -> u64 {
        self.len()
    }
    fn digest(self) -> Digest {
        self.finish()
    }
}

impl Hashed for ResumableSha256 {
    fn hashed_len(&self) -> u64 {
        self.len()
    }
    fn digest(self) -> Digest {
        self.finish()
    }
}

fn check_complete(expected: &Expected<'_>, hasher: impl Hashed) -> Result<(), VaultError> {
    if hasher.hashed_len() != expected.size {
        return Err(RegistryError::SizeMismatch {
            what: format!("blob {}", expected.digest),
            expected: expected.size,
            actual: hasher.hashed_len(),
        }
        .into());
    }
    let actual = hasher.digest();
    if &actual != expected.digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("blob {}", expected.digest),
            expected: expected.digest.to_string(),
            actual: actual.to_string(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn crc(data: &[u8]) -> u64 {
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data)
    }

    fn part(n: i32, data: &[u8]) -> CompletedPart {
        CompletedPart::builder()
            .part_number(n)
            .checksum_crc64_nvme(crc64_b64(crc(data)))
            .build()
    }

    #[test]
    fn crc64nvme_is_the_standard_one() {
        // CRC-64/NVME check value (the CRC of "123456789").
        assert_eq!(crc(b"123456789"), 0xae8b_1486_0a79_9888);
        assert_eq!(
            crc64_from_b64(&crc64_b64(0x0102_0304_0506_0708)),
            Some(0x0102_0304_0506_0708)
        );
        assert_eq!(crc64_from_b64("AAAA"), None);
        assert_eq!(crc64_from_b64("not base64!"), None);
    }

    #[test]
    fn full_object_crc_combines_the_parts_without_rereading() {
        let data: Vec<u8> = (0..(3 * 1000 + 17) as u32)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let parts: Vec<_> = data
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| part(i as i32 + 1, c))
            .collect();
        assert_eq!(
            full_object_crc64(&parts, 1000, data.len() as u64),
            Some(crc(&data))
        );
        // Parts that do not add up to the size, or lack a checksum, give no value.
        assert_eq!(
            full_object_crc64(&parts, 1000, data.len() as u64 + 1000),
            None
        );
        assert_eq!(
            full_object_crc64(&parts[..3], 1000, data.len() as u64),
            None
        );
        let bare = CompletedPart::builder().part_number(1).build();
        assert_eq!(full_object_crc64(&[bare], 1000, 10), None);
    }
}
