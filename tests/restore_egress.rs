//! Where the restore function may push (crates/engine/src/egress.rs, decision 0008): the
//! real function binary behind cargo-lambda's emulator (`lambda_emulator.rs`), a vault filled
//! by a real backup, and target registries behind the fault proxy so a refused target can be
//! shown to have received not one request. Credentials for an approved registry live in
//! Secrets Manager (moto); a payload that carries any is refused.
//!
//! Loopback targets are the only way to run a registry here, so the approved-registry cases
//! use the test-only switch `ECR_VAULT_TEST_ALLOW_LOOPBACK_TARGETS=1`; the loopback cases run
//! a second function without it and show the refusal the deployed function gives.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its error.

mod lambda_emulator;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use ecr_vault_engine::egress::TEST_ALLOW_LOOPBACK_VAR;
use ecr_vault_engine::{BackupOptions, FilterSpec, Filters, NoProgress, backup};
use ecr_vault_testkit::fixtures::ImageBuilder;
use ecr_vault_testkit::{FaultProxy, Registry, Stack, skopeo_digest, unique_name};
use ecr_vault_tests::{lock, new_vault, registry_source};
use ecr_vault_vault::{Vault, VaultOptions};
use lambda_emulator::Function;
use serde_json::{Value, json};

const PACKAGE: &str = "ecr-vault-restore-fn";
const FUNCTION: &str = "ecr-vault-restore";
const PREFIX: &str = "ecr/egress";

/// A registry behind a recording proxy: what reaches it, and what it holds.
struct Target {
    registry: Registry,
    proxy: FaultProxy,
}

impl Target {
    async fn start() -> Target {
        let registry = Registry::start().await.unwrap();
        let proxy = FaultProxy::start(&registry.url()).await.unwrap();
        Target { registry, proxy }
    }

