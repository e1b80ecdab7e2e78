//! The command line: the top-level parser and the arguments commands share. Each command's
//! own arguments live with it in `commands/<command>.rs`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use ecr_vault_engine::{FilterSpec, Filters, RegistryConfig};

use crate::commands;
use crate::output::Invalid;

#[derive(Parser)]
#[command(
    name = "ecr-vault",
    version,
    about = "Immutable, verified backups of container registries into S3 Object Lock",
    after_help = "Exit codes: 0 done; 1 finished, but some images failed or problems were \
                  found; 2 usage error; 3 invalid configuration (nothing was done); 4 the run \
                  could not start or stopped (registry or vault unreachable, access denied)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ECR_VAULT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Back up every image the filters select into the vault and write a snapshot.
    Backup(commands::backup::BackupArgs),
    /// Show what the next backup would do: new, unchanged and gone images, bytes expected and
    /// lock extensions due. Reads the listing and the latest snapshot; writes nothing.
    Plan(commands::plan::PlanArgs),
    /// List the snapshots in a vault.
    Snapshots(commands::snapshots::SnapshotsArgs),
    /// Restore images from the vault into ECR or any OCI registry.
    Restore(commands::restore::RestoreArgs),
    /// Show a snapshot's contents, or the capture history of repository:tag.
    Show(commands::show::ShowArgs),
    /// Check that snapshots are complete and locked; with --deep, re-hash every byte.
    Verify(commands::verify::VerifyArgs),
    /// Expire snapshots by policy and delete what no live snapshot references and no lock
    /// holds. A dry run unless --apply.
    Gc(commands::gc::GcArgs),
}

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// `ecr` (listing through the ECR API) or a registry URL such as https://registry.example.
    #[arg(long, env = "ECR_VAULT_REGISTRY")]
    pub registry: String,
    /// For `--registry ecr`: registry endpoint to use instead of the one ECR reports.
    #[arg(long, env = "ECR_VAULT_REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// For `--registry ecr`: the account (registry id), when not the caller's.
    #[arg(long, env = "ECR_VAULT_REGISTRY_ID")]
    pub registry_id: Option<String>,
    /// Username for a plain OCI registry.
    #[arg(long, env = "ECR_VAULT_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Password for a plain OCI registry (prefer the environment variable).
    #[arg(long, env = "ECR_VAULT_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl RegistryArgs {
    pub fn config(&self) -> RegistryConfig {
        let mut cfg = RegistryConfig::parse(
            &self.registry,
            self.registry_url.clone(),
            self.username.clone(),
            self.password.clone(),
        );
        if let RegistryConfig::Ecr { registry_id, .. } = &mut cfg {
            registry_id.clone_from(&self.registry_id);
        }
        cfg
    }
}

#[derive(Args, Clone)]
pub struct VaultArgs {
    /// The vault: s3://bucket[/prefix]
    #[arg(long, env = "ECR_VAULT_URI")]
    pub vault: String,
}

#[derive(Args, Clone)]
pub struct FilterArgs {
    /// Repository glob to include (repeatable; `*` stays in one path segment, `**` crosses).
    #[arg(long = "repository", value_name = "GLOB")]
    pub repositories: Vec<String>,
    /// Repository glob to exclude (repeatable).
    #[arg(long = "exclude-repository", value_name = "GLOB")]
    pub exclude_repositories: Vec<String>,
    /// Tag glob to include (repeatable). Without it untagged images are included too.
    #[arg(long = "tag", value_name = "GLOB")]
    pub tags: Vec<String>,
    /// Tag glob to exclude (repeatable).
    #[arg(long = "exclude-tag", value_name = "GLOB")]
    pub exclude_tags: Vec<String>,
}

impl FilterArgs {
    pub fn filters(&self) -> Result<Filters, Invalid> {
        Filters::new(FilterSpec {
            repositories: self.repositories.clone(),
            exclude_repositories: self.exclude_repositories.clone(),
            tags: self.tags.clone(),
            exclude_tags: self.exclude_tags.clone(),
        })
        .map_err(Invalid)
    }
}
