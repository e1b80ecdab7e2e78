//! `ecr-vault config`: check a configuration before a run depends on it, and list the
//! settings the schema knows.

use crate::output::say;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use ecr_vault_engine::config::{SCHEMA, Settings};
use ecr_vault_engine::defaults;

use crate::config::{self, Flags};
use crate::output::Invalid;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Read the config file (--config) under the environment, as a run would, and check every
    /// value: the vault, the registry, filters, lock and keep rules. Prints each setting with
    /// where it came from; exits 3 on the first invalid group.
    Check,
    /// List every setting: its path in a config file, its environment variable and its flag.
    Keys,
}

pub async fn run(cmd: ConfigCommand, config: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Keys => keys(),
        ConfigCommand::Check => check(&config::settings(Flags::default(), config)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn keys() {
    say!(
        "{:<34} {:<34} {:<24} MEANING",
        "FILE",
        "ENVIRONMENT",
        "FLAG"
    );
    for k in SCHEMA {
        say!(
            "{:<34} {:<34} {:<24} {}",
            k.path.unwrap_or("-"),
            k.env.unwrap_or("-"),
            k.flag.unwrap_or("-"),
            k.what
        );
    }
}

/// Every group a command would read, parsed and bounded by the engine's readers.
fn check(s: &Settings) -> Result<(), Invalid> {
    let vault = s.vault(defaults::PARTS_IN_FLIGHT)?;
    s.filters()?;
    s.gc_options()?;
    s.image_concurrency()?;
    if let Some(r) = s.var("ECR_VAULT_REGISTRY")
        && !r.eq_ignore_ascii_case("ecr")
    {
        s.url("ECR_VAULT_REGISTRY")?;
        if let Some(var) = s.var("source.credentials.password_env")
            && std::env::var_os(&var).is_none()
        {
            return Err(Invalid(format!(
                "source.credentials.password_env names {var}, which is not set"
            )));
        }
    }
    for k in SCHEMA {
        if let Some((value, from)) = s.source_of(k) {
            let shown = if k.env == Some("ECR_VAULT_REGISTRY_PASSWORD") {
                "(set, not shown)".to_owned()
            } else {
                value
            };
            say!("{:<34} {shown}  [{from}]", k.path.or(k.env).unwrap_or("-"));
        }
    }
    say!(
        "ok: vault {} ({} lock, {} days)",
        vault.uri,
        vault.lock.mode,
        vault.lock.retention_days
    );
    Ok(())
}
