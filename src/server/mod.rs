//! Facts about the servers on each side, in one place: which family and version a server is
//! (from INFO server), the RDB version of its DUMP payloads, which commands it has, and from
//! these how keys are copied between two of them ([`copy_mode`]).
//!
//! Used by preflight (`plan`, the `rdb-compatible` gate), the backfill and `verify --repair`
//! (the copy mode).

pub mod copy_mode;
pub mod facts;

pub use copy_mode::{Choice, CopyMode, CopySetting, choose};
pub use facts::{Facts, Family, ServerVersion, restores};
