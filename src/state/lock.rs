//! The per-plan lock: one process at a time may change a migration.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use fs4::fs_std::FileExt;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another cachemig holds the lock {path}: {holder}; wait for it to finish (a crashed holder releases the lock automatically)"
    )]
    Held {
        /// The lock file.
        path: String,
        /// Who holds it, as the holder wrote it.
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock {path}: {source}")]
    Io {
        /// The lock file.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A held lock; released when dropped (or when the process dies: it is an OS file lock).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock at `path` without waiting, recording `holder` in it for the next contender.
    pub fn acquire(path: &Path, holder: &str) -> Result<Lock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        if !file.try_lock_exclusive().map_err(io_err)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = if holder.trim().is_empty() {
                "unknown holder".to_string()
            } else {
                holder.trim().to_string()
            };
            return Err(LockError::Held {
                path: path.display().to_string(),
                holder,
            });
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        file.write_all(holder.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io_err)?;
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = Lock::acquire(&path, "pid 1 (advance) alice@box").unwrap();
        let err = Lock::acquire(&path, "pid 2").unwrap_err();
        assert!(err.to_string().contains("pid 1 (advance) alice@box"), "{err}");
        drop(first);
        Lock::acquire(&path, "pid 3").unwrap();
    }
}
