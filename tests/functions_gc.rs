//! The scheduled GC function's real binary behind cargo-lambda's runtime emulator, invoked
//! with `events/gc.json` against a real vault on SeaweedFS: by default it only reports what
//! would go; with `ECR_VAULT_GC_APPLY=true` it deletes the unreferenced blob whose lock has
//! expired, and nothing a snapshot references.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

mod lambda_emulator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use ecr_vault_engine::{BackupOptions, FilterSpec, Filters, NoProgress, backup};
use ecr_vault_registry::Digest;
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_tests::{new_vault, registry_source};
use ecr_vault_vault::{LockMode, LockPolicy, Vault, VaultOptions};
use lambda_emulator::{Function, Outcome, sample};
use serde_json::Value;

const PREFIX: &str = "ecr/prod";

async fn gc_function(stack: &Stack, vault: &Vault, apply: bool) -> Function {
    let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
    env.retain(|k, _| k.starts_with("AWS_"));
    for (k, v) in [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ECR_VAULT_BUCKET", vault.location().bucket.as_str()),
        ("ECR_VAULT_PREFIX", PREFIX),
        ("ECR_VAULT_GC_KEEP_LAST", "1"),
        ("ECR_VAULT_GC_KEEP_DAILY", "0"),
        ("ECR_VAULT_GC_KEEP_MONTHLY", "0"),
        ("ECR_VAULT_GC_APPLY", if apply { "true" } else { "false" }),
    ] {
        env.insert(k.into(), v.into());
    }
    Function::start("ecr-vault-gc-fn", "ecr-vault-gc", &env)
        .await
        .unwrap()
}

fn report(outcome: Outcome, f: &Function) -> Value {
    match outcome {
        Outcome::Ok(v) => v,
        Outcome::Err {
            error_type,
            message,
        } => {
            panic!("gc failed: {error_type}: {message}\n{}", f.log())
        }
    }
}

async fn exists(vault: &Vault, key: &str) -> bool {
    vault.head(key).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_gc_reports_by_default_and_deletes_only_expired_unreferenced_blobs_when_applied()
{
    let stack = Stack::shared().await.unwrap();
    let repo = unique_name("fngc");
    let img = ImageBuilder::oci(601)
        .layers(&[20_000])
        .build()
        .unwrap()
        .push(&stack.registry, &repo, &["v1"])
        .await
        .unwrap();
    // Locks of a few seconds, so they expire within the test.
    let vault = new_vault(
        &stack.s3,
        PREFIX,
        VaultOptions {
            lock: LockPolicy::seconds(LockMode::Compliance, 2, 0),
            ..VaultOptions::default()
        },
    )
    .await
    .unwrap();
    let run = backup(
        &registry_source(&stack.registry).unwrap(),
        &vault,
        &BackupOptions {
            filters: Filters::new(FilterSpec {
                repositories: vec![repo.clone()],
                ..Default::default()
            })
            .unwrap(),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(run.failures.is_empty(), "{:#?}", run.failures);
    let referenced: Vec<String> = std::iter::once(&img.digest)
        .chain(img.blobs.iter().map(|(d, _)| d))
        .map(|d| vault.location().blob_key(&Digest::parse(d).unwrap()))
        .collect();
    // An orphan: in the vault, referenced by no snapshot.
    let orphan_bytes: &'static [u8] = b"left behind by an image that was never completed";
    let orphan = vault.location().blob_key(&Digest::of(orphan_bytes));
    vault
        .put_document(
            &orphan,
            Bytes::from_static(orphan_bytes),
            "application/octet-stream",
            Utc::now(),
        )
        .await
        .unwrap();
    // Wait (polling the server) until the orphan's lock has expired.
    let deadline = Instant::now() + Duration::from_secs(60);
    while vault.retention(&orphan).await.unwrap().unwrap().1 >= Utc::now() {
        assert!(Instant::now() < deadline, "the orphan's lock never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let event = sample("gc.json", &[]);

    // Default: a dry run that names the orphan and deletes nothing.
    let dry = gc_function(stack, &vault, false).await;
    let r = report(dry.invoke(&event).await, &dry);
    assert_eq!(r["applied"], false, "{r:#}");
    let planned: Vec<&str> = r["plan"]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["key"].as_str())
        .collect();
    assert_eq!(planned, [orphan.as_str()], "{r:#}");
    assert!(exists(&vault, &orphan).await);
    let m = dry.metrics();
    let line = m
        .last()
        .unwrap_or_else(|| panic!("no EMF line\n{}", dry.log()));
    assert_eq!(line["BytesReclaimed"], orphan_bytes.len() as u64);
    assert_eq!(line["VersionsDeleted"], 0);
    drop(dry);

    // Applied: the orphan goes; everything the snapshot references stays.
    let live = gc_function(stack, &vault, true).await;
    let r = report(live.invoke(&event).await, &live);
    assert_eq!(r["applied"], true, "{r:#}");
    assert_eq!(r["deleted"], 1, "{r:#}");
    assert!(!exists(&vault, &orphan).await, "the orphan survived");
    for key in &referenced {
        assert!(exists(&vault, key).await, "gc deleted referenced {key}");
    }
    assert_eq!(live.metrics().last().unwrap()["VersionsDeleted"], 1);
}
