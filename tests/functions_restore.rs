//! The restore function's real binary behind cargo-lambda's runtime emulator (see
//! `lambda_emulator.rs`), invoked with `events/restore.json` and `events/restore-dry-run.json`
//! adapted to this test's names, against the real stack: a vault on SeaweedFS filled by a real
//! backup, moto as the target account's ECR API, and an empty registry as that account's data
//! plane. Results are checked with skopeo and moto, not with the product's code.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

mod lambda_emulator;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_ecr::error::ProvideErrorMetadata as _;
use ecr_vault_engine::{BackupOptions, FilterSpec, Filters, NoProgress, backup};
use ecr_vault_testkit::fixtures::{ImageBuilder, Platform, PushedImage, multi_arch_oci};
use ecr_vault_testkit::{Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{ecr_source, lock, new_vault};
use ecr_vault_vault::{Vault, VaultOptions};
use lambda_emulator::{Function, sample};
use serde_json::{Value, json};

const PACKAGE: &str = "ecr-vault-restore-fn";
const FUNCTION: &str = "ecr-vault-restore";
const PREFIX: &str = "ecr/prod";

/// Images under `<ns>/team/` (which the sample requests select) and one outside it.
struct Backed {
    ns: String,
    team: Vec<PushedImage>,
    other: PushedImage,
    vault: Vault,
}

/// Pushes the images to the source registry, records them in moto's ECR, and backs them up
/// through the ECR API into a fresh vault, the way the backup function would.
async fn backed_up(stack: &Stack, seed: u64) -> Backed {
    let ns = unique_name("fnrest");
    let reg = &stack.registry;
    let app = ImageBuilder::oci(seed)
        .layers(&[3_000 + seed, 20_000])
        .build()
        .unwrap()
        .push(reg, &format!("{ns}/team/app"), &["v1", "stable"])
        .await
        .unwrap();
    let cli = ImageBuilder::docker(seed + 1)
        .layers(&[7_000])
        .build()
        .unwrap()
        .push(reg, &format!("{ns}/team/tools/cli"), &["v2"])
        .await
        .unwrap();
    let multi = multi_arch_oci(seed + 2, &[5_000], &[Platform::linux("ppc64le")])
        .unwrap()
        .push_with_skopeo(reg, &format!("{ns}/team/multi"), &["v1"])
        .await
        .unwrap();
    let other = ImageBuilder::oci(seed + 3)
        .layers(&[4_000])
        .build()
        .unwrap()
        .push(reg, &format!("{ns}/other/svc"), &["v1"])
        .await
        .unwrap();
    for p in [&app, &cli, &multi, &other] {
        stack.moto.register_pushed(p).await.unwrap();
    }
    let source = ecr_source(stack.moto.ecr_client(), reg).unwrap();
    let vault = new_vault(
        &stack.s3,
        PREFIX,
        VaultOptions {
            lock: lock(2),
            ..VaultOptions::default()
        },
    )
    .await
    .unwrap();
    let report = backup(
        &source,
        &vault,
        &BackupOptions {
            filters: Filters::new(FilterSpec {
                repositories: vec![format!("{ns}/**")],
                ..Default::default()
            })
            .unwrap(),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    Backed {
        ns,
        team: vec![app, cli, multi],
        other,
        vault,
    }
}

/// The restore function configured for `vault`, pushing to `target` (a fresh registry that
/// accepts moto's ECR token) through moto's ECR API.
async fn restore_function(stack: &Stack, vault: &Vault, target: &Registry) -> Function {
    restore_function_at(stack, vault, target, "INFO").await
}

/// [`restore_function`] with `AWS_LAMBDA_LOG_LEVEL` set to `level`.
async fn restore_function_at(
    stack: &Stack,
    vault: &Vault,
    target: &Registry,
    level: &str,
) -> Function {
    let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
    env.retain(|k, _| k.starts_with("AWS_"));
    let prefix = format!("{PREFIX}/");
    let registry_url = target.url();
    for (k, v) in [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", level),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ECR_VAULT_PREFIX", prefix.as_str()),
        ("ECR_VAULT_BUCKET", vault.location().bucket.as_str()),
        ("ECR_VAULT_REGISTRY_URL", registry_url.as_str()),
    ] {
        env.insert(k.into(), v.into());
    }
    Function::start(PACKAGE, FUNCTION, &env).await.unwrap()
}

/// A sample request with its `team/` names moved under this test's namespace; the rename
/// then restores `<ns>/team/x` as `restored/<ns>/team/x`.
fn request(name: &str, ns: &str) -> Value {
    sample(name, &[("team/", &format!("{ns}/team/"))])
}

/// Where the sample request's rename puts `p`.
fn restored(p: &PushedImage) -> String {
    format!("restored/{}", p.repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_request_restores_the_selected_images_byte_exact_into_a_fresh_registry() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 201).await;
    let fresh = Registry::start().await.unwrap();
    let f = restore_function(stack, &b.vault, &fresh).await;

    let resp = f.invoke(&request("restore.json", &b.ns)).await.ok();
    assert_eq!(resp["dryRun"], false, "{resp:#}");
    assert!(resp["failures"].as_array().unwrap().is_empty(), "{resp:#}");
    assert_eq!(resp["images"], 3, "{resp:#}");

    // Every tag of every selected image, under its new name, has the original digest (skopeo).
    for p in &b.team {
        for tag in &p.tags {
            let reference = format!("{}:{tag}", restored(p));
            assert_eq!(
                skopeo_digest(&fresh, &reference).await.unwrap(),
                p.digest,
                "{reference}"
            );
        }
    }
    // Nothing outside the selection, nothing under the old names.
    let expected: BTreeSet<String> = b.team.iter().map(restored).collect();
    let catalog: BTreeSet<String> = fresh.catalog().await.unwrap().into_iter().collect();
    assert_eq!(catalog, expected, "{}", b.other.repo);
    // The target account's ECR has the repositories the function created.
    let created: BTreeSet<String> = resp["repositoriesCreated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, expected, "{resp:#}");
    let emf = f.metrics();
    assert_eq!(emf.len(), 1, "{emf:#?}");
    assert_eq!(emf[0]["ImagesRestored"], 3);
    assert_eq!(emf[0]["ImagesFailed"], 0);
    assert!(emf[0]["BytesPushed"].as_u64().unwrap() > 30_000);
    for repo in &expected {
        stack
            .moto
            .ecr_client()
            .describe_repositories()
            .repository_names(repo)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{repo} not created in ECR: {e:?}"));
    }

    // The same request again finds everything in place and pushes nothing.
    let again = f.invoke(&request("restore.json", &b.ns)).await.ok();
    assert_eq!(again["bytesPushed"], 0, "{again:#}");
    assert_eq!(again["blobsPushed"], 0, "{again:#}");
    assert!(
        again["failures"].as_array().unwrap().is_empty(),
        "{again:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_request_reports_the_plan_and_writes_nothing() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 211).await;
    let fresh = Registry::start().await.unwrap();
    let f = restore_function(stack, &b.vault, &fresh).await;

    let resp = f.invoke(&request("restore-dry-run.json", &b.ns)).await.ok();
    assert_eq!(resp["dryRun"], true, "{resp:#}");
    let planned: BTreeSet<(String, String)> = resp["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["target"].as_str().unwrap().to_owned(),
                p["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = b
        .team
        .iter()
        .map(|p| (restored(p), p.digest.clone()))
        .collect();
    assert_eq!(planned, expected, "{resp:#}");
    assert!(
        resp["plan"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["bytesToPush"].as_u64().unwrap() > 0),
        "{resp:#}"
    );
    assert_eq!(resp["bytesPushed"], 0, "{resp:#}");

    // Nothing in the target registry, no repository in the target ECR.
    assert!(fresh.catalog().await.unwrap().is_empty());
    for (repo, _) in &expected {
        let err = stack
            .moto
            .ecr_client()
            .describe_repositories()
            .repository_names(repo)
            .send()
            .await
            .expect_err("a dry run created a repository");
        assert_eq!(err.code(), Some("RepositoryNotFoundException"), "{repo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_with_a_precise_message_and_write_nothing() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 221).await;
    let fresh = Registry::start().await.unwrap();
    let f = restore_function(stack, &b.vault, &fresh).await;
    let mut typo = request("restore.json", &b.ns);
    typo["dryrun"] = json!(false);

    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "misspelt field",
            typo,
            vec!["invalid restore request", "unknown field `dryrun`"],
        ),
        (
            "no target",
            json!({"snapshot": "latest", "dryRun": false}),
            vec!["invalid restore request", "missing field `target`"],
        ),
        (
            "not an object",
            json!("restore everything"),
            vec!["invalid restore request", "invalid type"],
        ),
        (
            "path in a snapshot id",
            json!({"snapshot": "../../x", "target": {"registry": "ecr"}, "dryRun": false}),
            vec!["snapshot ids look like"],
        ),
        (
            "snapshot and asOf",
            json!({"snapshot": "latest", "asOf": "2026-11-01", "target": {"registry": "ecr"},
                   "dryRun": false}),
            vec!["either a snapshot or an as-of time, not both"],
        ),
        (
            "bad time",
            json!({"asOf": "yesterday", "target": {"registry": "ecr"}, "dryRun": false}),
            vec!["invalid time \"yesterday\""],
        ),
        (
            "bad digest",
            json!({"digests": ["sha256:xyz"], "target": {"registry": "ecr"}, "dryRun": false}),
            vec!["digests:"],
        ),
    ];
    for (what, payload, needles) in cases {
        let (kind, message) = f.invoke(&payload).await.err();
        assert!(!kind.is_empty(), "{what}: no error type");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {message:?} lacks {needle:?}"
            );
        }
    }
    assert!(
        fresh.catalog().await.unwrap().is_empty(),
        "a refused request wrote to the registry"
    );
    // The function is still serving: a valid dry run after the refusals works.
    let resp = f.invoke(&request("restore-dry-run.json", &b.ns)).await.ok();
    assert_eq!(resp["plan"].as_array().unwrap().len(), 3, "{resp:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_restore_fails_the_invocation_with_its_report_and_emits_the_failure_metric() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 231).await;
    // Someone with write access puts a new version over one layer of one selected image
    // (same size, other bytes), as in tests/restore.rs.
    let app = &b.team[0];
    let (bad, size) = app
        .blobs
        .iter()
        .find(|(_, s)| *s == 20_000)
        .unwrap()
        .clone();
    let key = b.vault.location().blob_key(&bad.parse().unwrap());
    b.vault
        .client()
        .put_object()
        .bucket(&b.vault.location().bucket)
        .key(&key)
        .body(vec![0u8; size as usize].into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let fresh = Registry::start().await.unwrap();
    // The template's JSON log format with ApplicationLogLevel=WARN.
    let f = restore_function_at(stack, &b.vault, &fresh, "WARN").await;

    let (kind, message) = f.invoke(&request("restore.json", &b.ns)).await.err();
    assert_eq!(kind, "RestoreFailed", "{message}");
    assert!(
        message.starts_with("restore failed for 1 of 3 image(s)"),
        "{message}"
    );
    assert!(
        message.contains(&key),
        "the error names the corrupt object: {message}"
    );
    let report: Value = serde_json::from_str(message.split_once("; report: ").unwrap().1).unwrap();
    assert_eq!(report["imagesRestored"], 2, "{report:#}");
    assert_eq!(
        report["failures"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );

    // The metric line gets through Lambda's WARN filter and counts the failure.
    let delivered = f.delivered_at("WARN");
    let emf: Vec<&Value> = delivered
        .iter()
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "metric line dropped at WARN:\n{}", f.log());
    assert_eq!(emf[0]["ImagesFailed"], 1);
    assert_eq!(emf[0]["ImagesRestored"], 2);
    assert_eq!(emf[0]["Function"], FUNCTION);

    // The other two images are restored; the corrupt one is not, and no corrupt byte arrived.
    for p in &b.team[1..] {
        let reference = format!("{}:{}", restored(p), p.tags[0]);
        assert_eq!(skopeo_digest(&fresh, &reference).await.unwrap(), p.digest);
    }
    assert!(!fresh.blob_exists(&restored(app), &bad).await.unwrap());
}

/// The drill function configured for `vault`, restoring into `target` through moto's ECR API,
/// sampling every image of these small vaults.
async fn drill_function(stack: &Stack, vault: &Vault, target: &Registry) -> Function {
    let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
    env.retain(|k, _| k.starts_with("AWS_"));
    let prefix = format!("{PREFIX}/");
    let registry_url = target.url();
    for (k, v) in [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ECR_VAULT_PREFIX", prefix.as_str()),
        ("ECR_VAULT_BUCKET", vault.location().bucket.as_str()),
        ("ECR_VAULT_REGISTRY_URL", registry_url.as_str()),
        ("ECR_VAULT_DRILL_SAMPLE", "100"),
        ("ECR_VAULT_DRILL_DAY_OF_MONTH", "1"),
    ] {
        env.insert(k.into(), v.into());
    }
    Function::start(PACKAGE, "ecr-vault-drill", &env)
        .await
        .unwrap()
}

/// Repositories under the drill's reserved prefix in moto's ECR.
async fn scratch_repositories(stack: &Stack) -> Vec<String> {
    let out = stack
        .moto
        .ecr_client()
        .describe_repositories()
        .send()
        .await
        .unwrap();
    out.repositories()
        .iter()
        .filter_map(|r| r.repository_name())
        .filter(|n| n.starts_with("ecr-vault-drill/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_of_a_good_vault_passes_and_leaves_no_scratch_repository() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 241).await;
    let fresh = Registry::start().await.unwrap();
    let f = drill_function(stack, &b.vault, &fresh).await;

    let report = f
        .invoke(&json!({"action": "drill", "force": true, "seed": 7}))
        .await
        .ok();
    assert_eq!(report["passed"], true, "{report:#}\n{}", f.log());
    // Every image of the snapshot (three under team/, one outside), restored and verified.
    assert_eq!(report["imagesSampled"], 4, "{report:#}");
    assert_eq!(report["imagesVerified"], 4, "{report:#}");
    assert_eq!(report["seed"], 7);
    let scratch: Vec<&str> = report["scratchRepositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(!scratch.is_empty());
    assert!(
        scratch.iter().all(|r| r.starts_with("ecr-vault-drill/")),
        "{scratch:?}"
    );
    // The scratch images in the registry have the original digests (skopeo, not our code).
    let app = &b.team[0];
    let copy = scratch
        .iter()
        .find(|r| r.ends_with(&format!("/{}", app.repo)))
        .unwrap();
    assert_eq!(
        skopeo_digest(&fresh, &format!("{copy}:{}", app.tags[0]))
            .await
            .unwrap(),
        app.digest
    );
    // Deleted from ECR afterwards.
    let left: Vec<String> = scratch_repositories(stack)
        .await
        .into_iter()
        .filter(|r| scratch.contains(&r.as_str()))
        .collect();
    assert!(left.is_empty(), "scratch repositories left: {left:?}");

    let delivered = f.delivered_at("WARN");
    let emf: Vec<&Value> = delivered
        .iter()
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "{}", f.log());
    assert_eq!(emf[0]["DrillsPassed"], 1);
    assert_eq!(emf[0]["DrillsFailed"], 0);
    assert_eq!(emf[0]["DrillChecks"], 1);

    // On a day that is not the drill's, the function only checks in.
    let resp = f.invoke(&json!({"action": "drill"})).await.ok();
    if resp["drilled"] == false {
        let emf = f.metrics();
        assert_eq!(emf.last().unwrap()["DrillChecks"], 1);
        assert!(emf.last().unwrap().get("DrillRuns").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_of_a_vault_with_one_corrupted_blob_fails_and_emits_the_failure_metric() {
    let stack = Stack::shared().await.unwrap();
    let b = backed_up(stack, 251).await;
    let app = &b.team[0];
    let (bad, size) = app
        .blobs
        .iter()
        .find(|(_, s)| *s == 20_000)
        .unwrap()
        .clone();
    let key = b.vault.location().blob_key(&bad.parse().unwrap());
    b.vault
        .client()
        .put_object()
        .bucket(&b.vault.location().bucket)
        .key(&key)
        .body(vec![0u8; size as usize].into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let fresh = Registry::start().await.unwrap();
    let f = drill_function(stack, &b.vault, &fresh).await;

    let (kind, message) = f
        .invoke(&json!({"action": "drill", "force": true}))
        .await
        .err();
    assert_eq!(kind, "DrillFailed", "{message}");
    assert!(
        message.starts_with("restore drill failed: 3 of 4 sampled image(s) verified"),
        "{message}"
    );
    assert!(
        message.contains(&key),
        "the report names the corrupt object: {message}"
    );
    assert!(message.contains(&app.repo), "{message}");

    let delivered = f.delivered_at("WARN");
    let emf: Vec<&Value> = delivered
        .iter()
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "{}", f.log());
    assert_eq!(emf[0]["DrillsFailed"], 1);
    assert_eq!(emf[0]["DrillsPassed"], 0);
    assert_eq!(emf[0]["DrillImagesFailed"], 1);
    // A failed drill cleans up too.
    let report: Value = serde_json::from_str(message.split_once("; report: ").unwrap().1).unwrap();
    let scratch: Vec<String> = report["scratchRepositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let left: Vec<String> = scratch_repositories(stack)
        .await
        .into_iter()
        .filter(|r| scratch.contains(r))
        .collect();
    assert!(left.is_empty(), "scratch repositories left: {left:?}");
}
