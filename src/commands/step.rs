//! What `advance` and `rollback` share: choosing the phase to enter and reporting the step.

use serde::Serialize;

use crate::cli::Format;
use crate::error::{Error, Result};
use crate::flags::{self, FieldChange, FlagFile};
use crate::gate::GateResult;
use crate::output;
use crate::phase::{Catalog, PhaseSpec};
use crate::plan::did_you_mean;
use crate::session::{Drift, Session};

/// Which way a step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `advance`: exactly the next phase.
    Forward,
    /// `rollback`: exactly the previous phase.
    Back,
}

/// The phase a step from `from` enters; `requested` (from `--phase`) must name exactly it.
pub fn resolve(
    from: &PhaseSpec,
    requested: Option<&str>,
    direction: Direction,
) -> Result<&'static PhaseSpec> {
    let catalog = Catalog::builtin();
    if let Some(name) = requested
        && catalog.get(name).is_none()
    {
        let hint =
            did_you_mean(name, catalog.names()).map_or(String::new(), |b| format!(" (did you mean `{b}`?)"));
        return Err(Error::Usage(format!(
            "unknown phase `{name}`{hint}; phases: {}",
            catalog.names().join(", ")
        )));
    }
    let last = || {
        Error::Usage(format!(
            "{} is the last phase advance goes to; finalize is a separate, irreversible step: `cachemig finalize PLAN --confirm <migration name>`",
            from.name
        ))
    };
    let to = match direction {
        Direction::Forward => catalog
            .next(&from.name)
            .filter(|p| !p.terminal)
            .ok_or_else(last)?,
        Direction::Back => catalog
            .previous(&from.name)
            .ok_or_else(|| Error::Usage(format!("{} is the first phase; nothing to roll back", from.name)))?,
    };
    match requested {
        Some(name) if name != to.name => Err(Error::Usage(wrong_phase(from, to, name, direction))),
        _ => Ok(to),
    }
}

fn wrong_phase(from: &PhaseSpec, to: &PhaseSpec, name: &str, direction: Direction) -> String {
    let catalog = Catalog::builtin();
    let (here, there) = (catalog.index_of(&from.name), catalog.index_of(name));
    let verb = if direction == Direction::Forward {
        "advance"
    } else {
        "rollback"
    };
    let why = match (direction, here < there) {
        (Direction::Forward, true) => "phases cannot be skipped",
        (Direction::Forward, false) => "that is not ahead of the current phase: use `cachemig rollback`",
        (Direction::Back, false) => "rollback moves one step at a time",
        (Direction::Back, true) => "that is not behind the current phase: use `cachemig advance`",
    };
    format!("{verb} from {} goes to {}, not {name}: {why}", from.name, to.name)
}

/// The stable JSON report of `advance` and `rollback` (documented in docs/cli.md).
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// `advance` or `rollback`.
    pub command: &'static str,
    /// The migration name.
    pub migration: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The phase and generation before.
    pub from: PhaseAt,
    /// The phase and generation the step enters.
    pub to: PhaseAt,
    /// Gate results (empty for rollback).
    pub gates: Vec<GateResult>,
    /// Whether every gate allowed the step.
    pub allowed: bool,
    /// Whether the step was written.
    pub applied: bool,
    /// The flag file path.
    pub flag_file: String,
    /// The plan file path (for hints).
    #[serde(skip)]
    pub plan_file: String,
    /// The flag-file fields the step changes.
    pub flag_diff: Vec<FieldChange>,
    /// Derived files repaired from the journal before the step (or that a real run would repair).
    pub drift: Vec<Drift>,
    /// The action run on entry, and its status.
    pub action: String,
    /// Whether the step switches the write primary behind a fence (generation N fences, N+1
    /// switches; `to.generation` is N+1).
    pub fenced: bool,
    /// The flag file before the step, for the diff once it landed.
    #[serde(skip)]
    before: Option<FlagFile>,
}

/// A phase at a generation.
#[derive(Debug, Serialize)]
pub struct PhaseAt {
    /// Phase name.
    pub phase: String,
    /// Generation.
    pub generation: u64,
}

