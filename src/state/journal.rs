//! The append-only journal: JSON lines, fsync'd one by one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a transition moved forward or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    /// `cachemig advance`.
    Advance,
    /// `cachemig rollback`.
    Rollback,
    /// `cachemig finalize`: into the terminal phase, irreversibly.
    Finalize,
}

/// The two fence entries a primary switch may journal (design §4). A successful switch is a
/// `hold` followed by the `transition`; an abandoned one is a `hold` followed by a `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceStage {
    /// This generation is the routing of `phase` with `fence: true`: proxies hold new writes and
    /// drain their mirror queue.
    Hold,
    /// This generation is the routing of `phase` without a fence: the switch was abandoned and
    /// held writes go to the primary of `phase`.
    Release,
}

/// One gate's outcome as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Gate name.
    pub gate: String,
    /// `pass`, `blocked`, `no-data` or `skipped`.
    pub verdict: String,
    /// The measured value, as shown to the operator.
    pub measured: String,
    /// The threshold, as shown to the operator.
    pub threshold: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The phase changed; `generation` of the entry is the new generation.
    Transition {
        /// Forward or back.
        kind: TransitionKind,
        /// The phase before.
        from: String,
        /// The phase after.
        to: String,
        /// SHA-256 of the plan file used for the step.
        plan_sha256: String,
        /// The operator's reason (`finalize --reason`, `rollback --force --reason`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Gates were evaluated for a step into `phase`.
    Gates {
        /// The phase the step would enter.
        phase: String,
        /// Whether the step was allowed (after overrides).
        passed: bool,
        /// Every gate's outcome.
        results: Vec<GateRecord>,
    },
    /// An operator skipped a gate.
    Override {
        /// The phase whose gate was skipped.
        phase: String,
        /// The gate.
        gate: String,
        /// The operator's reason.
        reason: String,
        /// What the gate measured when it was skipped.
        measured: String,
    },
    /// A phase's entry action (backfill, catch-up) started or ended.
    Action {
        /// The action (`backfill`, `catch-up`).
        action: String,
        /// `started`, `completed` or `failed`.
        outcome: String,
        /// A one-line summary (counters, or the error).
        detail: String,
    },
    /// The primary-switch fence; `generation` of the entry is the fence (or release) generation.
    Fence {
        /// Hold or release.
        stage: FenceStage,
        /// The phase in force, whose routing the generation carries.
        phase: String,
        /// The phase the switch goes to.
        toward: String,
        /// Why (for a release: who did not ack, or that the fencing command died).
        detail: String,
    },
    /// A derived file (state record, flag file) was rewritten from the journal.
    Repair {
        /// What was repaired and why.
        detail: String,
    },
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position in the journal.
    pub seq: u64,
    /// When it was written.
    pub time: DateTime<Utc>,
    /// `user@host` that ran the command.
    pub user: String,
    /// The generation in force after this entry.
    pub generation: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The journal file and the entries read from it.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Byte length of the well-formed prefix; a torn last line past it is cut before appending.
    good_len: u64,
}

impl Journal {
    /// Reads the journal at `path`; a missing file is an empty journal. A torn last line (a
    /// crash mid-append) is ignored; a bad line anywhere else is corruption and an error.
    pub fn read(path: &Path) -> io::Result<Journal> {
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        let mut good_len = 0u64;
        let mut rest = text.as_slice();
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                break; // torn tail: never committed
            };
            let entry: Entry = serde_json::from_slice(&rest[..nl]).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {line_no} is corrupt ({e}); the journal is the source of truth, restore it from backup", path.display()),
                )
            })?;
            entries.push(entry);
            good_len += nl as u64 + 1;
            rest = &rest[nl + 1..];
        }
        Ok(Journal {
            path: path.to_path_buf(),
            entries,
            good_len,
        })
    }

    /// All committed entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The generation in force (0 before the first transition).
    pub fn generation(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.generation)
    }

    /// Appends one event and fsyncs it; returns the committed entry.
    pub fn append(&mut self, user: &str, generation: u64, event: Event) -> io::Result<Entry> {
        let entry = Entry {
            seq: self.entries.len() as u64 + 1,
            time: Utc::now(),
            user: user.to_string(),
            generation,
            event,
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        // Cut a torn tail first so the new line starts on a line boundary.
        if file.metadata()?.len() != self.good_len {
            file.set_len(self.good_len)?;
        }
        write_all_sync(&file, &line)?;
        self.good_len += line.len() as u64;
        self.entries.push(entry.clone());
        Ok(entry)
    }
}

fn write_all_sync(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repair(detail: &str) -> Event {
        Event::Repair {
            detail: detail.into(),
        }
    }

    #[test]
    fn append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::read(&path).unwrap();
        j.append("u@h", 0, repair("a")).unwrap();
        j.append("u@h", 1, repair("b")).unwrap();
        let j = Journal::read(&path).unwrap();
        assert_eq!(j.entries().len(), 2);
        assert_eq!(j.generation(), 1);
        assert_eq!(j.entries()[1].seq, 2);
    }

    #[test]
    fn torn_tail_is_ignored_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::read(&path).unwrap();
        j.append("u@h", 1, repair("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"ti").unwrap();
        let mut j = Journal::read(&path).unwrap();
        assert_eq!(j.entries().len(), 1);
        j.append("u@h", 2, repair("b")).unwrap();
        let j = Journal::read(&path).unwrap();
        assert_eq!(
            j.entries().len(),
            2,
            "{}",
            std::fs::read_to_string(&path).unwrap()
        );
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "garbage\n{}\n").unwrap();
        let err = Journal::read(&path).unwrap_err();
        assert!(err.to_string().contains("line 1 is corrupt"), "{err}");
    }
}
