//! Backup against the real local stack: registry (distribution 2.8) → SeaweedFS S3 with Object
//! Lock, and ECR listing through moto. Every test checks the vault with the independent
//! invariant checker in `support.rs`.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;

use chrono::{Duration, Utc};
use ecr_vault_engine::{BackupOptions, NoProgress, backup};
use ecr_vault_registry::RepoName;
use ecr_vault_testkit::fixtures::{
    self, ImageBuilder, Platform, cosign_signature, cosign_tag, docker_manifest_list, index,
    many_layers, multi_arch_oci, referrer,
};
use ecr_vault_testkit::{Registry, Stack, skopeo_raw_manifest, unique_name};
use ecr_vault_tests::{
    check_vault, ecr_source, lock, new_vault, only, registry_blob_file, registry_source,
    snapshot_names,
};
use ecr_vault_vault::{VaultOptions, WriteOutcome};

fn opts(repo_glob: &str) -> BackupOptions {
    BackupOptions {
        filters: only(repo_glob),
        ..BackupOptions::default()
    }
}

fn vault_opts() -> VaultOptions {
    VaultOptions {
        lock: lock(3),
        part_size: 5 * 1024 * 1024,
        parts_in_flight: 4,
        blob_storage_class: None,
    }
}

/// Pushes the mixed fixture set under `ns/…` and returns (name → pushed image).
async fn push_mixed(reg: &Registry, ns: &str) -> Vec<fixtures::PushedImage> {
    let mut out = Vec::new();
    let shared = fixtures::oci_layer(900, 300_000);
    let multi = multi_arch_oci(10, &[40_000, 70_000], &[Platform::linux("s390x")]).unwrap();
    out.push(
        multi
            .push_with_skopeo(reg, &format!("{ns}/multiarch"), &["v1", "latest"])
            .await
            .unwrap(),
    );
    let docker = ImageBuilder::docker(11)
        .layers(&[30_000, 6 * 1024 * 1024 + 17])
        .shared_layer(shared.clone())
        .build()
        .unwrap();
    out.push(
        docker
            .push(reg, &format!("{ns}/docker"), &["1.0"])
            .await
            .unwrap(),
    );
    let list = docker_manifest_list(12, &[20_000]).unwrap();
    out.push(
        list.push(reg, &format!("{ns}/docker-list"), &["2.0"])
            .await
            .unwrap(),
    );
    let api = ImageBuilder::oci(13)
        .layers(&[10_000])
        .shared_layer(shared)
        .build()
        .unwrap();
    out.push(
        api.push_with_skopeo(reg, &format!("{ns}/team/app/api"), &["v1"])
            .await
            .unwrap(),
    );
    // A referrer (SBOM) with a subject, discoverable through the OCI tag-schema fallback
    // (distribution 2.8 has no referrers API): an index under `sha256-<hex>` listing it.
    let sbom = referrer(14, &api, fixtures::media::SPDX_JSON).unwrap();
    let sbom_pushed = sbom
        .push(reg, &format!("{ns}/team/app/api"), &[])
        .await
        .unwrap();
    let fallback = index(fixtures::Format::Oci, vec![sbom.clone()]).unwrap();
    let tag = format!("sha256-{}", api.digest.trim_start_matches("sha256:"));
    fallback
        .push(reg, &format!("{ns}/team/app/api"), &[tag.as_str()])
        .await
        .unwrap();
    out.push(sbom_pushed);
    let sig = cosign_signature(15, &api.digest).unwrap();
    let sig_tag = cosign_tag(&api.digest);
    out.push(
        sig.push(reg, &format!("{ns}/team/app/api"), &[sig_tag.as_str()])
            .await
            .unwrap(),
    );
    let many = many_layers(16, 40, 600).unwrap();
    out.push(many.push(reg, &format!("{ns}/many"), &["x"]).await.unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_captures_every_image_byte_exact_and_locked() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("mixed");
    let pushed = push_mixed(&stack.registry, &ns).await;
    let vault = new_vault(&stack.s3, "ecr/prod", vault_opts())
        .await
        .unwrap();
    let source = registry_source(&stack.registry).unwrap();

    let report = backup(
        &source,
        &vault,
        &opts(&format!("{ns}/**")),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.complete);
    // Dozens of blobs, single PUTs and multipart alike, reused the 4 part buffers.
    assert!(vault.part_buffers_allocated() <= 4);

    // Invariants: hashes, one version each, COMPLIANCE locks, closure before manifest.
    let min_until = Utc::now() + Duration::days(3) - Duration::minutes(5);
    let contents = check_vault(&vault, "COMPLIANCE", min_until).await.unwrap();

    // Every pushed blob and manifest is in the vault, and manifests are the registry's bytes
    // as skopeo sees them.
    for img in &pushed {
        for (d, size) in img.blobs.iter().chain(&img.child_manifests) {
            let hex = d.trim_start_matches("sha256:");
            assert_eq!(
                contents.blobs.get(hex),
                Some(size),
                "{} lacks {d}",
                img.repo
            );
        }
        let hex = img.digest.trim_start_matches("sha256:");
        let raw = skopeo_raw_manifest(&stack.registry, &img.by_digest())
            .await
            .unwrap();
        assert_eq!(
            contents.manifests.get(hex).map(Vec::as_slice),
            Some(&raw[..]),
            "{} manifest differs from the registry's",
            img.by_digest()
        );
    }

    // The snapshot names every tag, and records the referrer with its subject.
    let snap = vault.newest_snapshot().await.unwrap().unwrap();
    let names = snapshot_names(&snap);
    for img in &pushed {
        for t in &img.tags {
            assert!(
                names.contains(&format!("{}:{t}", img.repo)),
                "{}:{t} missing",
                img.repo
            );
        }
    }
    let sbom = &pushed[4];
    assert!(
        snap.images
            .iter()
            .any(|i| i.digest.to_string() == sbom.digest
                && i.role == ecr_vault_vault::Role::Referrer),
        "referrer not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_moves_no_bytes_and_creates_no_versions() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("rerun");
    let img = ImageBuilder::oci(21)
        .layers(&[50_000, 7 * 1024 * 1024])
        .build()
        .unwrap();
    img.push_with_skopeo(&stack.registry, &format!("{ns}/app"), &["v1"])
        .await
        .unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let o = opts(&format!("{ns}/**"));

    let first = backup(&source, &vault, &o, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(first.counts.bytes_written > 7 * 1024 * 1024);
    let before = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();

    let second = backup(&source, &vault, &o, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(second.counts.bytes_written, 0);
    assert_eq!(second.counts.blobs_written, 0);
    assert_eq!(second.counts.images_unchanged, 1);
    let after = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    // Only the new snapshot was added; every other object kept its single version.
    assert_eq!(after.versions, before.versions + 1);
    assert_eq!(after.blobs, before.blobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_blobs_are_refused_and_never_visible() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("corrupt");
    let good = ImageBuilder::oci(31).layers(&[20_000]).build().unwrap();
    good.push_with_skopeo(&stack.registry, &format!("{ns}/good"), &["v1"])
        .await
        .unwrap();
    // Small (single PUT) and large (multipart) layers, corrupted in the registry's storage.
    let flipped = ImageBuilder::oci(32).layers(&[20_000]).build().unwrap();
    let p1 = flipped
        .push(&stack.registry, &format!("{ns}/flipped"), &["v1"])
        .await
        .unwrap();
    let truncated = ImageBuilder::oci(33)
        .layers(&[11 * 1024 * 1024])
        .build()
        .unwrap();
    let p2 = truncated
        .push(&stack.registry, &format!("{ns}/truncated"), &["v1"])
        .await
        .unwrap();
    let (bad1, _) = p1.blobs.iter().find(|(_, s)| *s == 20_000).unwrap().clone();
    let f1 = registry_blob_file(&stack.registry, &bad1);
    let mut bytes = std::fs::read(&f1).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&f1, &bytes).unwrap();
    let (bad2, _) = p2
        .blobs
        .iter()
        .find(|(_, s)| *s > 1024 * 1024)
        .unwrap()
        .clone();
    let f2 = registry_blob_file(&stack.registry, &bad2);
    let len = std::fs::metadata(&f2).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f2)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();

    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let report = backup(
        &source,
        &vault,
        &opts(&format!("{ns}/**")),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();

    // Both bad images fail with a clear reason; the good one is captured anyway.
    assert_eq!(report.counts.images_failed, 2, "{:#?}", report.failures);
    assert_eq!(report.counts.images_copied, 1);
    let text = format!("{:?}", report.failures);
    assert!(text.contains("digest mismatch"), "{text}");
    assert!(text.contains(bad1.trim_start_matches("sha256:")), "{text}");
    assert!(text.contains(&bad2), "{text}");
    assert!(!report.complete);

    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    for bad in [&bad1, &bad2, &p1.digest, &p2.digest] {
        assert!(
            !contents
                .blobs
                .contains_key(bad.trim_start_matches("sha256:")),
            "{bad} became visible"
        );
    }
    // No multipart upload was left behind.
    let uploads = vault
        .client()
        .list_multipart_uploads()
        .bucket(&vault.location().bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    let snap = vault.newest_snapshot().await.unwrap().unwrap();
    assert_eq!(snapshot_names(&snap).len(), 1);
    assert!(!snap.run.complete);
    assert_eq!(snap.run.failures.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_up_through_the_ecr_api_with_ecr_auth() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("ecr");
    let img = ImageBuilder::oci(41).layers(&[9_000]).build().unwrap();
    let p = img
        .push_with_skopeo(&stack.registry, &format!("{ns}/svc"), &["v7", "stable"])
        .await
        .unwrap();
    stack.moto.register_pushed(&p).await.unwrap();
    // Data plane: the harness registry, authenticated with the token moto's
    // GetAuthorizationToken returns (user AWS), refreshed through the provider.
    let source = ecr_source(stack.moto.ecr_client(), &stack.registry).unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let report = backup(
        &source,
        &vault,
        &opts(&format!("{ns}/**")),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.counts.images_copied, 1);
    let snap = vault.newest_snapshot().await.unwrap().unwrap();
    let names = snapshot_names(&snap);
    assert!(names.contains(&format!("{ns}/svc:v7")) && names.contains(&format!("{ns}/svc:stable")));
    assert!(
        snap.images.iter().all(|i| i.pushed_at.is_some()),
        "ECR push times recorded"
    );
    assert!(
        snap.run.repositories.is_some(),
        "repository settings captured"
    );
    check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_write_that_loses_the_race_keeps_one_version() {
    let stack = Stack::shared().await.unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let key = vault.location().key("blobs/sha256/x-race");
    let now = Utc::now();
    let a = vault
        .put_document(
            &key,
            bytes::Bytes::from_static(b"same"),
            "application/octet-stream",
            now,
        )
        .await
        .unwrap();
    let b = vault
        .put_document(
            &key,
            bytes::Bytes::from_static(b"same"),
            "application/octet-stream",
            now,
        )
        .await
        .unwrap();
    assert_eq!((a, b), (WriteOutcome::Written, WriteOutcome::Existed));
    let _ = RepoName::parse("x").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_one_gib_layer_is_backed_up_verified_and_locked() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("big");
    const GIB: u64 = 1024 * 1024 * 1024;
    // Generated as a stream: never stored on disk or held in memory by the test.
    let p = fixtures::push_big_image(&stack.registry, &format!("{ns}/big"), "v1", 7, GIB)
        .await
        .unwrap();
    let vault = new_vault(
        &stack.s3,
        "",
        VaultOptions {
            part_size: 16 * 1024 * 1024,
            parts_in_flight: 4,
            ..vault_opts()
        },
    )
    .await
    .unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let report = backup(
        &source,
        &vault,
        &opts(&format!("{ns}/**")),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.counts.bytes_written > GIB);
    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    let (big, size) = p.blobs.iter().max_by_key(|(_, s)| *s).unwrap();
    assert_eq!(*size, GIB);
    assert_eq!(
        contents.blobs.get(big.trim_start_matches("sha256:")),
        Some(&GIB)
    );
    // 64 parts went through 4 part buffers: memory is set by the options, not the layer.
    assert!(
        vault.part_buffers_allocated() <= 4,
        "{} part buffers allocated for 4 in flight",
        vault.part_buffers_allocated()
    );
}
