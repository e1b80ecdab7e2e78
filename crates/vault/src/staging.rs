//! The staging area: state of multipart uploads cut short by a deadline, so the next
//! invocation continues them instead of starting a 52,000 MiB layer again.
//!
//! One JSON record per blob at `<prefix>/staging/uploads/<digest-hex>.json` holds the upload id,
//! the object key, the part size, every completed part (number, ETag, CRC64NVME, size), the bytes
//! hashed so far and the SHA-256 internal state at that part boundary. Lifecycle:
//! - **created** when an upload stops at a deadline (after its in-flight parts finished);
//! - **resumed** by the next copy of the same blob: ListParts confirms the upload, the rest of
//!   the blob is fetched with a Range request from the boundary and hashed from the saved state;
//! - **removed** once CompleteMultipartUpload succeeded (only after the whole blob's digest and
//!   size matched), or when the upload is gone or failed, in which case the copy starts over.
//!   Removal is best effort: the deployed backup role is denied every `DeleteObject`, so there
//!   the record stays (a stale one costs the next copy of that blob a GET and a ListParts);
//! - **abandoned** records (the image was deleted before the next run) are left to `gc`, and
//!   their uploads to the bucket's `AbortIncompleteMultipartUpload` lifecycle rule.
//!
//! Records are not vault content: they carry a short lock (a day), so a bucket's default
//! retention never pins them for months, and deleting one only adds a delete marker. The lock
//! is in the vault's configured mode: a bucket policy that pins the mode
//! (`DenyOtherLockMode` in both templates) refuses any other, and the vault-account default is
//! COMPLIANCE (docs/decisions/0008).

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use ecr_vault_registry::Digest;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::lock::to_s3_time;
use crate::store::Vault;

/// The record format written now; see [`StagingRecord::version`].
pub const RECORD_VERSION: u32 = 2;

/// Largest staging record we read: 10,000 parts of ~200 bytes each, with room to spare.
const MAX_RECORD_BYTES: u64 = 8 * 1024 * 1024;

