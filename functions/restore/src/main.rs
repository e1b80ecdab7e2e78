//! Restore function: a JSON restore request in, a JSON report out. A thin adapter: the
//! request is validated here and everything else is `ecr_vault_engine::restore`.
//!
//! Every restore prints its metrics (one EMF line). A restore whose report lists failures
//! ends as failed, with the report in the error: Lambda's `Errors` metric, the restore alarms
//! and, for asynchronous invocations, the OnFailure destination all see a partial restore.

use std::sync::Arc;

use ecr_vault_engine::metrics::restore_emf;
use ecr_vault_engine::{
    NoProgress, RegistryConfig, aws_config, open_source, open_vault_at, vault_uri,
};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

use ecr_vault_restore_fn::egress::{EgressPolicy, RegistrySecret, TEST_ALLOW_LOOPBACK_VAR};
use ecr_vault_restore_fn::report::{FnError, failure_message};
use ecr_vault_restore_fn::request::Request;

struct Config {
    vault_uri: String,
    registry_url: Option<String>,
    /// Registries other than ECR this deployment may restore into (`ApprovedRestoreRegistries`).
    egress: EgressPolicy,
    /// Secrets Manager ARNs holding credentials for approved registries
    /// (`RestoreRegistrySecretArns`).
    secret_arns: Vec<String>,
}

impl Config {
    /// Reads the environment the template sets. Bad configuration fails the cold start.
    fn from_env() -> Result<Self, String> {
        let bucket = std::env::var("ECR_VAULT_BUCKET")
            .map_err(|_| "ECR_VAULT_BUCKET is not set".to_owned())?;
        let prefix = std::env::var("ECR_VAULT_PREFIX").unwrap_or_default();
        let vault_uri = vault_uri(&bucket, &prefix).map_err(|e| e.to_string())?;
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let allow_loopback = std::env::var(TEST_ALLOW_LOOPBACK_VAR).is_ok_and(|v| v == "1");
        if allow_loopback {
            tracing::warn!(
                "{TEST_ALLOW_LOOPBACK_VAR}=1: loopback restore targets admitted (tests only)"
            );
        }
        Ok(Config {
            vault_uri,
            registry_url: std::env::var("ECR_VAULT_REGISTRY_URL")
                .ok()
                .filter(|s| !s.is_empty()),
            egress: EgressPolicy::new(
                &std::env::var("ECR_VAULT_APPROVED_REGISTRIES").unwrap_or_default(),
                allow_loopback,
            )?,
            secret_arns: list("ECR_VAULT_REGISTRY_SECRET_ARNS"),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Arc::new(Config::from_env().map_err(Error::from)?);
    let sdk = Arc::new(aws_config().await);
    run(service_fn(move |event: LambdaEvent<Value>| {
        let config = config.clone();
        let sdk = sdk.clone();
        async move {
            let function_name = event.context.env_config.function_name.clone();
            handle(&config, &sdk, &function_name, event.payload).await
        }
    }))
    .await
}

async fn handle(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    function_name: &str,
    payload: Value,
) -> Result<Value, FnError> {
    let req = Request::parse(payload).map_err(|e| FnError::new("InvalidRequest", e))?;
    let engine_req = req
        .engine_request()
        .map_err(|e| FnError::new("InvalidRequest", e.to_string()))?;
    let engine = |e: ecr_vault_engine::EngineError| FnError::new("EngineError", e.to_string());
    // The target may be another region or account: a per-request SDK config.
    let target_sdk = match &req.target.region {
        Some(r) => sdk
            .to_builder()
            .region(aws_config::Region::new(r.clone()))
            .build(),
        None => sdk.clone(),
    };
    let target_cfg = if req.target.registry.eq_ignore_ascii_case("ecr") {
        RegistryConfig::Ecr {
            registry_url: config.registry_url.clone(),
            registry_id: req.target.account_id.clone(),
        }
    } else {
        // Checked before the vault is read: a refused target gets nothing, not even a probe.
        let url = config
            .egress
            .check(&req.target.registry)
            .await
            .map_err(|e| FnError::new("TargetRefused", e))?;
        let creds = registry_secret(config, sdk, &url)
            .await
            .map_err(|e| FnError::new("SecretUnavailable", e))?;
        RegistryConfig::Oci {
            url: url.to_string().trim_end_matches('/').to_owned(),
            username: creds.as_ref().map(|c| c.username.clone()),
            password: creds.map(|c| c.password),
        }
    };
    let vault = open_vault_at(sdk, &config.vault_uri).map_err(engine)?;
    let target = open_source(&target_sdk, &target_cfg)
        .await
        .map_err(|e| FnError::new("EngineError", format!("target registry: {e}")))?;
    let report = ecr_vault_engine::restore(&vault, &target, &engine_req, Arc::new(NoProgress))
        .await
        .map_err(engine)?;
    let now = chrono::Utc::now().timestamp_millis();
    println!("{}", restore_emf(&report, function_name, now));
    tracing::info!(
        images = report.images,
        bytes = report.bytes_pushed,
        failures = report.failures.len(),
        dry_run = report.dry_run,
        "restore finished"
    );
    if report.failed() {
        let message = failure_message(&report);
        tracing::error!(report = %message, "restore finished with failures");
        return Err(FnError::new("RestoreFailed", message));
    }
    serde_json::to_value(&report).map_err(|e| FnError::new("EngineError", e.to_string()))
}

/// The credentials for an approved registry: the first configured secret whose `registry`
/// is `url`, or none (anonymous push). Read per request, so a rotated secret applies at once.
async fn registry_secret(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    url: &url::Url,
) -> Result<Option<RegistrySecret>, String> {
    if config.secret_arns.is_empty() {
        return Ok(None);
    }
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    for arn in &config.secret_arns {
        let out = sm
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "secret {arn}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?;
        let text = out
            .secret_string()
            .ok_or_else(|| format!("secret {arn} has no string value"))?;
        let secret = RegistrySecret::parse(arn, text)?;
        if secret.is_for(url) {
            return Ok(Some(secret));
        }
    }
    Ok(None)
}
