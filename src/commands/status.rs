//! `cachemig status PLAN [--format table|json] [--repair | --watch [--interval SECS]]`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::Format;
use crate::error::{EXIT_OK, Result};
use crate::gate::{GateResult, Pending, ProxyView};
use crate::layout::{self, Grid, Screen};
use crate::output;
use crate::phase::{Catalog, Routing};
use crate::plan::{Plan, units};
use crate::report::FenceState;
use crate::session::{Drift, Session};
use crate::state::{Entry, Finalized, Override};

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
    /// Whether the generation in force is a fence (a primary switch is under way).
    fenced: bool,
    /// When, by whom and why the migration was finalized (`null` until then).
    finalized: Option<Finalized>,
    proxies: Proxies,
    /// The gates of the step into `next`, measured now (what `advance --dry-run` would say);
    /// among them, before `read-cutover` and `write-stop`, `bypass-writers` and `verified`.
    next_gates: Vec<GateResult>,
}

/// The `proxies` section: what the proxies reported (docs/cli.md).
#[derive(Debug, Serialize)]
struct Proxies {
    expected: u32,
    heartbeat_timeout: String,
    /// Why the reports could not be read (e.g. the target is unreachable); `null` when read.
    error: Option<String>,
    /// Live proxies at the current generation.
    acked: usize,
    /// Proxies that block acks of the current generation (drained, while fenced): live ones
    /// behind it, and reports that do not parse. Every live proxy must ack, not only `expected`.
    blocking: Vec<Pending>,
    reports: Vec<ProxyRow>,
    /// Report fields that did not parse.
    unparsable: Vec<Unparsable>,
    /// The hottest keys over every live proxy (counts summed per key), hottest first, at most 10.
    hot_keys: Vec<HotKeyRow>,
}

#[derive(Debug, Serialize)]
struct ProxyRow {
    id: String,
    live: bool,
    /// Missing for more than [`GONE_AFTER_HEARTBEATS`] heartbeat timeouts: a proxy killed (or
    /// stopped with keys left unmirrored) long ago. The table leaves it out; the report itself
    /// expires a day after its last write.
    gone: bool,
    age_ms: u64,
    generation: u64,
    phase: String,
    fence: FenceState,
    qps: f64,
    mirror_queue_depth: u64,
    mirror_lag_ms: u64,
    dirty_keys: u64,
    shadow_samples: u64,
    shadow_mismatches: u64,
    last_error: Option<String>,
    flag_error: Option<String>,
    /// Why the proxy refuses writes as stale (behind the generation beacon), if it does.
    stale: Option<String>,
}

#[derive(Debug, Serialize)]
struct Unparsable {
    id: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct HotKeyRow {
    key: String,
    count: u64,
}

/// A report missing for this many heartbeat timeouts drops out of the table (a proxy that stops
/// cleanly removes its report at once; this is for the ones that could not).
const GONE_AFTER_HEARTBEATS: u32 = 10;

fn proxies(view: &ProxyView, plan: &Plan, fenced: bool) -> Proxies {
    let gone_ms = (plan.proxies.heartbeat_timeout * GONE_AFTER_HEARTBEATS).as_millis() as u64;
    let mut hot: BTreeMap<&str, u64> = BTreeMap::new();
    for r in view.live() {
        for k in &r.hot_keys {
            *hot.entry(k.key.as_str()).or_default() += k.count;
        }
    }
    let mut hot_keys: Vec<HotKeyRow> = hot
        .into_iter()
        .map(|(key, count)| HotKeyRow {
            key: key.to_string(),
            count,
        })
        .collect();
    hot_keys.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    hot_keys.truncate(10);
    Proxies {
        expected: plan.proxies.expected,
        heartbeat_timeout: units::format_duration(plan.proxies.heartbeat_timeout),
        error: view.unreadable().map(str::to_string),
        acked: view.current().len(),
        blocking: view.acks(view.generation, fenced).blocking,
        reports: view
            .all()
            .iter()
            .map(|r| ProxyRow {
                id: r.id.clone(),
                live: view.is_live(r),
                gone: r.age_ms(view.now_ms) > gone_ms,
                age_ms: r.age_ms(view.now_ms),
                generation: r.generation,
                phase: r.phase.clone(),
                fence: r.fence,
                qps: r.qps,
                mirror_queue_depth: r.mirror_queue_depth,
                mirror_lag_ms: r.mirror_lag_ms,
                dirty_keys: r.dirty_keys,
                shadow_samples: r.counters.shadow_samples,
                shadow_mismatches: r.counters.shadow_mismatches,
                last_error: r.last_error.clone(),
                flag_error: r.flag_error.clone(),
                stale: r.stale.clone(),
            })
            .collect(),
        unparsable: view
            .unparsable
            .iter()
            .map(|(id, error)| Unparsable {
                id: id.clone(),
                error: error.clone(),
            })
            .collect(),
        hot_keys,
    }
}

/// Runs `status`: once, or with `watch` a fresh report every interval until Ctrl-C. Read-only
/// unless `--repair`.
pub fn run(path: &Path, format: Format, repair: bool, watch: Option<Duration>) -> Result<u8> {
    if let Some(interval) = watch {
        let json = format == Format::Json;
        return super::watch::run(interval, json, |width| frame(path, format, width));
    }
    let report = report(path, repair)?;
    match format {
        Format::Json => output::print_json(&report)?,
        Format::Table => print!("{}", render(&report, layout::detect_width())),
    }
    Ok(EXIT_OK)
}

/// One frame of `--watch`: the table fitted to `width`, or the JSON report on one line.
fn frame(path: &Path, format: Format, width: usize) -> Result<String> {
    let report = report(path, false)?;
    Ok(match format {
        Format::Json => serde_json::to_string(&report).map_err(anyhow::Error::from)?,
        Format::Table => render(&report, width),
    })
}

/// The report now (repairing drift first when `repair`).
fn report(path: &Path, repair: bool) -> Result<StatusReport> {
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
        fenced: s.fenced,
        finalized: s.finalized.clone(),
        proxies: proxies(
            &ProxyView::load_blocking(&session.plan, s.generation),
            &session.plan,
            s.fenced,
        ),
        next_gates: match catalog.next(&s.phase) {
            Some(next) => super::advance::evaluate_step(&session, next)?,
            None => Vec::new(),
        },
    };
    Ok(report)
}

