//! The cold start and the runtime loop, the same for every function.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

use crate::FnError;

/// Starts logging (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, at `AWS_LAMBDA_LOG_LEVEL`), builds
/// the function's state with `init`, then serves events with `handler`. A failed `init` is
/// logged and ends the process, so Lambda reports an init error instead of failing each event.
pub async fn serve<A, I, IE, H, Fut>(init: I, handler: H) -> Result<(), lambda_runtime::Error>
where
    I: Future<Output = Result<A, IE>>,
    IE: Display,
    H: Fn(Arc<A>, LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<Value, FnError>>,
{
    lambda_runtime::tracing::init_default_subscriber();
    let state = match init.await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cold start failed");
            return Err(e.to_string().into());
        }
    };
    lambda_runtime::run(service_fn(move |event| handler(state.clone(), event))).await
}
