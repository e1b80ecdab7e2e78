//! Runs the local stack for demos and benchmarks.
//!
//! - `ecr-vault-stack up --dir DIR [--bucket vault] [--seed] [--token-registry] [--s3-registry]`:
//!   starts registry, SeaweedFS and moto on loopback (and, if asked, a registry with Docker
//!   token auth and one that keeps blobs on SeaweedFS and redirects blob GETs to presigned
//!   URLs, like ECR), creates a locked bucket, writes `DIR/env` (shell `export` lines) and
//!   stays in the foreground until SIGINT/SIGTERM, then stops everything and removes
//!   `DIR/env`. `DIR/env` appears (atomically) only once everything is ready, so scripts can
//!   wait for it.
//! - `ecr-vault-stack seed --registry URL [--user U --password P] [--moto URL]`: pushes the
//!   demo image set into a running registry (and records it in moto's ECR if given).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ecr_vault_testkit::fixtures::{PushedImage, push_demo_set};
use ecr_vault_testkit::{Moto, Registry, RegistryOptions, S3Storage, Stack};

#[derive(Parser)]
#[command(name = "ecr-vault-stack", about = "Local test stack for ecr-vault")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack and keep it running until interrupted.
    Up {
        /// Directory for the `env` file.
        #[arg(long)]
        dir: PathBuf,
        /// Name of the Object Lock bucket to create.
        #[arg(long, default_value = "vault")]
        bucket: String,
        /// Also push the demo image set (and record it in moto's ECR).
        #[arg(long)]
        seed: bool,
        /// Also start a registry with Docker token auth (60 s tokens from an in-process realm):
        /// `ECR_VAULT_TEST_TOKEN_REGISTRY_{URL,HOST,USER,PASSWORD}`.
        #[arg(long)]
        token_registry: bool,
        /// Also start a registry whose blobs live in SeaweedFS bucket `registry` and whose blob
        /// GETs redirect to presigned URLs: `ECR_VAULT_TEST_S3_REGISTRY_{URL,HOST,USER,PASSWORD}`.
        #[arg(long)]
        s3_registry: bool,
    },
    /// Push the demo image set into a running registry.
    Seed {
        /// Registry base URL, e.g. http://127.0.0.1:5000.
        #[arg(long, env = "ECR_VAULT_TEST_REGISTRY_URL")]
        registry: String,
        #[arg(long, env = "ECR_VAULT_TEST_REGISTRY_USER")]
        user: Option<String>,
        #[arg(long, env = "ECR_VAULT_TEST_REGISTRY_PASSWORD")]
        password: Option<String>,
        /// moto endpoint: also record the images in its ECR.
        #[arg(long, env = "ECR_VAULT_TEST_MOTO_ENDPOINT")]
        moto: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Up {
            dir,
            bucket,
            seed,
            token_registry,
            s3_registry,
        } => up(&dir, &bucket, seed, token_registry, s3_registry).await,
        Command::Seed {
            registry,
            user,
            password,
            moto,
        } => {
            let creds = match (&user, &password) {
                (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
                _ => None,
            };
            let registry = Registry::external(&registry, creds)?;
            let moto = moto.as_deref().map(Moto::external);
            seed(&registry, moto.as_ref()).await
        }
    }
}

async fn seed(registry: &Registry, moto: Option<&Moto>) -> Result<()> {
    let images = push_demo_set(registry).await?;
    if let Some(moto) = moto {
        for image in &images {
            moto.register_pushed(image).await?;
        }
    }
    for image in &images {
        print_image(image);
    }
    Ok(())
}

fn print_image(image: &PushedImage) {
    println!(
        "{}@{} tags={:?} {} blobs={} manifests={}",
        image.repo,
        image.digest,
        image.tags,
        image.media_type,
        image.blobs.len(),
        image.child_manifests.len() + 1
    );
}

fn registry_env(env: &mut Vec<(String, String)>, prefix: &str, r: &Registry) {
    env.push((format!("{prefix}_URL"), r.url()));
    env.push((format!("{prefix}_HOST"), r.host()));
    env.push((format!("{prefix}_USER"), r.user.clone()));
    env.push((format!("{prefix}_PASSWORD"), r.password.clone()));
}

async fn up(
    dir: &Path,
    bucket: &str,
    seed_images: bool,
    token_registry: bool,
    s3_registry: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let env_path = dir.join("env");
    let _ = std::fs::remove_file(&env_path);
    let stack = Stack::start().await?;
    // A second, empty registry: the "fresh" target of the disaster drill.
    let target = Registry::start().await?;
    stack.s3.create_locked_bucket(bucket).await?;
    let token = if token_registry {
        Some(
            Registry::start_with(RegistryOptions {
                token: Some(Duration::from_secs(60)),
                ..RegistryOptions::default()
            })
            .await?,
        )
    } else {
        None
    };
    let redirecting = if s3_registry {
        let storage = S3Storage::create(&stack.s3, "registry").await?;
        Some(
            Registry::start_with(RegistryOptions {
                s3: Some(storage),
                ..RegistryOptions::default()
            })
            .await?,
        )
    } else {
        None
    };
    if seed_images {
        seed(&stack.registry, Some(&stack.moto)).await?;
    }
    let mut env = stack.env();
    env.push(("ECR_VAULT_TEST_BUCKET".into(), bucket.to_string()));
    env.push(("ECR_VAULT_STACK_PID".into(), std::process::id().to_string()));
    env.push(("ECR_VAULT_TEST_TARGET_URL".into(), target.url()));
    env.push(("ECR_VAULT_TEST_TARGET_HOST".into(), target.host()));
    env.push(("ECR_VAULT_TEST_TARGET_USER".into(), target.user.clone()));
    env.push((
        "ECR_VAULT_TEST_TARGET_PASSWORD".into(),
        target.password.clone(),
    ));
    if let Some(r) = &token {
        registry_env(&mut env, "ECR_VAULT_TEST_TOKEN_REGISTRY", r);
    }
    if let Some(r) = &redirecting {
        registry_env(&mut env, "ECR_VAULT_TEST_S3_REGISTRY", r);
    }
    let mut text = String::from("# written by ecr-vault-stack up; valid while it runs\n");
    for (k, v) in &env {
        text.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
    }
    let tmp = dir.join(".env.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &env_path)?;
    eprintln!(
        "ecr-vault-stack: up (registry {}, S3 {}, moto {}, bucket {bucket}); env in {}; \
         Ctrl-C to stop",
        stack.registry.url(),
        stack.s3.endpoint(),
        stack.moto.endpoint(),
        env_path.display()
    );
    wait_for_signal().await?;
    eprintln!("ecr-vault-stack: stopping");
    let _ = std::fs::remove_file(&env_path);
    drop(target);
    drop(token);
    drop(redirecting);
    drop(stack);
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
