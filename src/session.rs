//! A migration as one command sees it: the plan, the journal, the derived state and the flag
//! file, with the checks that keep them consistent after a crash.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::beacon::{self, Beacon};
use crate::flags::{self, FlagFile, ShadowRead};
use crate::phase::{Catalog, MirrorMode, PhaseSpec, Side};
use crate::plan::Plan;
use crate::state::{Event, FenceStage, Journal, Lock, State, StateDir, TransitionKind, actor};

/// A disagreement between the journal (the truth) and a file derived from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// Which file: `state.json` or the flag file path.
    pub file: String,
    /// What differs.
    pub detail: String,
}

/// The migration loaded for one command.
pub struct Session {
    /// The validated plan.
    pub plan: Plan,
    /// Where the state lives.
    pub dir: StateDir,
    /// The journal as read.
    pub journal: Journal,
    /// The state derived from the journal.
    pub state: State,
    /// Disagreements found between the journal and the derived files.
    pub drift: Vec<Drift>,
    /// The flag file as found on disk (`None` when absent or unreadable, see `drift`).
    pub flag_on_disk: Option<FlagFile>,
    /// Drift repaired when the lock was taken (see [`Session::lock`]).
    pub repaired: Vec<Drift>,
    /// The lock, when taken.
    lock: Option<Lock>,
}

impl Session {
    /// Loads the state of `plan` without taking the lock and without writing anything.
    pub fn open(plan: Plan) -> Result<Session> {
        let dir = StateDir::new(&plan.state_dir);
        let journal = Journal::read(&dir.journal_path())
            .with_context(|| format!("reading {}", dir.journal_path().display()))?;
        let state = State::from_journal(&plan.name, &Catalog::builtin().first().name, journal.entries());
        let mut session = Session {
            plan,
            dir,
            journal,
            state,
            drift: Vec::new(),
            flag_on_disk: None,
            repaired: Vec::new(),
            lock: None,
        };
        session.check_drift();
        Ok(session)
    }

    /// Takes the lock, then reloads the state (another process may have changed it meanwhile)
    /// and repairs any drift; for commands that change the migration. Fails at once if another
    /// process holds the lock.
    pub fn lock(self, command: &str) -> Result<Session> {
        let holder = format!(
            "pid {} ({command}) {} since {}",
            std::process::id(),
            actor(),
            chrono::Utc::now().to_rfc3339()
        );
        let lock = Lock::acquire(&self.dir.lock_path(), &holder)?;
        let mut session = Session::open(self.plan)?;
        session.lock = Some(lock);
        session.repaired = session.repair()?;
        Ok(session)
    }

    /// Drift a dry run would repair, or that taking the lock repaired.
    pub fn drift_for_report(&self) -> Vec<Drift> {
        if self.lock.is_some() {
            self.repaired.clone()
        } else {
            self.drift.clone()
        }
    }

