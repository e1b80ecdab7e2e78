//! Runs the local stack for demos and benchmarks.
//!
//! - `ecr-vault-stack up --dir DIR [--bucket vault] [--seed]`: starts registry, SeaweedFS and
//!   moto on loopback, creates a locked bucket, writes `DIR/env` (shell `export` lines) and
//!   stays in the foreground until SIGINT/SIGTERM, then stops everything and removes
//!   `DIR/env`. `DIR/env` appears (atomically) only once everything is ready, so scripts can
//!   wait for it.
//! - `ecr-vault-stack seed --registry URL [--user U --password P] [--moto URL]`: pushes the
//!   demo image set into a running registry (and records it in moto's ECR if given).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ecr_vault_testkit::fixtures::{PushedImage, push_demo_set};
use ecr_vault_testkit::{Moto, Registry, Stack};

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
        Command::Up { dir, bucket, seed } => up(&dir, &bucket, seed).await,
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

async fn up(dir: &Path, bucket: &str, seed_images: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let env_path = dir.join("env");
    let _ = std::fs::remove_file(&env_path);
    let stack = Stack::start().await?;
    // A second, empty registry: the "fresh" target of the disaster drill.
    let target = Registry::start().await?;
    stack.s3.create_locked_bucket(bucket).await?;
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
