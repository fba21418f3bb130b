//! `cachemig advance PLAN [--phase NAME] [--dry-run] [--yes] [--skip-gate NAME --reason TEXT]`

use std::path::Path;

use super::step::{self, Direction, StepReport};
use crate::cli::Format;
use crate::error::{Error, Result};
use crate::gate::{self, GateResult, Verdict};
use crate::output;
use crate::phase::{Action, PhaseSpec};
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{Event, TransitionKind};

/// Options of `advance`.
pub struct Options {
    /// `--phase`: the phase to enter.
    pub phase: Option<String>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--yes`.
    pub yes: bool,
    /// `--skip-gate`, repeatable.
    pub skip_gates: Vec<String>,
    /// `--reason`.
    pub reason: Option<String>,
    /// `--format`.
    pub format: Format,
}

/// Gates that need an online inspection of source and target.
const INSPECTED_GATES: &[&str] = &[
    "source-reachable",
    "target-reachable",
    "target-cluster-ok",
    "rdb-compatible",
    "memory-headroom",
    "target-empty",
    "acl-permissions",
    "bypass-writers",
];

/// Gates no override may bypass: skipping the fence would switch the write primary while proxies
/// still write to the old one.
const NEVER_SKIPPED: &[&str] = &["fence"];

/// Runs `advance`.
pub fn run(path: &Path, opts: Options) -> Result<u8> {
    if opts.reason.is_some() && opts.skip_gates.is_empty() {
        return Err(Error::Usage("--reason goes with --skip-gate NAME".into()));
    }
    let plan = Plan::load(path)?;
    // Validate the request against the current state before taking the lock, so a refused
    // request leaves no trace; then re-check under the lock, since the state may have moved.
    let session = Session::open(plan)?;
    super::finalize::refuse_if_finalized(&session, "advance")?;
    check_skips(
        step::resolve(session.phase(), opts.phase.as_deref(), Direction::Forward)?,
        &opts.skip_gates,
    )?;
    let mut session = if opts.dry_run {
        session
    } else {
        super::require_yes_or_terminal(opts.yes)?;
        session.lock("advance")?
    };
    super::finalize::refuse_if_finalized(&session, "advance")?;
    let to = step::resolve(session.phase(), opts.phase.as_deref(), Direction::Forward)?;
    check_skips(to, &opts.skip_gates)?;

    if !opts.dry_run && gate::needs_proxy_reports(to) {
        // A dead proxy's mirror backlog blocks every ack: sync it first (design §4).
        let primary = session.phase().routing.write;
        let drained =
            crate::proxy::backlog::drain::drain_blocking(&session.plan, session.state.generation, primary);
        for line in drained {
            eprintln!("{line}");
        }
    }
    let mut results = evaluate_step(&session, to)?;
    apply_skips(
        &mut results,
        &opts.skip_gates,
        opts.reason.as_deref().unwrap_or_default(),
    );

    let (mut report, _) = StepReport::new("advance", &session, to, opts.dry_run);
    report.allowed = gate::all_allow(&results);
    report.gates = results;
    if !report.allowed {
        if !opts.dry_run {
            session.record(Event::Gates {
                phase: to.name.clone(),
                passed: false,
                results: records(&report.gates),
            })?;
        }
        report.print(opts.format)?;
        return Err(Error::Blocked(format!(
            "gate blocked the step into {}: {}",
            to.name,
            output::blocking_summary(&report.gates)
        )));
    }
    if opts.dry_run {
        report.print(opts.format)?;
        return Ok(0);
    }
    super::confirm(
        &format!(
            "advance {} from {} to {}",
            session.plan.name, session.state.phase, to.name
        ),
        opts.yes,
    )?;
    session.record(Event::Gates {
        phase: to.name.clone(),
        passed: true,
        results: records(&report.gates),
    })?;
    for r in report.gates.iter().filter(|r| r.verdict == Verdict::Skipped) {
        let reason = r.skip_reason.clone().unwrap_or_default();
        session.record(Event::Override {
            phase: to.name.clone(),
            gate: r.gate.clone(),
            reason,
            measured: r.measured.clone(),
        })?;
    }
    if to.action == Action::FencedSwitch {
        return fenced_switch(session, to, report, opts.format);
    }
    session.transition(TransitionKind::Advance, to)?;
    session.unlock();
    report.applied = true;
    if opts.format == Format::Table {
        report.print(opts.format)?;
    }
    let action = super::action::run(&session.plan, to, super::action::Start::Fresh, opts.format)
        .map_err(|e| entered_but(to, &report, e));
    report.action = match &action {
        Ok(note) => note.clone(),
        Err(e) => e.to_string(),
    };
    match opts.format {
        Format::Json => report.print(opts.format)?,
        Format::Table if to.action != Action::None => {
            println!("entry action {}: {}", to.action, report.action)
        }
        Format::Table => {}
    }
    action.map(|_| 0)
}

/// Measures every gate of the step from the phase in force into `to`, inspecting source and
/// target and reading the proxies' reports only when a gate needs them (read-only).
pub(super) fn evaluate_step(session: &Session, to: &PhaseSpec) -> Result<Vec<GateResult>> {
    let inspection = if to
        .gates
        .iter()
        .any(|g| INSPECTED_GATES.contains(&g.name.as_str()))
    {
        Some(super::inspect(&session.plan)?)
    } else {
        None
    };
    let proxies = gate::needs_proxy_reports(to)
        .then(|| gate::ProxyView::load_blocking(&session.plan, session.state.generation));
    Ok(gate::evaluate(
        &session.plan,
        &session.state,
        to,
        inspection.as_ref(),
        proxies.as_ref(),
        chrono::Utc::now(),
    ))
}

/// The step into write-stop: the switch of the write primary behind the fence. Exit 3 (gate
/// `fence` blocked) when the proxies do not ack in time; the fence is then released.
fn fenced_switch(mut session: Session, to: &PhaseSpec, mut report: StepReport, format: Format) -> Result<u8> {
    let outcome = super::fence::switch(&mut session, TransitionKind::Advance, to)?;
    report.landed(&session);
    let (note, switched) = match outcome {
        super::fence::Outcome::Switched(note) => (note, true),
        super::fence::Outcome::Released(note) => (note, false),
    };
    if let Some(g) = report.gates.iter_mut().find(|g| g.gate == "fence") {
        g.measured = note.clone();
        g.verdict = if switched { Verdict::Pass } else { Verdict::Blocked };
    }
    report.allowed = switched;
    report.applied = true;
    report.action = note.clone();
    report.print(format)?;
    if switched {
        Ok(0)
    } else {
        Err(Error::Blocked(format!(
            "gate blocked the step into {}: fence = {note}",
            to.name
        )))
    }
}

/// Every `--skip-gate` must name a gate of the step, so a typo cannot silently skip nothing.
fn check_skips(to: &PhaseSpec, skips: &[String]) -> Result<()> {
    for name in skips {
        if NEVER_SKIPPED.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "--skip-gate {name}: this gate guards the switch of the write primary and cannot be skipped"
            )));
        }
        if !to.gates.iter().any(|g| &g.name == name) {
            let names: Vec<&str> = to.gates.iter().map(|g| g.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--skip-gate {name}: the step into {} has no such gate; its gates: {}",
                to.name,
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Marks the skipped gates that would otherwise block. A gate that passes anyway is not
/// overridden, so the journal only records overrides that mattered.
fn apply_skips(results: &mut [GateResult], skips: &[String], reason: &str) {
    for r in results
        .iter_mut()
        .filter(|r| skips.contains(&r.gate) && !r.verdict.allows())
    {
        r.verdict = Verdict::Skipped;
        r.skip_reason = Some(reason.to_string());
    }
}

fn records(results: &[GateResult]) -> Vec<crate::state::GateRecord> {
    results.iter().map(GateResult::record).collect()
}

/// The error of an entry action that failed after the step itself was committed.
fn entered_but(to: &PhaseSpec, report: &StepReport, e: Error) -> Error {
    Error::Runtime(anyhow::anyhow!(
        "{} is in force (generation {}), but its {} failed: {}; `cachemig resume {}` continues it",
        to.name,
        report.to.generation,
        to.action,
        match &e {
            Error::Runtime(inner) => format!("{inner:#}"),
            other => other.to_string(),
        },
        report.plan_file
    ))
}
