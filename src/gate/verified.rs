//! The `verified` gate: entering `read-cutover` or `write-stop` needs a fresh, clean verify.
//!
//! `advance` does not run the verify itself (docs/design.md, "The verify before the switches"):
//! a full verify of 10M keys takes minutes while `advance` holds the step lock, and an operator
//! expects `advance --dry-run` and `plan` to answer at once. `cachemig verify` records its
//! outcome in `state_dir/verify.json` instead, together with the phase, the generation and
//! whether every live proxy had acked that generation when it started; the gate reads the record.
//! A record is fresh when it was taken in the phase in force, at its generation, after the
//! generation was acked: only then did every write it could have missed go through a proxy that
//! mirrors the way the phase says.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ProxyView, Verdict};
use crate::plan::Plan;
use crate::state::State;
use crate::verify::Summary;

/// The file name of the record in `state_dir`.
pub const VERIFY_FILE: &str = "verify.json";

/// What was in force when a verify started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyStart {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The phase in force.
    pub phase: String,
    /// The generation in force.
    pub generation: u64,
    /// Whether every live proxy (and at least `expected`) had applied `generation`.
    pub acked: bool,
    /// Who acked, who blocked (see [`super::Acks::describe`]).
    pub acks: String,
}

impl VerifyStart {
    /// Reads the proxies' reports now; `state` says what is in force.
    pub fn observe(plan: &Plan, state: &State) -> VerifyStart {
        let started_at = Utc::now();
        let view = ProxyView::load_blocking(plan, state.generation);
        let (acked, acks) = match view.unreadable() {
            Some(e) => (false, format!("proxy reports unreadable: {e}")),
            None => {
                let acks = view.acks(state.generation, false);
                (
                    acks.enough(plan.proxies.expected),
                    acks.describe(
                        plan.proxies.expected,
                        &format!("at generation {}", state.generation),
                    ),
                )
            }
        };
        VerifyStart {
            started_at,
            phase: state.phase.clone(),
            generation: state.generation,
            acked,
            acks,
        }
    }
}

/// The outcome of the last `cachemig verify`, as the `verified` gate reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// What was in force when it started.
    #[serde(flatten)]
    pub start: VerifyStart,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// `--sample N`, or `None` for a full verify.
    pub sample: Option<u64>,
    /// Keys SCAN returned on the source.
    pub source_scanned: u64,
    /// Source keys compared.
    pub source_checked: u64,
    /// Differences found (persistent after the re-check).
    pub found: u64,
    /// Differences repaired (`--repair`).
    pub repaired: u64,
    /// Differences left.
    pub unresolved: u64,
}

impl VerifyRecord {
    /// The record of a finished run.
    pub fn new(start: VerifyStart, summary: &Summary) -> VerifyRecord {
        VerifyRecord {
            start,
            finished_at: Utc::now(),
            sample: summary.sample,
            source_scanned: summary.source_scanned,
            source_checked: summary.source_checked,
            found: summary.found,
            repaired: summary.repaired,
            unresolved: summary.unresolved,
        }
    }

    /// Writes `state_dir/verify.json` atomically.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        crate::fsutil::write_json(&state_dir.join(VERIFY_FILE), self)
    }

    /// Reads `state_dir/verify.json`; `None` when no verify has finished yet.
    pub fn load(state_dir: &Path) -> io::Result<Option<VerifyRecord>> {
        crate::fsutil::read_json(&state_dir.join(VERIFY_FILE))
    }

    fn what(&self) -> String {
        let size = match self.sample {
            None => "full verify".to_string(),
            Some(n) => format!("verify --sample {n}"),
        };
        format!(
            "{size} at {} (generation {}, {})",
            self.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
            self.start.generation,
            self.start.phase
        )
    }
}

/// Measures the gate: the record must be fresh, large enough and clean.
pub(super) fn measure(plan: &Plan, state: &State, allowed: u64) -> (String, Verdict) {
    let run = format!("cachemig verify {}", plan.path.display());
    let record = match VerifyRecord::load(&plan.state_dir) {
        Err(e) => {
            return (
                format!("no data: {VERIFY_FILE} unreadable ({e}); run `{run}`"),
                Verdict::NoData,
            );
        }
        Ok(None) => {
            return (
                format!("no data: no verify recorded; run `{run}`"),
                Verdict::NoData,
            );
        }
        Ok(Some(r)) => r,
    };
    let blocked = |why: String| (format!("{}: {why}", record.what()), Verdict::Blocked);
    if record.start.generation != state.generation || record.start.phase != state.phase {
        return blocked(format!(
            "not fresh, generation {} ({}) is in force; run `{run}`",
            state.generation, state.phase
        ));
    }
    if !record.start.acked {
        return blocked(format!(
            "started before every live proxy acked the generation ({}); once `cachemig status` shows them acked, run `{run}`",
            record.start.acks
        ));
    }
    if let Some(why) = too_small(plan, &record) {
        return blocked(format!("{why}; run `{run}`"));
    }
    if record.unresolved > allowed {
        return blocked(format!(
            "{} unresolved difference(s) of {} found; `{run} --repair` repairs them from the write primary, then run `{run}`",
            record.unresolved, record.found
        ));
    }
    (
        format!(
            "{}: {} source key(s) checked, {} found, {} repaired, {} unresolved",
            record.what(),
            record.source_checked,
            record.found,
            record.repaired,
            record.unresolved
        ),
        Verdict::Pass,
    )
}

/// Why a sampled verify is not enough under `[verify]`, if it is not.
fn too_small(plan: &Plan, record: &VerifyRecord) -> Option<String> {
    let n = record.sample?;
    let v = plan.verify;
    if v.gate_sample == 0 {
        return Some("a sampled verify, and the plan asks for a full one ([verify] gate_sample = 0)".into());
    }
    if n < v.gate_sample {
        return Some(format!(
            "sample {n} is below [verify] gate_sample = {}",
            v.gate_sample
        ));
    }
    let share = record.source_checked as f64 / record.source_scanned.max(1) as f64;
    (share < v.gate_sample_ratio).then(|| {
        format!(
            "checked {:.4} of the source keys, below [verify] gate_sample_ratio = {}",
            share, v.gate_sample_ratio
        )
    })
}
