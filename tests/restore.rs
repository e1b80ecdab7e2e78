//! Restore against the real local stack: back up, wipe, restore into a fresh registry (or
//! through moto's ECR API), and check the result with skopeo, not with our own code.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;

use ecr_vault_engine::{
    BackupOptions, Mapping, NoProgress, RestoreRequest, SnapshotSel, Source, backup, restore,
    verify,
};
use ecr_vault_registry::RegistryClient;
use ecr_vault_testkit::fixtures::{
    self, ImageBuilder, Platform, cosign_signature, cosign_tag, docker_manifest_list,
    multi_arch_oci,
};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{lock, new_vault, only_ns, registry_client, registry_source, small_parts};
use ecr_vault_vault::VaultOptions;

fn vault_opts() -> VaultOptions {
    small_parts(lock(2))
}

fn request(ns: &str) -> RestoreRequest {
    RestoreRequest {
        snapshot: SnapshotSel::Latest,
        filters: only_ns(ns),
        digests: vec![],
        mapping: Mapping::default(),
        dry_run: false,
        concurrency: 4,
    }
}

async fn push_mixed(reg: &Registry, ns: &str) -> Vec<fixtures::PushedImage> {
    let shared = fixtures::oci_layer(700, 200_000);
    let mut out = vec![
        multi_arch_oci(51, &[30_000], &[Platform::linux("ppc64le")])
            .unwrap()
            .push_with_skopeo(reg, &format!("{ns}/multi"), &["v1"])
            .await
            .unwrap(),
        ImageBuilder::docker(52)
            .layers(&[6 * 1024 * 1024 + 3])
            .shared_layer(shared.clone())
            .build()
            .unwrap()
            .push(reg, &format!("{ns}/team/app/api"), &["1.0", "stable"])
            .await
            .unwrap(),
        docker_manifest_list(53, &[10_000])
            .unwrap()
            .push(reg, &format!("{ns}/list"), &["2"])
            .await
            .unwrap(),
    ];
    let api = ImageBuilder::oci(54).shared_layer(shared).build().unwrap();
    out.push(api.push(reg, &format!("{ns}/other"), &["x"]).await.unwrap());
    let sig = cosign_signature(55, &api.digest).unwrap();
    let tag = cosign_tag(&api.digest);
    out.push(
        sig.push(reg, &format!("{ns}/other"), &[tag.as_str()])
            .await
            .unwrap(),
    );
    out
}