    /// Asserts that nothing at all reached the registry, and that it holds no repository.
    async fn assert_untouched(&self, what: &str) {
        let seen = self.proxy.requests();
        assert!(
            seen.is_empty(),
            "{what}: the refused registry received {} requests: {:?}",
            seen.len(),
            seen.iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
        assert!(
            self.registry.catalog().await.unwrap().is_empty(),
            "{what}: the refused registry holds repositories"
        );
    }
}

/// One image, backed up from the stack's registry into a fresh vault.
async fn backed_up(stack: &Stack) -> (String, String, Vault) {
    let repo = format!("{}/app", unique_name("egress"));
    let image = ImageBuilder::oci(701)
        .layers(&[4_000, 9_000])
        .build()
        .unwrap()
        .push(&stack.registry, &repo, &["v1"])
        .await
        .unwrap();
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
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    (repo, image.digest, vault)
}

/// Stores `{"registry", "username", "password"}` for `target` in moto's Secrets Manager.
async fn registry_secret(stack: &Stack, target: &str, user: &str, password: &str) -> String {
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(stack.moto.region.clone()))
        .endpoint_url(stack.moto.endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let out = aws_sdk_secretsmanager::Client::from_conf(conf)
        .create_secret()
        .name(unique_name("restore-target"))
        .secret_string(
            json!({"registry": target, "username": user, "password": password}).to_string(),
        )
        .send()
        .await
        .unwrap();
    out.arn().unwrap().to_owned()
}

/// The restore function for `vault` with the template's egress variables set as given.
async fn restore_function(
    stack: &Stack,
    vault: &Vault,
    approved: &[String],
    secret_arns: &[String],
    allow_loopback: bool,
) -> Function {
    let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
    env.retain(|k, _| k.starts_with("AWS_"));
    env.insert(
        "AWS_ENDPOINT_URL_SECRETS_MANAGER".into(),
        stack.moto.endpoint(),
    );
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env.insert("ECR_VAULT_PREFIX".into(), format!("{PREFIX}/"));
    env.insert(
        "ECR_VAULT_BUCKET".into(),
        vault.location().bucket.to_string(),
    );
    env.insert("ECR_VAULT_APPROVED_REGISTRIES".into(), approved.join(","));
    env.insert(
        "ECR_VAULT_REGISTRY_SECRET_ARNS".into(),
        secret_arns.join(","),
    );
    if allow_loopback {
        env.insert(TEST_ALLOW_LOOPBACK_VAR.into(), "1".into());
    }
    Function::start(PACKAGE, FUNCTION, &env).await.unwrap()
}

fn request(repo: &str, registry: &str) -> Value {
    json!({
        "snapshot": "latest",
        "repositories": [repo],
        "target": {"registry": registry},
        "dryRun": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_pushes_only_to_approved_registries_with_credentials_from_secrets_manager() {
    let stack = Stack::shared().await.unwrap();
    let (repo, digest, vault) = backed_up(stack).await;
    let approved = Target::start().await;
    let stranger = Target::start().await;
    let approved_url = approved.proxy.url();
    let arn = registry_secret(
        stack,
        &approved_url,
        &approved.registry.user,
        &approved.registry.password,
    )
    .await;
    let f = restore_function(
        stack,
        &vault,
        &[approved_url.clone(), "http://169.254.169.254".into()],
        &[arn],
        true,
    )
    .await;

    // A registry nobody approved, with and without credentials in the payload.
    let (_, msg) = f.invoke(&request(&repo, &stranger.proxy.url())).await.err();
    assert!(msg.contains("is not approved"), "{msg}");
    assert!(msg.contains("ApprovedRestoreRegistries"), "{msg}");
    let mut with_creds = request(&repo, &stranger.proxy.url());
    with_creds["target"]["username"] = json!(stranger.registry.user);
    with_creds["target"]["password"] = json!(stranger.registry.password);
    let (_, msg) = f.invoke(&with_creds).await.err();
    assert!(msg.contains("credentials are never accepted"), "{msg}");
    assert!(!msg.contains(&stranger.registry.password), "{msg}");
    // Credentials in the payload are refused even for the approved registry.
    let mut with_creds = request(&repo, &approved_url);
    with_creds["target"]["password"] = json!("anything");
    let (_, msg) = f.invoke(&with_creds).await.err();
    assert!(msg.contains("credentials are never accepted"), "{msg}");
    // The metadata address stays refused even when approved and with the test switch on.
    let (_, msg) = f
        .invoke(&request(&repo, "http://169.254.169.254"))
        .await
        .err();
    assert!(msg.contains("link-local"), "{msg}");
    stranger.assert_untouched("non-approved registry").await;
    approved
        .assert_untouched("approved registry, request with credentials")
        .await;

    // The approved registry gets the image, pushed with the secret's credentials.
    let resp = f.invoke(&request(&repo, &approved_url)).await.ok();
    assert!(resp["failures"].as_array().unwrap().is_empty(), "{resp:#}");
    assert_eq!(resp["images"], 1, "{resp:#}");
    assert_eq!(
        skopeo_digest(&approved.registry, &format!("{repo}:v1"))
            .await
            .unwrap(),
        digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_loopback_targets_even_when_approved_and_named() {
    let stack = Stack::shared().await.unwrap();
    let (repo, _, vault) = backed_up(stack).await;
    let target = Target::start().await;
    let port = target.proxy.addr().port();
    let by_address = format!("http://127.0.0.1:{port}");
    let by_name = format!("http://localhost:{port}");
    let by_v6 = format!("http://[::1]:{port}");
    // As deployed: the test switch off. The operator approved all three spellings.
    let f = restore_function(
        stack,
        &vault,
        &[by_address.clone(), by_name.clone(), by_v6.clone()],
        &[],
        false,
    )
    .await;
    for target_url in [&by_address, &by_name, &by_v6] {
        let (_, msg) = f.invoke(&request(&repo, target_url)).await.err();
        assert!(
            msg.contains("a loopback address") && msg.contains("refused"),
            "{target_url}: {msg}"
        );
    }
    target.assert_untouched("loopback target").await;
}
