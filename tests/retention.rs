//! Retention where its parts meet: partial and full snapshots under one keep policy, `latest`
//! as the registry as last seen (engine and break-glass alike), GC beside running backups with
//! and without governance bypass, and the closure rules that keep a manifest honest.
//! Everything runs on the real local stack; locks are counted in seconds where GC must see
//! them expire.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ecr_vault_engine::gc::{GcOptions, gc};
use ecr_vault_engine::lease::{Lease, LeaseRequest};
use ecr_vault_engine::{
    BackupOptions, FilterSpec, Filters, Listing, NoProgress, SnapshotSel, Source, SourceImage,
    backup, backup_listing, latest, verify,
};
use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_testkit::fixtures::{self, Blob, ImageBuilder, PushedImage};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{
    break_glass, new_vault, only, registry_source, restore_into_fresh, small_parts as opts,
};
use ecr_vault_vault::{LockMode, LockPolicy, ScopeKind, Vault};

fn keep_last(n: usize) -> GcOptions {
    GcOptions {
        keep_last: n,
        keep_daily_days: 0,
        keep_monthly_months: 0,
        ..GcOptions::default()
    }
}

async fn push(registry: &Registry, seed: u64, repo: &str, tag: &str) -> PushedImage {
    ImageBuilder::oci(seed)
        .layers(&[3_000 + seed % 1_000])
        .build()
        .unwrap()
        .push(registry, repo, &[tag])
        .await
        .unwrap()
}