/// The report as the operator reads it, fitted to `width` columns.
fn render(r: &StatusReport, width: usize) -> String {
    let mut s = Screen::new(width);
    let dash = || "-".to_string();
    let mut head = Grid::new(&[
        "migration",
        "phase",
        "generation",
        "in force for",
        "next",
        "rollback to",
    ]);
    head.row(vec![
        r.migration.clone(),
        r.phase.clone(),
        r.generation.to_string(),
        r.in_force_for.clone().unwrap_or_else(dash),
        r.next.clone().unwrap_or_else(dash),
        r.previous.clone().unwrap_or_else(dash),
    ]);
    s.table("", &head);
    let rt = &r.routing;
    s.line(format!(
        "routing: read {}, write {}, mirror {}, shadow_read {}, fence {}",
        rt.read, rt.write, rt.mirror, rt.shadow_read, rt.fence
    ));
    s.line(format!(
        "flag file {}: {}",
        r.flag_file,
        r.flag_generation_on_disk
            .map_or("absent (= planned)".to_string(), |g| format!("generation {g}"))
    ));
    if r.fenced {
        s.line(format!(
            "FENCE in force at generation {}: proxies hold writes for a primary switch (a dead command's fence is released by `cachemig status PLAN --repair`)",
            r.generation
        ));
    }
    if let Some(f) = &r.finalized {
        println!(
            "FINALIZED at {} by {}{}: new serves every read and write, old is no longer written; no command changes this migration any more",
            f.time.format("%Y-%m-%d %H:%M:%SZ"),
            f.user,
            f.reason
                .as_deref()
                .map_or(String::new(), |r| format!(" (reason: {r})"))
        );
    }
    if r.plan_changed_since_last_step {
        s.line("note: the plan file changed since the last step");
    }
    for d in &r.repaired {
        s.line(format!("repaired {}: {}", d.file, d.detail));
    }
    for d in &r.drift {
        s.line(format!(
            "DRIFT {}: {} — run `cachemig status PLAN --repair` (the journal wins)",
            d.file, d.detail
        ));
    }
    if !r.overrides.is_empty() {
        let mut t = Grid::new(&["skipped gate", "entering", "measured then", "reason", "by", "at"]);
        for o in &r.overrides {
            t.row(vec![
                o.gate.clone(),
                o.phase.clone(),
                o.measured.clone(),
                o.reason.clone(),
                o.user.clone(),
                o.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]);
        }
        s.table("gate overrides:", &t);
    }
    render_proxies(&mut s, &r.proxies);
    render_next_gates(&mut s, r);
    if !r.recent.is_empty() {
        let mut t = Grid::new(&["seq", "time", "user", "gen", "event"]);
        for e in &r.recent {
            t.row(vec![
                e.seq.to_string(),
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.user.clone(),
                e.generation.to_string(),
                describe(&e.event),
            ]);
        }
        s.table("recent journal entries (full text: --format json):", &t);
    }
    s.finish()
}

