//! Garbage collection on the real stack. SeaweedFS enforces COMPLIANCE locks, so a lock that
//! GC ignored would show up as a refused delete, and a lock that expired is really expired.
//! Locks are counted in seconds here ([`LockPolicy::seconds`]) and the tests poll the
//! server's retain-until dates rather than sleep.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use ecr_vault_engine::gc::{GcOptions, gc};
use ecr_vault_engine::{
    BackupOptions, Mapping, NoProgress, RestoreRequest, SnapshotSel, Source, backup, restore,
    verify,
};
use ecr_vault_registry::Digest;
use ecr_vault_testkit::fixtures::{self, ImageBuilder};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{new_vault, only, registry_client, registry_source, small_parts};
use ecr_vault_vault::{LockMode, LockPolicy, Vault, VaultOptions};

fn opts(lock: LockPolicy) -> VaultOptions {
    small_parts(lock)
}

/// Another handle on the same vault with a different lock policy.
fn same_vault(v: &Vault, lock: LockPolicy) -> Vault {
    Vault::new(v.client().clone(), v.location().clone(), opts(lock)).unwrap()
}

fn policy(upload_age: Duration) -> GcOptions {
    GcOptions {
        keep_last: 1,
        keep_daily_days: 0,
        keep_monthly_months: 0,
        abandoned_upload_age: upload_age,
        bypass_governance: false,
        ..GcOptions::default()
    }
}