    /// Releases the step lock (e.g. before a long entry action, so a rollback stays possible).
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// The phase in force.
    pub fn phase(&self) -> &'static PhaseSpec {
        Catalog::builtin()
            .get(&self.state.phase)
            .expect("journal phases come from the catalog")
    }

    /// The flag file the journal says should be on disk (`None` before the first transition).
    pub fn expected_flag(&self) -> Option<FlagFile> {
        let sha = self.state.plan_sha256.as_deref()?;
        Some(self.flag_fenced(self.state.generation, self.phase(), sha, self.state.fenced))
    }

    /// The flag file for `phase` at `generation`.
    pub fn flag_for(&self, generation: u64, phase: &PhaseSpec, plan_sha256: &str) -> FlagFile {
        self.flag_fenced(generation, phase, plan_sha256, false)
    }

    /// The flag file for `phase` at `generation`, with the primary-switch fence when `fence`.
    pub fn flag_fenced(
        &self,
        generation: u64,
        phase: &PhaseSpec,
        plan_sha256: &str,
        fence: bool,
    ) -> FlagFile {
        let shadow = ShadowRead {
            sample_rate: self.plan.shadow_read.sample_rate,
            timeout_ms: self.plan.shadow_read.timeout_ms,
        };
        let mut flag = FlagFile::new(&self.plan.name, generation, phase, shadow, plan_sha256, fence);
        // The reverse mirror (new→old while new is primary) keeps rollback possible; a plan may
        // turn it off with `[dual_write] reverse_mirror = false`.
        if phase.routing.write == Side::New && !self.plan.dual_write.reverse_mirror {
            flag.routing.mirror = MirrorMode::Off;
            flag.seal();
        }
        flag
    }

    fn check_drift(&mut self) {
        self.drift.clear();
        let state_path = self.dir.state_path();
        match State::read(&state_path) {
            Ok(Some(on_disk)) if on_disk == self.state => {}
            Ok(None) if self.journal.entries().is_empty() => {}
            Ok(Some(on_disk)) => self.drift(
                &state_path,
                format!(
                    "records generation {} ({}), the journal says {} ({})",
                    on_disk.generation, on_disk.phase, self.state.generation, self.state.phase
                ),
            ),
            Ok(None) => self.drift(&state_path, "missing".into()),
            Err(e) => self.drift(&state_path, format!("unreadable: {e}")),
        }
        let flag_path = self.plan.flag_file.clone();
        let expected = self.expected_flag();
        match (flags::read(&flag_path), &expected) {
            (Ok(found), _) => {
                let same = match (&found, &expected) {
                    (None, None) => true,
                    // Generation and phase only: a rewrite at the same generation would be
                    // ignored by readers anyway, so plan edits (e.g. sample_rate) apply at the
                    // next step.
                    (Some(f), Some(e)) => {
                        f.generation == e.generation
                            && f.phase == e.phase
                            && f.routing.fence == e.routing.fence
                    }
                    _ => false,
                };
                if !same {
                    let show = |f: &Option<FlagFile>| {
                        f.as_ref().map_or("absent".to_string(), |f| {
                            let fence = if f.routing.fence { ", fenced" } else { "" };
                            format!("generation {} ({}{fence})", f.generation, f.phase)
                        })
                    };
                    self.drift(
                        &flag_path,
                        format!("holds {}, the journal says {}", show(&found), show(&expected)),
                    );
                }
                self.flag_on_disk = found;
            }
            (Err(e), _) => self.drift(&flag_path, format!("unreadable: {e}")),
        }
    }

    fn drift(&mut self, file: &Path, detail: String) {
        self.drift.push(Drift {
            file: file.display().to_string(),
            detail,
        });
    }

    /// Rewrites drifted derived files from the journal and journals the repair. A fence left in
    /// force by a command that died (we hold the lock, so its holder is gone) is released: the
    /// next generation is the routing of the phase in force without the fence, so held writes go
    /// to the primary the journal says is in force and the primary never splits.
    fn repair(&mut self) -> Result<Vec<Drift>> {
        if self.state.fenced {
            // Writing the release rewrites every derived file, which also repairs any drift.
            let mut repaired = std::mem::take(&mut self.drift);
            let fence_generation = self.state.generation;
            let toward = self.fence_toward().unwrap_or_default();
            self.fence_event(
                FenceStage::Release,
                &toward,
                format!(
                    "the command that wrote fence generation {fence_generation} stopped before the switch; released without switching the primary"
                ),
            )?;
            repaired.push(Drift {
                file: self.plan.flag_file.display().to_string(),
                detail: format!(
                    "fence generation {fence_generation} was left in force; released at generation {} ({} without fence)",
                    self.state.generation, self.state.phase
                ),
            });
            self.check_drift();
            return Ok(repaired);
        }
        let repaired = std::mem::take(&mut self.drift);
        if repaired.is_empty() {
            return Ok(repaired);
        }
        self.write_derived()?;
        let detail = repaired
            .iter()
            .map(|d| format!("{}: {}", d.file, d.detail))
            .collect::<Vec<_>>()
            .join("; ");
        self.journal
            .append(&actor(), self.state.generation, Event::Repair { detail })?;
        self.state = State::from_journal(
            &self.plan.name,
            &Catalog::builtin().first().name,
            self.journal.entries(),
        );
        self.state.write(&self.dir.state_path())?;
        self.check_drift();
        Ok(repaired)
    }

    /// Writes `state.json` and the flag file from the derived state.
    fn write_derived(&mut self) -> Result<()> {
        self.state
            .write(&self.dir.state_path())
            .with_context(|| format!("writing {}", self.dir.state_path().display()))?;
        match self.expected_flag() {
            Some(flag) => {
                flags::write_atomic(&self.plan.flag_file, &flag)
                    .with_context(|| format!("writing {}", self.plan.flag_file.display()))?;
                let beacon = Beacon {
                    generation: flag.generation,
                    phase: flag.phase.clone(),
                };
                if let Err(e) = beacon::publish_blocking(&self.plan, &beacon) {
                    eprintln!(
                        "warning: the flag file is written, but the generation beacon could not be published to the target ({e:#}); proxies cannot detect a stale flag file until the next step"
                    );
                }
                self.flag_on_disk = Some(flag);
            }
            // Back at generation 0 with no transition: an absent flag file means `planned`.
            None => {
                if self.plan.flag_file.exists() {
                    std::fs::remove_file(&self.plan.flag_file)?;
                }
                self.flag_on_disk = None;
            }
        }
        Ok(())
    }

    /// Journals `event` at the current generation (requires the lock).
    pub fn record(&mut self, event: Event) -> Result<()> {
        assert!(self.lock.is_some(), "journal writes need the lock");
        self.journal.append(&actor(), self.state.generation, event)?;
        self.state = State::from_journal(
            &self.plan.name,
            &Catalog::builtin().first().name,
            self.journal.entries(),
        );
        self.state.write(&self.dir.state_path())?;
        Ok(())
    }

    /// The phase the fence in force switches toward, from its `hold` entry.
    fn fence_toward(&self) -> Option<String> {
        self.journal.entries().iter().rev().find_map(|e| match &e.event {
            Event::Fence { toward, .. } => Some(toward.clone()),
            _ => None,
        })
    }

    /// Journals a fence entry at a new, higher generation and writes the derived files: `hold`
    /// writes the routing of the phase in force with `fence: true`, `release` the same routing
    /// without it. Returns the flag file written.
    pub fn fence_event(&mut self, stage: FenceStage, toward: &str, detail: String) -> Result<FlagFile> {
        assert!(self.lock.is_some(), "fences need the lock");
        let event = Event::Fence {
            stage,
            phase: self.state.phase.clone(),
            toward: toward.to_string(),
            detail,
        };
        self.commit(event)?;
        Ok(self.expected_flag().expect("a fence follows a transition"))
    }

    /// Appends `event` at the next generation (the commit point), then rederives the state and
    /// rewrites the state record and the flag file.
    fn commit(&mut self, event: Event) -> Result<()> {
        self.journal.append(&actor(), self.state.generation + 1, event)?;
        self.state = State::from_journal(
            &self.plan.name,
            &Catalog::builtin().first().name,
            self.journal.entries(),
        );
        self.write_derived()
    }

    /// Moves to `to` at a new, higher generation: journal first (the commit point), then the
    /// state record and the flag file. Returns the flag file written.
    pub fn transition(&mut self, kind: TransitionKind, to: &PhaseSpec) -> Result<FlagFile> {
        self.transition_because(kind, to, None)
    }

    /// [`Session::transition`] with the operator's reason journaled in the entry.
    pub fn transition_because(
        &mut self,
        kind: TransitionKind,
        to: &PhaseSpec,
        reason: Option<String>,
    ) -> Result<FlagFile> {
        assert!(self.lock.is_some(), "transitions need the lock");
        let event = Event::Transition {
            kind,
            from: self.state.phase.clone(),
            to: to.name.clone(),
            plan_sha256: self.plan.sha256.clone(),
            reason,
        };
        self.commit(event)?;
        Ok(self.expected_flag().expect("a transition sets plan_sha256"))
    }
}