fn describe(e: &crate::state::Event) -> String {
    use crate::state::Event;
    match e {
        Event::Transition {
            kind,
            from,
            to,
            reason,
            ..
        } => {
            let why = reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
            format!("{} {from} -> {to}{why}", format!("{kind:?}").to_lowercase())
        }
        Event::Gates { phase, passed, .. } => format!(
            "gates into {phase}: {}",
            if *passed { "passed" } else { "blocked" }
        ),
        Event::Override {
            phase, gate, reason, ..
        } => format!("skipped gate {gate} into {phase}: {reason}"),
        Event::Fence {
            stage,
            phase,
            toward,
            detail,
        } => {
            let stage = serde_json::to_string(stage).unwrap_or_default();
            format!(
                "fence {} ({phase} -> {toward}): {detail}",
                stage.trim_matches('"')
            )
        }
        Event::Repair { detail } => format!("repaired {detail}"),
        Event::Action {
            action,
            outcome,
            detail,
        } => format!("{action} {outcome}: {detail}"),
    }
}

/// The gates of the next step; the bypass check gets a line of its own, since a writer that
/// bypasses the proxies is the one problem no proxy report shows.
fn render_next_gates(s: &mut Screen, r: &StatusReport) {
    let Some(next) = &r.next else { return };
    if let Some(b) = r.next_gates.iter().find(|g| g.gate == "bypass-writers") {
        s.line(format!("bypass ({}): {}", b.verdict, b.measured));
    }
    if !r.next_gates.is_empty() {
        s.table(
            format!("gates into {next} (now):"),
            &output::gates_grid(&r.next_gates),
        );
    }
    if Catalog::builtin().get(next).is_some_and(|p| p.terminal) {
        println!(
            "{next} is entered only by `cachemig finalize PLAN --confirm {}` (irreversible)",
            r.migration
        );
    }
}

fn render_proxies(s: &mut Screen, p: &Proxies) {
    let head = format!(
        "proxies: {} expected, {} live at the current generation (heartbeat timeout {})",
        p.expected, p.acked, p.heartbeat_timeout
    );
    if let Some(e) = &p.error {
        s.line(head);
        s.line(format!("proxy reports unavailable: {e}"));
        return;
    }
    if p.reports.is_empty() && p.unparsable.is_empty() {
        s.line(format!("{head}; no proxy has reported"));
        return;
    }
    let mut t = Grid::new(&[
        "proxy",
        "state",
        "gen",
        "phase",
        "fence",
        "qps",
        "mirror queue",
        "lag ms",
        "dirty",
        "shadow",
        "errors",
    ]);
    for r in p.reports.iter().filter(|r| !r.gone) {
        t.row(proxy_row(r));
    }
    if t.is_empty() {
        s.line(head);
    } else {
        s.table(head, &t);
    }
    let gone: Vec<&str> = p
        .reports
        .iter()
        .filter(|r| r.gone)
        .map(|r| r.id.as_str())
        .collect();
    if !gone.is_empty() {
        s.line(format!(
            "not shown: {} proxy report(s) missing for over {GONE_AFTER_HEARTBEATS} heartbeat timeouts ({}): killed, or stopped with keys unmirrored; the report expires a day after its last write (--format json lists them)",
            gone.len(),
            gone.join(", ")
        ));
    }
    if !p.blocking.is_empty() {
        let names: Vec<String> = p.blocking.iter().map(Pending::to_string).collect();
        s.line(format!(
            "BLOCKING acks: {} (every live proxy must ack the generation in force, not only the {} expected)",
            names.join(", "),
            p.expected
        ));
    }
    for u in &p.unparsable {
        s.line(format!("unparsable report from {}: {}", u.id, u.error));
    }
    if !p.hot_keys.is_empty() {
        let mut t = Grid::new(&["hot key", "requests"]);
        for k in &p.hot_keys {
            t.row(vec![k.key.clone(), k.count.to_string()]);
        }
        s.table("hot keys (all live proxies):", &t);
    }
}

fn proxy_row(r: &ProxyRow) -> Vec<String> {
    let state = match (r.live, &r.stale) {
        (false, _) => "missing",
        (true, Some(_)) => "STALE",
        (true, None) => "live",
    };
    let errors: Vec<String> = [
        ("stale", &r.stale),
        ("last", &r.last_error),
        ("flag", &r.flag_error),
    ]
    .iter()
    .filter_map(|(what, e)| e.as_ref().map(|e| format!("{what}: {e}")))
    .collect();
    vec![
        r.id.clone(),
        format!("{state} ({:.1}s ago)", r.age_ms as f64 / 1000.0),
        r.generation.to_string(),
        r.phase.clone(),
        serde_json::to_string(&r.fence)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        format!("{:.1}", r.qps),
        r.mirror_queue_depth.to_string(),
        r.mirror_lag_ms.to_string(),
        r.dirty_keys.to_string(),
        format!("{}/{} mismatched", r.shadow_mismatches, r.shadow_samples),
        if errors.is_empty() {
            "-".into()
        } else {
            errors.join("; ")
        },
    ]
}
