//! What the backup, restore and gc adapters share, so each of them is only its own
//! classify → engine call → respond:
//!
//! - [`env`]: the environment the template sets, read and validated at cold start;
//! - [`error`]: an invocation's failure as Lambda's `errorType` and `errorMessage`;
//! - [`start`]: the cold start (logging, configuration, clients) and the runtime loop.

pub mod env;
pub mod error;
pub mod start;

pub use env::{ConfigError, Env};
pub use error::FnError;
pub use start::serve;
