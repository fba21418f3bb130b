//! cachemig: move a live Redis keyspace into a Redis Cluster in six gated, reversible phases.
//!
//! The library holds everything; `main.rs` only parses arguments and maps errors to exit codes.

pub mod endpoint;
pub mod flags;
pub mod inspect;
pub mod keys;
pub mod phase;
