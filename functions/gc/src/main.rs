//! The optional scheduled GC function: a thin adapter over `ecr_vault_engine::gc`, run by an
//! EventBridge Scheduler schedule with its own role (the only role that may delete). The
//! event's content is ignored: what GC does comes from the environment, never from a caller.

// The runtime's service future nests the whole GC (plan, leases, deletes); its layout needs
// more than the default query depth.
#![recursion_limit = "256"]

use std::sync::Arc;

use ecr_vault_engine::metrics::gc_emf;
use ecr_vault_engine::{aws_config, open_vault_at};
use ecr_vault_gc_fn::Config;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = match Config::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            return Err(e.into());
        }
    };
    let sdk = Arc::new(aws_config().await);
    run(service_fn(move |event: LambdaEvent<Value>| {
        let (config, sdk) = (config.clone(), sdk.clone());
        async move { handle(&config, &sdk, &event.context.env_config.function_name).await }
    }))
    .await
}

async fn handle(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    function_name: &str,
) -> Result<Value, Error> {
    let vault = open_vault_at(sdk, &config.vault_uri).map_err(|e| Error::from(e.to_string()))?;
    let report = ecr_vault_engine::gc::gc(&vault, &config.options, config.apply)
        .await
        .map_err(|e| Error::from(e.to_string()))?;
    println!(
        "{}",
        gc_emf(
            &report,
            function_name,
            chrono::Utc::now().timestamp_millis()
        )
    );
    tracing::info!(
        applied = report.applied,
        deleted = report.deleted,
        bytes_deleted = report.bytes_deleted,
        would_delete = report.plan.delete.len(),
        bytes_reclaimable = report.plan.bytes_reclaimed,
        uploads_aborted = report.uploads_aborted,
        errors = report.errors.len(),
        "gc finished"
    );
    if let Some(first) = report.errors.first() {
        // Fail the invocation so the Errors alarm sees it; the report is in the log.
        tracing::error!(report = %serde_json::to_string(&report)?, "gc left errors");
        return Err(Error::from(format!(
            "gc finished with {} error(s); first: {}: {}",
            report.errors.len(),
            first.key,
            first.reason
        )));
    }
    Ok(serde_json::to_value(&report)?)
}
