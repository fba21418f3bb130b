//! Phase entry actions: the backfill of phase 1 and the catch-up of phase 2. `advance` runs the
//! action after the transition is committed; `resume` re-runs the current phase's action from
//! its checkpoint (after kill -9, a network failure, or Ctrl-C).
//!
//! Actions hold their own lock (`state_dir/action.lock`), not the step lock, so an operator can
//! still roll back while a long backfill runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::Format;
use crate::error::{EXIT_OK, Error, Result};
use crate::gate::{ProxyView, ReportReader};
use crate::phase::{Action, Catalog, PhaseSpec};
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{Event, Journal, Lock, StateDir, actor};
use crate::{backfill, verify};

/// Runs `resume`: the current phase's action, continuing from its checkpoint.
pub fn resume(path: &Path) -> Result<u8> {
    let plan = Plan::load(path)?;
    let session = Session::open(plan)?;
    super::finalize::refuse_if_finalized(&session, "resume")?;
    let phase = session.phase();
    if phase.action == Action::None {
        return Err(Error::Usage(format!(
            "phase {} has no entry action to resume",
            phase.name
        )));
    }
    let note = run(&session.plan, phase, Start::Resume, Format::Table)?;
    println!("{note}");
    Ok(EXIT_OK)
}

/// Whether an action starts afresh (a step just entered the phase) or continues (`resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new entry into the phase: earlier progress of this action is archived, not reused.
    Fresh,
    /// Continue from the checkpoints.
    Resume,
}

/// Runs `phase`'s entry action for `plan`, journaling how it ended; returns a one-line note.
/// `format` says where reports go: with `--format json` stdout carries only the JSON document,
/// so the action's tables go to stderr.
pub fn run(plan: &Plan, phase: &PhaseSpec, start: Start, format: Format) -> Result<String> {
    let dir = StateDir::new(&plan.state_dir);
    let holder = format!("pid {} ({} action) {}", std::process::id(), phase.action, actor());
    let _lock = Lock::acquire(&dir.root().join("action.lock"), &holder).map_err(anyhow::Error::from)?;
    match phase.action {
        Action::None => Ok("none".into()),
        Action::Backfill => {
            if start == Start::Fresh {
                backfill::BackfillDir::new(&plan.state_dir).archive()?;
            }
            journaled(plan, "backfill", || run_backfill(plan, format))
        }
        Action::CatchUp => catch_up(plan, phase),
        Action::FencedSwitch => {
            Ok("none: the write primary switched behind the fence when the phase was entered".into())
        }
    }
}

fn run_backfill(plan: &Plan, format: Format) -> anyhow::Result<String> {
    let summary = runtime()?.block_on(backfill::run(plan))?;
    let total = summary.total();
    let mut text = summary.table().to_string();
    if total.failed > 0 {
        text.push_str(&format!(
            "\n{} key(s) failed; see {}",
            total.failed,
            summary.dead_letter.display()
        ));
    }
    match format {
        Format::Table => println!("{text}"),
        Format::Json => eprintln!("{text}"),
    }
    let run = summary.this_run();
    Ok(format!(
        "{} copied, {} skipped (already in target), {} vanished, {} failed, {:.1} MB; this run {} copied in {:.1}s",
        total.copied,
        total.skipped_existing,
        total.vanished,
        total.failed,
        total.bytes as f64 / 1e6,
        run.copied,
        summary.elapsed.as_secs_f64()
    ))
}

/// The catch-up of phase 2: verify with repair, once every expected proxy acked the generation
/// in force (so every write from then on is mirrored and none can slip between the catch-up's
/// scan and the mirror). Without proxies (`[proxies] expected = 0`) it runs at once.
fn catch_up(plan: &Plan, phase: &PhaseSpec) -> Result<String> {
    journaled(plan, "catch-up", || {
        let acked = wait_for_acks(plan)?;
        Ok(format!("{acked}; {}", run_catch_up(plan, phase)?))
    })
}

