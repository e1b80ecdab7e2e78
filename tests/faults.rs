//! The fault matrix: backup and restore through the fault proxy (crates/testkit faultproxy) in
//! front of the real registry and the real SeaweedFS S3. Each fault runs with several seeds;
//! after every run the independent checker walks the vault (hashes, one version per key, locks,
//! closure before manifest), and a rerun without the fault completes.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ecr_vault_engine::{
    BackupOptions, BackupReport, Mapping, NoProgress, RestoreRequest, SnapshotSel, Source, backup,
    restore,
};
use ecr_vault_testkit::faultproxy::{Fault, FaultProxy, Gate, Offset, Rule};
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{check_vault, ecr_source, lock, only_ns, registry_client, registry_source};
use ecr_vault_vault::{Vault, VaultLocation, VaultOptions};

const SEEDS: [u64; 3] = [1, 2, 3];

fn vault_opts() -> VaultOptions {
    VaultOptions {
        lock: lock(2),
        part_size: 5 * 1024 * 1024,
        parts_in_flight: 2,
        blob_storage_class: None,
    }
}

/// A registry proxy, an S3 proxy, and a fresh vault whose S3 client talks through the proxy.
struct Rig {
    reg: FaultProxy,
    s3: FaultProxy,
    uri: String,
}

impl Rig {
    async fn new(stack: &Stack) -> Rig {
        let reg = FaultProxy::start(&stack.registry.url()).await.unwrap();
        let s3 = FaultProxy::start(&stack.s3.endpoint()).await.unwrap();
        let bucket = unique_name("vault");
        stack.s3.create_locked_bucket(&bucket).await.unwrap();
        Rig {
            reg,
            s3,
            uri: format!("s3://{bucket}/faults"),
        }
    }

    /// The product's vault, through the S3 proxy.
    fn vault(&self, stack: &Stack) -> Vault {
        let client = ecr_vault_testkit::s3::s3_client(
            &self.s3.url(),
            &stack.s3.access_key,
            &stack.s3.secret_key,
        );
        Vault::new(
            client,
            VaultLocation::parse(&self.uri).unwrap(),
            vault_opts(),
        )
        .unwrap()
    }

    /// The same vault, straight to S3, for the checker.
    fn direct(&self, stack: &Stack) -> Vault {
        Vault::new(
            stack.s3.client(),
            VaultLocation::parse(&self.uri).unwrap(),
            vault_opts(),
        )
        .unwrap()
    }

    fn source(&self, stack: &Stack) -> Source {
        let reg = Registry::external(&self.reg.url(), stack.registry.credentials()).unwrap();
        registry_source(&reg).unwrap()
    }

