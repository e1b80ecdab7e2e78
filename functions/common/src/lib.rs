//! What the backup, restore and gc adapters share, so each of them is only its own
//! classify → engine call → respond:
//!
//! - [`Settings`]: the environment the template sets, read at cold start through the engine's one
//!   configuration schema (`ecr_vault_engine::config`), which the CLI's config file shares;
//! - [`error`]: an invocation's failure as Lambda's `errorType` and `errorMessage`;
//! - [`start`]: the cold start (logging, configuration, clients) and the runtime loop.

pub mod error;
pub mod start;

pub use ecr_vault_engine::config::{ConfigError, Settings};
pub use error::FnError;
pub use start::serve;
