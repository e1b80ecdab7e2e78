//! The scheduled restore drill function: a thin adapter over `ecr_vault_engine::drill`. It
//! restores a sample of the latest snapshot into scratch repositories under
//! `ecr-vault-drill/` in this account's ECR, verifies every digest, deletes them, prints one
//! EMF line, and fails the invocation when the drill fails (the report is in the error).

use std::sync::Arc;

use ecr_vault_engine::drill::{DRILL_PREFIX, DrillOptions, DrillReport, drill};
use ecr_vault_engine::metrics::drill_emf;
use ecr_vault_engine::{RegistryConfig, aws_config, open_source, open_vault_at};
use ecr_vault_fn_common::{Env, FnError, serve};
use ecr_vault_restore_fn::drill::{DrillConfig, DrillEvent};
use ecr_vault_vault::Failure;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(
        async {
            let config = DrillConfig::from_env(&Env::process())?;
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
    if !config.due(&event, now) {
        println!("{}", drill_emf(None, function_name, now.timestamp_millis()));
        return Ok(json!({"drilled": false, "dayOfMonth": config.day_of_month}));
    }
    let opts = DrillOptions {
        sample: config.sample,
        prefix: DRILL_PREFIX.to_owned(),
        run: now.format("%Y%m%d-%H%M%S").to_string(),
        seed: event.seed.unwrap_or(now.timestamp() as u64),
    };
    let report = match run_drill(config, sdk, &opts).await {
        Ok(r) => r,
        // A drill that cannot start (no vault access, no snapshot) is a failed drill.
        Err(e) => DrillReport {
            seed: opts.seed,
            failures: vec![Failure {
                repository: String::new(),
                reference: String::new(),
                error: e,
            }],
            ..DrillReport::default()
        },
    };
    let done = chrono::Utc::now().timestamp_millis();
    println!("{}", drill_emf(Some(&report), function_name, done));
    let body = serde_json::to_value(&report).unwrap_or_else(|e| json!({"error": e.to_string()}));
    if !report.passed {
        tracing::error!(report = %body, "restore drill FAILED");
        return Err(FnError::new(
            "DrillFailed",
            format!(
                "restore drill failed: {} of {} sampled image(s) verified; report: {body}",
                report.images_verified, report.images_sampled
            ),
        ));
    }
    if !report.cleanup_failures.is_empty() {
        tracing::error!(report = %body, "restore drill passed but left scratch repositories");
        return Err(FnError::new(
            "DrillCleanupFailed",
            format!("restore drill passed, scratch repositories remain; report: {body}"),
        ));
    }
    tracing::info!(report = %body, "restore drill passed");
    Ok(body)
}

async fn run_drill(
    config: &DrillConfig,
    sdk: &aws_config::SdkConfig,
    opts: &DrillOptions,
) -> Result<DrillReport, String> {
    let vault = open_vault_at(sdk, &config.vault_uri).map_err(|e| e.to_string())?;
    let target = open_source(
        sdk,
        &RegistryConfig::Ecr {
            registry_url: config.registry_url.clone(),
            registry_id: None,
        },
    )
    .await
    .map_err(|e| format!("target registry: {e}"))?;
    drill(&vault, &target, opts)
        .await
        .map_err(|e| e.to_string())
}
