//! The walk through the phases: a list of steps, each run through the CLI's own code
//! (`commands::execute`) once its real gates pass, as an operator would run them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::live::{self, Live};
use super::servers::ProxyAddr;
use super::stats::Stats;
use crate::cli::{Command, Format};
use crate::error::{Error, Result};
use crate::gate::GateResult;
use crate::phase::Catalog;

/// How long one step's gates may take to pass before the demo gives up, naming them.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the gates are measured while the walk waits.
const POLL: Duration = Duration::from_millis(500);
/// How many times a step whose command blocked (e.g. the fence ran out of time) is tried.
const TRIES: usize = 3;

/// One step of the walk: its name and the command that takes it.
pub struct Step {
    /// The phase it enters (or the command's name, for a step outside the phase catalog).
    pub name: &'static str,
    /// The command, given the plan and [`Step::name`].
    pub command: fn(&Path, &str) -> Command,
}

/// `cachemig advance PLAN --phase NAME --yes`.
fn advance(plan: &Path, phase: &str) -> Command {
    Command::Advance {
        plan: plan.to_path_buf(),
        phase: Some(phase.to_string()),
        dry_run: false,
        yes: true,
        skip_gate: Vec::new(),
        reason: None,
        format: Format::Table,
    }
}

/// The walk, in order. A step outside the phase catalog is tried until its command stops
/// blocking (it measures its own gates).
pub const STEPS: &[Step] = &[
    Step {
        name: "backfill",
        command: advance,
    },
    Step {
        name: "async-dual-write",
        command: advance,
    },
    Step {
        name: "sync-dual-write",
        command: advance,
    },
    Step {
        name: "shadow-read",
        command: advance,
    },
    Step {
        name: "read-cutover",
        command: advance,
    },
    Step {
        name: "write-stop",
        command: advance,
    },
];

/// How many times `finalize` is tried while a gate blocks (a proxy report a moment old).
const FINALIZE_TRIES: usize = 10;

/// What the walk needs.
pub struct Walk<'a> {
    /// The plan file.
    pub plan: PathBuf,
    /// The flag file the plan names.
    pub flag_file: PathBuf,
    /// The load's measurements (each step starts a new phase in them).
    pub stats: &'a Stats,
    /// The live line.
    pub live: &'a Live,
    /// The proxies.
    pub proxies: &'a [ProxyAddr],
}

