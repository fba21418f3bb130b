//! `cachemig verify PLAN [--sample N] [--repair] [--report FILE.csv] [--format table|json]`
//!
//! Read-only on both Redis sides unless `--repair`; without it, takes no lock. Every finished run
//! is recorded in `state_dir/verify.json` for the `verified` gate (src/gate/verified.rs).
//! Exit 0 when no difference remains, 1 otherwise (naming the count and the report), 2 for an
//! invalid plan or arguments.
//!
//! `--repair` copies from the write primary of the phase in force (old before `write-stop`, new
//! in it; design §4): copying old → new while new is the primary would revert or delete
//! acknowledged writes. It holds the step lock for the whole run, so the primary cannot switch
//! under it (`advance` and `rollback` fail at once, naming it), and it refuses to run while a
//! fence is in force.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::Serialize;

use crate::cli::Format;
use crate::error::{EXIT_OK, Error, Result};
use crate::gate::{VerifyRecord, VerifyStart};
use crate::output;
use crate::phase::Side;
use crate::plan::Plan;
use crate::session::Session;
use crate::state::{Lock, StateDir, actor};
use crate::verify::{self, Kind, Summary};

/// Options of `verify`.
pub struct Options {
    /// `--sample N`.
    pub sample: Option<u64>,
    /// `--repair`.
    pub repair: bool,
    /// `--report FILE.csv`.
    pub report: Option<PathBuf>,
    /// `--format`.
    pub format: Format,
}

/// The JSON report: the summary plus derived totals.
#[derive(Serialize)]
struct JsonReport<'a> {
    checked: u64,
    keys_per_sec: f64,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// Runs `verify`.
pub fn run(path: &Path, options: Options) -> Result<u8> {
    let plan = Plan::load(path)?;
    if options.sample == Some(0) {
        return Err(Error::Usage("--sample must be at least 1".into()));
    }
    // Held until the end of the run: the write primary must not change under a repair.
    let _lock = if options.repair {
        let holder = format!("pid {} (verify --repair) {}", std::process::id(), actor());
        let path = StateDir::new(&plan.state_dir).lock_path();
        Some(Lock::acquire(&path, &holder).map_err(anyhow::Error::from)?)
    } else {
        None
    };
    let primary = write_primary(&plan, options.repair)?;
    // What the `verified` gate needs to judge this run fresh: the phase and generation in
    // force, and whether every live proxy had acked it, as the run starts.
    let start = Session::open(plan.clone())
        .ok()
        .map(|s| VerifyStart::observe(&plan, &s.state));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let verify_options = verify::Options {
        sample: options.sample,
        repair: options.repair,
        primary: primary.as_ref().map_or(Side::Old, |p| p.side),
        report: options.report,
    };
    let summary = runtime.block_on(verify::run(&plan, &verify_options))?;
    if let Some(start) = start {
        VerifyRecord::new(start, &summary)
            .save(&plan.state_dir)
            .map_err(|e| anyhow!("writing {}: {e}", crate::gate::VERIFY_FILE))?;
    }
    match options.format {
        Format::Json => output::print_json(&JsonReport {
            checked: summary.checked(),
            keys_per_sec: summary.keys_per_sec().round(),
            summary: &summary,
        })?,
        Format::Table => print_table(&summary),
    }
    if summary.unresolved == 0 {
        return Ok(EXIT_OK);
    }
    let (what, hint) = if summary.repair {
        ("remain after repair", String::new())
    } else {
        let from = primary.map_or("the write primary of the phase in force".to_string(), |p| {
            format!("{} (the write primary in {})", p.side, p.phase)
        });
        (
            "found",
            format!(
                "; `cachemig verify {} --repair` key-syncs them from {from}",
                path.display()
            ),
        )
    };
    Err(Error::Runtime(anyhow!(
        "{} difference(s) between source and target {what} ({}); see {}{hint}",
        summary.unresolved,
        summary.kinds_text(),
        summary.report.display(),
    )))
}

/// The write primary of the phase in force, and that phase's name.
struct Primary {
    side: Side,
    phase: String,
}

/// The write primary the journal says is in force. With `repair` (and the lock held) it must be
/// known and no fence may be in force; without it, `None` when the state cannot be read (only
/// the hint that names the primary depends on it).
fn write_primary(plan: &Plan, repair: bool) -> Result<Option<Primary>> {
    let session = match Session::open(plan.clone()) {
        Ok(s) => s,
        Err(e) if repair => {
            return Err(Error::Runtime(e.context(
                "cannot tell the write primary of the phase in force, so nothing was repaired",
            )));
        }
        Err(_) => return Ok(None),
    };
    if repair {
        super::finalize::refuse_if_finalized(&session, "verify --repair")?;
    }
    let phase = session.phase();
    if repair && session.state.fenced {
        return Err(Error::Runtime(anyhow!(
            "a primary-switch fence is in force at generation {} (proxies hold writes while the write primary changes), so nothing was repaired; if the command that started it died, `cachemig status {} --repair` releases it, then run verify --repair again",
            session.state.generation,
            plan.path.display()
        )));
    }
    Ok(Some(Primary {
        side: phase.routing.write,
        phase: phase.name.clone(),
    }))
}

fn print_table(s: &Summary) {
    let mut t = output::table(&["", "keys"]);
    let mut row = |name: &str, value: String| {
        t.add_row(vec![name.to_string(), value]);
    };
    row("checked source → target", s.source_checked.to_string());
    row("checked target → source", s.target_checked.to_string());
    for kind in Kind::ALL {
        row(&format!("{kind}"), s.kinds.get(kind).to_string());
    }
    row("differences", s.found.to_string());
    row("gone on re-check", s.transient.to_string());
    if s.repair {
        let from = s
            .repair_from
            .map_or(String::new(), |side| format!(" (from {side})"));
        row(&format!("repaired{from}"), s.repaired.to_string());
    }
    row("unresolved", s.unresolved.to_string());
    row(
        "elapsed",
        format!(
            "{:.1}s ({:.0} source keys/s)",
            s.elapsed.as_secs_f64(),
            s.keys_per_sec()
        ),
    );
    println!("{t}");
    if let Some(n) = s.sample {
        println!("sample: about {n} keys per side");
    }
    if !s.examples.is_empty() {
        let mut e = output::table(&["key", "kind", "details"]);
        for d in &s.examples {
            e.add_row(vec![d.key.clone(), d.kind.to_string(), d.details.clone()]);
        }
        println!("{e}");
        if s.found > s.examples.len() as u64 {
            println!("(first {} of {} differences)", s.examples.len(), s.found);
        }
    }
    println!("report: {}", s.report.display());
}
