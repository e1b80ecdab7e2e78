//! Building the engine's clients from configuration: the AWS SDK config, the vault, and the
//! source registry. Shared by the CLI and the Lambda functions so both behave the same.
//!
//! Nothing here talks to the network except [`Source`] construction for ECR without an
//! explicit registry URL, which asks GetAuthorizationToken for the registry endpoint.

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};
use ecr_vault_ecr::Ecr;
use ecr_vault_registry::{ClientOptions, Credentials, RegistryClient, StaticCredentials};
use ecr_vault_vault::{LockPolicy, Vault, VaultLocation, VaultOptions};

use crate::source::Source;
use crate::{EngineError, defaults};

/// Where and how to write the vault.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `s3://bucket[/prefix]`
    pub uri: String,
    pub lock: LockPolicy,
    pub part_size_mib: usize,
    pub parts_in_flight: usize,
    /// STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR (no thaw needed to restore).
    pub storage_class: Option<String>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            uri: String::new(),
            lock: LockPolicy::default(),
            part_size_mib: defaults::PART_SIZE_MIB,
            parts_in_flight: defaults::PARTS_IN_FLIGHT,
            storage_class: None,
        }
    }
}

/// Where images come from (backup) or go to (restore).
#[derive(Clone, Debug)]
pub enum RegistryConfig {
    /// ECR through the ECR API. `registry_url` overrides the endpoint GetAuthorizationToken
    /// reports (private endpoints, tests).
    Ecr {
        registry_url: Option<String>,
        registry_id: Option<String>,
    },
    /// Any OCI registry.
    Oci {
        url: String,
        username: Option<String>,
        password: Option<String>,
    },
}

/// Loads the standard AWS configuration (env, profiles, `AWS_ENDPOINT_URL_*`).
/// Adaptive retry for every SDK client (S3, ECR, SQS): throttling (`SlowDown`,
/// `ThrottlingException`) slows the client's send rate instead of failing the call, and
/// success restores it (docs/decisions/0005).
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::adaptive().with_max_attempts(5))
        .load()
        .await
}

/// The vault URI for the functions' `ECR_VAULT_BUCKET` and `ECR_VAULT_PREFIX`, validated.
pub fn vault_uri(bucket: &str, prefix: &str) -> Result<String, EngineError> {
    let prefix = prefix.trim_matches('/');
    let uri = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    VaultLocation::parse(&uri)?;
    Ok(uri)
}

/// The vault at `uri` with default write options: for the commands that only read it or
/// delete from it (snapshots, verify, restore, gc), whose behaviour no write option changes.
pub fn open_vault_at(sdk: &SdkConfig, uri: &str) -> Result<Vault, EngineError> {
    open_vault(
        sdk,
        &VaultConfig {
            uri: uri.to_owned(),
            ..VaultConfig::default()
        },
    )
}

pub fn open_vault(sdk: &SdkConfig, cfg: &VaultConfig) -> Result<Vault, EngineError> {
    let loc = VaultLocation::parse(&cfg.uri)?;
    let storage_class = ecr_vault_vault::blob_storage_class(cfg.storage_class.as_deref())
        .map_err(|e| EngineError::Config(e.to_string()))?;
    Ok(Vault::new(
        ecr_vault_vault::s3_client(sdk),
        loc,
        VaultOptions {
            lock: cfg.lock,
            part_size: cfg.part_size_mib.saturating_mul(1024 * 1024),
            parts_in_flight: cfg.parts_in_flight,
            blob_storage_class: storage_class,
        },
    )?)
}

/// Builds the source: for ECR, the ECR client plus a registry client authenticated with
/// refreshed ECR tokens.
pub async fn open_source(sdk: &SdkConfig, cfg: &RegistryConfig) -> Result<Source, EngineError> {
    match cfg {
        RegistryConfig::Ecr {
            registry_url,
            registry_id,
        } => {
            let ecr = Ecr::new(aws_sdk_ecr::Client::new(sdk), registry_id.clone());
            let url = match registry_url {
                Some(u) => u.clone(),
                None => ecr.authorization().await?.0,
            };
            let registry =
                RegistryClient::new(&url, ecr.credential_provider(), ClientOptions::default())?;
            Ok(Source::Ecr { ecr, registry })
        }
        RegistryConfig::Oci {
            url,
            username,
            password,
        } => {
            let creds = match (username, password) {
                (Some(u), Some(p)) => Some(Credentials::new(u, p)),
                _ => None,
            };
            let registry = RegistryClient::new(
                url,
                Arc::new(StaticCredentials(creds)),
                ClientOptions::default(),
            )?;
            Ok(Source::Registry { registry })
        }
    }
}
