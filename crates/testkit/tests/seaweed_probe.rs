//! Documents (and guards) the SeaweedFS S3 behaviours the vault relies on, through the same
//! aws-sdk-s3 the product uses. Also probes moto's S3 for the Object Lock checksum rule that
//! SeaweedFS does not enforce, and which CRC checksums each of them verifies (decision 0011).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode, ChecksumType,
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
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

fn crc64_b64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn crc32c_b64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Which CRCs SeaweedFS verifies, for the vault's multipart uploads (decision 0011): CRC64NVME
/// on each UploadPart and as a FULL_OBJECT checksum on CompleteMultipartUpload, under a
/// COMPLIANCE lock, and CRC32C on UploadPart. A wrong value must be refused with `BadDigest`
/// and leave nothing visible; the combined full-object value (computed without re-reading the
/// bytes) must be accepted and reported back by HEAD.
#[tokio::test]
async fn seaweedfs_verifies_crc64nvme_parts_and_full_object_checksum() {
    let s3 = S3::start().await.expect("start seaweedfs");
    let c = bare_client(&s3.client());
    let bucket = unique_name("probe-crc");
    s3.create_locked_bucket(&bucket)
        .await
        .expect("locked bucket");
    let until = in_days(1);

    // Single locked PUT with a CRC64NVME value: right accepted, wrong refused.
    let body = b"hello crc".to_vec();
    for (key, sum, ok) in [
        ("single/right", crc64_b64(&body), true),
        ("single/wrong", crc64_b64(b"other"), false),
    ] {
        let r = c
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from(body.clone()))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(until)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(sum)
            .send()
            .await;
        match (ok, r) {
            (true, r) => {
                r.unwrap_or_else(|e| panic!("{key}: {e:?}"));
            }
            (false, Ok(_)) => panic!("{key}: a wrong CRC64NVME was accepted"),
            (false, Err(e)) => assert_eq!(e.code(), Some("BadDigest"), "{key}: {e:?}"),
        }
    }

    let part1: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let part2 = b"tail of the blob".to_vec();
    let mut whole = part1.clone();
    whole.extend_from_slice(&part2);
    let create = |key: &'static str, alg: ChecksumAlgorithm| {
        let (c, bucket) = (c.clone(), bucket.clone());
        async move {
            c.create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .checksum_algorithm(alg)
                .checksum_type(ChecksumType::FullObject)
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(until)
                .send()
                .await
                .expect("create multipart upload")
                .upload_id()
                .unwrap_or_default()
                .to_owned()
        }
    };

    // UploadPart: a wrong CRC64NVME is refused, the right one accepted.
    let key = "multi/crc64";
    let upload_id = create(key, ChecksumAlgorithm::Crc64Nvme).await;
    let wrong = c
        .upload_part()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_crc64_nvme(crc64_b64(&part2))
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .expect_err("a part with a wrong CRC64NVME must be refused");
    assert_eq!(wrong.code(), Some("BadDigest"), "{wrong:?}");
    let mut parts = Vec::new();
    let mut crcs = Vec::new();
    for (n, data) in [(1, &part1), (2, &part2)] {
        let sum = crc64_b64(data);
        let up = c
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(&sum)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("part with its CRC64NVME");
        crcs.push(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data));
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(up.e_tag().map(String::from))
                .checksum_crc64_nvme(sum)
                .build(),
        );
    }
    // The full-object value from the parts' CRCs alone equals the CRC of the whole.
    let combined = crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc64Nvme,
        crcs[0],
        crcs[1],
        part2.len() as u64,
    );
    let full = base64::engine::general_purpose::STANDARD.encode(combined.to_be_bytes());
    assert_eq!(full, crc64_b64(&whole));
    let complete = |sum: String| {
        let (c, bucket, parts, upload_id) =
            (c.clone(), bucket.clone(), parts.clone(), upload_id.clone());
        async move {
            c.complete_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .upload_id(&upload_id)
                .if_none_match("*")
                .checksum_type(ChecksumType::FullObject)
                .checksum_crc64_nvme(sum)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
        }
    };
    // Complete with a wrong full-object value: refused, and the object is not visible.
    let bad = complete(crc64_b64(b"not the object"))
        .await
        .expect_err("a wrong full-object CRC64NVME must be refused");
    assert_eq!(bad.code(), Some("BadDigest"), "{bad:?}");
    let head = c.head_object().bucket(&bucket).key(key).send().await;
    assert!(head.is_err(), "the refused upload became visible: {head:?}");
    // The upload survives the refusal: the right value completes it.
    complete(full.clone())
        .await
        .expect("complete with the combined full-object CRC64NVME");
    let head = c
        .head_object()
        .bucket(&bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(whole.len() as i64));
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    assert_eq!(head.checksum_crc64_nvme(), Some(full.as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject));

    // CRC32C on UploadPart: a wrong value is refused too.
    let key = "multi/crc32c";
    let upload_id = create(key, ChecksumAlgorithm::Crc32C).await;
    let wrong = c
        .upload_part()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .checksum_crc32_c(crc32c_b64(&part2))
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .expect_err("a part with a wrong CRC32C must be refused");
    assert_eq!(wrong.code(), Some("BadDigest"), "{wrong:?}");
    c.upload_part()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .checksum_crc32_c(crc32c_b64(&part1))
        .body(ByteStream::from(part1.clone()))
        .send()
        .await
        .expect("part with its CRC32C");
}

/// moto accepts the vault's CRC64NVME multipart shape under a lock, but verifies none of the
/// values (a wrong part CRC and a wrong full-object CRC both pass), so checksum behaviour is
/// proven against SeaweedFS only.
#[tokio::test]
async fn moto_accepts_but_does_not_verify_crc64nvme() {
    let moto = Moto::start().await.expect("start moto");
    let c = bare_client(&moto.s3_client());
    let bucket = unique_name("probe-crc");
    ecr_vault_testkit::s3::create_locked_bucket(&c, &bucket)
        .await
        .expect("locked bucket");
    let key = "multi";
    let upload_id = c
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_type(ChecksumType::FullObject)
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(in_days(1))
        .send()
        .await
        .expect("create")
        .upload_id()
        .unwrap_or_default()
        .to_owned();
    let data = b"part bytes".to_vec();
    let up = c
        .upload_part()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_crc64_nvme(crc64_b64(b"wrong"))
        .body(ByteStream::from(data))
        .send()
        .await
        .expect("moto does not verify a part's CRC64NVME");
    c.complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .checksum_type(ChecksumType::FullObject)
        .checksum_crc64_nvme(crc64_b64(b"also wrong"))
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .set_e_tag(up.e_tag().map(String::from))
                        .checksum_crc64_nvme(crc64_b64(b"wrong"))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("moto does not verify the full-object CRC64NVME");
}
