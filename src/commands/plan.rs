//! `cachemig plan PLAN [--offline] [--format table|json] [--detailed-exitcode]` — read-only.

use std::path::Path;

use serde::Serialize;

use crate::cli::Format;
use crate::error::{EXIT_BLOCKED, EXIT_OK, EXIT_READY, Result};
use crate::flags::{self, FieldChange};
use crate::gate::{self, GateResult, Inspection};
use crate::inspect::NodeSetReport;
use crate::output;
use crate::phase::{Catalog, Routing};
use crate::plan::Plan;
use crate::session::{Drift, Session};
use crate::state::Finalized;

/// The stable JSON report of `plan` (documented in docs/cli.md).
#[derive(Debug, Serialize)]
struct PlanReport {
    migration: String,
    plan_file: String,
    plan_sha256: String,
    state_dir: String,
    flag_file: String,
    offline: bool,
    /// Things worth knowing that do not make the plan invalid (offline: a secret's variable not
    /// set here).
    notes: Vec<String>,
    current: Current,
    /// When, by whom and why the migration was finalized (`null` until then).
    finalized: Option<Finalized>,
    next: Option<Next>,
    gates: Vec<GateResult>,
    ready: bool,
    flag_diff: Vec<FieldChange>,
    source: Option<Side>,
    target: Option<Side>,
    /// How the backfill, catch-up and repairs will copy keys old → new, and why (online, both
    /// sides inspected, or forced by the plan).
    copy_mode: Option<crate::server::Choice>,
    /// The same new → old: repairs in `write-stop` and the reverse mirror copy this way.
    reverse_copy_mode: Option<crate::server::Choice>,
    drift: Vec<Drift>,
}

#[derive(Debug, Serialize)]
struct Current {
    phase: String,
    generation: u64,
}

#[derive(Debug, Serialize)]
struct Next {
    /// Whether only `cachemig finalize` enters it (the terminal phase).
    terminal: bool,
    phase: String,
    generation: u64,
    routing: Routing,
    action: String,
}

