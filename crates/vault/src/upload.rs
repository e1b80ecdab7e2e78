//! Verified, streaming blob writes: registry bytes → bounded part buffers → S3.
//!
//! The blob's sha256 and length are computed as the bytes pass. A blob up to one part is
//! buffered, checked and sent as a single conditional PUT whose checksum is the digest itself.
//! A larger blob goes up as a multipart upload whose parts are sent while later bytes are still
//! arriving, each part with its own SHA-256 checksum; CompleteMultipartUpload, the only step
//! that makes the object visible, is called after the whole-blob digest and size match, and
//! the upload is aborted otherwise. Part buffers come from the vault's shared permit pool, so
//! memory is bounded by configuration, never by layer size.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use ecr_vault_registry::{Digest, DigestWriter, RegistryError};
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use crate::error::VaultError;
use crate::lock::to_s3_time;
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
    /// Bytes sent to S3 (0 when the object already existed).
    pub bytes_sent: u64,
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
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
            let _permit = self.permit().await?;
            let mut hasher = DigestWriter::new();
            let mut buf = BytesMut::with_capacity(expected.size as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                check_not_longer(&expected, hasher.len() + chunk.len() as u64)?;
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            check_complete(&expected, hasher)?;
            let outcome = self
                .put_once(
                    &key,
                    buf.freeze(),
                    expected.content_type,
                    self.opts.blob_storage_class.clone(),
                    self.opts.lock.write_until(now),
                )
                .await?;
            let bytes_sent = if outcome == WriteOutcome::Written {
                expected.size
            } else {
                0
            };
            return Ok(BlobWrite {
                outcome,
                bytes_sent,
            });
        }
        self.put_multipart(&key, expected, stream, now).await
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, VaultError> {
        self.part_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| VaultError::Config("vault part pool closed".into()))
    }

    async fn put_multipart<S>(
        &self,
        key: &str,
        expected: Expected<'_>,
        mut stream: S,
        now: DateTime<Utc>,
    ) -> Result<BlobWrite, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        let bucket = &self.loc.bucket;
        const MAX_PARTS: u64 = 10_000;
        if expected.size.div_ceil(self.opts.part_size as u64) > MAX_PARTS {
            return Err(VaultError::Config(format!(
                "blob {} of {} bytes needs more than {MAX_PARTS} parts of {} bytes; raise the part size",
                expected.digest, expected.size, self.opts.part_size
            )));
        }
        let mut create = self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(expected.content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(self.opts.lock.mode.as_s3())
            .object_lock_retain_until_date(to_s3_time(self.opts.lock.write_until(now)));
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

        let result = self
            .stream_parts(key, &upload_id, &expected, &mut stream)
            .await;
        let parts = match result {
            Ok(parts) => parts,
            Err(e) => {
                self.abort(key, &upload_id).await;
                return Err(e);
            }
        };
        let complete = self
            .s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match complete {
            Ok(_) => Ok(BlobWrite {
                outcome: WriteOutcome::Written,
                bytes_sent: expected.size,
            }),
            Err(e) => {
                let err = VaultError::s3("CompleteMultipartUpload", bucket, key, e);
                self.abort(key, &upload_id).await;
                if err.is_precondition_failed() {
                    Ok(BlobWrite {
                        outcome: WriteOutcome::Existed,
                        bytes_sent: 0,
                    })
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Reads the stream into parts and uploads each as soon as it is full, several at a time.
    async fn stream_parts<S>(
        &self,
        key: &str,
        upload_id: &str,
        expected: &Expected<'_>,
        stream: &mut S,
    ) -> Result<Vec<CompletedPart>, VaultError>
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Unpin + Send,
    {
        let part_size = self.opts.part_size;
        let mut hasher = DigestWriter::new();
        let mut tasks: JoinSet<Result<CompletedPart, VaultError>> = JoinSet::new();
        let mut done = Vec::new();
        let mut part_number = 0i32;
        let mut permit = Some(self.permit().await?);
        let mut buf = BytesMut::with_capacity(part_size);

        let mut finished = false;
        while !finished {
            let chunk = match stream.next().await {
                Some(c) => c?,
                None => {
                    finished = true;
                    Bytes::new()
                }
            };
            check_not_longer(expected, hasher.len() + chunk.len() as u64)?;
            hasher.update(&chunk);
            let mut rest = chunk;
            loop {
                let room = part_size - buf.len();
                let take = room.min(rest.len());
                buf.extend_from_slice(&rest.split_to(take));
                let full = buf.len() == part_size;
                let last = finished && !buf.is_empty();
                if !(full || last) {
                    break;
                }
                part_number += 1;
                let body = std::mem::replace(&mut buf, BytesMut::new()).freeze();
                let p = permit.take();
                tasks.spawn(self.clone().upload_part(
                    key.to_owned(),
                    upload_id.to_owned(),
                    part_number,
                    body,
                    p,
                ));
                // Surface a failed part early instead of streaming the rest of the blob.
                while let Some(r) = tasks.try_join_next() {
                    done.push(joined(r)?);
                }
                if rest.is_empty() && finished {
                    break;
                }
                permit = Some(self.permit().await?);
                buf = BytesMut::with_capacity(part_size);
                if rest.is_empty() {
                    break;
                }
            }
        }
        drop(permit);
        check_complete(expected, hasher)?;
        while let Some(r) = tasks.join_next().await {
            done.push(joined(r)?);
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    async fn upload_part(
        self,
        key: String,
        upload_id: String,
        part_number: i32,
        body: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<CompletedPart, VaultError> {
        let checksum = b64(&Sha256::digest(&body));
        let out = self
            .s3
            .upload_part()
            .bucket(&self.loc.bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(part_number)
            .content_length(body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&checksum)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| VaultError::s3("UploadPart", &self.loc.bucket, &key, e))?;
        drop(permit);
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(out.checksum_sha256().unwrap_or(&checksum))
            .build())
    }

    /// Best effort: an upload that is not aborted here is invisible anyway and is removed by
    /// the bucket's abort-incomplete-multipart lifecycle rule or `gc`.
    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .s3
            .abort_multipart_upload()
            .bucket(&self.loc.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(key, error = %VaultError::s3("AbortMultipartUpload", &self.loc.bucket, key, e), "could not abort multipart upload");
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

fn check_complete(expected: &Expected<'_>, hasher: DigestWriter) -> Result<(), VaultError> {
    if hasher.len() != expected.size {
        return Err(RegistryError::SizeMismatch {
            what: format!("blob {}", expected.digest),
            expected: expected.size,
            actual: hasher.len(),
        }
        .into());
    }
    let actual = hasher.finish();
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
