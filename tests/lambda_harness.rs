//! The backup function, configured the way the template configures it, behind
//! cargo-lambda's emulator ([`crate::lambda_emulator`] runs it), and the fixtures its handler
//! tests share. Included as a module, next to `mod lambda_emulator;`.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use anyhow::Result;
use ecr_vault_testkit::fixtures::{ImageBuilder, PushedImage};
use ecr_vault_testkit::{Stack, unique_name};
use ecr_vault_vault::{Vault, VaultLocation, VaultOptions};

#[allow(unused_imports)] // Each including test binary uses a different subset.
pub(crate) use crate::lambda_emulator::{Function, Outcome, READY_TIMEOUT, sample};

pub(crate) const PACKAGE: &str = "ecr-vault-backup-fn";
pub(crate) const FUNCTION: &str = "ecr-vault-backup";

/// Starts the backup function with the stack's AWS endpoints, the registry override, the
/// vault at `bucket`/`prefix`, and `extra` configuration on top of the template's defaults.
pub(crate) async fn start_backup(
    stack: &Stack,
    bucket: &str,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Result<Function> {
    let mut env: BTreeMap<String, String> = stack.env().into_iter().collect();
    env.retain(|k, _| k.starts_with("AWS_"));
    for (k, v) in [
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ECR_VAULT_BUCKET", bucket),
        ("ECR_VAULT_PREFIX", prefix),
        ("ECR_VAULT_LOCK_MODE", "COMPLIANCE"),
        ("ECR_VAULT_RETENTION_DAYS", "2"),
        ("ECR_VAULT_LOCK_SLACK_DAYS", "1"),
        ("ECR_VAULT_REPOSITORIES", "**"),
        ("ECR_VAULT_EXCLUDE_REPOSITORIES", ""),
        ("ECR_VAULT_TAGS", ""),
        ("ECR_VAULT_EXCLUDE_TAGS", ""),
        ("ECR_VAULT_IMAGE_CONCURRENCY", "2"),
        ("ECR_VAULT_PART_SIZE_MIB", "6"),
        ("ECR_VAULT_PARTS_IN_FLIGHT", "2"),
        ("ECR_VAULT_STORAGE_CLASS", "STANDARD"),
    ] {
        env.insert(k.into(), v.into());
    }
    env.insert("ECR_VAULT_REGISTRY_URL".into(), stack.registry.url());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    Function::start(PACKAGE, FUNCTION, &env).await
}

/// A fresh Object Lock bucket, and a handle on the vault the function will write.
pub(crate) async fn new_vault(stack: &Stack, prefix: &str) -> Result<(String, Vault)> {
    let bucket = unique_name("fnvault");
    stack.s3.create_locked_bucket(&bucket).await?;
    let uri = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    let vault = Vault::new(
        stack.s3.client(),
        VaultLocation::parse(&uri)?,
        VaultOptions {
            lock: ecr_vault_tests::lock(2),
            ..VaultOptions::default()
        },
    )?;
    Ok((bucket, vault))
}

/// Pushes a small OCI image to the registry and records it in moto's ECR.
pub(crate) async fn push(
    stack: &Stack,
    seed: u64,
    repo: &str,
    tags: &[&str],
) -> Result<PushedImage> {
    let img = ImageBuilder::oci(seed)
        .layers(&[4_000 + seed, 9_000])
        .build()?;
    let pushed = img.push(&stack.registry, repo, tags).await?;
    stack.moto.register_pushed(&pushed).await?;
    Ok(pushed)
}
