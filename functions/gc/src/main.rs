//! The optional scheduled GC function: a thin adapter over `ecr_vault_engine::gc`, run by an
//! EventBridge Scheduler schedule with its own role (the only role that may delete). The
//! event's content is ignored: what GC does comes from the environment, never from a caller.

// The runtime's service future nests the whole GC (plan, leases, deletes); its layout needs
// more than the default query depth.
#![recursion_limit = "256"]

use ecr_vault_engine::metrics::gc_emf;
use ecr_vault_engine::{aws_config, open_vault_at};
use ecr_vault_fn_common::{FnError, Settings, serve};
use ecr_vault_gc_fn::Config;
use ecr_vault_vault::Vault;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(
        async {
            let config = Config::from_env(&Settings::process()).map_err(|e| e.to_string())?;
            let vault =
                open_vault_at(&aws_config().await, &config.vault_uri).map_err(|e| e.to_string())?;
            Ok::<_, String>((config, vault))
        },
        |state, _event| async move { handle(&state.0, &state.1).await },
    )
    .await
}

async fn handle(config: &Config, vault: &Vault) -> Result<Value, FnError> {
    let report = ecr_vault_engine::gc::gc(vault, &config.options, config.apply).await?;
    let now = chrono::Utc::now().timestamp_millis();
    println!("{}", gc_emf(&report, &config.function_name, now));
    report.log();
    let body =
        serde_json::to_value(&report).map_err(|e| FnError::new("EngineError", e.to_string()))?;
    if let Some(message) = report.failure_message() {
        // Fail the invocation so the Errors alarm sees it; the report is in the log.
        tracing::error!(report = %body, "gc left errors");
        return Err(FnError::new("GcFailed", message));
    }
    Ok(body)
}
