//! `cachemig rollback PLAN [--phase NAME] [--dry-run] [--yes]` — never gated.

use std::path::Path;

use super::step::{self, Direction, StepReport};
use crate::cli::Format;
use crate::error::Result;
use crate::plan::Plan;
use crate::session::Session;
use crate::state::TransitionKind;

/// Runs `rollback`: one step back, at a new, higher generation.
pub fn run(path: &Path, phase: Option<String>, dry_run: bool, yes: bool, format: Format) -> Result<u8> {
    let plan = Plan::load(path)?;
    let session = Session::open(plan)?;
    step::resolve(session.phase(), phase.as_deref(), Direction::Back)?;
    let mut session = if dry_run {
        session
    } else {
        super::require_yes_or_terminal(yes)?;
        session.lock("rollback")?
    };
    let to = step::resolve(session.phase(), phase.as_deref(), Direction::Back)?;
    let (mut report, _) = StepReport::new("rollback", &session, to, dry_run);
    if !dry_run {
        super::confirm(
            &format!(
                "roll {} back from {} to {}",
                session.plan.name, session.state.phase, to.name
            ),
            yes,
        )?;
        session.transition(TransitionKind::Rollback, to)?;
        report.applied = true;
    }
    report.action = "none".into();
    report.print(format)?;
    Ok(0)
}