/// How long the catch-up waits for the proxies' acks: two heartbeats (a proxy reports once a
/// second, but its report may be up to a heartbeat old) plus 10 s to apply the flag file.
pub fn ack_wait_bound(plan: &Plan) -> Duration {
    plan.proxies.heartbeat_timeout * 2 + Duration::from_secs(10)
}

/// Polls the reports every 500 ms until `[proxies] expected` live proxies applied the generation
/// in force; fails after [`ack_wait_bound`].
fn wait_for_acks(plan: &Plan) -> anyhow::Result<String> {
    let expected = plan.proxies.expected;
    if expected == 0 {
        return Ok("0 proxies expected".into());
    }
    let dir = StateDir::new(&plan.state_dir);
    let generation = Journal::read(&dir.journal_path())
        .context("reading the journal")?
        .generation();
    let bound = ack_wait_bound(plan);
    let runtime = runtime()?;
    let started = Instant::now();
    let mut reader = None;
    let mut last_shown = String::new();
    loop {
        if reader.is_none() {
            reader = runtime.block_on(ReportReader::connect(plan)).ok();
        }
        let view = match &reader {
            Some(r) => runtime.block_on(r.view(plan, generation)),
            None => runtime.block_on(ProxyView::load(plan, generation)),
        };
        let acks = view.acks(generation, false);
        let text = match view.unreadable() {
            Some(e) => format!("proxy reports unreadable: {e}"),
            None => acks.describe(expected, &format!("live at generation {generation}")),
        };
        if view.unreadable().is_none() && acks.enough(expected) {
            return Ok(text);
        }
        if started.elapsed() >= bound {
            anyhow::bail!(
                "the catch-up did not start: after {} {text}. It starts only once every expected proxy mirrors writes, so that no write escapes both the mirror and the catch-up; fix the proxies, then run `cachemig resume {}`",
                crate::plan::units::format_duration(Duration::from_secs(bound.as_secs())),
                plan.path.display()
            );
        }
        if text != last_shown {
            eprintln!("catch-up: waiting for proxy acks: {text}");
            last_shown = text;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn run_catch_up(plan: &Plan, phase: &PhaseSpec) -> anyhow::Result<String> {
    let options = verify::Options {
        sample: None,
        repair: true,
        // Old, in async-dual-write; taken from the catalog so a repair never guesses.
        primary: phase.routing.write,
        report: None,
    };
    let summary = runtime()?.block_on(verify::run(plan, &options))?;
    verify::save_catch_up(&plan.state_dir, &summary)?;
    Ok(summary.one_line())
}

/// Runs `work`, journaling that `action` started and how it ended (the action's own checkpoints,
/// not the journal, carry its progress). A journal line that cannot be written is a warning: the
/// outcome is also in the action's files.
fn journaled(plan: &Plan, action: &str, work: impl FnOnce() -> anyhow::Result<String>) -> Result<String> {
    if let Err(e) = record(plan, action, "started", "") {
        eprintln!("warning: could not journal the {action} start: {e}");
    }
    let result = work();
    let (outcome, detail) = match &result {
        Ok(note) => ("completed", note.clone()),
        Err(e) => ("failed", format!("{e:#}")),
    };
    if let Err(e) = record(plan, action, outcome, &detail) {
        eprintln!("warning: could not journal the {action} outcome: {e}");
    }
    result.map_err(Error::from)
}

fn record(plan: &Plan, action: &str, outcome: &str, detail: &str) -> Result<()> {
    let dir = StateDir::new(&plan.state_dir);
    let holder = format!("pid {} ({action} journal) {}", std::process::id(), actor());
    let _lock = Lock::acquire(&dir.lock_path(), &holder).map_err(anyhow::Error::from)?;
    let mut journal = Journal::read(&dir.journal_path()).context("reading the journal")?;
    let generation = journal.generation();
    let event = Event::Action {
        action: action.into(),
        outcome: outcome.into(),
        detail: detail.into(),
    };
    journal.append(&actor(), generation, event)?;
    let state =
        crate::state::State::from_journal(&plan.name, &Catalog::builtin().first().name, journal.entries());
    state.write(&dir.state_path())?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
