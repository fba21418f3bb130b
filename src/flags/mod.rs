//! The flag file: the contract between the CLI and the data plane.
//!
//! The CLI writes one small JSON document per migration saying which phase is in force and how
//! every proxy and client router must route; the data plane follows it. The full contract, for
//! people writing their own client, is `docs/flag-file.md`.
//!
//! - [`FlagFile`] is the document: [`FlagFile::new`] builds and seals one, [`FlagFile::parse`]
//!   verifies one, [`diff`] says what changes between two.
//! - [`write_atomic`] writes it so no reader ever sees a torn file; [`read`] reads it once.
//! - [`FlagWatcher`] follows it: directory watch plus polling, apply only higher generations,
//!   keep the last good routing through anything invalid.

mod canonical;
mod error;
mod file;
mod watch;
mod write;

pub use canonical::{canonical_json, checksum_of};
pub use error::FlagError;
pub use file::{FORMAT, FieldChange, FlagFile, FlagRouting, ShadowRead, diff};
pub use watch::{FlagWatcher, WatchOptions, WatchState};
pub use write::{read, write_atomic};
