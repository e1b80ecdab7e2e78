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

use ecr_vault_restore_fn::report::{FnError, failure_message};
use ecr_vault_restore_fn::request::Request;

struct Config {
    vault_uri: String,
    registry_url: Option<String>,
}

impl Config {
    /// Reads the environment the template sets. Bad configuration fails the cold start.
    fn from_env() -> Result<Self, String> {
        let bucket = std::env::var("ECR_VAULT_BUCKET")
            .map_err(|_| "ECR_VAULT_BUCKET is not set".to_owned())?;
        let prefix = std::env::var("ECR_VAULT_PREFIX").unwrap_or_default();
        let vault_uri = vault_uri(&bucket, &prefix).map_err(|e| e.to_string())?;
        Ok(Config {
            vault_uri,
            registry_url: std::env::var("ECR_VAULT_REGISTRY_URL")
                .ok()
                .filter(|s| !s.is_empty()),
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
    let vault = open_vault_at(sdk, &config.vault_uri).map_err(engine)?;
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
        RegistryConfig::Oci {
            url: req.target.registry.clone(),
            username: req.target.username.clone(),
            password: req.target.password.clone(),
        }
    };
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