impl Walk<'_> {
    /// Takes every step of [`STEPS`].
    pub fn run(&self) -> Result<()> {
        for step in STEPS {
            self.wait_ready(step)?;
            self.take(step)?;
            self.settle(step.name)?;
        }
        Ok(())
    }

    /// Waits until the next step's gates pass, running the verify the `verified` gate needs
    /// once the proxies acked the phase in force (a verify taken before would not count).
    fn wait_ready(&self, step: &Step) -> Result<()> {
        if Catalog::builtin().get(step.name).is_none() {
            return Ok(());
        }
        let (started, deadline) = (Instant::now(), Instant::now() + READY_TIMEOUT);
        let mut verifies = 0;
        let mut waited_on = std::collections::BTreeSet::new();
        loop {
            let gates = self.gates(step)?;
            let blocking: Vec<&GateResult> = gates.iter().filter(|g| !g.verdict.allows()).collect();
            if blocking.is_empty() {
                self.live.pause();
                let on: Vec<String> = waited_on.into_iter().collect();
                println!(
                    "\nthe gates into {} passed after {:.1}s{}",
                    step.name,
                    started.elapsed().as_secs_f64(),
                    if on.is_empty() {
                        String::new()
                    } else {
                        format!(" (waited on: {})", on.join(", "))
                    }
                );
                return Ok(());
            }
            waited_on.extend(blocking.iter().map(|g| g.gate.clone()));
            let acked = gates
                .iter()
                .all(|g| g.gate != "proxies-acked" || g.verdict.allows());
            if acked && verifies < TRIES && blocking.iter().any(|g| g.gate == "verified") {
                verifies += 1;
                self.verify_for_gate(step)?;
                continue;
            }
            let waiting: Vec<String> = blocking
                .iter()
                .map(|g| format!("{} {}", g.gate, g.measured))
                .collect();
            if Instant::now() > deadline {
                return Err(Error::Runtime(anyhow!(
                    "the gates into {} did not pass within {READY_TIMEOUT:?}: {}",
                    step.name,
                    waiting.join("; ")
                )));
            }
            let elapsed = started.elapsed().as_secs();
            self.live.show(
                &self.phase_name(),
                &format!("→ {} in {elapsed}s: {}", step.name, waiting.join(", ")),
            );
            std::thread::sleep(POLL);
        }
    }

    /// The gates of the step from the phase in force, which must be `step`.
    fn gates(&self, step: &Step) -> Result<Vec<GateResult>> {
        match crate::commands::next_step_gates(&self.plan)? {
            Some((next, gates)) if next.name == step.name => Ok(gates),
            Some((next, _)) => Err(Error::Runtime(anyhow!(
                "the next phase is {}, not {}",
                next.name,
                step.name
            ))),
            None => Err(Error::Runtime(anyhow!(
                "no phase follows; {} cannot be entered",
                step.name
            ))),
        }
    }

    /// `cachemig verify PLAN --repair`: with writers running a key may differ at both looks of
    /// a plain verify, while the repair (from the write primary) settles it, as an operator would.
    fn verify_for_gate(&self, step: &Step) -> Result<()> {
        self.live.pause();
        println!(
            "\n── verify --repair (the `verified` gate into {} needs a fresh one)",
            step.name
        );
        crate::commands::execute(Command::Verify {
            plan: self.plan.clone(),
            sample: None,
            repair: true,
            report: None,
            format: Format::Table,
        })?;
        Ok(())
    }

    /// Runs the step's command; the load counts for the step's phase from here on.
    fn take(&self, step: &Step) -> Result<()> {
        self.live.pause();
        println!("\n══ {} ══", step.name);
        self.stats.enter(step.name);
        for attempt in 1..=TRIES {
            match crate::commands::execute((step.command)(&self.plan, step.name)) {
                Ok(_) => return Ok(()),
                Err(Error::Blocked(why)) if attempt < TRIES => {
                    println!("blocked ({why}); trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `cachemig finalize PLAN --confirm demo`: the last, irreversible step. Taken after the load
    /// stopped and the final check passed, since from here on old is no longer written.
    pub fn finalize(&self) -> Result<()> {
        println!("\n══ finalize ══");
        for attempt in 1..=FINALIZE_TRIES {
            let finalize = Command::Finalize {
                plan: self.plan.clone(),
                confirm: Some(super::plan::NAME.to_string()),
                reason: Some("cachemig demo: the walk is over".to_string()),
                dry_run: false,
                format: Format::Table,
            };
            match crate::commands::execute(finalize) {
                Ok(_) => return self.settle("finalized"),
                Err(Error::Blocked(why)) if attempt < FINALIZE_TRIES => {
                    println!("blocked ({why}); trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Waits until both proxies route by the flag file's generation.
    fn settle(&self, step: &str) -> Result<()> {
        let generation = crate::flags::read(&self.flag_file)
            .map_err(|e| anyhow!("reading {}: {e}", self.flag_file.display()))?
            .map_or(0, |f| f.generation);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.live
                .show(step, &format!("proxies applying generation {generation}"));
            if live::mirror(self.proxies).is_some_and(|m| m.generations.iter().all(|g| *g == generation)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Runtime(anyhow!(
                    "the proxies did not apply generation {generation} within 30s"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The phase in force, as the flag file says.
    fn phase_name(&self) -> String {
        crate::flags::read(&self.flag_file)
            .ok()
            .flatten()
            .map_or_else(|| "planned".to_string(), |f| f.phase)
    }

    /// Lets the load run `soak` more in the last phase, so it has a throughput of its own.
    pub fn linger(&self, soak: Duration) {
        let until = Instant::now() + soak;
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now()).as_secs();
            self.live
                .show(&self.phase_name(), &format!("load continues {left}s more"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every proxy's mirror is drained and empty (the reverse mirror of write-stop
    /// copies the last writes to old).
    pub fn wait_drained(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = live::mirror(self.proxies);
            if m.as_ref().is_some_and(|m| m.drained && m.queue == 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Runtime(anyhow!(
                    "the proxies' mirrors did not drain within 60s: {m:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