/// One side's inspection: the report, or why it failed.
#[derive(Debug, Serialize)]
struct Side {
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<NodeSetReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<&Result<NodeSetReport, String>> for Side {
    fn from(r: &Result<NodeSetReport, String>) -> Side {
        match r {
            Ok(report) => Side {
                report: Some(report.clone()),
                error: None,
            },
            Err(e) => Side {
                report: None,
                error: Some(e.clone()),
            },
        }
    }
}

/// Runs `plan`.
pub fn run(path: &Path, offline: bool, format: Format, detailed_exitcode: bool) -> Result<u8> {
    let (plan, notes) = if offline {
        Plan::load_offline(path)?
    } else {
        (Plan::load(path)?, Vec::new())
    };
    for warning in plan.warnings() {
        eprintln!("{warning}");
    }
    let session = Session::open(plan)?;
    let inspection: Option<Inspection> = if offline {
        None
    } else {
        Some(super::inspect(&session.plan)?)
    };
    let next = Catalog::builtin().next(&session.state.phase);
    let generation = session.state.generation + 1;
    let proxies = next
        .filter(|n| !offline && gate::needs_proxy_reports(n))
        .map(|_| gate::ProxyView::load_blocking(&session.plan, session.state.generation));
    let gates = next.map_or_else(Vec::new, |n| {
        gate::evaluate(
            &session.plan,
            &session.state,
            n,
            inspection.as_ref(),
            proxies.as_ref(),
            chrono::Utc::now(),
        )
    });
    let flag_diff = next.map_or_else(Vec::new, |n| {
        flags::diff(
            session.flag_on_disk.as_ref(),
            &session.flag_for(generation, n, &session.plan.sha256),
        )
    });
    let p = &session.plan;
    let report = PlanReport {
        migration: p.name.clone(),
        plan_file: p.path.display().to_string(),
        plan_sha256: p.sha256.clone(),
        state_dir: p.state_dir.display().to_string(),
        flag_file: p.flag_file.display().to_string(),
        offline,
        notes,
        current: Current {
            phase: session.state.phase.clone(),
            generation: session.state.generation,
        },
        finalized: session.state.finalized.clone(),
        next: next.map(|n| Next {
            terminal: n.terminal,
            phase: n.name.clone(),
            generation,
            routing: n.routing,
            action: n.action.to_string(),
        }),
        ready: next.is_some() && gate::all_allow(&gates),
        gates,
        flag_diff,
        source: inspection.as_ref().map(|i| Side::from(&i.source)),
        target: inspection.as_ref().map(|i| Side::from(&i.target)),
        copy_mode: copy_mode(p, inspection.as_ref(), false),
        reverse_copy_mode: copy_mode(p, inspection.as_ref(), true),
        drift: session.drift.clone(),
    };
    match format {
        Format::Json => output::print_json(&report)?,
        Format::Table => print_table(&report),
    }
    Ok(match (detailed_exitcode, &report.next, report.ready) {
        (false, _, _) | (true, None, _) => EXIT_OK,
        (true, Some(_), true) => EXIT_READY,
        (true, Some(_), false) => EXIT_BLOCKED,
    })
}

/// The copy mode old → new (`reverse`: new → old): forced by the plan, or from both sides' RDB
/// versions.
fn copy_mode(plan: &Plan, inspection: Option<&Inspection>, reverse: bool) -> Option<crate::server::Choice> {
    match inspection.map(|i| (&i.source, &i.target)) {
        Some((Ok(s), Ok(t))) if reverse => crate::server::choose(plan.backfill.copy_mode, t, s),
        Some((Ok(s), Ok(t))) => crate::server::choose(plan.backfill.copy_mode, s, t),
        _ => crate::server::copy_mode::choose_rdb(plan.backfill.copy_mode, None, None),
    }
}

fn print_table(r: &PlanReport) {
    println!("plan {} is valid: migration {}", r.plan_file, r.migration);
    println!("  state_dir {}   flag_file {}", r.state_dir, r.flag_file);
    for note in &r.notes {
        println!("note: {note}");
    }
    for (name, side) in [("source", &r.source), ("target", &r.target)] {
        match side {
            None => println!("{name}: not inspected (--offline)"),
            Some(Side { error: Some(e), .. }) => println!("{name}: {e}"),
            Some(Side {
                report: Some(rep), ..
            }) => print_side(name, rep),
            Some(_) => {}
        }
    }
    let directions = [
        ("copy mode", &r.copy_mode, "old → new, from async-dual-write"),
        (
            "copy mode new → old (write-stop)",
            &r.reverse_copy_mode,
            "new → old, in write-stop",
        ),
    ];
    for (label, choice, mirrored) in directions {
        let Some(c) = choice else { continue };
        println!("{label}: {} ({})", c.mode, c.reason);
        if c.mode == crate::server::CopyMode::ByType {
            println!(
                "note: the proxies' mirror copies {mirrored} by type too, and refuses the hash-field \
                 TTL commands (HEXPIRE, HTTL, …) until finalized: a copy by type does not carry them"
            );
        }
    }
    for d in &r.drift {
        println!(
            "drift: {}: {} (the next advance/rollback, or `status --repair`, rewrites it from the journal)",
            d.file, d.detail
        );
    }
    println!(
        "current phase: {} (generation {})",
        r.current.phase, r.current.generation
    );
    if let Some(f) = &r.finalized {
        println!(
            "finalized at {} by {}{}: new serves everything; no command changes this migration any more",
            f.time.format("%Y-%m-%d %H:%M:%SZ"),
            f.user,
            f.reason.as_deref().map_or(String::new(), |r| format!(" ({r})"))
        );
    }
    let Some(next) = &r.next else {
        println!("no next phase: the migration is at its last phase");
        return;
    };
    println!(
        "next phase: {} (generation {}), entry action: {}",
        next.phase, next.generation, next.action
    );
    println!("{}", output::gates_table(&r.gates));
    println!(
        "flag-file change on advance:\n{}",
        output::diff_table(&r.flag_diff)
    );
    if r.ready && next.terminal {
        println!(
            "ready: `cachemig finalize {} --confirm {}` would apply this irreversible step",
            r.plan_file, r.migration
        );
    } else if r.ready {
        println!(
            "ready: `cachemig advance {} --phase {}` would apply this step",
            r.plan_file, next.phase
        );
    } else {
        println!("blocked: {}", output::blocking_summary(&r.gates));
    }
}

fn print_side(name: &str, rep: &NodeSetReport) {
    let kind = if rep.cluster_enabled {
        "cluster"
    } else {
        "standalone"
    };
    let mut t = output::table(&["node", "version", "rdb", "used memory", "maxmemory", "keys"]);
    for m in &rep.masters {
        let rdb = m.rdb_version.map_or("?".to_string(), |v| v.to_string());
        t.add_row(vec![
            m.addr.clone(),
            m.redis_version.clone(),
            rdb,
            m.used_memory.to_string(),
            m.maxmemory.to_string(),
            m.dbsize.to_string(),
        ]);
    }
    let mut extra = String::new();
    if let Some(state) = &rep.cluster_state {
        extra.push_str(&format!(", cluster_state:{state}"));
    }
    if let Some(slots) = rep.slots_covered {
        extra.push_str(&format!(", {slots}/16384 slots"));
    }
    if let Some(n) = rep.keys_in_range {
        extra.push_str(&format!(
            ", {n}{} key(s) in the migrated range",
            if rep.keys_in_range_truncated { "+" } else { "" }
        ));
    }
    println!("{name}: {kind}, {} master(s){extra}\n{t}", rep.masters.len());
    if rep.role == "target" {
        for m in rep.masters.iter().filter(|m| m.may_evict()) {
            println!(
                "warning: target master {} has maxmemory {} with maxmemory-policy {}: when full it evicts migrated keys and nothing reports them lost; use noeviction (or enough memory) for the migration",
                m.addr, m.maxmemory, m.maxmemory_policy
            );
        }
    }
}