/// What the push path does with one pushed image: a partial run of exactly that image.
async fn push_backup(source: &Source, vault: &Vault, img: &PushedImage) {
    let (repo, tag) = img
        .reference()
        .rsplit_once(':')
        .map(|(r, t)| (r.to_owned(), t.to_owned()))
        .unwrap();
    let listing = Listing {
        images: vec![SourceImage {
            repo: RepoName::parse(&repo).unwrap(),
            digest: Digest::parse(&img.digest).unwrap(),
            tags: vec![Tag::parse(&tag).unwrap()],
            pushed_at: Some(Utc::now()),
            media_type: None,
        }],
        ..Listing::default()
    };
    let r = backup_listing(
        source,
        vault,
        listing,
        &BackupOptions {
            trigger: "push".into(),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(r.complete && r.scope == ScopeKind::Partial, "{r:#?}");
}

async fn full_backup(source: &Source, vault: &Vault) -> ecr_vault_engine::BackupReport {
    let started = Instant::now();
    let r = backup(
        source,
        vault,
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let wall = started.elapsed().as_millis() as u64;
    assert!(r.complete, "{r:#?}");
    // The report times the whole run, listing included, and its phases add up to it.
    let p = &r.phases;
    assert_eq!(
        r.duration_ms,
        p.list_ms + p.plan_ms + p.copy_ms + p.snapshot_ms
    );
    assert!(
        r.duration_ms <= wall,
        "{} ms reported, {wall} ms measured",
        r.duration_ms
    );
    r
}

/// Restores `latest` into a fresh registry and returns reference → digest as skopeo reads it.
async fn restore_latest(vault: &Vault, refs: &[String]) -> Vec<(String, String)> {
    let fresh = restore_into_fresh(vault, SnapshotSel::Latest)
        .await
        .unwrap();
    let mut out = Vec::new();
    for reference in refs {
        out.push((
            reference.clone(),
            skopeo_digest(&fresh, reference).await.unwrap(),
        ));
    }
    out
}

/// Polls until every lock under the vault's prefix has expired (locks here last seconds).
async fn wait_until_unlocked(vault: &Vault) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let keys: Vec<String> = vault
        .list_keys(&vault.location().key(""))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.contains("/staging/") && !k.starts_with("staging/"))
        .collect();
    for key in keys {
        while let Some((_, until)) = vault.retention(&key).await.unwrap() {
            if until < Utc::now() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key} still locked until {until}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pushes_after_a_full_backup_do_not_expire_it_and_latest_restores_everything() {
    let stack = Stack::shared().await.unwrap();
    // A registry of its own: the full runs list everything in it, unfiltered, as a nightly does.
    let registry = Registry::start().await.unwrap();
    let source = registry_source(&registry).unwrap();
    let vault = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 2, 1)),
    )
    .await
    .unwrap();
    let mut refs = Vec::new();
    let mut images = Vec::new();
    for i in 0..3u64 {
        let img = push(&registry, 100 + i, &format!("team/base{i}"), "v1").await;
        refs.push(img.reference());
        images.push(img);
    }
    let full = full_backup(&source, &vault).await;
    assert_eq!(full.scope, ScopeKind::Full);
    for i in 0..10u64 {
        let img = push(&registry, 200 + i, &format!("team/pushed{i}"), "v1").await;
        push_backup(&source, &vault, &img).await;
        refs.push(img.reference());
        images.push(img);
    }
    wait_until_unlocked(&vault).await;
    let report = gc(&vault, &keep_last(1), true).await.unwrap();
    assert!(!report.failed(), "{:#?}", report.errors);
    let full_id = full.snapshot.unwrap();
    assert!(
        report.plan.snapshots_kept.contains(&full_id),
        "the only full snapshot was expired: {:#?}",
        report.plan.snapshots_expired
    );
    assert_eq!(report.plan.latest.first(), Some(&full_id));
    assert_eq!(
        report.plan.latest.len(),
        11,
        "the full snapshot and ten pushes"
    );

    let restored = restore_latest(&vault, &refs).await;
    for (img, (reference, digest)) in images.iter().zip(&restored) {
        assert_eq!(&img.digest, digest, "{reference}");
    }

    // A second nightly run captures all thirteen; now the pushes before it may go, except the
    // newest of their group, and latest is that nightly run alone.
    let second = full_backup(&source, &vault).await;
    wait_until_unlocked(&vault).await;
    let report = gc(&vault, &keep_last(1), true).await.unwrap();
    assert!(!report.failed(), "{:#?}", report.errors);
    assert_eq!(report.plan.latest, vec![second.snapshot.clone().unwrap()]);
    let kept: BTreeSet<_> = report.plan.snapshots_kept.iter().cloned().collect();
    assert_eq!(kept.len(), 2, "newest full and newest push: {kept:#?}");
    let restored = restore_latest(&vault, &refs).await;
    for (img, (reference, digest)) in images.iter().zip(&restored) {
        assert_eq!(&img.digest, digest, "{reference}");
    }
    let v = verify(&vault, None, false).await.unwrap();
    assert!(v.ok(), "{:#?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_the_registry_as_last_seen_for_the_engine_and_break_glass_alike() {
    let stack = Stack::shared().await.unwrap();
    let registry = Registry::start().await.unwrap();
    let source = registry_source(&registry).unwrap();
    let vault = new_vault(
        &stack.s3,
        "glass",
        opts(LockPolicy::seconds(LockMode::Governance, 60, 1)),
    )
    .await
    .unwrap();
    let a = push(&registry, 1, "team/a", "v1").await;
    let b = push(&registry, 2, "team/b", "v1").await;
    full_backup(&source, &vault).await;
    // A push of a new tag, then a filtered run over team/b after b's tag moved.
    let c = push(&registry, 3, "team/c", "v1").await;
    push_backup(&source, &vault, &c).await;
    let b2 = push(&registry, 4, "team/b", "v1").await;
    let filtered = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: only("team/b"),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(filtered.complete);

    let l = latest(&vault).await.unwrap().unwrap();
    assert_eq!(l.overlays.len(), 2);
    let engine: BTreeSet<(String, String)> = l
        .records()
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r.repository, r.tag.as_ref().unwrap()),
                r.digest.to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [&a, &b2, &c]
        .iter()
        .map(|i| (i.reference(), i.digest.clone()))
        .collect();
    assert_eq!(
        engine, expected,
        "b's old digest was replaced by the newer capture"
    );
    assert!(b.digest != b2.digest);

    // The documented break-glass procedure composes the same picture with the AWS CLI.
    let dir = std::env::temp_dir().join(unique_name("latest-glass"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = break_glass(stack, &vault, "latest", &dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let glass: BTreeSet<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(glass, engine);
    // And the layout it wrote restores with stock skopeo.
    let fresh = Registry::start().await.unwrap();
    ecr_vault_testkit::skopeo::copy_from_oci_layout(&dir, &c.reference(), &fresh, &c.reference())
        .await
        .unwrap();
    assert_eq!(
        skopeo_digest(&fresh, &c.reference()).await.unwrap(),
        c.digest
    );
}

/// An image whose only layer has the exact bytes of another image's manifest: the key
/// `blobs/sha256/<that digest>` then exists as a layer, and must not pass for the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_with_the_bytes_of_a_manifest_does_not_stand_in_for_that_image() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("twin");
    let a = ImageBuilder::oci(31).layers(&[4_000]).build().unwrap();
    let twin = Blob::new(fixtures::media::OCI_LAYER_GZIP, a.manifest.clone());
    let b = ImageBuilder::oci(32).shared_layer(twin).build().unwrap();
    assert!(b.blobs.iter().any(|l| l.digest == a.digest));
    let b_img = b
        .push(&stack.registry, &format!("{ns}/b"), &["v1"])
        .await
        .unwrap();
    let a_img = a
        .push(&stack.registry, &format!("{ns}/a"), &["v1"])
        .await
        .unwrap();
    let source = registry_source(&stack.registry).unwrap();

    // Across runs: b first, then a.
    let vault = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 60, 1)),
    )
    .await
    .unwrap();
    for glob in [format!("{ns}/b"), format!("{ns}/a")] {
        let r = backup(
            &source,
            &vault,
            &BackupOptions {
                filters: only(&glob),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(r.complete, "{r:#?}");
    }
    // Within one run: both at once, sharing the copier's caches.
    let together = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 60, 1)),
    )
    .await
    .unwrap();
    let r = backup(
        &source,
        &together,
        &BackupOptions {
            filters: only(&format!("{ns}/**")),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(r.complete, "{r:#?}");

    for v in [&vault, &together] {
        let check = verify(v, None, true).await.unwrap();
        assert!(check.ok(), "{:#?}", check.problems);
        let fresh = restore_into_fresh(v, SnapshotSel::AsOf(Utc::now()))
            .await
            .unwrap();
        for img in [&a_img, &b_img] {
            assert_eq!(
                skopeo_digest(&fresh, &img.reference()).await.unwrap(),
                img.digest
            );
        }
    }
}

/// A signature captured without its subject (the subject's tag was not selected): GC keeps
/// going, keeps the referrer, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reports_a_referrer_whose_subject_is_not_in_the_vault_and_goes_on() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("orphan-ref");
    let repo = format!("{ns}/app");
    let subject = ImageBuilder::oci(41).layers(&[2_000]).build().unwrap();
    subject.push(&stack.registry, &repo, &["v1"]).await.unwrap();
    let sbom = fixtures::referrer(42, &subject, "application/spdx+json").unwrap();
    sbom.push(&stack.registry, &repo, &["sbom"]).await.unwrap();
    let vault = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 60, 1)),
    )
    .await
    .unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let r = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: Filters::new(FilterSpec {
                repositories: vec![repo.clone()],
                tags: vec!["sbom".into()],
                ..Default::default()
            })
            .unwrap(),
            referrers: false,
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(r.complete, "{r:#?}");
    let report = gc(&vault, &keep_last(1), false).await.unwrap();
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains(&subject.digest) && w.contains("not in the vault")),
        "{:#?}",
        report.plan.warnings
    );
    assert!(report.plan.delete.is_empty(), "{:#?}", report.plan.delete);
}

