//! Gates: the checks that must pass before `advance` may enter a phase (design §1).
//!
//! The phase catalog names each phase's gates and default thresholds; this module measures
//! them. A gate whose data is missing is **blocked** ("no data"), never passed.

mod acl;
mod bypass;
mod drained;
mod eval;
mod proxies;
mod verified;

use std::fmt;

use serde::Serialize;

pub use bypass::{CACHEMIG_PREFIX, Client, bypassing, parse_client_list, scan as scan_clients};
pub use eval::{Inspection, PROXY_GATES, evaluate, fence_ready, needs_proxy_reports};
pub use proxies::{Acks, Pending, ProxyView, ReportReader};
pub use verified::{VERIFY_FILE, VerifyRecord, VerifyStart};

/// A gate's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The measured value meets the threshold.
    Pass,
    /// The measured value does not meet the threshold.
    Blocked,
    /// The data the gate needs is not available; blocks like `Blocked`.
    NoData,
    /// An operator skipped the gate with `--skip-gate`; journaled and shown forever after.
    Skipped,
}

impl Verdict {
    /// Whether this verdict lets the step proceed.
    pub fn allows(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Skipped)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Blocked => "blocked",
            Verdict::NoData => "no-data",
            Verdict::Skipped => "skipped",
        })
    }
}

/// One evaluated gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    /// Gate name from the catalog.
    pub gate: String,
    /// What it checks.
    pub description: String,
    /// The measured value, for humans.
    pub measured: String,
    /// The threshold in force, for humans ("" when the gate has none).
    pub threshold: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The operator's reason, when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
}

impl GateResult {
    /// The journal form of this result.
    pub fn record(&self) -> crate::state::GateRecord {
        crate::state::GateRecord {
            gate: self.gate.clone(),
            verdict: self.verdict.to_string(),
            measured: self.measured.clone(),
            threshold: self.threshold.clone(),
        }
    }
}

/// Whether every gate allows the step.
pub fn all_allow(results: &[GateResult]) -> bool {
    results.iter().all(|r| r.verdict.allows())
}
