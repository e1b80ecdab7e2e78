//! The restore and drill functions' request parsing, configuration and failure report, as a library so the fuzz
//! targets (`fuzz/`) and tests can drive them without a Lambda runtime. The binary
//! (`main.rs`) is the adapter.

pub mod drill;
pub mod report;
pub mod request;
