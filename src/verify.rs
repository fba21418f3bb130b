//! Verify (placeholder being implemented).
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::Plan;

/// Options.
pub struct Options {
    /// Sample size.
    pub sample: Option<u64>,
    /// Repair.
    pub repair: bool,
    /// Report.
    pub report: Option<PathBuf>,
}

/// Summary.
pub struct Summary {
    /// Differences left.
    pub unresolved: u64,
    /// Elapsed.
    pub elapsed: Duration,
}

impl Summary {
    /// One line.
    pub fn one_line(&self) -> String {
        format!("{} unresolved", self.unresolved)
    }
}

/// Runs verify.
pub async fn run(_plan: &Plan, _options: &Options) -> anyhow::Result<Summary> {
    anyhow::bail!("verify is not implemented yet")
}

/// Saves the catch-up record.
pub fn save_catch_up(_state_dir: &Path, _summary: &Summary) -> std::io::Result<()> {
    Ok(())
}
