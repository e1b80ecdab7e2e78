//! The backup Lambda function: a thin adapter from events to engine calls.
//!
//! - the environment (docs/deploy.md, "Runtime contract") is read at cold start by
//!   [`ecr_vault_engine::trigger::TriggerConfig`];
//! - [`event`]: which event shapes are accepted, and validation of their fields;
//! - [`handler`]: classify → one engine call ([`ecr_vault_engine::trigger`]) → respond.
//!
//! Logs are JSON through `tracing` when `AWS_LAMBDA_LOG_FORMAT=JSON`, at
//! `AWS_LAMBDA_LOG_LEVEL`; metrics are EMF lines on stdout.

mod handler;

use ecr_vault_backup_fn::event;
use ecr_vault_fn_common::{Settings, serve};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(
        async {
            let cfg = ecr_vault_engine::trigger::TriggerConfig::from_settings(&Settings::process())
                .map_err(|e| e.to_string())?;
            handler::App::new(cfg).await.map_err(|e| e.to_string())
        },
        |app, event| async move { app.handle(event).await },
    )
    .await
}
