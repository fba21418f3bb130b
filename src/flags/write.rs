//! Writing the flag file atomically, and reading it back.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{FlagError, FlagFile};

/// Writes `flag` to `path` so that a reader sees either the old file or the new one, never a mix.
///
/// The document goes to a uniquely named temporary file in the same directory (a rename is only
/// atomic within one file system), is fsynced, renamed over `path`, and then the directory is
/// fsynced so the rename itself survives a crash. The parent directory is created if missing. On
/// failure the temporary file is removed. Before anything is written, the bytes are parsed back
/// with [`FlagFile::parse`]: the CLI never writes a file that readers would reject.
///
/// If `path` is a symlink, the rename replaces the symlink itself, not its target.
pub fn write_atomic(path: &Path, flag: &FlagFile) -> io::Result<()> {
    let bytes = flag.to_pretty_json().into_bytes();
    FlagFile::parse(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let dir = parent_dir(path);
    fs::create_dir_all(&dir)?;
    let temp = temp_path(&dir, path)?;
    if let Err(e) = write_and_rename(&temp, path, &bytes) {
        // Best effort: the temp file may not even exist, and the original error matters more.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(&dir)
}

/// Reads and verifies the flag file at `path`, following symlinks. `Ok(None)` when it does not
/// exist, which means phase `planned`, generation 0.
pub fn read(path: &Path) -> Result<Option<FlagFile>, FlagError> {
    match fs::read(path) {
        Ok(bytes) => FlagFile::parse(&bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // The caller knows the path and adds it; the watcher prefixes every message with it.
        Err(e) => Err(FlagError::Io(e.to_string())),
    }
}

/// The directory holding `path`; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.{file name}.tmp.{pid}.{nanos}.{sequence}`: hidden, next to the target, and unique across
/// processes (pid), over time (nanos) and between threads of one process (sequence).
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Ok(dir.join(format!(
        ".{}.tmp.{pid}.{nanos}.{sequence}",
        name.to_string_lossy()
    )))
}

fn write_and_rename(temp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    // create_new: never write through a file (or symlink) someone else put at the temp name.
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    // The data must be on disk before the rename makes it visible, or a crash could leave an
    // empty file under the real name.
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)
}

/// Makes the rename durable. Directories cannot be opened for syncing on every platform; where
/// they cannot, the rename is still atomic, only not yet durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(generation: u64) -> FlagFile {
        crate::flags::file::sample_flag("tokens", generation)
    }

    #[test]
    fn writes_creates_the_directory_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/flags.json");
        assert_eq!(read(&path).unwrap(), None);
        write_atomic(&path, &flag(1)).unwrap();
        write_atomic(&path, &flag(2)).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().generation, 2);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["flags.json"]);
    }

    #[test]
    fn refuses_to_write_a_file_readers_would_reject() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let mut stale = flag(3);
        stale.generation = 4; // changed without seal()
        assert_eq!(
            write_atomic(&path, &stale).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
    }

    #[test]
    fn read_reports_errors_other_than_absence() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        assert!(matches!(read(dir.path()), Err(FlagError::Io(_))));
        let path = dir.path().join("flags.json");
        fs::write(&path, "").unwrap();
        assert_eq!(read(&path), Err(FlagError::Empty));
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("flags.json")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("/x/flags.json")), PathBuf::from("/x"));
    }
}
