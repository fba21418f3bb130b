//! cachemig: move a live Redis keyspace into a Redis Cluster in six gated, reversible phases.
//!
//! The library holds everything; `main.rs` only parses arguments and maps errors to exit codes.

pub mod backfill;
pub mod batch;
pub mod beacon;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod flags;
pub mod fsutil;
pub mod gate;
pub mod inspect;
pub mod keys;
pub mod keysync;
pub mod layout;
pub mod output;
pub mod phase;
pub mod plan;
pub mod proxy;
pub mod report;
pub mod server;
pub mod session;
pub mod state;
pub mod tls;
pub mod verify;