/// The lease handshake, one side at a time: a running backup turns GC's bypass off, and a
/// backup that starts while a bypassing GC holds the vault waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_turns_gc_bypass_off_and_a_new_backup_waits_for_a_bypassing_gc() {
    let stack = Stack::shared().await.unwrap();
    let registry = Registry::start().await.unwrap();
    let source = registry_source(&registry).unwrap();
    let vault = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 3600, 1)),
    )
    .await
    .unwrap();
    // An old image, captured, then gone from the registry and from the newest snapshot.
    let old = push(&registry, 51, "team/old", "v1").await;
    full_backup(&source, &vault).await;
    registry
        .delete_manifest("team/old", &old.digest)
        .await
        .unwrap();
    push(&registry, 52, "team/new", "v1").await;
    full_backup(&source, &vault).await;
    let old_key = vault
        .location()
        .blob_key(&Digest::parse(&old.digest).unwrap());

    // A backup holds a lease: GC may not bypass, so the GOVERNANCE-locked old image stays.
    let running = Lease::acquire_run(
        &vault,
        &LeaseRequest {
            holder: "test".into(),
            deadline: None,
        },
    )
    .await
    .unwrap();
    let bypass = GcOptions {
        bypass_governance: true,
        ..keep_last(1)
    };
    let report = gc(&vault, &bypass, true).await.unwrap();
    assert!(!report.plan.bypass);
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("bypass refused")),
        "{:#?}",
        report.plan.warnings
    );
    assert!(vault.head(&old_key).await.unwrap().is_some());
    running.release().await;

    // Released: the bypass goes ahead and the expired snapshot's image goes.
    let report = gc(&vault, &bypass, true).await.unwrap();
    assert!(report.plan.bypass, "{:#?}", report.plan.warnings);
    assert!(!report.failed(), "{:#?}", report.errors);
    assert!(vault.head(&old_key).await.unwrap().is_none());

    // A bypassing GC holds the vault: a backup that starts now writes its lease and waits.
    let gc_lease = Lease::acquire_gc(&vault, Duration::from_secs(600))
        .await
        .unwrap();
    // Counted before the backup starts: it may take its lease at once.
    let run_leases = vault.location().key("staging/leases/run/");
    let before = vault.list_keys(&run_leases).await.unwrap().len();
    let snapshots_before = vault.list_snapshots().await.unwrap().len();
    let waiting = tokio::spawn({
        let (source, vault) = (source.clone(), vault.clone());
        async move { full_backup(&source, &vault).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = vault.list_keys(&run_leases).await.unwrap().len();
        if now > before {
            break;
        }
        assert!(Instant::now() < deadline, "the backup never took its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the backup ran beside a bypassing gc"
    );
    assert_eq!(
        vault.list_snapshots().await.unwrap().len(),
        snapshots_before,
        "a snapshot was written while the bypassing gc held the vault"
    );
    gc_lease.release().await;
    let report = waiting.await.unwrap();
    assert!(report.complete);
    assert_eq!(
        vault.list_snapshots().await.unwrap().len(),
        snapshots_before + 1
    );
}

/// The scenario, concurrently: an old snapshot's images left the registry, GC with
/// bypass expires it while one of them is pushed again and backed up. Whatever the
/// interleaving, `latest` restores that image afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_with_bypass_beside_a_backup_that_reuses_its_victims_loses_nothing() {
    let stack = Stack::shared().await.unwrap();
    for round in 0..4u64 {
        let registry = Registry::start().await.unwrap();
        let source = registry_source(&registry).unwrap();
        let vault = new_vault(
            &stack.s3,
            "",
            opts(LockPolicy::seconds(LockMode::Governance, 3600, 1)),
        )
        .await
        .unwrap();
        let mut olds = Vec::new();
        for i in 0..6u64 {
            olds.push(
                push(
                    &registry,
                    600 + round * 10 + i,
                    &format!("team/old{i}"),
                    "v1",
                )
                .await,
            );
        }
        full_backup(&source, &vault).await;
        for (i, old) in olds.iter().enumerate() {
            registry
                .delete_manifest(&format!("team/old{i}"), &old.digest)
                .await
                .unwrap();
        }
        push(&registry, 690 + round, "team/other", "v1").await;
        full_backup(&source, &vault).await;
        // The old image comes back under the same name and bytes.
        let again = ImageBuilder::oci(600 + round * 10)
            .layers(&[3_000 + (600 + round * 10) % 1_000])
            .build()
            .unwrap()
            .push(&registry, "team/old0", &["v1"])
            .await
            .unwrap();
        assert_eq!(again.digest, olds[0].digest);

        let bypass = GcOptions {
            bypass_governance: true,
            ..keep_last(1)
        };
        let (g, b) = tokio::join!(gc(&vault, &bypass, true), async {
            backup(
                &source,
                &vault,
                &BackupOptions::default(),
                Arc::new(NoProgress),
            )
            .await
        });
        let g = g.unwrap();
        let b = b.unwrap();
        assert!(!g.failed(), "round {round}: {:#?}", g.errors);
        assert!(b.complete, "round {round}: {b:#?}");
        let restored = restore_latest(&vault, &[again.reference()]).await;
        assert_eq!(restored[0].1, again.digest, "round {round}");
        let v = verify(&vault, Some(&SnapshotSel::Latest), false)
            .await
            .unwrap();
        assert!(v.ok(), "round {round}: {:#?}", v.problems);
    }
}

/// A conditional manifest write that loses to another writer (412) still leaves the manifest
/// locked as long as this run's snapshot needs: the write is followed by a HEAD and, where the
/// other writer's lock is shorter, an extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_write_lost_to_another_writer_still_gets_this_snapshots_lock() {
    use ecr_vault_testkit::faultproxy::{Fault, FaultProxy, Rule};
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("lost-put");
    let img = push(&stack.registry, 71, &format!("{ns}/app"), "v1").await;
    let proxy = FaultProxy::start(&stack.s3.endpoint()).await.unwrap();
    let bucket = unique_name("vault");
    stack.s3.create_locked_bucket(&bucket).await.unwrap();
    let loc = ecr_vault_vault::VaultLocation::parse(&format!("s3://{bucket}/race")).unwrap();
    let source = registry_source(&stack.registry).unwrap();
    let filters = BackupOptions {
        filters: only(&format!("{ns}/**")),
        ..Default::default()
    };
    // The other writer: locks the manifest for seconds only.
    let short = Vault::new(
        stack.s3.client(),
        loc.clone(),
        opts(LockPolicy::seconds(LockMode::Governance, 5, 0)),
    )
    .unwrap();
    backup(&source, &short, &filters, Arc::new(NoProgress))
        .await
        .unwrap();
    // This run needs ten minutes, and its HEADs of the manifest say "absent" (the race), so
    // its conditional PUT is the one that tells it the manifest exists.
    let long = Vault::new(
        ecr_vault_testkit::s3::s3_client(&proxy.url(), &stack.s3.access_key, &stack.s3.secret_key),
        loc.clone(),
        opts(LockPolicy::seconds(LockMode::Governance, 600, 1)),
    )
    .unwrap();
    let hex = img.digest.trim_start_matches("sha256:").to_owned();
    let rule = proxy.add_rule(
        Rule::new(&format!("*blobs/sha256/{hex}"), Fault::status(404))
            .method("HEAD")
            .times(2),
    );
    let r = backup(&source, &long, &filters, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r.complete, "{r:#?}");
    assert_eq!(
        proxy.rule_stats(rule).triggered,
        2,
        "the race was not staged"
    );
    let checked = Vault::new(
        stack.s3.client(),
        loc,
        opts(LockPolicy::seconds(LockMode::Governance, 600, 1)),
    )
    .unwrap();
    let v = verify(&checked, Some(&SnapshotSel::Id(r.snapshot.unwrap())), false)
        .await
        .unwrap();
    assert!(v.ok(), "{:#?}", v.problems);
}