/// Polls the server until every key's retain-until has passed (deadline 60 s).
async fn wait_until_unlocked(vault: &Vault, keys: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for key in keys {
        loop {
            let (_, until) = vault.retention(key).await.unwrap().unwrap();
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

/// Polls until `t` is at least `age` in the past.
async fn wait_older_than(t: Instant, age: Duration) {
    while t.elapsed() < age {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every key with at least one version (or delete marker) under the vault's prefix.
async fn keys_in(vault: &Vault) -> BTreeSet<String> {
    let out = vault
        .client()
        .list_object_versions()
        .bucket(&vault.location().bucket)
        .prefix(vault.location().key(""))
        .send()
        .await
        .unwrap();
    assert!(out.is_truncated() != Some(true));
    out.versions()
        .iter()
        .filter_map(|v| v.key())
        .chain(out.delete_markers().iter().filter_map(|d| d.key()))
        .map(str::to_owned)
        .collect()
}

fn blob_keys(vault: &Vault, img: &fixtures::PushedImage) -> BTreeSet<String> {
    std::iter::once(img.digest.clone())
        .chain(img.blobs.iter().map(|(d, _)| d.clone()))
        .chain(img.child_manifests.iter().map(|(d, _)| d.clone()))
        .map(|d| vault.location().blob_key(&Digest::parse(&d).unwrap()))
        .collect()
}

async fn open_uploads(vault: &Vault) -> BTreeSet<String> {
    let out = vault
        .client()
        .list_multipart_uploads()
        .bucket(&vault.location().bucket)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .filter_map(|u| u.upload_id())
        .map(str::to_owned)
        .collect()
}

async fn start_upload(vault: &Vault, seed: u8) -> String {
    let key = vault.location().blob_key(&Digest::of(&[seed; 7]));
    vault
        .client()
        .create_multipart_upload()
        .bucket(&vault.location().bucket)
        .key(key)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_owned()
}

/// Writes an unreferenced blob locked by `vault`'s policy; returns its key.
async fn orphan(vault: &Vault, bytes: &'static [u8]) -> String {
    let key = vault.location().blob_key(&Digest::of(bytes));
    vault
        .put_document(
            &key,
            Bytes::from_static(bytes),
            "application/octet-stream",
            Utc::now(),
        )
        .await
        .unwrap();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_only_unreferenced_expired_objects_and_the_survivors_restore_byte_exact() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("gc");
    let keep = ImageBuilder::oci(301)
        .layers(&[50_000, 6 * 1024 * 1024 + 5])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/keep"), &["v1"])
        .await
        .unwrap();
    let gone = ImageBuilder::docker(302)
        .layers(&[40_000])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/gone"), &["v1"])
        .await
        .unwrap();
    let short = new_vault(
        &stack.s3,
        "gc",
        opts(LockPolicy::seconds(LockMode::Compliance, 3, 0)),
    )
    .await
    .unwrap();
    let long = same_vault(
        &short,
        LockPolicy::seconds(LockMode::Compliance, 86_400, 60),
    );
    let uploads_started = Instant::now();
    let resumable = start_upload(&short, 1).await;
    let abandoned = start_upload(&short, 2).await;
    let source: Source = registry_source(&stack.registry).unwrap();

    // Snapshot 1 (locked 3 s) holds both images; snapshot 2 (locked a day), of the same
    // scope, only `keep`.
    let first = backup(
        &source,
        &short,
        &BackupOptions {
            filters: only(&format!("{ns}/**")),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(first.failures.is_empty(), "{:#?}", first.failures);
    // `gone` leaves the registry; the next run of the same scope captures `keep` only. (A
    // narrower filter would be a scope of its own, which never displaces this one.)
    stack
        .registry
        .delete_manifest(&format!("{ns}/gone"), &gone.digest)
        .await
        .unwrap();
    let second = backup(
        &source,
        &long,
        &BackupOptions {
            filters: only(&format!("{ns}/**")),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(second.failures.is_empty(), "{:#?}", second.failures);
    let locked_orphan = orphan(&long, b"unreferenced, locked for a day").await;
    let expired_orphan = orphan(&short, b"unreferenced, locked for 3 seconds").await;
    let first_key = first.snapshot_key.clone().unwrap();

    let only_gone: BTreeSet<String> = blob_keys(&short, &gone)
        .difference(&blob_keys(&short, &keep))
        .cloned()
        .collect();
    let mut expected: BTreeSet<String> = only_gone.clone();
    expected.insert(first_key.clone());
    expected.insert(expired_orphan.clone());
    let short_locked: Vec<String> = expected.iter().cloned().collect();
    wait_until_unlocked(&short, &short_locked).await;

    // A staging record written now names `resumable`: young, so its upload is kept.
    let age = Duration::from_secs(8);
    wait_older_than(uploads_started, age + Duration::from_secs(1)).await;
    short
        .client()
        .put_object()
        .bucket(&short.location().bucket)
        .key(short.location().key("staging/uploads/test.json"))
        .body(
            format!(r#"{{"uploadId":"{resumable}"}}"#)
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .unwrap();

    let dry = gc(&long, &policy(age), false).await.unwrap();
    let applied = gc(&long, &policy(age), true).await.unwrap();

    // The dry run and --apply agree.
    assert!(!dry.applied && applied.applied);
    assert_eq!(dry.plan.delete, applied.plan.delete);
    assert_eq!(dry.plan.uploads_to_abort, applied.plan.uploads_to_abort);
    assert_eq!(dry.plan.bytes_reclaimed, applied.plan.bytes_reclaimed);
    let planned: BTreeSet<String> = dry.plan.delete.iter().map(|d| d.key.clone()).collect();
    assert_eq!(planned, expected, "plan: {:#?}", dry.plan.delete);
    assert_eq!(
        dry.plan
            .held
            .iter()
            .map(|h| h.key.as_str())
            .collect::<Vec<_>>(),
        vec![locked_orphan.as_str()],
        "only the locked orphan is held"
    );
    assert_eq!(
        dry.plan
            .uploads_to_abort
            .iter()
            .map(|u| u.upload_id.as_str())
            .collect::<Vec<_>>(),
        vec![abandoned.as_str()]
    );
    assert_eq!(dry.plan.uploads_resumable, 1);
    assert!(dry.plan.cost_after.monthly_usd < dry.plan.cost_before.monthly_usd);
    assert!(
        applied.errors.is_empty() && applied.skipped.is_empty(),
        "{applied:#?}"
    );
    assert_eq!(applied.deleted as usize, expected.len());
    assert_eq!(applied.bytes_deleted, dry.plan.bytes_reclaimed);

    // What the server holds now: the planned versions are gone (no delete markers either);
    // everything `keep` needs, the locked orphan, the layout and the staging record remain.
    let left = keys_in(&long).await;
    for k in &expected {
        assert!(!left.contains(k), "{k} should be gone");
    }
    for k in blob_keys(&long, &keep)
        .iter()
        .chain([&locked_orphan, &long.location().layout_key()])
    {
        assert!(left.contains(k), "{k} should survive");
    }
    assert!(left.contains(&long.location().key("staging/uploads/test.json")));
    let uploads = open_uploads(&long).await;
    assert!(uploads.contains(&resumable) && !uploads.contains(&abandoned));
    // The held orphan really is locked: the server refuses to delete it.
    let state = long.head(&locked_orphan).await.unwrap().unwrap();
    let refused = long
        .client()
        .delete_object()
        .bucket(&long.location().bucket)
        .key(&locked_orphan)
        .version_id(state.version_id.unwrap())
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a COMPLIANCE-locked version was deletable"
    );

    // A second run finds nothing more to do.
    let again = gc(&long, &policy(age), false).await.unwrap();
    assert!(again.plan.delete.is_empty(), "{:#?}", again.plan.delete);

    // The surviving snapshot is complete and restores byte-exact.
    let v = verify(&long, None, false).await.unwrap();
    assert!(v.ok(), "{:#?}", v.problems);
    let fresh = Registry::start().await.unwrap();
    let target = Source::Registry {
        registry: registry_client(&fresh).unwrap(),
    };
    let r = restore(
        &long,
        &target,
        &RestoreRequest {
            snapshot: SnapshotSel::Latest,
            filters: only(&format!("{ns}/**")),
            digests: vec![],
            mapping: Mapping::default(),
            dry_run: false,
            concurrency: 2,
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert_eq!(
        skopeo_digest(&fresh, &format!("{ns}/keep:v1"))
            .await
            .unwrap(),
        keep.digest
    );
    long.client()
        .abort_multipart_upload()
        .bucket(&long.location().bucket)
        .key(long.location().blob_key(&Digest::of(&[1u8; 7])))
        .upload_id(&resumable)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_locks_are_bypassed_only_on_request_and_compliance_never() {
    let stack = Stack::shared().await.unwrap();
    let gov = new_vault(
        &stack.s3,
        "gcgov",
        opts(LockPolicy::seconds(LockMode::Governance, 3600, 0)),
    )
    .await
    .unwrap();
    let comp = same_vault(&gov, LockPolicy::seconds(LockMode::Compliance, 3600, 0));
    let g = orphan(&gov, b"governance-locked orphan").await;
    let c = orphan(&comp, b"compliance-locked orphan").await;
    let age = Duration::from_secs(7 * 24 * 3600);

    let plain = gc(&gov, &policy(age), true).await.unwrap();
    assert!(plain.plan.delete.is_empty(), "{:#?}", plain.plan.delete);
    assert_eq!(plain.plan.held.len(), 2);

    let bypass = GcOptions {
        bypass_governance: true,
        ..policy(age)
    };
    let dry = gc(&gov, &bypass, false).await.unwrap();
    assert_eq!(
        dry.plan
            .delete
            .iter()
            .map(|d| (d.key.as_str(), d.bypass_until.is_some()))
            .collect::<Vec<_>>(),
        vec![(g.as_str(), true)]
    );
    assert_eq!(
        dry.plan
            .held
            .iter()
            .map(|h| h.key.as_str())
            .collect::<Vec<_>>(),
        vec![c.as_str()]
    );
    let applied = gc(&gov, &bypass, true).await.unwrap();
    assert!(applied.errors.is_empty(), "{:#?}", applied.errors);
    assert_eq!(applied.deleted, 1);
    let left = keys_in(&gov).await;
    assert!(!left.contains(&g) && left.contains(&c));
}
