//! The state record derived from the journal.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journal::{Entry, Event, FenceStage};

/// A gate override that `status` shows forever after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// The phase whose gate was skipped.
    pub phase: String,
    /// The gate.
    pub gate: String,
    /// The operator's reason.
    pub reason: String,
    /// What the gate measured then.
    pub measured: String,
    /// Who skipped it.
    pub user: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// Where the migration stands. Derived from the journal by [`State::from_journal`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The migration name.
    pub migration: String,
    /// The generation in force (0 = nothing written yet).
    pub generation: u64,
    /// The phase in force.
    pub phase: String,
    /// When the phase was entered (`None` while still `planned`).
    pub entered_at: Option<DateTime<Utc>>,
    /// SHA-256 of the plan used by the last transition.
    pub plan_sha256: Option<String>,
    /// Every gate override ever made.
    pub overrides: Vec<Override>,
    /// The last journal sequence number folded in.
    pub journal_seq: u64,
    /// Whether the generation in force is a fence (a primary switch away from `phase` is under
    /// way, or its command died mid-way: the next locked command releases it).
    #[serde(default)]
    pub fenced: bool,
}

impl State {
    /// Folds the journal into a state, starting from `first_phase` at generation 0.
    pub fn from_journal(migration: &str, first_phase: &str, entries: &[Entry]) -> State {
        let mut state = State {
            migration: migration.to_string(),
            generation: 0,
            phase: first_phase.to_string(),
            entered_at: None,
            plan_sha256: None,
            overrides: Vec::new(),
            journal_seq: 0,
            fenced: false,
        };
        for entry in entries {
            state.apply(entry);
        }
        state
    }

    fn apply(&mut self, entry: &Entry) {
        self.journal_seq = entry.seq;
        self.generation = entry.generation;
        match &entry.event {
            Event::Transition { to, plan_sha256, .. } => {
                self.fenced = false;
                self.phase = to.clone();
                self.entered_at = Some(entry.time);
                self.plan_sha256 = Some(plan_sha256.clone());
            }
            Event::Override {
                phase,
                gate,
                reason,
                measured,
            } => self.overrides.push(Override {
                phase: phase.clone(),
                gate: gate.clone(),
                reason: reason.clone(),
                measured: measured.clone(),
                user: entry.user.clone(),
                time: entry.time,
            }),
            Event::Fence { stage, .. } => self.fenced = *stage == FenceStage::Hold,
            Event::Gates { .. } | Event::Repair { .. } | Event::Action { .. } => {}
        }
    }

    /// Reads `state.json`; `Ok(None)` when it does not exist, `Err` when it is unreadable.
    pub fn read(path: &Path) -> io::Result<Option<State>> {
        crate::fsutil::read_json(path)
    }

    /// Writes `state.json` atomically (temp file, fsync, rename, fsync directory).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::fsutil::write_json(path, self)
    }
}
