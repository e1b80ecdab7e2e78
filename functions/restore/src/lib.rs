//! The drill function's configuration, as a library so tests drive it without a Lambda
//! runtime. The binaries (`main.rs`, `bin_drill.rs`) are the adapters; the request, egress
//! rules and failure report they use live in the engine.

pub mod drill;
