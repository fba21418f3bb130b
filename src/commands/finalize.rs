//! `cachemig finalize PLAN --confirm NAME [--reason TEXT] [--dry-run]` — the one irreversible
//! step: from `write-stop` into the terminal phase `finalized` (new only, no reverse mirror).
//!
//! Gated like `advance` (the catalog's gates of `finalized`: write-stop soaked, every live proxy
//! acked, the reverse mirror drained, a fresh clean verify), but never overridable: nothing
//! undoes it. The step keeps the write primary (new), so it needs no fence (docs/design.md,
//! "Finalize"). Afterwards every mutating command refuses ([`refuse_if_finalized`]).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::step::StepReport;
use crate::cli::Format;
use crate::error::{Error, Result};
use crate::gate::{self, GateResult};
use crate::output;
use crate::phase::{Catalog, PhaseSpec};
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{Event, TransitionKind};

/// The only phase finalize starts from.
const FROM: &str = "write-stop";

/// Options of `finalize` (also what `cachemig demo` passes).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--confirm`: must equal the migration's name (optional for a dry run).
    pub confirm: Option<String>,
    /// `--reason`: journaled with the step.
    pub reason: Option<String>,
    /// `--dry-run`: evaluate and show, change nothing.
    pub dry_run: bool,
}

/// What `finalize` did or would do (the JSON of `--format json`, documented in docs/cli.md).
#[derive(Debug, Serialize)]
pub struct FinalizeReport {
    /// The step, as `advance` reports it (`command` is `finalize`).
    #[serde(flatten)]
    pub step: StepReport,
    /// The operator's reason, as journaled.
    pub reason: Option<String>,
}

impl FinalizeReport {
    /// Whether the migration is finalized now (the step was written).
    pub fn finalized(&self) -> bool {
        self.step.applied
    }

    /// The gates, each with its measured value.
    pub fn gates(&self) -> &[GateResult] {
        &self.step.gates
    }
}

/// Runs `finalize` for the CLI: prints the report; exit 3 when a gate blocks.
pub fn run(path: &Path, opts: &Options, format: Format) -> Result<u8> {
    let report = finalize(path, opts)?;
    report_print(&report, format)?;
    if !report.step.allowed {
        return Err(Error::Blocked(format!(
            "gate blocked finalize: {}",
            output::blocking_summary(&report.step.gates)
        )));
    }
    Ok(0)
}

fn report_print(report: &FinalizeReport, format: Format) -> Result<()> {
    if format == Format::Json {
        return Ok(output::print_json(report)?);
    }
    report.step.print(format)?;
    if report.step.applied {
        println!(
            "migration {} is finalized: new serves every read and write, old is no longer written, and no command changes this migration any more",
            report.step.migration
        );
    }
    Ok(())
}

/// Finalizes the migration of the plan at `path`, without printing the report (progress lines
/// of the backlog drain go to stderr). `Ok` with `finalized() == false` when a gate blocked
/// (journaled unless a dry run) or for a dry run; `Err(Error::Usage)` when the migration is not
/// in `write-stop`, is finalized already or `confirm` is not its name.
pub fn finalize(path: &Path, opts: &Options) -> Result<FinalizeReport> {
    let plan = Plan::load(path)?;
    // Check before the lock so a refused request leaves no trace, and again under it.
    let session = Session::open(plan)?;
    check(&session, opts)?;
    let mut session = if opts.dry_run {
        session
    } else {
        session.lock("finalize")?
    };
    check(&session, opts)?;
    let to = Catalog::builtin()
        .terminal()
        .expect("the catalog ends with the terminal phase");
    if !opts.dry_run {
        // A dead proxy's crash-safe backlog blocks `reverse-mirror-drained`: sync it to old first.
        let primary = session.phase().routing.write;
        let generation = session.state.generation;
        for line in crate::proxy::backlog::drain::drain_blocking(&session.plan, generation, primary) {
            eprintln!("{line}");
        }
    }
    let results = evaluate(&session, to, opts.dry_run)?;
    let (mut step, _) = StepReport::new("finalize", &session, to, opts.dry_run);
    step.allowed = gate::all_allow(&results);
    step.gates = results;
    step.action = "stop the reverse mirror; old is no longer written".into();
    let mut report = FinalizeReport {
        step,
        reason: opts.reason.clone(),
    };
    if opts.dry_run {
        return Ok(report);
    }
    journal_gates(&mut session, to, &report.step)?;
    if report.step.allowed {
        session.transition_because(TransitionKind::Finalize, to, opts.reason.clone())?;
        report.step.landed(&session);
        report.step.applied = true;
        report.step.action = "reverse mirror stopped; old is no longer written".into();
    }
    Ok(report)
}

