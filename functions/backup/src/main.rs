//! The backup Lambda function: a thin adapter from events to engine calls.
//!
//! - [`config`]: the environment (docs/deploy.md, "Runtime contract"), validated at cold start;
//! - [`event`]: which event shapes are accepted, and validation of their fields;
//! - [`handler`]: the engine calls and the responses.
//!
//! Logs are JSON through `tracing` when `AWS_LAMBDA_LOG_FORMAT=JSON`, at
//! `AWS_LAMBDA_LOG_LEVEL`; metrics are EMF lines on stdout.

mod config;
mod handler;

use ecr_vault_backup_fn::event;

use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

use crate::config::Config;
use crate::handler::App;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            return Err(e.into());
        }
    };
    let app = match App::new(cfg).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            return Err(e.into());
        }
    };
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        app.handle(event).await
    }))
    .await
}
