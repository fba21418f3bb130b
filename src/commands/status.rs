//! `cachemig status PLAN [--format table|json] [--repair]`

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::Format;
use crate::error::{EXIT_OK, Result};
use crate::output;
use crate::phase::{Catalog, Routing};
use crate::plan::{Plan, units};
use crate::session::{Drift, Session};
use crate::state::{Entry, Override};

/// The stable JSON report of `status` (documented in docs/cli.md).
#[derive(Debug, Serialize)]
struct StatusReport {
    migration: String,
    phase: String,
    generation: u64,
    routing: Routing,
    entered_at: Option<DateTime<Utc>>,
    in_force_for: Option<String>,
    next: Option<String>,
    previous: Option<String>,
    flag_file: String,
    flag_generation_on_disk: Option<u64>,
    plan_changed_since_last_step: bool,
    drift: Vec<Drift>,
    repaired: Vec<Drift>,
    overrides: Vec<Override>,
    recent: Vec<Entry>,
}

/// Runs `status`. Read-only unless `--repair`.
pub fn run(path: &Path, format: Format, repair: bool) -> Result<u8> {
    let plan = Plan::load(path)?;
    let session = Session::open(plan)?;
    let session = if repair {
        session.lock("status --repair")?
    } else {
        session
    };
    let repaired = session.repaired.clone();
    let catalog = Catalog::builtin();
    let s = &session.state;
    let entries = session.journal.entries();
    let report = StatusReport {
        migration: s.migration.clone(),
        phase: s.phase.clone(),
        generation: s.generation,
        routing: session.phase().routing,
        entered_at: s.entered_at,
        in_force_for: s.entered_at.map(|t| {
            units::format_duration(std::time::Duration::from_secs(
                (Utc::now() - t).num_seconds().max(0) as u64,
            ))
        }),
        next: catalog.next(&s.phase).map(|p| p.name.clone()),
        previous: catalog.previous(&s.phase).map(|p| p.name.clone()),
        flag_file: session.plan.flag_file.display().to_string(),
        flag_generation_on_disk: session.flag_on_disk.as_ref().map(|f| f.generation),
        plan_changed_since_last_step: s
            .plan_sha256
            .as_ref()
            .is_some_and(|sha| *sha != session.plan.sha256),
        drift: session.drift.clone(),
        repaired,
        overrides: s.overrides.clone(),
        recent: entries[entries.len().saturating_sub(10)..].to_vec(),
    };
    match format {
        Format::Json => output::print_json(&report)?,
        Format::Table => print_table(&report),
    }
    Ok(EXIT_OK)
}

fn print_table(r: &StatusReport) {
    let mut t = output::table(&[
        "migration",
        "phase",
        "generation",
        "in force for",
        "next",
        "rollback to",
    ]);
    let dash = || "-".to_string();
    t.add_row(vec![
        r.migration.clone(),
        r.phase.clone(),
        r.generation.to_string(),
        r.in_force_for.clone().unwrap_or_else(dash),
        r.next.clone().unwrap_or_else(dash),
        r.previous.clone().unwrap_or_else(dash),
    ]);
    println!("{t}");
    let rt = &r.routing;
    println!(
        "routing: read {}, write {}, mirror {}, shadow_read {}, fence {}",
        rt.read, rt.write, rt.mirror, rt.shadow_read, rt.fence
    );
    println!(
        "flag file {}: {}",
        r.flag_file,
        r.flag_generation_on_disk
            .map_or("absent (= planned)".to_string(), |g| format!("generation {g}"))
    );
    if r.plan_changed_since_last_step {
        println!("note: the plan file changed since the last step");
    }
    for d in &r.repaired {
        println!("repaired {}: {}", d.file, d.detail);
    }
    for d in &r.drift {
        println!(
            "DRIFT {}: {} — run `cachemig status PLAN --repair` (the journal wins)",
            d.file, d.detail
        );
    }
    if !r.overrides.is_empty() {
        let mut t = output::table(&["skipped gate", "entering", "measured then", "reason", "by", "at"]);
        for o in &r.overrides {
            t.add_row(vec![
                o.gate.clone(),
                o.phase.clone(),
                o.measured.clone(),
                o.reason.clone(),
                o.user.clone(),
                o.time.to_rfc3339(),
            ]);
        }
        println!("gate overrides:\n{t}");
    }
    if !r.recent.is_empty() {
        let mut t = output::table(&["seq", "time", "user", "gen", "event"]);
        for e in &r.recent {
            t.add_row(vec![
                e.seq.to_string(),
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.user.clone(),
                e.generation.to_string(),
                describe(&e.event),
            ]);
        }
        println!("recent journal entries:\n{t}");
    }
}

fn describe(e: &crate::state::Event) -> String {
    use crate::state::Event;
    match e {
        Event::Transition { kind, from, to, .. } => format!("{kind:?} {from} -> {to}").to_lowercase(),
        Event::Gates { phase, passed, .. } => format!(
            "gates into {phase}: {}",
            if *passed { "passed" } else { "blocked" }
        ),
        Event::Override {
            phase, gate, reason, ..
        } => format!("skipped gate {gate} into {phase}: {reason}"),
        Event::Repair { detail } => format!("repaired {detail}"),
        Event::Action {
            action,
            outcome,
            detail,
        } => format!("{action} {outcome}: {detail}"),
    }
}