/// Gates that a look a moment later may find passing: the reports refresh every second, and a
/// mirror queue that held a key at one report is usually empty at the next.
const TRANSIENT: &[&str] = &["proxies-acked", "reverse-mirror-drained"];
/// How long finalize keeps looking while only [`TRANSIENT`] gates block.
const SETTLE: Duration = Duration::from_secs(5);
/// Pause between looks.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Measures the gates; when only [`TRANSIENT`] gates block, looks again for up to [`SETTLE`]
/// (a dry run looks once, as `plan` does).
fn evaluate(session: &Session, to: &PhaseSpec, dry_run: bool) -> Result<Vec<GateResult>> {
    let started = Instant::now();
    loop {
        let results = super::advance::evaluate_step(session, to)?;
        let transient = results
            .iter()
            .filter(|r| !r.verdict.allows())
            .all(|r| TRANSIENT.contains(&r.gate.as_str()));
        if dry_run || !transient || gate::all_allow(&results) || started.elapsed() >= SETTLE {
            return Ok(results);
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

fn journal_gates(session: &mut Session, to: &PhaseSpec, step: &StepReport) -> Result<()> {
    session.record(Event::Gates {
        phase: to.name.clone(),
        passed: step.allowed,
        results: step.gates.iter().map(GateResult::record).collect(),
    })?;
    Ok(())
}

/// The request must come from write-stop, for a migration not finalized yet, with its name.
fn check(session: &Session, opts: &Options) -> Result<()> {
    refuse_if_finalized(session, "finalize")?;
    let name = &session.plan.name;
    let plan = session.plan.path.display();
    if session.state.phase != FROM {
        return Err(Error::Usage(format!(
            "finalize goes only from {FROM}; migration {name} is in {}. Walk to {FROM} first (`cachemig advance {plan}`, one phase at a time)",
            session.state.phase
        )));
    }
    let retype = format!("type `cachemig finalize {plan} --confirm {name}`");
    match opts.confirm.as_deref() {
        Some(given) if given == name => Ok(()),
        Some(given) => Err(Error::Usage(format!(
            "--confirm `{given}` is not this migration's name; finalize is irreversible: to finalize migration {name}, {retype}"
        ))),
        None if opts.dry_run => Ok(()),
        None => Err(Error::Usage(format!(
            "finalize is irreversible and needs the migration's name: {retype}"
        ))),
    }
}

/// Refuses `command` (e.g. `advance`, `rollback`, `verify --repair`) once the migration is
/// finalized, saying when, by whom and why.
pub fn refuse_if_finalized(session: &Session, command: &str) -> Result<()> {
    let Some(f) = &session.state.finalized else {
        return Ok(());
    };
    let why = f
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(" (reason: {r})"));
    Err(Error::Usage(format!(
        "migration {} was finalized at {} by {}{why}; `{command}` changes nothing after finalize: new serves every read and write and old is no longer written. `cachemig status` and `cachemig verify` (read-only) still work; moving again takes a new plan with its own state_dir",
        session.plan.name,
        f.time.format("%Y-%m-%d %H:%M:%SZ"),
        f.user
    )))
}
