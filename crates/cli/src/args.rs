//! The command line: the top-level parser and the arguments commands share. Each command's
//! own arguments live with it in `commands/<command>.rs`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use ecr_vault_engine::{FilterSpec, Filters, RegistryConfig, defaults};
use ecr_vault_vault::{LockMode, LockPolicy};

use crate::output::Invalid;
use crate::{commands, credentials};

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
    /// Print a shell completion script: `ecr-vault completions bash > /etc/bash_completion.d/ecr-vault`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `ecr-vault man > /usr/local/share/man/man1/ecr-vault.1`.
    Man,
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
    /// Username for a plain OCI registry; needs a password (--password-stdin, or the
    /// environment). Without any credential flag, the auth file's entry is used.
    #[arg(long, env = "ECR_VAULT_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Password for a plain OCI registry. Prefer --password-stdin: a flag lands in shell
    /// history and `ps`.
    #[arg(long, env = "ECR_VAULT_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the password from stdin (as `docker login --password-stdin`).
    #[arg(long)]
    pub password_stdin: bool,
    /// USERNAME:PASSWORD in one flag, as skopeo's --creds.
    #[arg(long, value_name = "USERNAME:PASSWORD")]
    pub creds: Option<String>,
    /// Auth file to read credentials from (docker config.json format). Default: the first of
    /// $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json with an entry
    /// for the registry; `credHelpers` and `credsStore` helpers are called.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    /// The registry to connect to; for a plain OCI registry, with its credentials resolved
    /// (flags, then auth files, then anonymous).
    pub fn config(&self) -> Result<RegistryConfig, Invalid> {
        if self.registry.eq_ignore_ascii_case("ecr") {
            return Ok(RegistryConfig::Ecr {
                registry_url: self.registry_url.clone(),
                registry_id: self.registry_id.clone(),
            });
        }
        let given = credentials::Given {
            creds: self.creds.as_deref(),
            username: self.username.as_deref(),
            password: self.password.as_deref(),
            password_stdin: self.password_stdin,
            authfile: self.authfile.as_deref(),
        };
        let creds = credentials::resolve(&given, &self.registry)?;
        Ok(RegistryConfig::Oci {
            url: self.registry.clone(),
            username: creds.as_ref().map(|c| c.0.clone()),
            password: creds.map(|c| c.1),
        })
    }
}

/// How long what a run captures stays locked (`backup`, and `plan` to predict extensions).
#[derive(Args, Clone)]
pub struct LockArgs {
    /// Days every captured object stays locked.
    #[arg(long, default_value_t = defaults::RETENTION_DAYS, env = "ECR_VAULT_RETENTION_DAYS")]
    pub retention_days: u32,
    /// Extra days added when locking or extending, so most runs need no extension call.
    #[arg(long, default_value_t = defaults::LOCK_SLACK_DAYS, env = "ECR_VAULT_LOCK_SLACK_DAYS")]
    pub lock_slack_days: u32,
}

impl LockArgs {
    pub fn policy(&self, mode: LockMode) -> LockPolicy {
        LockPolicy {
            mode,
            retention_days: self.retention_days,
            slack_days: self.lock_slack_days,
            ..LockPolicy::default()
        }
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
