//! What cachemig remembers in the plan's `state_dir`.
//!
//! - `journal.jsonl`: append-only, one JSON object per line; every transition, gate evaluation,
//!   override and repair. **The journal is the source of truth.**
//! - `state.json`: a record derived from the journal, for humans and quick reads.
//! - `lock`: held by the one process allowed to change the migration.
//!
//! The commit point of a step is the fsync'd journal line. A crash before it changed nothing; a
//! crash after it leaves `state.json` and the flag file behind, and the next command rewrites
//! them from the journal (see [`Consistency`]).

mod journal;
mod lock;
mod record;

pub use journal::{Entry, Event, FenceStage, GateRecord, Journal, TransitionKind};
pub use lock::{Lock, LockError};
pub use record::{Override, State};

use std::path::{Path, PathBuf};

/// The files under a plan's `state_dir`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (it may not exist yet).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The append-only journal.
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }

    /// The derived state record.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }
}

/// Who runs this command, for the journal: `user@host`.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", hostname())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
