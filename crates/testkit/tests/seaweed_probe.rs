//! Documents (and guards) the SeaweedFS S3 behaviours the vault relies on, through the same
//! aws-sdk-s3 the product uses. Also probes moto's S3 for the Object Lock checksum rule that
//! SeaweedFS does not enforce.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload,
    CompletedPart, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};
use base64::Engine as _;
use ecr_vault_testkit::{Moto, S3, unique_name};
use sha2::{Digest as _, Sha256};

fn sha256_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

fn in_days(days: u64) -> DateTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    DateTime::from_secs((now + days * 86_400) as i64)
}

fn status_of<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Client with `WhenRequired` checksums, so nothing is added behind our back.
fn bare_client(client: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
    let conf = client
        .config()
        .to_builder()
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn seaweedfs_object_lock_and_conditional_writes() {
    let s3 = S3::start().await.expect("start seaweedfs");
    let c = s3.client();
    let bucket = unique_name("probe");
    s3.create_locked_bucket(&bucket)
        .await
        .expect("locked bucket");

    // Versioning comes on with Object Lock.
    let v = c
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));

    // PutObject with COMPLIANCE + retain-until + explicit SHA-256.
    let body = b"hello vault".to_vec();
    let until = in_days(1);
    let put = c
        .put_object()
        .bucket(&bucket)
        .key("blobs/a")
        .body(ByteStream::from(body.clone()))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .checksum_sha256(sha256_b64(&body))
        .if_none_match("*")
        .send()
        .await
        .expect("locked put");
    assert!(put.version_id().is_some());

    // HeadObject reports the lock and the checksum.
    let head = c
        .head_object()
        .bucket(&bucket)
        .key("blobs/a")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    assert_eq!(
        head.object_lock_retain_until_date().map(|d| d.secs()),
        Some(until.secs())
    );
    assert_eq!(head.checksum_sha256(), Some(sha256_b64(&body).as_str()));

    // GetObjectRetention agrees.
    let r = c
        .get_object_retention()
        .bucket(&bucket)
        .key("blobs/a")
        .send()
        .await
        .unwrap();
    let ret = r.retention().expect("retention");
    assert_eq!(ret.mode(), Some(&ObjectLockRetentionMode::Compliance));
    assert_eq!(
        ret.retain_until_date().map(|d| d.secs()),
        Some(until.secs())
    );

    // Extending works; shortening is refused.
    let later = in_days(3);
    c.put_object_retention()
        .bucket(&bucket)
        .key("blobs/a")
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(later)
                .build(),
        )
        .send()
        .await
        .expect("extend retention");
    let head = c
        .head_object()
        .bucket(&bucket)
        .key("blobs/a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_retain_until_date().map(|d| d.secs()),
        Some(later.secs())
    );
    let shorten = c
        .put_object_retention()
        .bucket(&bucket)
        .key("blobs/a")
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(until)
                .build(),
        )
        .send()
        .await;
    assert!(shorten.is_err(), "shortening a COMPLIANCE lock must fail");

    // If-None-Match: * on an existing key → 412, and no second version.
    let again = c
        .put_object()
        .bucket(&bucket)
        .key("blobs/a")
        .body(ByteStream::from(body.clone()))
        .checksum_sha256(sha256_b64(&body))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .if_none_match("*")
        .send()
        .await
        .expect_err("second conditional put must fail");
    assert_eq!(status_of(&again), Some(412), "{again:?}");

    // A wrong checksum is refused.
    let bad = c
        .put_object()
        .bucket(&bucket)
        .key("blobs/bad")
        .body(ByteStream::from(body.clone()))
        .checksum_sha256(sha256_b64(b"something else"))
        .send()
        .await
        .expect_err("wrong sha256 must fail");
    assert_eq!(bad.code(), Some("BadDigest"), "{bad:?}");

    // SeaweedFS accepts a locked put WITHOUT any checksum (AWS and moto do not).
    bare_client(&c)
        .put_object()
        .bucket(&bucket)
        .key("blobs/nochecksum")
        .body(ByteStream::from(body.clone()))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .expect("seaweedfs is lenient about the integrity header");

    // Multipart with SHA-256 per part, conditional complete.
    let part1 = vec![7u8; 5 * 1024 * 1024];
    let part2 = b"tail".to_vec();
    let mpu = |key: &'static str| {
        let c = c.clone();
        let bucket = bucket.clone();
        let (part1, part2) = (part1.clone(), part2.clone());
        async move {
            let create = c
                .create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(until)
                .send()
                .await
                .expect("create multipart upload");
            let upload_id = create.upload_id().unwrap_or_default().to_string();
            let mut parts = Vec::new();
            for (n, data) in [(1, part1), (2, part2)] {
                let sum = sha256_b64(&data);
                let up = c
                    .upload_part()
                    .bucket(&bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .checksum_sha256(&sum)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .expect("upload part with sha256");
                assert_eq!(up.checksum_sha256(), Some(sum.as_str()));
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(up.e_tag().map(String::from))
                        .checksum_sha256(sum)
                        .build(),
                );
            }
            let done = c
                .complete_multipart_upload()
                .bucket(&bucket)
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
            if done.is_err() {
                let _ = c
                    .abort_multipart_upload()
                    .bucket(&bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
            }
            done.map(|_| ())
        }
    };
    mpu("blobs/big").await.expect("conditional multipart");
    let second = mpu("blobs/big")
        .await
        .expect_err("second complete must fail");
    assert_eq!(status_of(&second), Some(412), "{second:?}");
    let head = c
        .head_object()
        .bucket(&bucket)
        .key("blobs/big")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(5 * 1024 * 1024 + 4));
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    assert!(
        head.checksum_sha256().is_some_and(|s| s.ends_with("-2")),
        "composite checksum: {:?}",
        head.checksum_sha256()
    );

    // ListObjectVersions: one version per key (the 412s created none).
    let versions = c
        .list_object_versions()
        .bucket(&bucket)
        .prefix("blobs/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
    assert_eq!(keys.iter().filter(|k| **k == "blobs/a").count(), 1);
    assert_eq!(keys.iter().filter(|k| **k == "blobs/big").count(), 1);

    // A locked version cannot be deleted; a plain delete only adds a marker.
    let vid = versions
        .versions()
        .iter()
        .find(|v| v.key() == Some("blobs/a"))
        .and_then(|v| v.version_id())
        .unwrap()
        .to_string();
    c.delete_object()
        .bucket(&bucket)
        .key("blobs/a")
        .send()
        .await
        .expect("delete marker");
    let del = c
        .delete_object()
        .bucket(&bucket)
        .key("blobs/a")
        .version_id(&vid)
        .send()
        .await;
    assert!(del.is_err(), "deleting a locked version must fail");
    c.head_object()
        .bucket(&bucket)
        .key("blobs/a")
        .version_id(&vid)
        .send()
        .await
        .expect("locked version still there");

    // Plain buckets are not versioned.
    let plain = unique_name("plain");
    s3.create_bucket(&plain).await.unwrap();
    let v = c
        .get_bucket_versioning()
        .bucket(&plain)
        .send()
        .await
        .unwrap();
    assert_ne!(v.status(), Some(&BucketVersioningStatus::Enabled));
}

