//! The ecr-vault engine: what the CLI and the Lambda functions run.
//!
//! The path of a backup, one file each:
//! [`source`] lists images → [`filter`] selects → [`mod@plan`] finds the incremental cohort →
//! [`mod@backup`] drives →
//! [`copy`] moves each closure into the vault (crate `ecr-vault-vault`).

pub mod audit;
pub mod backup;
pub mod config;
pub mod context;
pub mod copy;
pub mod cost;
pub mod defaults;
pub mod drill;
pub mod egress;
pub mod fanout;
pub mod filter;
pub mod gc;
pub mod lease;
pub mod lookup;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod restore_request;
pub mod select;
pub mod source;
pub mod trigger;
pub mod verify;

pub use backup::{BackupOptions, BackupReport, backup, backup_listing, backup_plan};
pub use context::{
    RegistryConfig, VaultConfig, aws_config, open_source, open_vault, open_vault_at, vault_uri,
};
pub use filter::{FilterSpec, Filters};
pub use plan::{Plan, PlanOptions, plan};
pub use progress::{NoProgress, Progress};
pub use restore::{Mapping, RestoreReport, RestoreRequest, restore};
pub use select::{Latest, SnapshotSel, latest};
pub use source::{Listing, Source, SourceImage, Target};
pub use verify::{VerifyReport, verify};

/// A short, escaped rendering of an untrusted string (event fields, message bodies), for
/// errors and logs: at most 100 characters, quoted, control characters escaped.
pub fn shown(s: &str) -> String {
    let t: String = s.chars().take(100).collect();
    format!("{t:?}")
}

/// Errors that stop a whole run (as opposed to one image, which is recorded and skipped).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("configuration: {0}")]
    Config(String),
    /// An S3 request failed. Kept apart from [`EngineError::Vault`] (the vault's own checks)
    /// so callers and logs tell an S3 outage or refusal from bad vault content; the inner
    /// error is always [`ecr_vault_vault::VaultError::S3`], with its status and code. Boxed so
    /// the error stays small on every `Result` path.
    #[error(transparent)]
    S3(Box<ecr_vault_vault::VaultError>),
    #[error(transparent)]
    Vault(ecr_vault_vault::VaultError),
    #[error(transparent)]
    Registry(#[from] ecr_vault_registry::RegistryError),
    #[error(transparent)]
    Ecr(#[from] ecr_vault_ecr::EcrError),
}

impl From<ecr_vault_vault::VaultError> for EngineError {
    fn from(e: ecr_vault_vault::VaultError) -> Self {
        match e {
            ecr_vault_vault::VaultError::S3 { .. } => EngineError::S3(Box::new(e)),
            e => EngineError::Vault(e),
        }
    }
}