/// How long a staging record is locked: long enough to outlive the run, short enough that a
/// finished record stops costing anything soon.
const RECORD_LOCK: Duration = Duration::days(1);

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 whose state can be saved at a 64-byte boundary and restored in another process.
/// Drives sha2's block function directly (same code path and CPU extensions as `Sha256`), so
/// the record holds exactly the eight state words and a byte count (decision 0011 says why
/// not sha2 0.11's serialised state).
#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes fed so far, including those still in `buf`.
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumableSha256 {
    pub fn new() -> Self {
        ResumableSha256 {
            state: SHA256_IV,
            len: 0,
            buf: [0; 64],
            buf_len: 0,
        }
    }

    /// Continues from a saved state; `len` must be a multiple of 64 (a block boundary).
    pub fn resume(state: [u32; 8], len: u64) -> Option<Self> {
        len.is_multiple_of(64).then_some(ResumableSha256 {
            state,
            len,
            buf: [0; 64],
            buf_len: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            let block = self.buf;
            sha2::block_api::compress256(&mut self.state, &[block]);
            self.buf_len = 0;
        }
        // All whole blocks in one call, in place: the SHA extensions run without a copy.
        let (blocks, rest) = data.as_chunks::<64>();
        sha2::block_api::compress256(&mut self.state, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The state to persist, only at a block boundary (where nothing is buffered).
    pub fn boundary_state(&self) -> Option<([u32; 8], u64)> {
        (self.buf_len == 0).then_some((self.state, self.len))
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        tail[self.buf_len] = 0x80;
        let n = if self.buf_len < 56 { 64 } else { 128 };
        tail[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = tail[..n].as_chunks::<64>();
        sha2::block_api::compress256(&mut self.state, blocks);
        let mut raw = [0u8; 32];
        for (i, w) in self.state.iter().enumerate() {
            raw[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Digest::from_sha256(raw)
    }
}

/// One completed part, as CompleteMultipartUpload needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedPart {
    pub part_number: i32,
    pub etag: String,
    /// Base64 CRC64NVME of the part (big-endian), as sent with UploadPart; Complete combines
    /// them into the whole object's.
    pub checksum_crc64nvme: String,
    pub size: u64,
}

/// The persisted state of an upload stopped at a part boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagingRecord {
    /// 2 since parts carry CRC64NVME. A version-1 record names an upload created for SHA-256
    /// parts, which cannot be completed with CRC64NVME ones: it is ignored and the copy starts
    /// over (the old upload goes with the bucket's abort-incomplete lifecycle rule).
    pub version: u32,
    pub digest: Digest,
    pub size: u64,
    pub key: String,
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<StagedPart>,
    /// Bytes hashed and uploaded: the sum of the parts' sizes, a multiple of 64.
    pub bytes_hashed: u64,
    /// SHA-256 state words after `bytes_hashed` bytes, as hex.
    pub sha256_state: String,
    /// The retain-until set on the upload at CreateMultipartUpload, which the object gets.
    pub retain_until: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl StagingRecord {
    pub fn encode_state(state: &[u32; 8]) -> String {
        state.iter().map(|w| format!("{w:08x}")).collect()
    }

    /// The hasher to continue with, if the record is self-consistent.
    pub fn hasher(&self) -> Option<ResumableSha256> {
        let s = self.sha256_state.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, w) in state.iter_mut().enumerate() {
            let word = std::str::from_utf8(&s[i * 8..i * 8 + 8]).ok()?;
            *w = u32::from_str_radix(word, 16).ok()?;
        }
        ResumableSha256::resume(state, self.bytes_hashed)
    }

    /// Parts contiguous from 1, sizes adding up to `bytes_hashed`, all but the data fitting.
    fn consistent(&self) -> bool {
        let sum: u64 = self.parts.iter().map(|p| p.size).sum();
        self.version == RECORD_VERSION
            && sum == self.bytes_hashed
            && self.bytes_hashed < self.size
            && self.part_size > 0
            && self.parts.iter().enumerate().all(|(i, p)| {
                p.part_number == i as i32 + 1
                    && p.size == self.part_size
                    && crate::upload::crc64_from_b64(&p.checksum_crc64nvme).is_some()
            })
            && self.hasher().is_some()
    }
}

impl Vault {
    /// `<prefix>/staging/uploads/<digest-hex>.json`.
    pub fn staging_key(&self, digest: &Digest) -> String {
        self.loc.upload_staging_key(digest)
    }

    /// The staging record for `digest`, if one exists and describes that blob; an unreadable
    /// or inconsistent record is reported and ignored (the copy then starts over).
    pub async fn read_staging(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<StagingRecord>, VaultError> {
        let key = self.staging_key(digest);
        let Some(bytes) = self.get_document(&key, MAX_RECORD_BYTES).await? else {
            return Ok(None);
        };
        let record: StagingRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key, error = %e, "ignoring unreadable staging record");
                return Ok(None);
            }
        };
        if &record.digest != digest
            || record.size != size
            || record.key != self.loc.blob_key(digest)
            || !record.consistent()
        {
            tracing::warn!(key, "ignoring staging record that does not match its blob");
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Saves (or replaces) a record. Not conditional: a later deferral of the same upload
    /// replaces the earlier state.
    pub async fn write_staging(&self, record: &StagingRecord) -> Result<(), VaultError> {
        let key = self.staging_key(&record.digest);
        let body =
            Bytes::from(serde_json::to_vec_pretty(record).map_err(|e| {
                VaultError::Config(format!("cannot serialize staging record: {e}"))
            })?);
        let checksum = base64::engine::general_purpose::STANDARD.encode(Digest::of(&body).raw());
        self.s3
            .put_object()
            .bucket(&self.loc.bucket)
            .key(&key)
            .content_type("application/json")
            .content_length(body.len() as i64)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            // Explicit and short, so a bucket default retention (often months) does not apply
            // to bookkeeping; in the vault's mode, the only one the shipped policies admit.
            .object_lock_mode(self.opts.lock.mode.as_s3())
            .object_lock_retain_until_date(to_s3_time(Utc::now() + RECORD_LOCK))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| VaultError::s3("PutObject", &self.loc.bucket, &key, e))?;
        Ok(())
    }

    /// Removes the record (a delete marker; the locked version expires on its own).
    pub async fn delete_staging(&self, digest: &Digest) -> Result<(), VaultError> {
        let key = self.staging_key(digest);
        self.s3
            .delete_object()
            .bucket(&self.loc.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| VaultError::s3("DeleteObject", &self.loc.bucket, &key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng as _, SeedableRng as _};
    use sha2::{Digest as _, Sha256};

    fn reference(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    #[test]
    fn matches_sha2_on_every_size_around_block_edges() {
        let data: Vec<u8> = (0..1200u32).map(|i| (i * 31 % 251) as u8).collect();
        for n in 0..data.len() {
            let mut h = ResumableSha256::new();
            h.update(&data[..n]);
            assert_eq!(h.finish(), reference(&data[..n]), "size {n}");
        }
    }

    #[test]
    fn matches_sha2_over_random_splits_and_resumes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for round in 0..200 {
            let len = rng.random_range(0..300_000usize);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let mut h = ResumableSha256::new();
            let mut pos = 0;
            while pos < len {
                let step = rng.random_range(1..=(len - pos).min(70_000));
                h.update(&data[pos..pos + step]);
                pos += step;
                // Save and restore whenever the split lands on a boundary, as a deferral does.
                if let Some((state, n)) = h.boundary_state() {
                    let text = StagingRecord::encode_state(&state);
                    let rec = StagingRecord {
                        version: RECORD_VERSION,
                        digest: Digest::of(b""),
                        size: 0,
                        key: String::new(),
                        upload_id: String::new(),
                        part_size: 64,
                        parts: Vec::new(),
                        bytes_hashed: n,
                        sha256_state: text,
                        retain_until: Utc::now(),
                        created: Utc::now(),
                        updated: Utc::now(),
                    };
                    h = rec.hasher().unwrap();
                }
            }
            assert_eq!(h.len(), len as u64);
            assert_eq!(h.finish(), reference(&data), "round {round}, {len} bytes");
        }
    }

    #[test]
    fn resumes_from_part_boundaries_of_a_multipart_blob() {
        let part = 5 * 1024 * 1024 + 64 * 3;
        let data: Vec<u8> = (0..part * 3 + 1000).map(|i| (i % 253) as u8).collect();
        let mut h = ResumableSha256::new();
        h.update(&data[..part]);
        h.update(&data[part..2 * part]);
        let (state, n) = h.boundary_state().unwrap();
        let mut resumed = ResumableSha256::resume(state, n).unwrap();
        resumed.update(&data[2 * part..]);
        assert_eq!(resumed.finish(), reference(&data));
        assert!(ResumableSha256::resume(state, 100).is_none());
    }
}
