//! Deadlines and resume on the real stack: a multipart blob upload cut at a run's deadline
//! continues in the next run from its staged state, and the vault ends up exactly as if the
//! blob had gone up in one go. The cut is made deterministic by a fault proxy in front of
//! SeaweedFS that holds the second UploadPart longer than the run has before its deadline.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ecr_vault_engine::{BackupOptions, NoProgress, Source, backup};
use ecr_vault_registry::{ClientOptions, Credentials, RegistryClient, StaticCredentials};
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::s3::s3_client;
use ecr_vault_testkit::{Fault, FaultProxy, Rule, Stack, unique_name};
use ecr_vault_tests::{check_vault, lock, new_vault, only, registry_source};
use ecr_vault_vault::{StagingRecord, Vault, VaultLocation, VaultOptions};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;

fn opts(repo: &str) -> BackupOptions {
    BackupOptions {
        filters: only(repo),
        referrers: false,
        ..BackupOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_at_the_deadline_resumes_in_the_next_run_and_verifies() {
    let stack = Stack::shared().await.unwrap();
    let repo = unique_name("resume");
    // One 30 MiB layer: six 5 MiB parts. Seeded bytes, so the digest is known up front.
    let image = ImageBuilder::oci(51)
        .layers(&[6 * 5 * MIB])
        .build()
        .unwrap();
    let pushed = image.push(&stack.registry, &repo, &["v1"]).await.unwrap();
    let (layer, layer_size) = pushed
        .blobs
        .iter()
        .find(|(_, s)| *s == 6 * 5 * MIB)
        .cloned()
        .unwrap();
    let layer_hex = layer.trim_start_matches("sha256:").to_owned();

    // S3 through the fault proxy; the vault writes with the product's code through it.
    let proxy = FaultProxy::start(&stack.s3.endpoint()).await.unwrap();
    let client = s3_client(&proxy.url(), &stack.s3.access_key, &stack.s3.secret_key);
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let vault = Vault::new(
        client.clone(),
        VaultLocation::parse(&format!("s3://{bucket}/prod")).unwrap(),
        VaultOptions {
            lock: lock(3),
            part_size: 5 * MIB as usize,
            // One part at a time, so the held part decides where the upload stops.
            parts_in_flight: 1,
            blob_storage_class: None,
        },
    )
    .unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let blob_key = format!("prod/blobs/sha256/{layer_hex}");
    let staging_key = format!("prod/staging/uploads/{layer_hex}.json");

    // Run 1: UploadPart #2 is held for 8 s; the run must stop starting parts 3 s in. Whatever
    // the machine's speed, the deadline passes while part 2 is held (or, on a very slow
    // machine, during part 1), never after the last part.
    let hold = proxy.add_rule(
        Rule::new("*", Fault::Delay(Duration::from_secs(8)))
            .method("PUT")
            .query("partNumber")
            .nth(2),
    );
    let margin = Duration::from_secs(60);
    let first = backup(
        &source,
        &vault,
        &BackupOptions {
            deadline: Some(Instant::now() + margin + Duration::from_secs(3)),
            deadline_margin: margin,
            ..opts(&repo)
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(proxy.rule_stats(hold).triggered, 1, "part 2 was never sent");
    assert!(first.failures.is_empty(), "{:#?}", first.failures);
    assert!(!first.complete, "the first run cannot be complete");
    assert_eq!(first.deferred.len(), 1, "{first:#?}");

    // The cut left a staged upload: a record with the upload's completed parts, the upload
    // itself, and no visible blob.
    let record: StagingRecord = serde_json::from_slice(
        &client
            .get_object()
            .bucket(&bucket)
            .key(&staging_key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes(),
    )
    .unwrap();
    // The record is locked briefly, in the vault's mode (COMPLIANCE here): a bucket policy
    // that pins the mode (both templates' DenyOtherLockMode) admits the write.
    let retention = client
        .get_object_retention()
        .bucket(&bucket)
        .key(&staging_key)
        .send()
        .await
        .unwrap();
    let retention = retention.retention().unwrap();
    assert_eq!(
        retention.mode(),
        Some(&aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
    );
    let until = retention.retain_until_date().unwrap().secs();
    let in_a_day = chrono::Utc::now().timestamp() + 86_400;
    assert!(
        (in_a_day - 120..=in_a_day + 120).contains(&until),
        "staging record locked until {until}, not about a day"
    );
    let staged_parts = record.parts.len() as u64;
    assert!(
        (1..6).contains(&staged_parts),
        "{staged_parts} parts staged"
    );
    assert_eq!(record.bytes_hashed, staged_parts * 5 * MIB);
    assert_eq!(record.key, blob_key);
    let uploads = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1, "{uploads:?}");
    assert_eq!(
        uploads.uploads()[0].upload_id(),
        Some(record.upload_id.as_str())
    );
    assert!(
        client
            .head_object()
            .bucket(&bucket)
            .key(&blob_key)
            .send()
            .await
            .is_err(),
        "a partial blob is visible"
    );

    // Run 2, no deadline: continues the same upload with only the missing parts.
    proxy.reset_counts();
    let second = backup(&source, &vault, &opts(&repo), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(second.complete, "{second:#?}");
    assert!(second.failures.is_empty() && second.deferred.is_empty());
    let parts_sent = proxy
        .requests()
        .iter()
        .filter(|r| r.class == "s3-upload-part")
        .count() as u64;
    assert_eq!(parts_sent, 6 - staged_parts, "resume re-sent staged parts");
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.class == "s3-create-multipart")
            .count(),
        0,
        "resume started a new upload"
    );

    // The blob verifies with plain S3 calls: its bytes hash to its digest.
    let stored = client
        .get_object()
        .bucket(&bucket)
        .key(&blob_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(stored.len() as u64, layer_size);
    assert_eq!(hex::encode(Sha256::digest(&stored)), layer_hex);

    // Exactly one version of it, no multipart upload left, the record gone.
    let versions = client
        .list_object_versions()
        .bucket(&bucket)
        .prefix(&blob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1, "{versions:?}");
    let uploads = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{uploads:?}");
    assert!(
        client
            .head_object()
            .bucket(&bucket)
            .key(&staging_key)
            .send()
            .await
            .is_err(),
        "staging record still there"
    );

    // The second run's snapshot names the image.
    let snap = vault
        .get_snapshot(second.snapshot.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(snap.run.complete);
    assert!(
        snap.images
            .iter()
            .any(|i| i.repository.as_str() == repo && i.digest.to_string() == pushed.digest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_429s_cut_blob_concurrency_and_the_run_still_completes() {
    let stack = Stack::shared().await.unwrap();
    let repo = unique_name("throttled");
    let image = ImageBuilder::oci(61)
        .layers(&[10_000, 20_000, 30_000, 40_000, 50_000, 60_000])
        .build()
        .unwrap();
    image.push(&stack.registry, &repo, &["v1"]).await.unwrap();

    // The registry behind the proxy: the first three blob GETs are answered 429.
    let proxy = FaultProxy::start(&stack.registry.url()).await.unwrap();
    let throttle = proxy.add_rule(
        Rule::new("/v2/*/blobs/sha256:*", Fault::too_many_requests(0))
            .method("GET")
            .times(3),
    );
    let creds = stack
        .registry
        .credentials()
        .map(|(u, p)| Credentials::new(u, p));
    let registry = RegistryClient::new(
        &proxy.url(),
        Arc::new(StaticCredentials(creds)),
        ClientOptions::default(),
    )
    .unwrap();
    let source = Source::Registry {
        registry: registry.clone(),
    };
    let vault = new_vault(
        &stack.s3,
        "prod",
        VaultOptions {
            lock: lock(3),
            ..VaultOptions::default()
        },
    )
    .await
    .unwrap();

    let report = backup(&source, &vault, &opts(&repo), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(report.complete, "{report:#?}");
    assert_eq!(proxy.rule_stats(throttle).triggered, 3);
    // The blob-download controller for this host was cut and has not grown back to its start.
    let (_, _, limit, throttles) = registry
        .limits()
        .snapshot()
        .into_iter()
        .find(|(host, action, ..)| *host == proxy.host() && *action == "blob-get")
        .unwrap();
    assert!(throttles >= 1, "no throttle registered");
    assert!(limit < 8, "blob-get limit still {limit}");
    check_vault(&vault, "COMPLIANCE", chrono::Utc::now())
        .await
        .unwrap();
}