/// A blob planted under `blobs/` with other bytes of the same size (by someone who could write
/// there before the conditional-write guard) is refused, not reused: its image fails with a
/// clear error, the rest of the run goes on, and nothing names the planted object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_planted_with_other_bytes_is_refused_not_reused() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("planted");
    let victim = ImageBuilder::oci(81).layers(&[4_096]).build().unwrap();
    victim
        .push(&stack.registry, &format!("{ns}/victim"), &["v1"])
        .await
        .unwrap();
    let other = push(&stack.registry, 82, &format!("{ns}/other"), "v1").await;
    let vault = new_vault(
        &stack.s3,
        "",
        opts(LockPolicy::seconds(LockMode::Governance, 60, 1)),
    )
    .await
    .unwrap();
    let layer = victim.blobs.last().unwrap();
    let planted = vec![0x5a_u8; layer.data.len()];
    vault
        .client()
        .put_object()
        .bucket(&vault.location().bucket)
        .key(
            vault
                .location()
                .blob_key(&Digest::parse(&layer.digest).unwrap()),
        )
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .body(planted.into())
        .send()
        .await
        .unwrap();
    let r = backup(
        &registry_source(&stack.registry).unwrap(),
        &vault,
        &BackupOptions {
            filters: only(&format!("{ns}/**")),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.failures.len(), 1, "{r:#?}");
    assert!(r.failures[0].repository.ends_with("/victim"));
    assert!(
        r.failures[0].error.contains("holds other bytes"),
        "{:#?}",
        r.failures
    );
    let snap = vault
        .get_snapshot(r.snapshot.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    let names: BTreeSet<String> = snap.images.iter().map(|i| i.digest.to_string()).collect();
    assert_eq!(names, BTreeSet::from([other.digest.clone()]));
}
