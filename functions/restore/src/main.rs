//! Restore function: a JSON restore request in, a JSON report out. A thin adapter: the
//! request is `ecr_vault_engine::restore_request`, the target's rules
//! `ecr_vault_engine::egress`, and the restore `ecr_vault_engine::restore`.
//!
//! Every restore prints its metrics (one EMF line). A restore whose report lists failures
//! ends as failed, with the report in the error: Lambda's `Errors` metric, the restore alarms
//! and, for asynchronous invocations, the OnFailure destination all see a partial restore.

use std::sync::Arc;

use ecr_vault_engine::metrics::restore_emf;
use ecr_vault_engine::{NoProgress, aws_config, open_source, open_vault_at};
use ecr_vault_fn_common::{ConfigError, FnError, Settings, serve};
use ecr_vault_vault::Vault;
use serde_json::Value;

use ecr_vault_engine::egress::{EgressPolicy, RegistrySecret, TEST_ALLOW_LOOPBACK_VAR};
use ecr_vault_engine::restore_request::{Destination, RestorePayload};

struct Config {
    registry_url: Option<String>,
    /// Registries other than ECR this deployment may restore into (`ApprovedRestoreRegistries`).
    egress: EgressPolicy,
    /// Secrets Manager ARNs holding credentials for approved registries
    /// (`RestoreRegistrySecretArns`).
    secret_arns: Vec<String>,
    function_name: String,
}

impl Config {
    fn from_env(env: &Settings) -> Result<Self, ConfigError> {
        let allow_loopback = env.var(TEST_ALLOW_LOOPBACK_VAR).is_some_and(|v| v == "1");
        if allow_loopback {
            tracing::warn!(
                "{TEST_ALLOW_LOOPBACK_VAR}=1: loopback restore targets admitted (tests only)"
            );
        }
        Ok(Config {
            registry_url: env.url("ECR_VAULT_REGISTRY_URL")?,
            egress: EgressPolicy::new(
                &env.var("ECR_VAULT_APPROVED_REGISTRIES").unwrap_or_default(),
                allow_loopback,
            )
            .map_err(ConfigError)?,
            secret_arns: env.list("ECR_VAULT_REGISTRY_SECRET_ARNS"),
            function_name: env.function_name("ecr-vault-restore"),
        })
    }
}

/// Built once per cold start; no network I/O.
struct App {
    config: Config,
    sdk: aws_config::SdkConfig,
    vault: Vault,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(
        async {
            let env = Settings::process();
            let config = Config::from_env(&env).map_err(|e| e.to_string())?;
            let sdk = aws_config().await;
            let vault = open_vault_at(&sdk, &env.vault_uri().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(App { config, sdk, vault })
        },
        |app: Arc<App>, event| async move { handle(&app, event.payload).await },
    )
    .await
}

async fn handle(app: &App, payload: Value) -> Result<Value, FnError> {
    let (config, sdk) = (&app.config, &app.sdk);
    let req = RestorePayload::parse(payload).map_err(|e| FnError::new("InvalidRequest", e))?;
    let engine_req = req
        .engine_request()
        .map_err(|e| FnError::new("InvalidRequest", e.to_string()))?;
    let engine = |e: ecr_vault_engine::EngineError| FnError::new("EngineError", e.to_string());
    let spec = &req.target;
    let destination = spec
        .destination(&config.egress)
        .await
        .map_err(|e| FnError::new("TargetRefused", e))?;
    let creds = match &destination {
        Destination::Approved(url) => registry_secret(config, sdk, url)
            .await
            .map_err(|e| FnError::new("SecretUnavailable", e))?,
        Destination::Ecr => None,
    };
    let target_cfg = spec.registry_config(destination, config.registry_url.clone(), creds);
    let target = open_source(&spec.sdk(sdk), &target_cfg)
        .await
        .map_err(|e| FnError::new("EngineError", format!("target registry: {e}")))?;
    let report = ecr_vault_engine::restore(&app.vault, &target, &engine_req, Arc::new(NoProgress))
        .await
        .map_err(engine)?;
    let now = chrono::Utc::now().timestamp_millis();
    println!("{}", restore_emf(&report, &config.function_name, now));
    report.log();
    if report.failed() {
        let message = report.failure_message();
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
