//! An invocation's failure. `kind` becomes the Lambda `errorType`, which alarms, retries and
//! OnFailure destinations see; `message` says what happened and what was (not) written.

use ecr_vault_engine::EngineError;
use lambda_runtime::Diagnostic;

#[derive(Debug)]
pub struct FnError {
    pub kind: &'static str,
    pub message: String,
}

impl FnError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        FnError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl From<FnError> for Diagnostic {
    fn from(e: FnError) -> Self {
        Diagnostic {
            error_type: e.kind.to_owned(),
            error_message: e.message,
        }
    }
}

impl From<EngineError> for FnError {
    fn from(e: EngineError) -> Self {
        FnError::new("EngineError", e.to_string())
    }
}
