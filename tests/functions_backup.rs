//! The backup function's real binary behind cargo-lambda's runtime emulator
//! (`cargo lambda watch`), invoked over the Lambda Invoke API with the sample events in
//! `events/`, and checked on the real vault (SeaweedFS) and registry (distribution + moto's
//! ECR API).
//!
//! # How the emulator is run (`lambda_emulator.rs`, configured by `lambda_harness.rs`)
//! - The function binary is built once per test run (`cargo build -p ecr-vault-backup-fn
//!   --bin ecr-vault-backup`, same `target/`; a no-op when fresh).
//! - Each test starts `cargo lambda watch --only-lambda-apis` (the emulator's Runtime and
//!   Invoke APIs) on a free port, and the built binary against it, the way Lambda runs a
//!   `bootstrap`: a clean environment with only the function's configuration plus
//!   `AWS_LAMBDA_RUNTIME_API` and friends. Without `--only-lambda-apis`, the emulator runs
//!   `cargo run` on the first invocation of every instance; on a shared machine that `cargo
//!   run` waits for the `target/` lock behind unrelated builds (minutes, silently under
//!   `--quiet`), and watchexec puts it in a process group of its own.
//! - One emulator and one function per test: each test has its own vault, so its own
//!   configuration. Both run in process groups of their own, ended on drop and by a watchdog
//!   if the test process dies.
//! - Readiness: the emulator is polled until its port accepts connections (any HTTP request
//!   to an unknown path would invoke a function); no fixed sleeps.
//! - cargo-lambda 1.9 sends a constant `Lambda-Runtime-Deadline-Ms: 600000` (1970), so the
//!   function sees no usable deadline and assumes Lambda's 900 s. The deadline test forces
//!   "no time left" with `ECR_VAULT_DEADLINE_MARGIN_SECS` instead.

mod lambda_emulator;
mod lambda_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_tests::{check_vault, snapshot_names};
use ecr_vault_vault::{LockMode, Snapshot, SnapshotId, Vault};
use lambda_harness::{READY_TIMEOUT, new_vault, push, sample, start_backup};
use serde_json::{Value, json};

const SAMPLE_REPO: &str = "team/app/api";
const SAMPLE_DIGEST: &str =
    "sha256:cccebb337cb45e831493c358fe82df29dcdd355cba62de55c738ddb99aafe758";

/// The snapshot a run's response names (ids in the same second do not sort by time).
async fn snapshot_of(vault: &Vault, resp: &Value) -> Snapshot {
    let id = resp["snapshot"]
        .as_str()
        .expect("response names a snapshot");
    vault
        .get_snapshot(&SnapshotId::parse(id).expect("snapshot id"))
        .await
        .expect("reading the snapshot")
        .expect("the snapshot the response names exists")
}

/// Every key and version under the vault's bucket: key → version ids, plus delete markers.
async fn versions(vault: &Vault) -> (BTreeMap<String, Vec<String>>, usize) {
    let s3 = vault.client();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut markers = 0;
    let (mut km, mut vm) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(&vault.location().bucket)
            .set_key_marker(km.take())
            .set_version_id_marker(vm.take())
            .send()
            .await
            .expect("ListObjectVersions");
        markers += page.delete_markers().len();
        for v in page.versions() {
            out.entry(v.key().unwrap_or_default().to_owned())
                .or_default()
                .push(v.version_id().unwrap_or_default().to_owned());
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        km = page.next_key_marker().map(str::to_owned);
        vm = page.next_version_id_marker().map(str::to_owned);
    }
    (out, markers)
}

