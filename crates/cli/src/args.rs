//! The command line: the top-level parser and the arguments commands share. Each command's
//! own arguments live with it in `commands/<command>.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ecr_vault_engine::RegistryConfig;
use ecr_vault_engine::config::Settings;

use crate::config::Flags;
use crate::output::Invalid;
use crate::{commands, credentials};

#[derive(Parser)]
#[command(
    name = "ecr-vault",
    version,
    about = "Immutable, verified backups of container registries into S3 Object Lock",
    after_help = "Exit codes: 0 done; 1 finished, but some images failed or problems were \
                  found; 2 usage error; 3 invalid configuration (nothing was done); 4 the run \
                  could not start or stopped (registry or vault unreachable, access denied).\n\n\
                  Settings come from flags, then the environment, then --config; \
                  `ecr-vault config keys` lists every one with its variable and file key."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ECR_VAULT_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// A config file (YAML) with the source, vault, retention and keep rules; flags and
    /// environment variables override it. `ecr-vault config keys` lists what it may hold.
    #[arg(long, global = true, value_name = "PATH", env = "ECR_VAULT_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Check a config file, or list the settings it may hold.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
}

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// `ecr` (listing through the ECR API) or a registry URL such as `https://registry.example`.
    #[arg(long)]
    pub registry: Option<String>,
    /// For `--registry ecr`: registry endpoint to use instead of the one ECR reports.
    #[arg(long)]
    pub registry_url: Option<String>,
    /// For `--registry ecr`: the account (registry id), when not the caller's.
    #[arg(long)]
    pub registry_id: Option<String>,
    /// Username for a plain OCI registry; needs a password (--password-stdin, or the
    /// environment). Without any credential flag, the auth file's entry is used.
    #[arg(long)]
    pub username: Option<String>,
    /// Password for a plain OCI registry. Prefer --password-stdin: a flag lands in shell
    /// history and `ps`.
    #[arg(long)]
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
    pub fn flags(&self, f: &mut Flags) {
        f.one("ECR_VAULT_REGISTRY", self.registry.as_ref())
            .one("ECR_VAULT_REGISTRY_URL", self.registry_url.as_ref())
            .one("ECR_VAULT_REGISTRY_ID", self.registry_id.as_ref())
            .one("ECR_VAULT_REGISTRY_USERNAME", self.username.as_ref())
            .one("ECR_VAULT_REGISTRY_PASSWORD", self.password.as_ref())
            .one(
                "source.credentials.authfile",
                self.authfile.as_ref().map(|p| p.display()),
            );
    }

    /// The registry to connect to; for a plain OCI registry, with its credentials resolved
    /// (flags, the config file's reference, then auth files, then anonymous).
    pub fn config(&self, s: &Settings) -> Result<RegistryConfig, Invalid> {
        let registry = s.required("ECR_VAULT_REGISTRY", "`ecr` or a registry URL")?;
        if registry.eq_ignore_ascii_case("ecr") {
            return Ok(RegistryConfig::Ecr {
                registry_url: s.url("ECR_VAULT_REGISTRY_URL")?,
                registry_id: s.var("ECR_VAULT_REGISTRY_ID"),
            });
        }
        let password = match (
            s.var("ECR_VAULT_REGISTRY_PASSWORD"),
            s.var("source.credentials.password_env"),
        ) {
            (Some(p), _) => Some(p),
            (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
                Invalid(format!(
                    "source.credentials.password_env names {var}, which is not set"
                ))
            })?),
            (None, None) => None,
        };
        let (username, authfile) = (
            s.var("ECR_VAULT_REGISTRY_USERNAME"),
            s.var("source.credentials.authfile").map(PathBuf::from),
        );
        let given = credentials::Given {
            creds: self.creds.as_deref(),
            username: username.as_deref(),
            password: password.as_deref(),
            password_stdin: self.password_stdin,
            authfile: authfile.as_deref(),
        };
        let creds = credentials::resolve(&given, &registry)?;
        Ok(RegistryConfig::Oci {
            url: registry,
            username: creds.as_ref().map(|c| c.0.clone()),
            password: creds.map(|c| c.1),
        })
    }
}

/// How long what a run captures stays locked (`backup`, and `plan` to predict extensions).
#[derive(Args, Clone)]
pub struct LockArgs {
    /// Days every captured object stays locked [default: 35].
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Extra days added when locking or extending, so most runs need no extension call
    /// [default: 7].
    #[arg(long)]
    pub lock_slack_days: Option<u32>,
}

impl LockArgs {
    pub fn flags(&self, f: &mut Flags) {
        f.one("ECR_VAULT_RETENTION_DAYS", self.retention_days)
            .one("ECR_VAULT_LOCK_SLACK_DAYS", self.lock_slack_days);
    }
}

#[derive(Args, Clone)]
pub struct VaultArgs {
    /// The vault: s3://bucket[/prefix] (or `vault.uri` in the config file).
    #[arg(long)]
    pub vault: Option<String>,
}

impl VaultArgs {
    pub fn flags(&self, f: &mut Flags) {
        f.one("ECR_VAULT_URI", self.vault.as_ref());
    }

    /// The vault's URI, for the commands that need nothing else from the configuration.
    pub fn uri(&self, config: Option<&PathBuf>) -> Result<String, Invalid> {
        let mut f = Flags::default();
        self.flags(&mut f);
        Ok(crate::config::settings(f, config)?.vault_uri()?)
    }
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
    pub fn flags(&self, f: &mut Flags) {
        f.many("ECR_VAULT_REPOSITORIES", &self.repositories)
            .many("ECR_VAULT_EXCLUDE_REPOSITORIES", &self.exclude_repositories)
            .many("ECR_VAULT_TAGS", &self.tags)
            .many("ECR_VAULT_EXCLUDE_TAGS", &self.exclude_tags);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use ecr_vault_engine::defaults;

    /// The defaults live in the engine (`defaults`, applied by the configuration reader);
    /// the help text spells them out, so it must follow them.
    #[test]
    fn help_states_the_engines_defaults() {
        let mut cli = super::Cli::command();
        let help = |cli: &mut clap::Command, sub: &str| {
            cli.find_subcommand_mut(sub)
                .map(|c| c.render_long_help().to_string())
                .unwrap_or_default()
        };
        let backup = help(&mut cli, "backup");
        let gc = help(&mut cli, "gc");
        for (text, default) in [
            (&backup, defaults::RETENTION_DAYS.to_string()),
            (&backup, defaults::LOCK_SLACK_DAYS.to_string()),
            (&backup, defaults::IMAGE_CONCURRENCY.to_string()),
            (&backup, defaults::PART_SIZE_MIB.to_string()),
            (&backup, defaults::PARTS_IN_FLIGHT.to_string()),
            (&gc, defaults::GC_KEEP_LAST.to_string()),
            (&gc, defaults::GC_KEEP_DAILY_DAYS.to_string()),
            (&gc, defaults::GC_KEEP_MONTHLY_MONTHS.to_string()),
            (&gc, defaults::GC_UPLOAD_DAYS.to_string()),
        ] {
            assert!(
                text.contains(&format!("[default: {default}]")),
                "{default}: {text}"
            );
        }
    }
}
