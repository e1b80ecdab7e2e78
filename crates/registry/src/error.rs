//! Errors, classified so callers can tell "retry later" from "this image is bad" from "fix your
//! configuration".

use std::time::Duration;

/// A string from outside (registry, event, user) that failed validation. The value is kept,
/// escaped and truncated, so the error names it without echoing control characters.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {kind} {value}: {reason}")]
pub struct InvalidInput {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl InvalidInput {
    pub fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        let mut shown: String = value.chars().take(80).collect();
        if value.chars().count() > 80 {
            shown.push('…');
        }
        InvalidInput {
            kind,
            value: format!("{shown:?}"),
            reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),

    #[error("{method} {url}: HTTP {status}{}", body_suffix(.body))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },

    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("registry authentication failed for {url}: {reason}")]
    Auth { url: String, reason: String },

    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("size mismatch for {what}: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType { what: String, media_type: String },

    #[error("malformed manifest {what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("registry protocol error at {url}: {reason}")]
    Protocol { url: String, reason: String },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" ({body})")
    }
}

impl RegistryError {
    /// HTTP status, if the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Worth retrying: throttling, server errors, dropped connections, truncated bodies.
    /// Bad content (digest or size mismatch from the registry) is also retried once by callers,
    /// since a truncated stream looks the same, but never forever.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Status { status, .. } => {
                matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
            }
            RegistryError::Transport { .. } => true,
            RegistryError::SizeMismatch { .. } | RegistryError::DigestMismatch { .. } => true,
            _ => false,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
