//! The restore function's request parsing, as a library so the fuzz targets (`fuzz/`) and
//! tests can drive it without a Lambda runtime. The binary (`main.rs`) is the adapter.

pub mod egress;
pub mod request;
