//! `cachemig rollback PLAN [--phase NAME] [--dry-run] [--yes]` — never gated.

use std::path::Path;

use super::step::{self, Direction, StepReport};
use crate::cli::Format;
use crate::error::{Error, Result};
use crate::gate::ProxyView;
use crate::phase::{Action, PhaseSpec};
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
        if session.phase().action == Action::FencedSwitch {
            return fenced_rollback(session, to, report, format);
        }
        session.transition(TransitionKind::Rollback, to)?;
        report.applied = true;
    }
    report.action = if session.phase().action == Action::FencedSwitch {
        fence_preview(&session)
    } else {
        "none".into()
    };
    report.print(format)?;
    Ok(0)
}

/// What a dry rollback out of write-stop would do.
fn fence_preview(session: &Session) -> String {
    let expected = session.plan.proxies.expected;
    if expected == 0 {
        return "would switch the primary back directly (0 proxies expected, no fence)".into();
    }
    let view = ProxyView::load_blocking(&session.plan, session.state.generation);
    let live: Vec<String> = view
        .live()
        .iter()
        .map(|r| format!("{} at generation {}", r.id, r.generation))
        .collect();
    format!(
        "would fence first (writes held at most {}), then switch the primary back; live proxies: {}",
        crate::plan::units::format_duration(session.plan.proxies.max_write_pause),
        match (view.unreadable(), live.is_empty()) {
            (Some(e), _) => format!("unknown ({e})"),
            (None, true) => "none".into(),
            (None, false) => live.join(", "),
        }
    )
}

/// The rollback out of write-stop switches the primary back behind the same fence. Rollback is
/// never gated, but it never splits the primary: without acks write-stop stays in force.
fn fenced_rollback(
    mut session: Session,
    to: &PhaseSpec,
    mut report: StepReport,
    format: Format,
) -> Result<u8> {
    let outcome = super::fence::switch(&mut session, TransitionKind::Rollback, to)?;
    report.landed(&session);
    report.applied = true;
    match outcome {
        super::fence::Outcome::Switched(note) => {
            report.action = note;
            report.print(format)?;
            Ok(0)
        }
        super::fence::Outcome::Released(note) => {
            report.action = note.clone();
            report.print(format)?;
            Err(Error::Runtime(anyhow::anyhow!(
                "rollback to {} not done: {note}; {} stays in force. Check the proxies, then run rollback again",
                to.name,
                session.state.phase
            )))
        }
    }
}