impl StepReport {
    /// A report for a step of `session` into `to`, with the flag file it would write.
    pub fn new(
        command: &'static str,
        session: &Session,
        to: &PhaseSpec,
        dry_run: bool,
    ) -> (StepReport, FlagFile) {
        // Only a switch of the write primary is fenced (read-cutover <-> write-stop); finalize
        // leaves write-stop but keeps new as the primary.
        let fenced = session.plan.proxies.expected > 0 && to.routing.write != session.phase().routing.write;
        let generation = session.state.generation + 1 + u64::from(fenced);
        let flag = session.flag_for(generation, to, &session.plan.sha256);
        let report = StepReport {
            command,
            migration: session.plan.name.clone(),
            dry_run,
            from: PhaseAt {
                phase: session.state.phase.clone(),
                generation: session.state.generation,
            },
            to: PhaseAt {
                phase: to.name.clone(),
                generation,
            },
            gates: Vec::new(),
            allowed: true,
            applied: false,
            flag_file: session.plan.flag_file.display().to_string(),
            plan_file: session.plan.path.display().to_string(),
            flag_diff: flags::diff(session.flag_on_disk.as_ref(), &flag),
            drift: session.drift_for_report(),
            action: to.action.to_string(),
            fenced,
            before: session.flag_on_disk.clone(),
        };
        (report, flag)
    }

    /// Records where a step that was written landed: the phase and generation in force now, and
    /// the flag-file change from before the step.
    pub fn landed(&mut self, session: &Session) {
        self.to = PhaseAt {
            phase: session.state.phase.clone(),
            generation: session.state.generation,
        };
        if let Some(flag) = &session.flag_on_disk {
            self.flag_diff = flags::diff(self.before.as_ref(), flag);
        }
    }

    /// Prints the report in `format`.
    pub fn print(&self, format: Format) -> Result<()> {
        if format == Format::Json {
            return Ok(output::print_json(self)?);
        }
        println!(
            "{} {}: {} (generation {}) -> {} (generation {}){}",
            self.command,
            self.migration,
            self.from.phase,
            self.from.generation,
            self.to.phase,
            self.to.generation,
            if self.dry_run { "  [dry run]" } else { "" }
        );
        for d in &self.drift {
            let verb = if self.dry_run { "would repair" } else { "repaired" };
            println!("{verb} {}: {}", d.file, d.detail);
        }
        if !self.gates.is_empty() {
            println!("{}", output::gates_table(&self.gates));
        }
        println!(
            "flag file {}:\n{}",
            self.flag_file,
            output::diff_table(&self.flag_diff)
        );
        println!("{}", self.outcome());
        Ok(())
    }

    fn outcome(&self) -> String {
        match (self.allowed, self.applied, self.dry_run) {
            (false, _, _) => format!("blocked: {}", output::blocking_summary(&self.gates)),
            (true, _, true) if self.fenced => format!(
                "dry run: would fence at generation {} (writes held until every proxy drained), then write generation {} ({}); nothing was changed",
                self.to.generation - 1,
                self.to.generation,
                self.to.phase
            ),
            (true, _, true) => format!(
                "dry run: would write generation {} ({}); nothing was changed",
                self.to.generation, self.to.phase
            ),
            (true, true, false) => format!(
                "wrote generation {} ({}) to {}",
                self.to.generation, self.to.phase, self.flag_file
            ),
            (true, false, false) => "not applied".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str) -> &'static PhaseSpec {
        Catalog::builtin().get(name).unwrap()
    }

    #[test]
    fn skipping_a_phase_is_refused() {
        let err = resolve(phase("planned"), Some("sync-dual-write"), Direction::Forward).unwrap_err();
        assert!(err.to_string().contains("cannot be skipped"), "{err}");
    }

    #[test]
    fn advance_never_enters_the_terminal_phase() {
        for asked in [None, Some("finalized")] {
            let err = resolve(phase("write-stop"), asked, Direction::Forward).unwrap_err();
            assert!(err.to_string().contains("cachemig finalize"), "{err}");
        }
    }

    #[test]
    fn unknown_phase_suggests() {
        let err = resolve(phase("planned"), Some("backfil"), Direction::Forward).unwrap_err();
        assert!(err.to_string().contains("did you mean `backfill`"), "{err}");
    }

    #[test]
    fn rollback_goes_exactly_one_back() {
        assert_eq!(
            resolve(phase("shadow-read"), None, Direction::Back).unwrap().name,
            "sync-dual-write"
        );
        assert!(resolve(phase("shadow-read"), Some("backfill"), Direction::Back).is_err());
        assert!(resolve(phase("planned"), None, Direction::Back).is_err());
    }
}