fn hexes(img: &PushedImage) -> Vec<String> {
    img.blobs
        .iter()
        .map(|(d, _)| d.clone())
        .chain([img.digest.clone()])
        .map(|d| d.trim_start_matches("sha256:").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_event_backs_up_exactly_that_image() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fnpush");
    let wanted = push(stack, 101, &format!("{ns}/api"), &["v1", "stable"])
        .await
        .unwrap();
    let other = push(stack, 102, &format!("{ns}/worker"), &["v1"])
        .await
        .unwrap();
    let (bucket, vault) = new_vault(stack, "ecr/prod").await.unwrap();
    let f = start_backup(stack, &bucket, "ecr/prod/", &[])
        .await
        .unwrap();

    let event = sample(
        "push.json",
        &[(SAMPLE_REPO, &wanted.repo), (SAMPLE_DIGEST, &wanted.digest)],
    );
    let resp = f.invoke(&event).await.ok();
    assert_eq!(resp["trigger"], "push", "{resp:#}");
    assert_eq!(resp["counts"]["imagesCopied"], 1, "{resp:#}");
    assert_eq!(resp["complete"], true);

    // The snapshot lists that image, under every tag ECR has for it, and nothing else.
    let snap = snapshot_of(&vault, &resp).await;
    assert_eq!(resp["snapshot"], snap.id.as_str());
    assert_eq!(snap.run.trigger, "push");
    assert_eq!(
        snapshot_names(&snap),
        BTreeSet::from([
            format!("{}:v1", wanted.repo),
            format!("{}:stable", wanted.repo)
        ])
    );
    assert!(
        snap.images
            .iter()
            .all(|i| i.digest.to_string() == wanted.digest)
    );
    assert!(
        snap.images.iter().all(|i| i.pushed_at.is_some()),
        "ECR push time recorded"
    );

    // Its closure is in the vault, re-hashed and locked; the other image's is not.
    let min_until = Utc::now() + chrono::Duration::days(2) - chrono::Duration::minutes(5);
    let contents = check_vault(&vault, "COMPLIANCE", min_until).await.unwrap();
    for hex in hexes(&wanted) {
        assert!(contents.blobs.contains_key(&hex), "{hex} missing");
    }
    for hex in hexes(&other) {
        assert!(
            !contents.blobs.contains_key(&hex),
            "{hex} of the other image was copied"
        );
    }

    // One EMF line for the run, and structured JSON logs.
    let emf = f.metrics();
    assert_eq!(emf.len(), 1, "{emf:#?}");
    assert_eq!(emf[0]["Function"], "ecr-vault-backup");
    assert_eq!(emf[0]["ImagesBackedUp"], 1);
    assert_eq!(emf[0]["ImagesFailed"], 0);
    assert_eq!(
        emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "EcrVault"
    );
    assert!(emf[0]["BytesWritten"].as_u64().unwrap() > 13_000);
    let log = f.log();
    assert!(
        log.lines().any(|l| serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["fields"]["message"] == "backup run finished")),
        "no JSON log line for the run:\n{log}"
    );

    // A push whose image is gone by now succeeds and writes nothing.
    let before = versions(&vault).await;
    let gone = sample(
        "push.json",
        &[
            (SAMPLE_REPO, &wanted.repo),
            (SAMPLE_DIGEST, &format!("sha256:{}", "ab".repeat(32))),
        ],
    );
    let resp = f.invoke(&gone).await.ok();
    assert!(resp["snapshot"].is_null(), "{resp:#}");
    assert!(
        resp["skipped"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no longer in ECR"),
        "{resp:#}"
    );
    assert_eq!(
        versions(&vault).await,
        before,
        "a gone image wrote something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_back_up_everything_the_filters_select_and_nothing_else() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fnsched");
    let a = push(stack, 111, &format!("{ns}/app/a"), &["v1"])
        .await
        .unwrap();
    let b = push(stack, 112, &format!("{ns}/app/b"), &["v2", "dev"])
        .await
        .unwrap();
    // Outside the filters: an excluded repository, and an image with no selected tag.
    let excluded = push(stack, 113, &format!("{ns}/legacy/c"), &["v1"])
        .await
        .unwrap();
    let dev_only = push(stack, 114, &format!("{ns}/app/d"), &["dev"])
        .await
        .unwrap();
    let (bucket, vault) = new_vault(stack, "").await.unwrap();
    let repos = format!("{ns}/**");
    let exclude = format!("{ns}/legacy/**");
    let f = start_backup(
        stack,
        &bucket,
        "",
        &[
            ("ECR_VAULT_REPOSITORIES", &repos),
            ("ECR_VAULT_EXCLUDE_REPOSITORIES", &exclude),
            ("ECR_VAULT_TAGS", "v*"),
            ("ECR_VAULT_EXCLUDE_TAGS", "*-rc*"),
        ],
    )
    .await
    .unwrap();
    let expected = BTreeSet::from([format!("{}:v1", a.repo), format!("{}:v2", b.repo)]);

    // EventBridge Scheduler input (no envelope).
    let first = f.invoke(&sample("schedule-scheduler.json", &[])).await.ok();
    assert_eq!(first["trigger"], "scheduled", "{first:#}");
    assert_eq!(first["counts"]["imagesCopied"], 2, "{first:#}");
    assert!(
        first["failures"].as_array().unwrap().is_empty(),
        "{first:#}"
    );
    let snap = snapshot_of(&vault, &first).await;
    assert_eq!(snapshot_names(&snap), expected);
    assert_eq!(snap.run.trigger, "scheduled");
    assert!(snap.run.complete);

    // Legacy scheduled rule: the same selection, and nothing moves twice.
    let second = f
        .invoke(&sample("schedule-eventbridge.json", &[]))
        .await
        .ok();
    assert_eq!(second["counts"]["imagesUnchanged"], 2, "{second:#}");
    assert_eq!(second["counts"]["bytesWritten"], 0, "{second:#}");
    let snap2 = snapshot_of(&vault, &second).await;
    assert_ne!(snap2.id, snap.id);
    assert_eq!(snapshot_names(&snap2), expected);

    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    assert_eq!(contents.snapshots.len(), 2);
    for img in [&a, &b] {
        for hex in hexes(img) {
            assert!(
                contents.blobs.contains_key(&hex),
                "{} lacks {hex}",
                img.repo
            );
        }
    }
    for img in [&excluded, &dev_only] {
        assert!(
            !contents
                .blobs
                .contains_key(img.digest.trim_start_matches("sha256:")),
            "{} was backed up although the filters exclude it",
            img.repo
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_reports_exactly_the_failed_messages() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fnsqs");
    let good = push(stack, 121, &format!("{ns}/good"), &["v1"])
        .await
        .unwrap();
    // Known to ECR but not pullable from the registry: a copy failure.
    let ghost = ImageBuilder::oci(122).layers(&[1_000]).build().unwrap();
    stack
        .moto
        .register_image(
            &format!("{ns}/ghost"),
            &ghost.manifest,
            &ghost.media_type,
            &ghost.digest,
            &["v1"],
        )
        .await
        .unwrap();
    let (bucket, vault) = new_vault(stack, "").await.unwrap();
    let f = start_backup(stack, &bucket, "", &[]).await.unwrap();

    let item = |repo: &str, digest: &str| {
        json!({"action": "backup-image", "repository": repo, "digest": digest,
               "tags": ["v1"], "run": "20261124T020000000Z-a1b2c3"})
        .to_string()
    };
    let mut event = sample("sqs-batch.json", &[]);
    let mut bad_ghost = event["Records"][1].clone();
    event["Records"][0]["body"] = item(&good.repo, &good.digest).into();
    // Not a valid work item: a digest that is not a digest.
    event["Records"][1]["body"] = item(&good.repo, "sha256:not-a-digest").into();
    bad_ghost["messageId"] = "3a8f0c1e-0000-4000-8000-00000000abcd".into();
    bad_ghost["body"] = item(&format!("{ns}/ghost"), &ghost.digest).into();
    event["Records"].as_array_mut().unwrap().push(bad_ghost);

    let resp = f.invoke(&event).await.ok();
    let failed: BTreeSet<&str> = resp["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from([
            "2e1424d4-f796-459a-8184-9c92662be6da",
            "3a8f0c1e-0000-4000-8000-00000000abcd"
        ]),
        "{resp:#}"
    );
    assert_eq!(
        resp.as_object().unwrap().len(),
        1,
        "only batchItemFailures: {resp:#}"
    );

    // The good item is in the vault; the failed ones left nothing visible.
    let snap = vault.newest_snapshot().await.unwrap().unwrap();
    assert_eq!(snap.run.trigger, "work-item");
    assert_eq!(
        snapshot_names(&snap),
        BTreeSet::from([format!("{}:v1", good.repo)])
    );
    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    for hex in hexes(&good) {
        assert!(contents.blobs.contains_key(&hex));
    }
    assert!(
        !contents
            .blobs
            .contains_key(ghost.digest.trim_start_matches("sha256:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_event_writes_one_audit_record_and_deletes_nothing() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fndel");
    let img = push(stack, 131, &format!("{ns}/api"), &["v1"])
        .await
        .unwrap();
    let (bucket, vault) = new_vault(stack, "audit").await.unwrap();
    let f = start_backup(stack, &bucket, "audit", &[]).await.unwrap();
    let subst = [
        (SAMPLE_REPO, img.repo.as_str()),
        (SAMPLE_DIGEST, img.digest.as_str()),
    ];
    f.invoke(&sample("push.json", &subst)).await.ok();
    let (before, markers) = versions(&vault).await;
    assert_eq!(markers, 0);
    assert!(!before.is_empty());

    let resp = f.invoke(&sample("delete.json", &subst)).await.ok();
    assert_eq!(resp["written"], true, "{resp:#}");
    let key = "audit/events/20261124T031002Z-b2e9c4a1-6f1d-4e0c-9a55-3c7e2f0d8e11.json";
    assert_eq!(resp["auditKey"], key);

    // Exactly one new object, the audit record; everything else untouched, no delete marker.
    let (after, markers) = versions(&vault).await;
    assert_eq!(markers, 0, "a delete marker appeared");
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(added, vec![key]);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
    // The record says what happened, and is locked like the rest of the vault.
    let doc = vault.get_document(key, 4096).await.unwrap().unwrap();
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(
        doc,
        json!({"time": "2026-11-24T03:10:02Z", "account": "123456789012", "region": "us-east-1",
               "repository": img.repo, "digest": img.digest, "tag": "v1",
               "eventId": "b2e9c4a1-6f1d-4e0c-9a55-3c7e2f0d8e11", "action": "DELETE"})
    );
    let state = vault.head(key).await.unwrap().unwrap();
    assert_eq!(state.mode, Some(LockMode::Compliance));
    assert!(state.retain_until.unwrap() > Utc::now() + chrono::Duration::days(1));
    // The image is still in ECR's records and in the vault.
    assert!(vault.newest_snapshot().await.unwrap().is_some());

    // A redelivery of the same event adds nothing.
    let again = f.invoke(&sample("delete.json", &subst)).await.ok();
    assert_eq!(again["written"], false, "{again:#}");
    assert_eq!(versions(&vault).await.0, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_invalid_events_are_refused_and_write_nothing() {
    let stack = Stack::shared().await.unwrap();
    let (bucket, vault) = new_vault(stack, "").await.unwrap();
    let f = start_backup(stack, &bucket, "", &[]).await.unwrap();

    let (kind, message) = f.invoke(&sample("unknown.json", &[])).await.err();
    assert_eq!(kind, "UnsupportedEvent");
    assert!(message.contains("\"aws:s3\""), "{message}");
    assert!(message.contains("nothing was written"), "{message}");

    let (kind, message) = f.invoke(&sample("restore.json", &[])).await.err();
    assert_eq!(kind, "UnsupportedEvent");
    assert!(message.contains("\"snapshot\""), "{message}");

    // Hostile names in an ECR event never reach a key.
    let hostile = sample("push.json", &[(SAMPLE_REPO, "team/../../etc")]);
    let (kind, message) = f.invoke(&hostile).await.err();
    assert_eq!(kind, "InvalidEvent");
    assert!(message.contains("detail.repository-name"), "{message}");
    let bad_delete = sample("delete.json", &[(SAMPLE_DIGEST, "sha256:../../x")]);
    let (kind, message) = f.invoke(&bad_delete).await.err();
    assert_eq!(kind, "InvalidEvent");
    assert!(message.contains("detail.image-digest"), "{message}");

    let (objects, markers) = versions(&vault).await;
    assert!(objects.is_empty(), "the vault is not empty: {objects:?}");
    assert_eq!(markers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_time_run_defers_cleanly_and_a_rerun_completes() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fntime");
    let a = push(stack, 141, &format!("{ns}/a"), &["v1"]).await.unwrap();
    let b = push(stack, 142, &format!("{ns}/b"), &["v1"]).await.unwrap();
    let (bucket, vault) = new_vault(stack, "").await.unwrap();
    let repos = format!("{ns}/**");

    // A margin longer than any invocation: no time to start anything.
    let rushed = start_backup(
        stack,
        &bucket,
        "",
        &[
            ("ECR_VAULT_REPOSITORIES", &repos),
            ("ECR_VAULT_DEADLINE_MARGIN_SECS", "3600"),
        ],
    )
    .await
    .unwrap();
    let resp = rushed
        .invoke(&sample("schedule-scheduler.json", &[]))
        .await
        .ok();
    drop(rushed);
    let deferred: BTreeSet<&str> = resp["deferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        deferred,
        BTreeSet::from([a.by_digest().as_str(), b.by_digest().as_str()]),
        "{resp:#}"
    );
    assert_eq!(resp["complete"], false);
    assert_eq!(resp["counts"]["imagesCopied"], 0);

    // Clean state: the run is recorded as incomplete with no entries, no image object is
    // visible, no multipart upload is left open.
    let snap = snapshot_of(&vault, &resp).await;
    assert!(!snap.run.complete);
    assert!(snap.images.is_empty(), "{:?}", snap.images);
    let contents = check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
    for img in [&a, &b] {
        for hex in hexes(img) {
            assert!(!contents.blobs.contains_key(&hex), "{hex} is visible");
        }
    }
    let uploads = vault
        .client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());

    // The next run, with time, completes.
    let f = start_backup(stack, &bucket, "", &[("ECR_VAULT_REPOSITORIES", &repos)])
        .await
        .unwrap();
    let resp = f.invoke(&sample("schedule-scheduler.json", &[])).await.ok();
    assert_eq!(resp["complete"], true, "{resp:#}");
    assert_eq!(resp["counts"]["imagesCopied"], 2);
    assert!(resp["deferred"].as_array().unwrap().is_empty());
    let snap = snapshot_of(&vault, &resp).await;
    assert_eq!(
        snapshot_names(&snap),
        BTreeSet::from([format!("{}:v1", a.repo), format!("{}:v1", b.repo)])
    );
    check_vault(&vault, "COMPLIANCE", Utc::now()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_stops_the_cold_start_with_a_clear_error() {
    let stack = Stack::shared().await.unwrap();
    let (bucket, vault) = new_vault(stack, "").await.unwrap();
    let mut f = start_backup(stack, &bucket, "", &[("ECR_VAULT_LOCK_MODE", "FOREVER")])
        .await
        .unwrap();
    // The function exits at cold start, before it asks for an event.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = f.function.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "still running:\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = f.log();
    assert!(
        log.contains(r#"invalid configuration: ECR_VAULT_LOCK_MODE=\"FOREVER\": lock mode must be COMPLIANCE or GOVERNANCE"#),
        "no clear configuration error in the log:\n{log}"
    );
    assert!(versions(&vault).await.0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_lines_survive_the_warn_log_level_and_mark_full_snapshots() {
    let stack = Stack::shared().await.unwrap();
    let ns = unique_name("fnwarn");
    let img = push(stack, 131, &format!("{ns}/app"), &["v1"])
        .await
        .unwrap();
    let (bucket, _vault) = new_vault(stack, "").await.unwrap();
    let repos = format!("{ns}/**");
    // The template's JSON log format with ApplicationLogLevel=WARN.
    let f = start_backup(
        stack,
        &bucket,
        "",
        &[
            ("ECR_VAULT_REPOSITORIES", &repos),
            ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
        ],
    )
    .await
    .unwrap();

    let resp = f.invoke(&sample("schedule-scheduler.json", &[])).await.ok();
    assert_eq!(resp["counts"]["imagesCopied"], 1, "{resp:#}");
    let delivered = f.delivered_at("WARN");
    let emf: Vec<&Value> = delivered
        .iter()
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "metric line dropped at WARN:\n{}", f.log());
    assert_eq!(emf[0]["ImagesBackedUp"], 1);
    assert_eq!(
        emf[0]["FullSnapshots"], 1,
        "a complete scheduled run is full"
    );
    // The filter is really at WARN: the run's INFO log line does not get through.
    assert!(
        !delivered
            .iter()
            .any(|v| v["fields"]["message"] == "backup run finished"),
        "{delivered:#?}"
    );

    // A push run is not a full snapshot; its metrics still get through.
    let event = sample(
        "push.json",
        &[(SAMPLE_REPO, &img.repo), (SAMPLE_DIGEST, &img.digest)],
    );
    f.invoke(&event).await.ok();
    let delivered = f.delivered_at("WARN");
    let emf: Vec<&Value> = delivered
        .iter()
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 2, "{}", f.log());
    assert_eq!(emf[1]["trigger"], "push");
    assert_eq!(emf[1]["FullSnapshots"], 0);
}
