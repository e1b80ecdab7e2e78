//! The scheduled restore drill function: a thin adapter over `ecr_vault_engine::drill`. It
//! restores a sample of the latest snapshot into scratch repositories under
//! `ecr-vault-drill/` in this account's ECR, verifies every digest, deletes them, prints one
//! EMF line, and fails the invocation when the drill fails (the report is in the error).

use std::sync::Arc;

use ecr_vault_engine::aws_config;
use ecr_vault_engine::drill::{DrillEvent, DrillVerdict, drill_ecr};
use ecr_vault_engine::metrics::drill_emf;
use ecr_vault_fn_common::{FnError, Settings, serve};
use ecr_vault_restore_fn::drill::DrillConfig;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(
        async {
            let config = DrillConfig::from_env(&Settings::process())?;
            Ok::<_, ecr_vault_fn_common::ConfigError>((config, aws_config().await))
        },
        |state: Arc<(DrillConfig, aws_config::SdkConfig)>, event| async move {
            handle(&state.0, &state.1, event.payload).await
        },
    )
    .await
}

async fn handle(
    config: &DrillConfig,
    sdk: &aws_config::SdkConfig,
    payload: Value,
) -> Result<Value, FnError> {
    let function_name = config.function_name.as_str();
    let now = chrono::Utc::now();
    let event = DrillEvent::parse(payload).map_err(|e| FnError::new("InvalidEvent", e))?;
    if !event.due(config.day_of_month, now) {
        println!("{}", drill_emf(None, function_name, now.timestamp_millis()));
        return Ok(json!({"drilled": false, "dayOfMonth": config.day_of_month}));
    }
    let opts = event.options(config.sample, now);
    let report = drill_ecr(sdk, &config.vault_uri, config.registry_url.clone(), &opts).await;
    let done = chrono::Utc::now().timestamp_millis();
    println!("{}", drill_emf(Some(&report), function_name, done));
    let body = serde_json::to_value(&report).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let (kind, log) = match report.verdict() {
        DrillVerdict::Passed => {
            tracing::info!(report = %body, "restore drill passed");
            return Ok(body);
        }
        DrillVerdict::Failed => ("DrillFailed", "restore drill FAILED"),
        DrillVerdict::LeftScratch => (
            "DrillCleanupFailed",
            "restore drill passed but left scratch repositories",
        ),
    };
    tracing::error!(report = %body, "{log}");
    Err(FnError::new(
        kind,
        format!("{}; report: {body}", report.verdict_line()),
    ))
}