#[tokio::test]
async fn moto_s3_enforces_object_lock_integrity_header() {
    let moto = Moto::start().await.expect("start moto");
    let c = moto.s3_client();
    let bucket = unique_name("probe");
    ecr_vault_testkit::s3::create_locked_bucket(&c, &bucket)
        .await
        .expect("locked bucket");
    let body = b"hello".to_vec();
    let until = in_days(1);
    let put = |client: aws_sdk_s3::Client, key: &'static str| {
        let (bucket, body) = (bucket.clone(), body.clone());
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body))
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(until)
        }
    };
    // No checksum at all: refused.
    let err = put(bare_client(&c), "none")
        .await
        .send()
        .await
        .expect_err("moto refuses a locked put without checksum");
    assert_eq!(
        err.code(),
        Some("MissingUploadObjectWithObjectLockHeaders"),
        "{err:?}"
    );
    // The SDK default (CRC32 header + x-amz-sdk-checksum-algorithm): accepted.
    put(c.clone(), "crc32")
        .await
        .send()
        .await
        .expect("default SDK checksum is accepted");
    // Explicit SHA-256 value alone (only `x-amz-checksum-sha256` is sent): moto refuses it,
    // although AWS documents any `x-amz-checksum-*` header as enough.
    let err = put(c.clone(), "sha256")
        .await
        .checksum_sha256(sha256_b64(&body))
        .send()
        .await
        .expect_err("moto wants x-amz-sdk-checksum-algorithm too");
    assert_eq!(
        err.code(),
        Some("MissingUploadObjectWithObjectLockHeaders"),
        "{err:?}"
    );
    // Algorithm + explicit value: accepted, by both WhenSupported and WhenRequired clients.
    for (name, client) in [
        ("sha256-alg", c.clone()),
        ("sha256-alg-bare", bare_client(&c)),
    ] {
        put(client, name)
            .await
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256_b64(&body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}