async fn wipe(reg: &Registry, pushed: &[fixtures::PushedImage]) {
    for p in pushed {
        reg.delete_manifest(&p.repo, &p.digest).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_registry_restores_byte_exact_into_a_fresh_registry_and_twice_moves_nothing() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("drill");
    let pushed = push_mixed(&stack.registry, &ns).await;
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let b = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(b.failures.is_empty(), "{:#?}", b.failures);
    wipe(&stack.registry, &pushed).await;

    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let r = restore(&vault, &target, &request(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert!(r.bytes_pushed > 6 * 1024 * 1024);
    for p in &pushed {
        for t in &p.tags {
            let got = skopeo_digest(&fresh, &format!("{}:{t}", p.repo))
                .await
                .unwrap();
            assert_eq!(got, p.digest, "{}:{t}", p.repo);
        }
    }

    let again = restore(&vault, &target, &request(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(again.failures.is_empty(), "{:#?}", again.failures);
    assert_eq!(again.bytes_pushed, 0);
    assert_eq!(again.blobs_pushed, 0);
    assert_eq!(again.manifests_pushed + again.tags_pushed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_without_changing_the_target() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("dry");
    let p = ImageBuilder::oci(61)
        .layers(&[40_000])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/app"), &["v1"])
        .await
        .unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let mut req = request(&ns);
    req.dry_run = true;
    let r = restore(&vault, &target, &req, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.plan.len(), 1);
    assert_eq!(r.plan[0].tags, vec!["v1".to_string()]);
    assert_eq!(
        r.plan[0].bytes_to_push,
        p.blobs.iter().map(|(_, s)| s).sum::<u64>()
    );
    assert_eq!(r.bytes_pushed, 0);
    assert!(
        fresh.catalog().await.unwrap().is_empty(),
        "dry run wrote to the target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_restores_the_image_a_tag_pointed_at_then_and_rename_moves_it() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("asof");
    let repo = format!("{ns}/team/app");
    let old = ImageBuilder::oci(71).layers(&[1000]).build().unwrap();
    let old_p = old.push(&stack.registry, &repo, &["prod"]).await.unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let o = BackupOptions {
        filters: only_ns(&ns),
        ..Default::default()
    };
    let first = backup(&source, &vault, &o, Arc::new(NoProgress))
        .await
        .unwrap();
    let first_snap = vault
        .get_snapshot(first.snapshot.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    // The tag moves to a new image; the nightly run captures that too.
    let new = ImageBuilder::oci(72).layers(&[2000]).build().unwrap();
    let new_p = new.push(&stack.registry, &repo, &["prod"]).await.unwrap();
    backup(&source, &vault, &o, Arc::new(NoProgress))
        .await
        .unwrap();

    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let mut req = request(&ns);
    req.snapshot = SnapshotSel::AsOf(first_snap.created);
    req.mapping.renames = vec![(format!("{ns}/team"), format!("{ns}/restored"))];
    let r = restore(&vault, &target, &req, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    let got = skopeo_digest(&fresh, &format!("{ns}/restored/app:prod"))
        .await
        .unwrap();
    assert_eq!(got, old_p.digest, "as-of picked the wrong capture");
    assert!(
        !fresh.manifest_exists(&repo, "prod").await.unwrap(),
        "old name restored too"
    );

    // Latest gives the new one.
    let mut req = request(&ns);
    req.mapping.retags = vec![("prod".into(), "current".into())];
    restore(&vault, &target, &req, Arc::new(NoProgress))
        .await
        .unwrap();
    let got = skopeo_digest(&fresh, &format!("{repo}:current"))
        .await
        .unwrap();
    assert_eq!(got, new_p.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_vault_blob_is_named_by_deep_verify_and_refused_by_restore() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("tamper");
    let p = ImageBuilder::oci(81)
        .layers(&[6 * 1024 * 1024 + 1, 3000])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/app"), &["v1"])
        .await
        .unwrap();
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let clean = verify(&vault, None, true).await.unwrap();
    assert!(clean.ok(), "{:#?}", clean.problems);

    // Someone with write access puts a new version over a layer (same size, other bytes).
    let (bad, size) = p.blobs.iter().find(|(_, s)| *s == 3000).unwrap().clone();
    let key = vault.location().blob_key(&bad.parse().unwrap());
    vault
        .client()
        .put_object()
        .bucket(&vault.location().bucket)
        .key(&key)
        .body(vec![0u8; size as usize].into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();

    let report = verify(&vault, None, true).await.unwrap();
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|pr| pr.key == key && pr.problem.contains("corrupt")),
        "{:#?}",
        report.problems
    );

    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let r = restore(&vault, &target, &request(&ns), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.failures.len(), 1, "{:#?}", r.failures);
    assert!(
        r.failures[0].error.contains(&key),
        "{}",
        r.failures[0].error
    );
    assert!(
        !fresh.blob_exists(&format!("{ns}/app"), &bad).await.unwrap(),
        "corrupt bytes reached the target"
    );
    assert!(
        !fresh
            .manifest_exists(&format!("{ns}/app"), "v1")
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_ecr_creates_repositories_with_their_settings() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("ecrr");
    let repo = format!("{ns}/svc");
    let ecr_api = stack.moto.ecr_client();
    ecr_api
        .create_repository()
        .repository_name(&repo)
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .image_scanning_configuration(
            aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let policy = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
    ecr_api
        .put_lifecycle_policy()
        .repository_name(&repo)
        .lifecycle_policy_text(policy)
        .send()
        .await
        .unwrap();
    let p = ImageBuilder::oci(91)
        .layers(&[5000])
        .build()
        .unwrap()
        .push(&stack.registry, &repo, &["v1"])
        .await
        .unwrap();
    stack.moto.register_pushed(&p).await.unwrap();
    let ecr = ecr_vault_ecr::Ecr::new(ecr_api.clone(), None);
    let registry = RegistryClient::new(
        &stack.registry.url(),
        ecr.credential_provider(),
        Default::default(),
    )
    .unwrap();
    let source = Source::Ecr {
        ecr: ecr.clone(),
        registry,
    };
    let vault = new_vault(&stack.s3, "", vault_opts()).await.unwrap();
    let b = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(b.failures.is_empty(), "{:#?}", b.failures);

    // Restore under a new name into "another account": the same moto ECR API, a fresh registry
    // for the data plane that accepts moto's ECR token.
    let fresh = Registry::start().await.unwrap();
    let target_registry =
        RegistryClient::new(&fresh.url(), ecr.credential_provider(), Default::default()).unwrap();
    let target = Source::Ecr {
        ecr,
        registry: target_registry,
    };
    let mut req = request(&ns);
    req.mapping.renames = vec![(repo.clone(), format!("{ns}/dr/svc"))];
    let r = restore(&vault, &target, &req, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert_eq!(r.repositories_created, vec![format!("{ns}/dr/svc")]);
    let created = ecr_api
        .describe_repositories()
        .repository_names(format!("{ns}/dr/svc"))
        .send()
        .await
        .unwrap();
    let created = &created.repositories()[0];
    assert_eq!(
        created.image_tag_mutability().map(|m| m.as_str()),
        Some("IMMUTABLE")
    );
    assert_eq!(
        created
            .image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    let lp = ecr_api
        .get_lifecycle_policy()
        .repository_name(format!("{ns}/dr/svc"))
        .send()
        .await
        .unwrap();
    assert!(
        lp.lifecycle_policy_text()
            .unwrap()
            .contains("sinceImagePushed")
    );
    assert_eq!(
        skopeo_digest(&fresh, &format!("{ns}/dr/svc:v1"))
            .await
            .unwrap(),
        p.digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_download_restores_with_stock_skopeo() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("glass");
    let pushed = multi_arch_oci(101, &[20_000], &[])
        .unwrap()
        .push_with_skopeo(&stack.registry, &format!("{ns}/team/app"), &["v1"])
        .await
        .unwrap();
    let vault = new_vault(&stack.s3, "ecr", vault_opts()).await.unwrap();
    let source = registry_source(&stack.registry).unwrap();
    backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();

    // The documented procedure: AWS CLI download, then stock skopeo. No ecr-vault code.
    let dir = tempfile_dir();
    let out = ecr_vault_tests::break_glass(stack, &vault, "latest", &dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = Registry::start().await.unwrap();
    ecr_vault_testkit::skopeo::copy_from_oci_layout(
        &dir,
        &format!("{ns}/team/app:v1"),
        &fresh,
        &format!("{ns}/team/app:v1"),
    )
    .await
    .unwrap();
    assert_eq!(
        skopeo_digest(&fresh, &format!("{ns}/team/app:v1"))
            .await
            .unwrap(),
        pushed.digest
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(unique_name("break-glass"));
    std::fs::create_dir_all(&d).unwrap();
    d
}
