//! The phase catalog: the seven phases of a migration and the terminal `finalized`, their
//! routing, gates and rollback target.
//!
//! The catalog lives in `phases/*.toml` at the top of the repository and is embedded into the
//! binary at build time, so the phase order, routing and default gates have exactly one source.

mod catalog;

pub use catalog::{Action, Catalog, GateSpec, MirrorMode, PhaseSpec, Routing, Side, Threshold};
