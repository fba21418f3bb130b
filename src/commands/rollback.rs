//! `cachemig rollback PLAN [--phase NAME] [--dry-run] [--yes] [--force --reason TEXT]` — never
//! gated; out of write-stop it switches the primary back behind the fence.

use std::path::Path;

use super::step::{self, Direction, StepReport};
use crate::cli::Format;
use crate::error::{Error, Result};
use crate::gate::{self, ProxyView};
use crate::phase::{Action, PhaseSpec};
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{Event, TransitionKind};

/// Options of `rollback`.
pub struct Options {
    /// `--phase`: the phase to return to.
    pub phase: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--force --reason TEXT`: the reason, when forced.
    pub force: Option<String>,
    /// `--format`.
    pub format: Format,
}

/// Runs `rollback`: one step back, at a new, higher generation.
pub fn run(path: &Path, opts: Options) -> Result<u8> {
    let plan = Plan::load(path)?;
    let session = Session::open(plan)?;
    super::finalize::refuse_if_finalized(&session, "rollback")?;
    step::resolve(session.phase(), opts.phase.as_deref(), Direction::Back)?;
    check_force(&session, opts.force.is_some())?;
    let mut session = if opts.dry_run {
        session
    } else {
        super::require_yes_or_terminal(opts.yes)?;
        session.lock("rollback")?
    };
    super::finalize::refuse_if_finalized(&session, "rollback")?;
    let to = step::resolve(session.phase(), opts.phase.as_deref(), Direction::Back)?;
    let (mut report, _) = StepReport::new("rollback", &session, to, opts.dry_run);
    if !opts.dry_run {
        super::confirm(
            &format!(
                "roll {} back from {} to {}",
                session.plan.name, session.state.phase, to.name
            ),
            opts.yes,
        )?;
        if session.phase().action == Action::FencedSwitch {
            return fenced_rollback(session, to, report, &opts);
        }
        session.transition(TransitionKind::Rollback, to)?;
        report.applied = true;
    }
    let fenced_switch = session.phase().action == Action::FencedSwitch;
    report.action = if fenced_switch {
        fence_preview(&session, opts.force.is_some())
    } else {
        "none".into()
    };
    report.print(opts.format)?;
    if fenced_switch && opts.format == Format::Table {
        println!("the switch of the primary: {}", report.action);
    }
    Ok(0)
}

/// `--force` is for one case only: the rollback out of write-stop, where a fence exists to skip.
fn check_force(session: &Session, force: bool) -> Result<()> {
    if !force {
        return Ok(());
    }
    if session.phase().action != Action::FencedSwitch {
        return Err(Error::Usage(format!(
            "--force applies only to the rollback out of write-stop when the proxies cannot ack its fence; a rollback from {} is never gated: run it without --force",
            session.state.phase
        )));
    }
    if session.plan.proxies.expected == 0 {
        return Err(Error::Usage(
            "--force: [proxies] expected = 0, so the primary switches back without a fence anyway: run the rollback without --force".into(),
        ));
    }
    Ok(())
}

/// What a dry rollback out of write-stop would do.
fn fence_preview(session: &Session, force: bool) -> String {
    let expected = session.plan.proxies.expected;
    if expected == 0 {
        return "would switch the primary back directly (0 proxies expected, no fence)".into();
    }
    let view = ProxyView::load_blocking(&session.plan, session.state.generation);
    let (measured, verdict) = gate::fence_ready(&session.plan, Some(&view));
    if !verdict.allows() {
        return if force {
            format!("would switch the primary back WITHOUT the fence (--force): {measured}")
        } else {
            format!("would refuse, changing nothing: {measured} (see `--force` in docs/runbook.md)")
        };
    }
    let live: Vec<String> = view
        .live()
        .iter()
        .map(|r| format!("{} at generation {}", r.id, r.generation))
        .collect();
    format!(
        "would fence first (writes held at most {}), then switch the primary back; live proxies: {}",
        crate::plan::units::format_duration(session.plan.proxies.max_write_pause),
        if live.is_empty() {
            "none".into()
        } else {
            live.join(", ")
        }
    )
}

/// The rollback out of write-stop switches the primary back behind the same fence. Rollback is
/// never gated, but it never splits the primary: without acks write-stop stays in force, unless
/// the operator forces it when the proxies cannot ack at all (down, or reports unreadable).
fn fenced_rollback(
    mut session: Session,
    to: &PhaseSpec,
    mut report: StepReport,
    opts: &Options,
) -> Result<u8> {
    if session.plan.proxies.expected > 0 {
        // A dead proxy's backlog blocks the fence: sync it to old first (as `fence::switch` would).
        drain_dead_backlogs(&session);
        // Checked before any write is held: a fence nobody can ack would hold writes for nothing.
        let view = ProxyView::load_blocking(&session.plan, session.state.generation);
        let (measured, verdict) = gate::fence_ready(&session.plan, Some(&view));
        match (verdict.allows(), &opts.force) {
            (true, Some(_)) => {
                return Err(Error::Usage(format!(
                    "--force is only for when the proxies cannot ack the fence, and they can now ({measured}): run the rollback without --force, the fence switches the primary back safely"
                )));
            }
            (false, None) => return Err(Error::Blocked(cannot_fence(&session, to, &measured))),
            (false, Some(reason)) => return forced(session, to, report, reason, &measured, opts.format),
            (true, None) => {}
        }
    }
    let outcome = super::fence::switch(&mut session, TransitionKind::Rollback, to)?;
    report.landed(&session);
    report.applied = true;
    match outcome {
        super::fence::Outcome::Switched(note) => {
            report.action = note;
            report.print(opts.format)?;
            Ok(0)
        }
        super::fence::Outcome::Released(note) => {
            report.action = note.clone();
            report.print(opts.format)?;
            Err(Error::Runtime(anyhow::anyhow!(
                "rollback to {} not done: {note}; {} stays in force. Check the proxies, then run rollback again",
                to.name,
                session.state.phase
            )))
        }
    }
}

/// Syncs the backlogs of dead proxies from the primary in force (new) to old, one line each.
fn drain_dead_backlogs(session: &Session) {
    let primary = session.phase().routing.write;
    let generation = session.state.generation;
    for line in crate::proxy::backlog::drain::drain_blocking(&session.plan, generation, primary) {
        eprintln!("{line}");
    }
}

/// The refusal when the fence cannot be acked: what is in force, and the three ways out.
fn cannot_fence(session: &Session, to: &PhaseSpec, measured: &str) -> String {
    let plan = session.plan.path.display();
    let from = &session.state.phase;
    format!(
        "rollback from {from} to {} switches the write primary back to old, which needs every proxy's ack (the fence), and they cannot give it: {measured}. Nothing changed; {from} stays in force (new is the primary). What you can do:\n  \
         1. start the proxies (or fix what keeps their reports from reaching new), wait until `cachemig status {plan}` shows every expected proxy live at generation {}, then run `cachemig rollback {plan}` again;\n  \
         2. wait: a proxy that is restarting reports within its heartbeat ([proxies] heartbeat_timeout = {});\n  \
         3. `cachemig rollback {plan} --force --reason TEXT` switches the primary back without the fence (journaled, and shown by `status` as a skipped `fence` gate forever). {}",
        to.name,
        session.state.generation,
        crate::plan::units::format_duration(session.plan.proxies.heartbeat_timeout),
        force_risk(&plan.to_string())
    )
}

/// What `--force` risks (docs/runbook.md says the same).
fn force_risk(plan: &str) -> String {
    format!(
        "It risks two things. (a) A write a proxy applied on new in write-stop whose reverse mirror to old neither landed nor sits in a crash-safe backlog this command can drain (a proxy killed before its backlog add reached new, or new unreachable now) is missing on old, the primary again: reads from new still show it until the next write through old to that key, or a `verify --repair` (which copies from old), replaces it with old's older value. (b) A proxy that is hung or cut off rather than dead still routes by write-stop until it reads the new flag file: its writes land on new first while the others write old first. Run `cachemig verify {plan}` right after: every difference is a key to look at before any `verify --repair`."
    )
}

/// `--force`: drain what dead proxies left, journal the skipped fence, switch back directly.
fn forced(
    mut session: Session,
    to: &PhaseSpec,
    mut report: StepReport,
    reason: &str,
    measured: &str,
    format: Format,
) -> Result<u8> {
    // What dead proxies still owe old is in their backlogs on new; `fenced_rollback` synced it
    // to old just before (a drain that failed is in its lines), so only what no backlog holds
    // is at risk.
    session.record(Event::Override {
        phase: to.name.clone(),
        gate: "fence".into(),
        reason: reason.to_string(),
        measured: measured.to_string(),
    })?;
    session.transition_because(TransitionKind::Rollback, to, Some(reason.to_string()))?;
    report.landed(&session);
    report.applied = true;
    report.fenced = false;
    report.action = format!("switched the primary back WITHOUT the fence (--force): {measured}");
    report.print(format)?;
    if format == Format::Table {
        println!("the switch of the primary: {}", report.action);
    }
    eprintln!(
        "warning: forced rollback. {}",
        force_risk(&session.plan.path.display().to_string())
    );
    Ok(0)
}
