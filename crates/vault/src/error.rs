//! Vault errors, keeping S3's status and code so callers can tell throttling from refusal.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ecr_vault_registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        status: Option<u16>,
        code: Option<String>,
        message: String,
    },

    /// The source stream did not match its descriptor (digest, size) or failed mid-way.
    #[error(transparent)]
    Source(#[from] RegistryError),

    #[error("invalid vault location {0:?}: expected s3://bucket[/prefix]")]
    Location(String),

    #[error("vault object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("malformed vault document {key}: {reason}")]
    Malformed { key: String, reason: String },

    #[error("{0}")]
    Config(String),

    /// A multipart upload stopped at the deadline with its state saved in the staging area;
    /// the next run continues it. Not a failure.
    #[error("upload of {key} deferred at the deadline after {done} of {size} bytes")]
    Deferred { key: String, done: u64, size: u64 },
}

impl VaultError {
    pub(crate) fn s3<E>(
        op: &'static str,
        bucket: &str,
        key: &str,
        e: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        VaultError::S3 {
            op,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            status,
            code,
            message: DisplayErrorContext(&e).to_string(),
        }
    }

    /// S3's error code (`NoSuchKey`, `SlowDown`, …) of an S3 failure.
    pub fn code(&self) -> Option<&str> {
        match self {
            VaultError::S3 { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// HTTP status of an S3 failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::S3 { status, .. } => *status,
            _ => None,
        }
    }

    /// A conditional write lost: the object already exists (412), or a concurrent conditional
    /// write is in progress (409).
    pub fn is_precondition_failed(&self) -> bool {
        matches!(
            self,
            VaultError::S3 {
                status: Some(412),
                ..
            }
        ) || matches!(self, VaultError::S3 { code: Some(c), .. } if c == "PreconditionFailed")
    }

    /// The upload stopped at the deadline and will continue in the next run.
    pub fn is_deferred(&self) -> bool {
        matches!(self, VaultError::Deferred { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            VaultError::S3 {
                status: Some(404),
                ..
            }
        ) || matches!(self, VaultError::S3 { code: Some(c), .. } if c == "NoSuchKey" || c == "NotFound" || c == "NoSuchVersion")
    }

    /// Throttling, server errors and dropped connections: worth another try.
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::S3 { status, code, .. } => {
                matches!(status, None | Some(408 | 409 | 429 | 500 | 502 | 503 | 504))
                    || matches!(
                        code.as_deref(),
                        Some("SlowDown" | "RequestTimeout" | "InternalError")
                    )
            }
            VaultError::Source(e) => e.is_retryable(),
            _ => false,
        }
    }
}