    async fn backup(&self, stack: &Stack, ns: &str) -> BackupReport {
        backup(
            &self.source(stack),
            &self.vault(stack),
            &BackupOptions {
                filters: only_ns(ns),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_or_else(|e| {
            // A run-level error here came from a server, not a fault rule: show what the
            // server said about it, so a failure on CI can be read without rerunning.
            panic!("backup of {ns} failed: {e:?}\n{}", stack.s3.diagnostics())
        })
    }

    /// The invariants hold, whatever the run did.
    async fn check(&self, stack: &Stack) -> ecr_vault_tests::VaultContents {
        let min_until = Utc::now() + chrono::Duration::days(2) - chrono::Duration::minutes(10);
        check_vault(&self.direct(stack), "COMPLIANCE", min_until)
            .await
            .unwrap()
    }
}

/// One image with a multipart-sized layer (two parts at 5 MiB) and a small one.
async fn push_image(stack: &Stack, ns: &str, seed: u64) -> PushedImage {
    ImageBuilder::oci(seed)
        .layers(&[6 * 1024 * 1024 + 11, 20_000])
        .build()
        .unwrap()
        .push(&stack.registry, &format!("{ns}/app"), &["v1"])
        .await
        .unwrap()
}

fn assert_captured(contents: &ecr_vault_tests::VaultContents, img: &PushedImage) {
    for (d, size) in img.blobs.iter().chain(&img.child_manifests) {
        let hex = d.trim_start_matches("sha256:");
        assert_eq!(contents.blobs.get(hex), Some(size), "vault lacks {d}");
    }
    assert!(
        contents
            .blobs
            .contains_key(img.digest.trim_start_matches("sha256:")),
        "vault lacks the manifest {}",
        img.digest
    );
}

/// Runs a backup with `rule` on the registry (`on_s3 == false`) or S3 proxy, for each seed,
/// and expects the retries to carry the run to completion.
async fn survives(name: &str, on_s3: bool, rule: impl Fn(u64) -> Rule) {
    let stack = Stack::shared().await.unwrap();
    for seed in SEEDS {
        let ns = unique_name(name);
        let img = push_image(stack, &ns, seed).await;
        let rig = Rig::new(stack).await;
        let proxy = if on_s3 { &rig.s3 } else { &rig.reg };
        let id = proxy.add_rule(rule(seed));
        let report = rig.backup(stack, &ns).await;
        assert!(
            proxy.rule_stats(id).triggered >= 1,
            "{name} seed {seed}: the fault never fired"
        );
        assert!(
            report.failures.is_empty() && report.complete,
            "{name} seed {seed}: {:#?}",
            report.failures
        );
        let contents = rig.check(stack).await;
        assert_captured(&contents, &img);
        // The rerun moves nothing and adds no version.
        proxy.clear_rules();
        let again = rig.backup(stack, &ns).await;
        assert!(again.failures.is_empty(), "{:#?}", again.failures);
        let after = rig.check(stack).await;
        assert_eq!(after.blobs, contents.blobs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_blob_get_is_retried_and_the_run_completes() {
    survives("getreset", false, |seed| {
        Rule::new(
            "/v2/*/blobs/sha256:*",
            Fault::ResetResponse(Offset::Random(seed)),
        )
        .method("GET")
        .nth(1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_upload_part_is_retried_and_the_run_completes() {
    survives("partreset", true, |seed| {
        Rule::new("/*", Fault::ResetRequest(Offset::Random(seed)))
            .method("PUT")
            .query("partNumber")
            .nth(1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_internal_errors_and_slow_down_are_retried() {
    survives("s3-500", true, |seed| {
        Rule::new("/*", Fault::s3_internal_error())
            .method("PUT")
            .probability(0.5, seed)
            .times(2)
    })
    .await;
    survives("s3-503", true, |seed| {
        Rule::new("/*", Fault::s3_slow_down())
            .probability(0.5, seed)
            .times(2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_429_with_retry_after_is_honoured() {
    survives("r429", false, |seed| {
        Rule::new("/v2/*", Fault::too_many_requests(1))
            .after(seed)
            .times(2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_run_is_renewed() {
    survives("expiry", false, |seed| {
        Rule::new("/v2/*", Fault::unauthorized())
            .after(2 + seed)
            .times(1)
    })
    .await;
}

/// A fault on every GET of one blob: the image fails with a clear error, nothing of that blob
/// is visible, and once the fault is gone the rerun completes.
async fn refused(name: &str, fault: impl Fn(u64) -> Fault, expect: &[&str]) {
    let stack = Stack::shared().await.unwrap();
    for seed in SEEDS {
        let ns = unique_name(name);
        let img = push_image(stack, &ns, 100 + seed).await;
        let rig = Rig::new(stack).await;
        let (victim, _) = img
            .blobs
            .iter()
            .find(|(_, size)| *size > 1_000_000)
            .unwrap()
            .clone();
        let id = rig
            .reg
            .add_rule(Rule::new(&format!("/v2/*/blobs/{victim}"), fault(seed)).method("GET"));
        let report = rig.backup(stack, &ns).await;
        assert!(rig.reg.rule_stats(id).triggered >= 1);
        assert_eq!(report.failures.len(), 1, "{name} seed {seed}: {report:#?}");
        let msg = format!("{:?}", report.failures[0]);
        assert!(
            expect.iter().any(|e| msg.contains(e)),
            "{name} seed {seed}: unclear error {msg}"
        );
        let contents = rig.check(stack).await;
        assert!(
            !contents
                .blobs
                .contains_key(victim.trim_start_matches("sha256:")),
            "{name}: a bad copy of {victim} became visible"
        );
        assert!(
            !contents
                .blobs
                .contains_key(img.digest.trim_start_matches("sha256:")),
            "{name}: the manifest went in without its closure"
        );
        rig.reg.clear_rules();
        let again = rig.backup(stack, &ns).await;
        assert!(again.failures.is_empty(), "{:#?}", again.failures);
        assert_captured(&rig.check(stack).await, &img);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_blob_is_refused_and_never_visible() {
    refused(
        "trunc",
        |seed| Fault::Truncate {
            at: Offset::Random(seed),
            keep_length: false,
        },
        &["size mismatch", "Size", "mismatch", "short"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_fails_its_digest_and_is_never_visible() {
    refused(
        "flip",
        |seed| Fault::FlipResponse(Offset::Random(seed)),
        &["digest mismatch", "Digest", "mismatch"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_beyond_the_retry_budget_fails_cleanly_and_the_rerun_completes() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("down");
    let img = push_image(stack, &ns, 200).await;
    let rig = Rig::new(stack).await;
    // Down from the first multipart part on, for the whole run.
    let id = rig.s3.add_rule(
        Rule::new("/*", Fault::ResetRequest(Offset::At(0)))
            .method("PUT")
            .query("partNumber"),
    );
    let report = rig.backup(stack, &ns).await;
    assert!(rig.s3.rule_stats(id).triggered >= 1);
    assert!(!report.failures.is_empty(), "{report:#?}");
    let contents = rig.check(stack).await;
    assert!(
        !contents
            .blobs
            .contains_key(img.digest.trim_start_matches("sha256:"))
    );
    rig.s3.clear_rules();
    let again = rig.backup(stack, &ns).await;
    assert!(again.failures.is_empty(), "{:#?}", again.failures);
    assert_captured(&rig.check(stack).await, &img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_survives_resets_from_s3_and_into_the_registry() {
    let stack = Stack::shared().await.unwrap();
    for seed in SEEDS {
        let ns = unique_name("rst");
        let img = push_image(stack, &ns, 300 + seed).await;
        let rig = Rig::new(stack).await;
        let b = rig.backup(stack, &ns).await;
        assert!(b.failures.is_empty(), "{:#?}", b.failures);

        let fresh = Registry::start().await.unwrap();
        let to = FaultProxy::start(&fresh.url()).await.unwrap();
        let target = Source::Registry {
            registry: registry_client(&Registry::external(&to.url(), fresh.credentials()).unwrap())
                .unwrap(),
        };
        let get = rig.s3.add_rule(
            Rule::new("/*/blobs/*", Fault::ResetResponse(Offset::Random(seed)))
                .method("GET")
                .nth(1),
        );
        let put = to.add_rule(
            Rule::new(
                "/v2/*/blobs/uploads/*",
                Fault::ResetRequest(Offset::Random(seed)),
            )
            .method("PUT")
            .nth(1),
        );
        let req = RestoreRequest {
            snapshot: SnapshotSel::Latest,
            filters: only_ns(&ns),
            digests: vec![],
            mapping: Mapping::default(),
            dry_run: false,
            concurrency: 2,
        };
        let r = restore(&rig.vault(stack), &target, &req, Arc::new(NoProgress))
            .await
            .unwrap();
        assert!(
            rig.s3.rule_stats(get).triggered + to.rule_stats(put).triggered >= 1,
            "no fault fired"
        );
        assert!(r.failures.is_empty(), "seed {seed}: {:#?}", r.failures);
        assert_eq!(
            skopeo_digest(&fresh, &format!("{}:v1", img.repo))
                .await
                .unwrap(),
            img.digest
        );
    }
}

/// Runs a backup of `ns` while `held` (a [`Fault::Hold`] rule on `gate`) holds a request until
/// the test has deleted `gone` from the registry: a gate, not a sleep.
async fn backup_deleting_midway(
    stack: &Stack,
    rig: &Rig,
    ns: &str,
    gone: &PushedImage,
    held: Rule,
    gate: Gate,
) -> BackupReport {
    let hold = rig.reg.add_rule(held);
    let delete_while_held = async {
        rig.reg
            .wait_triggered(hold, 1, Duration::from_secs(120))
            .await
            .unwrap();
        stack
            .registry
            .delete_manifest(&gone.repo, &gone.digest)
            .await
            .unwrap();
        gate.open();
    };
    let (report, ()) = tokio::join!(rig.backup(stack, ns), delete_while_held);
    rig.reg.clear_rules();
    report
}

/// A repository deleted mid-run. Deleted while its tags are being resolved: skipped with the
/// reason. Deleted after the listing, as its manifest is fetched: that image fails with a
/// clear error. Either way the rest of the run is captured, nothing of the deleted image is
/// visible, and the next run is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_deleted_mid_run_costs_only_its_image() {
    let stack = Stack::shared().await.unwrap();
    for (seed, phase) in [(400, "listing"), (402, "copy")] {
        let ns = unique_name("deleted");
        let kept = push_image(stack, &ns, seed).await;
        let gone = ImageBuilder::oci(seed + 1)
            .layers(&[25_000])
            .build()
            .unwrap()
            .push(&stack.registry, &format!("{ns}/gone"), &["v1"])
            .await
            .unwrap();
        let rig = Rig::new(stack).await;
        let gate = Gate::new();
        let held = match phase {
            // The tag's HEAD while the listing resolves it.
            "listing" => Rule::new(
                &format!("/v2/{ns}/gone/manifests/v1"),
                Fault::Hold(gate.clone()),
            ),
            // The manifest GET by digest when the copy starts.
            _ => Rule::new(
                &format!("/v2/{ns}/gone/manifests/sha256:*"),
                Fault::Hold(gate.clone()),
            )
            .method("GET"),
        };
        let report = backup_deleting_midway(stack, &rig, &ns, &gone, held, gate).await;

        if phase == "listing" {
            assert!(report.failures.is_empty(), "{report:#?}");
            assert_eq!(report.skipped.len(), 1, "{report:#?}");
            let why = format!("{:?}", report.skipped[0]);
            assert!(why.contains(&gone.repo) && why.contains("deleted"), "{why}");
        } else {
            assert_eq!(report.failures.len(), 1, "{report:#?}");
            assert!(!report.complete);
            let msg = format!("{:?}", report.failures[0]);
            let lower = msg.to_lowercase();
            assert!(
                msg.contains(&gone.repo)
                    && (lower.contains("not found") || lower.contains("manifest_unknown")),
                "unclear error: {msg}"
            );
        }
        let contents = rig.check(stack).await;
        assert_captured(&contents, &kept);
        assert!(
            !contents
                .blobs
                .contains_key(gone.digest.trim_start_matches("sha256:")),
            "{phase}: the deleted image's manifest is in the vault"
        );
        let snap = rig.direct(stack).newest_snapshot().await.unwrap().unwrap();
        let names = ecr_vault_tests::snapshot_names(&snap);
        assert!(names.contains(&format!("{}:v1", kept.repo)), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with(&gone.repo)),
            "{names:?}"
        );

        // The repository is gone for good now: the next run does not trip over it.
        let again = rig.backup(stack, &ns).await;
        assert!(again.failures.is_empty(), "{phase}: {:#?}", again.failures);
    }
}

/// An image ECR reports as ARCHIVED (moto cannot archive, so the proxy in front of it adds
/// `imageStatus` to the real DescribeImages answer) is skipped with its reason, not pulled and
/// not counted as a failure; its sibling is backed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_ecr_image_is_skipped_with_its_reason() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("archived");
    let repo = format!("{ns}/svc");
    let mut pushed = Vec::new();
    for (seed, tag) in [(410, "live"), (411, "old")] {
        let p = ImageBuilder::oci(seed)
            .layers(&[12_000])
            .build()
            .unwrap()
            .push_with_skopeo(&stack.registry, &repo, &[tag])
            .await
            .unwrap();
        stack.moto.register_pushed(&p).await.unwrap();
        pushed.push(p);
    }
    let (live, old) = (&pushed[0], &pushed[1]);
    let ecr_proxy = FaultProxy::start(&stack.moto.endpoint()).await.unwrap();
    let d = &old.digest;
    let archive = ecr_proxy.add_rule(
        Rule::new(
            "/*",
            Fault::Rewrite(vec![
                (
                    format!(r#""imageDigest": "{d}""#),
                    format!(r#""imageDigest": "{d}", "imageStatus": "ARCHIVED""#),
                ),
                (
                    format!(r#""imageDigest":"{d}""#),
                    format!(r#""imageDigest":"{d}","imageStatus":"ARCHIVED""#),
                ),
            ]),
        )
        .method("POST"),
    );
    let source = ecr_source(
        ecr_vault_testkit::Moto::external(&ecr_proxy.url()).ecr_client(),
        &stack.registry,
    )
    .unwrap();
    let rig = Rig::new(stack).await;
    let report = backup(
        &source,
        &rig.direct(stack),
        &BackupOptions {
            filters: only_ns(&ns),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(ecr_proxy.rule_stats(archive).triggered >= 1);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    let why = format!("{:?}", report.skipped[0]);
    assert!(why.contains(d) && why.contains("ARCHIVED"), "{why}");
    let contents = rig.check(stack).await;
    assert_captured(&contents, live);
    assert!(!contents.blobs.contains_key(d.trim_start_matches("sha256:")));
}

/// S3 goes down in the middle of a multipart upload and comes back while the client is still
/// retrying: the run rides it out and completes, with nothing extra in the vault. The outage
/// starts while the first UploadPart is held at a gate and ends once the proxy has refused two
/// reconnection attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_for_a_while_mid_run_is_ridden_out() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("outage");
    let img = push_image(stack, &ns, 500).await;
    let rig = Rig::new(stack).await;
    let gate = Gate::new();
    let hold = rig.s3.add_rule(
        Rule::new("/*", Fault::Hold(gate.clone()))
            .method("PUT")
            .query("partNumber")
            .nth(1),
    );
    let outage = async {
        rig.s3
            .wait_triggered(hold, 1, Duration::from_secs(120))
            .await
            .unwrap();
        let refused_before = rig.s3.totals().refused_connections;
        rig.s3.set_unreachable(true);
        gate.open();
        rig.s3
            .wait_for("two refused reconnections", Duration::from_secs(120), |p| {
                p.totals().refused_connections >= refused_before + 2
            })
            .await
            .unwrap();
        rig.s3.set_unreachable(false);
    };
    let (report, ()) = tokio::join!(rig.backup(stack, &ns), outage);
    assert!(
        report.failures.is_empty() && report.complete,
        "{:#?}",
        report.failures
    );
    let contents = rig.check(stack).await;
    assert_captured(&contents, &img);
    let uploads = stack
        .s3
        .client()
        .list_multipart_uploads()
        .bucket(rig.direct(stack).location().bucket.as_str())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

/// A part whose bytes are corrupted between the client and S3 (the blob's SHA-256 saw them
/// intact, and the part is sent without SigV4's payload hash) is refused by S3's check of the
/// part's CRC64NVME: the image fails with BadDigest, the upload is aborted, nothing of the blob
/// or its image is visible, and once the fault is gone the rerun completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_corrupted_in_transit_is_refused_by_its_crc_and_never_visible() {
    let stack = Stack::shared().await.unwrap();
    for seed in SEEDS {
        let ns = unique_name("partflip");
        let img = push_image(stack, &ns, 200 + seed).await;
        let rig = Rig::new(stack).await;
        let (victim, _) = img
            .blobs
            .iter()
            .find(|(_, size)| *size > 1_000_000)
            .unwrap()
            .clone();
        let hex = victim.trim_start_matches("sha256:").to_owned();
        let id = rig.s3.add_rule(
            Rule::new("/*", Fault::FlipRequest(Offset::Random(seed)))
                .method("PUT")
                .query("partNumber"),
        );
        let report = rig.backup(stack, &ns).await;
        assert!(
            rig.s3.rule_stats(id).triggered >= 1,
            "seed {seed}: no part flipped"
        );
        assert_eq!(report.failures.len(), 1, "seed {seed}: {report:#?}");
        let msg = format!("{:?}", report.failures[0]);
        assert!(
            msg.contains("BadDigest"),
            "seed {seed}: unclear error {msg}"
        );
        let contents = rig.check(stack).await;
        assert!(
            !contents.blobs.contains_key(&hex),
            "seed {seed}: a corrupted copy of {victim} became visible"
        );
        assert!(
            !contents
                .blobs
                .contains_key(img.digest.trim_start_matches("sha256:")),
            "seed {seed}: the manifest went in without its closure"
        );
        // The refused upload was aborted, not left open.
        let bucket = rig
            .uri
            .trim_start_matches("s3://")
            .split('/')
            .next()
            .unwrap();
        let open = stack
            .s3
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert!(
            open.uploads()
                .iter()
                .all(|u| !u.key().unwrap_or_default().ends_with(&hex)),
            "seed {seed}: the refused upload is still open"
        );
        rig.s3.clear_rules();
        let again = rig.backup(stack, &ns).await;
        assert!(again.failures.is_empty(), "{:#?}", again.failures);
        assert_captured(&rig.check(stack).await, &img);
    }
}
