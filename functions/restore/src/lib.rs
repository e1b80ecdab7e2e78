//! The restore and drill functions' request parsing, egress rules, configuration and failure
//! report, as a library so the fuzz targets (`fuzz/`) and tests can drive them without a Lambda
//! runtime. The binaries (`main.rs`, `bin_drill.rs`) are the adapters.

pub mod drill;
pub mod egress;
pub mod report;
pub mod request;
