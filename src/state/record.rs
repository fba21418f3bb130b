//! The state record derived from the journal.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journal::{Entry, Event, FenceStage, TransitionKind};

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

/// When and by whom the migration was finalized (the terminal phase is in force).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finalized {
    /// When `cachemig finalize` committed.
    pub time: DateTime<Utc>,
    /// `user@host` that ran it.
    pub user: String,
    /// The operator's reason, if given.
    pub reason: Option<String>,
    /// The generation it wrote.
    pub generation: u64,
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
    /// Set once `cachemig finalize` committed: every later mutating command refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized: Option<Finalized>,
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
            finalized: None,
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
            Event::Transition {
                kind,
                to,
                plan_sha256,
                reason,
                ..
            } => {
                if *kind == TransitionKind::Finalize {
                    self.finalized = Some(Finalized {
                        time: entry.time,
                        user: entry.user.clone(),
                        reason: reason.clone(),
                        generation: entry.generation,
                    });
                }
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
