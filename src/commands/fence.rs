//! The fenced switch of the write primary (design §4), shared by `advance` read-cutover →
//! write-stop and `rollback` write-stop → read-cutover.
//!
//! Journal and flag file, generation by generation (the step lock is held throughout):
//!
//! 1. `fence` entry, stage `hold`, generation N: the routing of the phase in force with
//!    `fence: true`. Proxies hold new writes, drain their mirror queues and report `drained`.
//! 2. Every expected proxy live, at generation ≥ N and `drained` within `max_write_pause`:
//!    `transition` entry at N+1 with the new phase's routing (the switch).
//! 3. Otherwise: `fence` entry, stage `release`, at N+1: the routing of the phase in force
//!    without the fence, so held writes go to the primary they were meant for.
//!
//! If the command dies between 1 and 2/3, the journal still ends with the `hold`: the next
//! command that takes the lock (`status --repair`, `advance`, `rollback`) writes the `release`
//! (see `Session::lock`). The primary in force never changes without every proxy's ack.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gate::{ProxyView, ReportReader};
use crate::phase::PhaseSpec;
use crate::session::Session;
use crate::state::{FenceStage, TransitionKind};

/// How often the reports are read while writes are held.
const POLL: Duration = Duration::from_millis(150);

/// How a fenced switch ended (an `Err` of the outer result is a failure to read or write).
pub enum Outcome {
    /// `to` is in force; the note says how.
    Switched(String),
    /// The fence was released without switching; the note says who did not ack.
    Released(String),
}

/// Switches from the phase in force to `to` behind the fence. Requires the step lock.
pub fn switch(session: &mut Session, kind: TransitionKind, to: &PhaseSpec) -> Result<Outcome> {
    let expected = session.plan.proxies.expected;
    if expected == 0 {
        session.transition(kind, to)?;
        return Ok(Outcome::Switched(
            "0 proxies expected: the primary switched directly, without a fence".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Connect before holding any write: an unreachable target fails here, with nothing written.
    let reader = runtime
        .block_on(ReportReader::connect(&session.plan))
        .map_err(|e| anyhow::anyhow!("cannot read proxy reports, nothing changed: {e}"))?;
    // A dead proxy's mirror backlog would block the acks: sync it before holding any write (a
    // rollback out of write-stop has no `advance` to do it first).
    let primary = session.phase().routing.write;
    for line in crate::proxy::backlog::drain::drain_blocking(&session.plan, session.state.generation, primary)
    {
        eprintln!("{line}");
    }
    let from = session.state.phase.clone();
    let pause = session.plan.proxies.max_write_pause;
    let flag = session.fence_event(
        FenceStage::Hold,
        &to.name,
        format!("holding writes for the switch {from} -> {}", to.name),
    )?;
    let fence_generation = flag.generation;
    eprintln!(
        "fence: wrote generation {fence_generation} ({from}, fence on); waiting up to {} for {expected} proxies to drain",
        crate::plan::units::format_duration(pause)
    );
    let started = Instant::now();
    let last = loop {
        let view: ProxyView = runtime.block_on(reader.view(&session.plan, fence_generation));
        let acks = view.acks(fence_generation, true);
        if acks.enough(expected) && view.unreadable().is_none() {
            let note = format!(
                "fence generation {fence_generation} acked in {} ms by {}",
                started.elapsed().as_millis(),
                acks.acked.join(", ")
            );
            session.transition(kind, to)?;
            return Ok(Outcome::Switched(format!(
                "{note}; switched to {} at generation {}",
                to.name, session.state.generation
            )));
        }
        if started.elapsed() >= pause {
            break match view.unreadable() {
                Some(e) => format!("proxy reports unreadable: {e}"),
                None => acks.describe(expected, &format!("drained at generation {fence_generation}")),
            };
        }
        std::thread::sleep(POLL);
    };
    let detail = format!(
        "no ack within {}: {last}; writes released on the {from} primary",
        crate::plan::units::format_duration(pause)
    );
    session.fence_event(FenceStage::Release, &to.name, detail.clone())?;
    Ok(Outcome::Released(format!(
        "{detail} (generation {}, {from} without fence)",
        session.state.generation
    )))
}
