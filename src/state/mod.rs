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
pub use record::{Finalized, Override, State};

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
    format!("{}@{}", user(), hostname())
}

/// The real user: `$USER`, else `$LOGNAME`, else the login name of this process's uid in
/// `/etc/passwd`, else `uid <n>` (a container without a passwd entry still names someone).
pub fn user() -> String {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.trim().is_empty());
    if let Some(user) = from_env {
        return user;
    }
    let Some(uid) = uid() else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| login_of(&passwd, uid))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// This process's real uid, from `/proc/self/status`.
fn uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The login name of `uid` in a passwd file's text.
fn login_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_uid_is_named_from_the_passwd_file() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\nbroken\nops:x:1000:1000::/home/ops:/bin/sh\n";
        assert_eq!(super::login_of(passwd, 1000).as_deref(), Some("ops"));
        assert_eq!(super::login_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::login_of(passwd, 42), None);
    }
}
