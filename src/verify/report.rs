//! What verify leaves behind: the CSV of differences and, for the phase-2 catch-up, the
//! `catch-up.json` record the "catch-up clean" gate reads.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Kind, Summary};
use crate::backfill::escape_key;

/// The file name of the catch-up record in `state_dir`.
pub const CATCH_UP_FILE: &str = "catch-up.json";

/// The outcome of the last catch-up (verify with repair run by phase 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpRecord {
    /// When the catch-up finished.
    pub finished_at: DateTime<Utc>,
    /// Keys compared (both directions).
    pub checked: u64,
    /// Differences found (persistent after the re-check).
    pub found: u64,
    /// Differences repaired.
    pub repaired: u64,
    /// Differences still present after repair.
    pub unresolved: u64,
}

/// Writes `state_dir/catch-up.json` atomically.
pub fn save_catch_up(state_dir: &Path, summary: &Summary) -> io::Result<()> {
    let record = CatchUpRecord {
        finished_at: Utc::now(),
        checked: summary.checked(),
        found: summary.found,
        repaired: summary.repaired,
        unresolved: summary.unresolved,
    };
    crate::fsutil::write_json(&state_dir.join(CATCH_UP_FILE), &record)
}

/// Reads `state_dir/catch-up.json`; `None` when no catch-up has finished yet.
pub fn load_catch_up(state_dir: &Path) -> io::Result<Option<CatchUpRecord>> {
    crate::fsutil::read_json(&state_dir.join(CATCH_UP_FILE))
}

/// The CSV report (`key,kind,details`), written to `<path>.partial` and renamed over `path`
/// when the run ends, so a report at `path` is always complete.
pub(super) struct CsvReport {
    path: PathBuf,
    partial: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
}

impl CsvReport {
    /// Creates the partial file and writes the header.
    pub fn create(path: &Path) -> io::Result<CsvReport> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let mut writer = csv::Writer::from_writer(BufWriter::new(File::create(&partial)?));
        writer.write_record(["key", "kind", "details"])?;
        Ok(CsvReport {
            path: path.to_path_buf(),
            partial,
            writer,
        })
    }

    /// Appends one difference.
    pub fn write(&mut self, key: &[u8], kind: Kind, details: &str) -> io::Result<()> {
        self.writer
            .write_record([escape_key(key).as_str(), kind.as_str(), details])?;
        Ok(())
    }

    /// Flushes, fsyncs and moves the report into place.
    pub fn finish(self) -> io::Result<PathBuf> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_escapes_binary_keys_and_quotes_commas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.csv");
        let mut r = CsvReport::create(&path).unwrap();
        r.write(b"token:\xff,x", Kind::Value, "source hash, target hash")
            .unwrap();
        assert!(!path.exists(), "only the partial file exists until the end");
        assert_eq!(r.finish().unwrap(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "key,kind,details\n\"token:\\xff,x\",value,\"source hash, target hash\"\n"
        );
    }

    #[test]
    fn catch_up_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_catch_up(dir.path()).unwrap(), None);
        let summary = Summary {
            found: 3,
            repaired: 2,
            unresolved: 1,
            source_checked: 10,
            target_checked: 5,
            ..Summary::default()
        };
        save_catch_up(dir.path(), &summary).unwrap();
        let record = load_catch_up(dir.path()).unwrap().unwrap();
        assert_eq!(
            (record.checked, record.found, record.repaired, record.unresolved),
            (15, 3, 2, 1)
        );
        std::fs::write(dir.path().join(CATCH_UP_FILE), "{").unwrap();
        assert!(load_catch_up(dir.path()).is_err());
    }
}
