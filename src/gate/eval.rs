//! Measuring each gate of the catalog.

use chrono::{DateTime, Utc};

use super::bypass::{self, Client};
use super::proxies::ProxyView;
use super::{GateResult, Verdict};
use crate::backfill::{BackfillDir, Progress};
use crate::inspect::NodeSetReport;
use crate::phase::{PhaseSpec, Threshold};
use crate::plan::{OnExisting, Plan, units};
use crate::report::Counters;
use crate::state::State;

/// What an online inspection found; `Err` holds why a side could not be inspected.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The old Redis.
    pub source: Result<NodeSetReport, String>,
    /// The new Redis Cluster.
    pub target: Result<NodeSetReport, String>,
    /// The clients of every old master (`CLIENT LIST`), for the `bypass-writers` gate.
    pub clients: Result<Vec<Client>, String>,
}

/// Everything a gate may look at.
struct Ctx<'a> {
    plan: &'a Plan,
    state: &'a State,
    inspection: Option<&'a Inspection>,
    proxies: Option<&'a ProxyView>,
    now: DateTime<Utc>,
}

/// A measured value and its verdict.
type Measure = (String, Verdict);

/// Gates measured from the proxies' reports.
pub const PROXY_GATES: &[&str] = &[
    "proxies-acked",
    "mirror-error-ratio",
    "mirror-lag",
    "sync-mirror-failures",
    "shadow-samples",
    "shadow-mismatch-ratio",
    "new-error-ratio",
    "fence",
];

/// Whether the step into `phase` has a gate that reads proxy reports.
pub fn needs_proxy_reports(phase: &PhaseSpec) -> bool {
    phase.gates.iter().any(|g| PROXY_GATES.contains(&g.name.as_str()))
}

/// Evaluates every gate of the step into `phase`. `inspection` and `proxies` are `None` when
/// offline (their gates then have no data).
pub fn evaluate(
    plan: &Plan,
    state: &State,
    phase: &PhaseSpec,
    inspection: Option<&Inspection>,
    proxies: Option<&ProxyView>,
    now: DateTime<Utc>,
) -> Vec<GateResult> {
    let cx = Ctx {
        plan,
        state,
        inspection,
        proxies,
        now,
    };
    phase
        .gates
        .iter()
        .map(|spec| {
            let threshold = plan.threshold(&phase.name, &spec.name);
            let (measured, verdict) = measure(&cx, &spec.name, threshold.as_ref());
            GateResult {
                gate: spec.name.clone(),
                description: spec.description.clone(),
                measured,
                threshold: threshold
                    .map(|t| describe_threshold(&spec.name, &t))
                    .unwrap_or_default(),
                verdict,
                skip_reason: None,
            }
        })
        .collect()
}

fn describe_threshold(gate: &str, t: &Threshold) -> String {
    match (gate, t) {
        ("memory-headroom", Threshold::Number(x)) => format!(">= source used x {x}"),
        ("shadow-samples", Threshold::Number(x)) => format!(">= {x}"),
        ("mirror-lag", Threshold::Number(x)) => format!("<= {x} ms"),
        (_, Threshold::Number(x)) => format!("<= {x}"),
        (_, Threshold::Duration(d)) => format!(">= {d}"),
    }
}

/// A count threshold (0 when the gate has none or it is not a number).
fn count_limit(threshold: Option<&Threshold>) -> u64 {
    match threshold {
        Some(Threshold::Number(x)) => *x as u64,
        _ => 0,
    }
}

fn no_data(why: &str) -> Measure {
    (format!("no data: {why}"), Verdict::NoData)
}

fn verdict(ok: bool) -> Verdict {
    if ok { Verdict::Pass } else { Verdict::Blocked }
}

fn measure(cx: &Ctx, gate: &str, threshold: Option<&Threshold>) -> Measure {
    match gate {
        "plan-valid" => ("valid".into(), Verdict::Pass),
        "source-reachable" => reachable(cx.inspection.map(|i| &i.source)),
        "target-reachable" => reachable(cx.inspection.map(|i| &i.target)),
        "target-cluster-ok" => with_target(cx, target_cluster_ok),
        "rdb-compatible" => rdb_compatible(cx),
        "memory-headroom" => memory_headroom(cx, threshold),
        "target-empty" => with_target(cx, |t| target_empty(cx, t, threshold)),
        "proxies-acked" => proxies_acked(cx),
        "soak" => soak(cx, threshold),
        "backfill-complete" => backfill_complete(cx),
        "failed-keys" => failed_keys(cx, threshold),
        "catch-up-clean" => catch_up_clean(cx, threshold),
        "mirror-error-ratio" => with_counters(cx, |c| mirror_error_ratio(c, ratio_limit(threshold))),
        "mirror-lag" => mirror_lag(cx, threshold),
        "sync-mirror-failures" => with_counters(cx, |c| sync_mirror_failures(cx, c, threshold)),
        "shadow-samples" => with_counters(cx, |c| {
            let n = c.shadow_samples;
            (format!("{n} sample(s)"), verdict(n >= count_limit(threshold)))
        }),
        "shadow-mismatch-ratio" => with_counters(cx, |c| shadow_mismatch_ratio(c, ratio_limit(threshold))),
        "new-error-ratio" => with_counters(cx, |c| new_error_ratio(c, ratio_limit(threshold))),
        "fence" => fence(cx),
        "verified" => super::verified::measure(cx.plan, cx.state, count_limit(threshold)),
        "bypass-writers" => bypass_writers(cx, threshold),
        other => no_data(&format!("cachemig does not know how to measure gate `{other}`")),
    }
}

fn reachable(side: Option<&Result<NodeSetReport, String>>) -> Measure {
    match side {
        None => no_data("offline (not inspected)"),
        // Already labelled: UNREACHABLE, AUTHENTICATION FAILED, NOT REDIS, …
        Some(Err(e)) => (e.clone(), Verdict::Blocked),
        Some(Ok(r)) => (format!("{} master(s) answer", r.masters.len()), Verdict::Pass),
    }
}

fn with_target(cx: &Ctx, f: impl Fn(&NodeSetReport) -> Measure) -> Measure {
    match cx.inspection.map(|i| &i.target) {
        None => no_data("offline (not inspected)"),
        Some(Err(_)) => no_data("target unreachable"),
        Some(Ok(t)) => f(t),
    }
}

fn target_cluster_ok(t: &NodeSetReport) -> Measure {
    if !t.cluster_enabled {
        return ("not a cluster (cluster_enabled:0)".into(), Verdict::Blocked);
    }
    let state = t.cluster_state.clone().unwrap_or_else(|| "unknown".into());
    let slots = t.slots_covered.unwrap_or(0);
    (
        format!("cluster_state:{state}, {slots}/16384 slots"),
        verdict(state == "ok" && slots == 16384),
    )
}

fn rdb_compatible(cx: &Ctx) -> Measure {
    let Some(i) = cx.inspection else {
        return no_data("offline (not inspected)");
    };
    let (Ok(s), Ok(t)) = (&i.source, &i.target) else {
        return no_data("source or target not inspected (see the -reachable gates)");
    };
    match (s.max_rdb_version(), t.min_rdb_version()) {
        (Some(src), Some(dst)) => (
            format!("source RDB {src}, target RDB {dst}"),
            verdict(rdb_loadable(src, dst)),
        ),
        _ => no_data("RDB version unknown"),
    }
}

/// Whether a server writing RDB `dst` can RESTORE a payload of RDB `src`. RESTORE refuses newer
/// versions; Valkey 9 (RDB 80) also refuses Redis' RDB 12..=79, which Valkey reserves as foreign.
fn rdb_loadable(src: u16, dst: u16) -> bool {
    dst >= src && !(dst >= 80 && (12..80).contains(&src))
}

fn memory_headroom(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let Some(i) = cx.inspection else {
        return no_data("offline (not inspected)");
    };
    let (Ok(s), Ok(t)) = (&i.source, &i.target) else {
        return no_data("source or target not inspected (see the -reachable gates)");
    };
    let factor = match threshold {
        Some(Threshold::Number(x)) => *x,
        _ => 1.2,
    };
    let used = s.total_used_memory();
    let need = (used as f64 * factor) as u64;
    match t.total_free_memory() {
        // maxmemory 0 means the server has no configured limit: nothing to measure against.
        None => (
            format!("target maxmemory unlimited; source uses {}", mib(used)),
            Verdict::Pass,
        ),
        Some(free) => (
            format!("target free {} vs needed {}", mib(free), mib(need)),
            verdict(free >= need),
        ),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What to do about keys already on new: most often an earlier backfill's copies, which a
/// rollback to `planned` leaves in place (it never deletes on new).
const TARGET_EMPTY_WAY_OUT: &str = "if an earlier backfill copied them (a rollback to planned keeps \
     them), set on_existing = \"replace\" in [backfill] of the plan so the backfill overwrites them \
     from the source (then `cachemig verify PLAN --repair` removes keys deleted on old since), or \
     delete them on new; skipping this gate with on_existing = \"skip\" would keep stale copies";

fn target_empty(cx: &Ctx, t: &NodeSetReport, threshold: Option<&Threshold>) -> Measure {
    let allowed = count_limit(threshold);
    let Some(n) = t.keys_in_range else {
        return no_data("target keys not counted");
    };
    let more = if t.keys_in_range_truncated { "+" } else { "" };
    let sample = if t.sample_keys.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", t.sample_keys.join(", "))
    };
    let measured = format!("{n}{more} key(s) in range{sample}");
    match cx.plan.backfill.on_existing {
        OnExisting::Replace => (format!("{measured}; on_existing = replace"), Verdict::Pass),
        // A truncated count only says "at least n": it passes only if n is below the limit.
        OnExisting::Skip => {
            let ok = n <= allowed && !(t.keys_in_range_truncated && n >= allowed);
            (
                if ok {
                    measured
                } else {
                    format!("{measured}; {TARGET_EMPTY_WAY_OUT}")
                },
                verdict(ok),
            )
        }
    }
}

fn backfill_progress(cx: &Ctx) -> Result<Progress, Measure> {
    match BackfillDir::new(&cx.plan.state_dir).progress() {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(no_data("the backfill never started")),
        Err(e) => Err(no_data(&format!("backfill checkpoints unreadable: {e}"))),
    }
}

fn backfill_complete(cx: &Ctx) -> Measure {
    match backfill_progress(cx) {
        Err(m) => m,
        Ok(p) => (
            format!(
                "{}/{} source node(s) done, {} key(s) copied",
                p.nodes_done, p.nodes, p.counters.copied
            ),
            verdict(p.complete()),
        ),
    }
}

fn failed_keys(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let allowed = count_limit(threshold);
    match backfill_progress(cx) {
        Err(m) => m,
        Ok(p) => (
            format!(
                "{} failed (see {})",
                p.counters.failed,
                BackfillDir::new(&cx.plan.state_dir).dead_letter_path().display()
            ),
            verdict(p.counters.failed <= allowed),
        ),
    }
}

/// The catch-up must have finished after the phase was entered (a record from an earlier pass
/// through phase 2 says nothing about the mirror running now).
fn catch_up_clean(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let allowed = count_limit(threshold);
    match crate::verify::load_catch_up(&cx.plan.state_dir) {
        Err(e) => no_data(&format!("catch-up record unreadable: {e}")),
        Ok(None) => no_data("the catch-up has not run"),
        Ok(Some(r)) if cx.state.entered_at.is_some_and(|t| r.finished_at < t) => {
            no_data("the last catch-up ran before this phase was entered; run `cachemig resume`")
        }
        Ok(Some(r)) => (
            format!(
                "{} unresolved of {} found ({} keys checked, {} repaired)",
                r.unresolved, r.found, r.checked, r.repaired
            ),
            verdict(r.unresolved <= allowed),
        ),
    }
}

/// A ratio threshold (0 when the gate has none).
fn ratio_limit(threshold: Option<&Threshold>) -> f64 {
    match threshold {
        Some(Threshold::Number(x)) => *x,
        _ => 0.0,
    }
}

/// The proxy reports, or why the gate has no data.
fn reports<'a>(cx: &Ctx<'a>) -> Result<&'a ProxyView, Measure> {
    let view = cx
        .proxies
        .ok_or_else(|| no_data("offline (proxy reports not read)"))?;
    match view.unreadable() {
        Some(e) => Err(no_data(&format!("proxy reports unreadable: {e}"))),
        None => Ok(view),
    }
}

/// Runs `f` on the counters summed over the live proxies at the current generation.
fn with_counters(cx: &Ctx, f: impl Fn(&Counters) -> Measure) -> Measure {
    let view = match reports(cx) {
        Ok(v) => v,
        Err(m) => return m,
    };
    match view.current_counters() {
        Some(c) => {
            let (measured, v) = f(&c);
            let n = view.current().len();
            (
                format!(
                    "{measured} over {n} live proxy(ies) at generation {}",
                    view.generation
                ),
                v,
            )
        }
        None => no_data(&format!(
            "no live proxy reports at generation {} ({} report(s) in all)",
            view.generation,
            view.all().len()
        )),
    }
}

/// A failed sync is a write acknowledged while new lacked it until its repair; the counters do
/// not say which key, so the way out is a clean verify and an explicit, journaled override.
fn sync_mirror_failures(cx: &Ctx, c: &Counters, threshold: Option<&Threshold>) -> Measure {
    let n = c.sync_mirror_failures;
    let ok = n <= count_limit(threshold);
    let hint = if ok {
        String::new()
    } else {
        let plan = cx.plan.path.display();
        format!(
            "; the keys were marked for repair: once `cachemig verify {plan}` is clean, `cachemig advance {plan} --skip-gate sync-mirror-failures --reason TEXT` records the override"
        )
    };
    (format!("{n} failed sync mirror(s){hint}"), verdict(ok))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn mirror_error_ratio(c: &Counters, limit: f64) -> Measure {
    let syncs = c.mirror_ok + c.mirror_errors;
    if syncs == 0 {
        return ("ratio 0 (0 syncs)".into(), Verdict::Pass);
    }
    let r = ratio(c.mirror_errors, syncs);
    (
        format!("ratio {r:.6} ({} failed of {syncs} syncs)", c.mirror_errors),
        verdict(r <= limit),
    )
}

fn shadow_mismatch_ratio(c: &Counters, limit: f64) -> Measure {
    if c.shadow_samples == 0 {
        return no_data("0 shadow samples");
    }
    let r = ratio(c.shadow_mismatches, c.shadow_samples);
    (
        format!(
            "ratio {r:.6} ({} mismatch(es) of {} samples)",
            c.shadow_mismatches, c.shadow_samples
        ),
        verdict(r <= limit),
    )
}

/// With no request served by new there is no evidence that new serves well: no data.
fn new_error_ratio(c: &Counters, limit: f64) -> Measure {
    if c.new_requests == 0 {
        return no_data("0 requests served by new");
    }
    let r = ratio(c.new_errors, c.new_requests);
    (
        format!(
            "ratio {r:.6} ({} error(s) of {} requests on new)",
            c.new_errors, c.new_requests
        ),
        verdict(r <= limit),
    )
}

fn mirror_lag(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let view = match reports(cx) {
        Ok(v) => v,
        Err(m) => return m,
    };
    let current = view.current();
    let Some(worst) = current.iter().max_by_key(|r| r.mirror_lag_ms) else {
        return no_data(&format!(
            "no live proxy reports at generation {}",
            view.generation
        ));
    };
    let limit = count_limit(threshold);
    (
        format!(
            "max {} ms ({}, queue depth {})",
            worst.mirror_lag_ms, worst.id, worst.mirror_queue_depth
        ),
        verdict(worst.mirror_lag_ms <= limit),
    )
}

fn proxies_acked(cx: &Ctx) -> Measure {
    let expected = cx.plan.proxies.expected;
    if expected == 0 {
        return (
            "0 proxies expected ([proxies] expected = 0)".into(),
            Verdict::Pass,
        );
    }
    let view = match reports(cx) {
        Ok(v) => v,
        Err(m) => return m,
    };
    if view.live().is_empty() {
        return no_data(&format!(
            "no live proxy reports ({expected} expected, {} report(s) in all)",
            view.all().len()
        ));
    }
    let generation = cx.state.generation;
    let acks = view.acks(generation, false);
    (
        acks.describe(expected, &format!("live at generation {generation}")),
        verdict(acks.enough(expected)),
    )
}

/// Measured before the switch: whether a fence can be acked now (it blocks early when fewer
/// proxies than expected are live, or a report cannot be read, instead of holding writes for
/// nothing). The fence then needs every live proxy to drain, not just `expected` of them.
/// `advance` replaces this result with the fence's outcome.
fn fence(cx: &Ctx) -> Measure {
    let expected = cx.plan.proxies.expected;
    if expected == 0 {
        return (
            "0 proxies expected: the primary switches directly, without a fence".into(),
            Verdict::Pass,
        );
    }
    let view = match reports(cx) {
        Ok(v) => v,
        Err(m) => return m,
    };
    let live: Vec<String> = view
        .live()
        .iter()
        .map(|r| format!("{} at generation {}", r.id, r.generation))
        .collect();
    let pause = units::format_duration(cx.plan.proxies.max_write_pause);
    let acks = view.acks(0, false);
    let list =
        |items: &[crate::gate::Pending]| items.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    if !acks.blocking.is_empty() {
        return (
            format!("cannot fence: {}", list(&acks.blocking)),
            Verdict::Blocked,
        );
    }
    if live.len() < expected as usize {
        return (
            format!(
                "cannot fence: {} of {expected} expected proxies live{}",
                live.len(),
                if acks.missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", list(&acks.missing))
                }
            ),
            Verdict::Blocked,
        );
    }
    (
        format!(
            "will fence now (writes held at most {pause}, until every live proxy drained); live: {}",
            live.join(", ")
        ),
        Verdict::Pass,
    )
}

/// Clients on old outside cachemig that issued a command while the phase was in force.
fn bypass_writers(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let Some(i) = cx.inspection else {
        return no_data("offline (not inspected)");
    };
    let clients = match &i.clients {
        Ok(c) => c,
        Err(e) => return no_data(&format!("CLIENT LIST on old failed: {e}")),
    };
    let Some(since) = cx.state.entered_at else {
        return no_data("phase entry time unknown");
    };
    let in_force = (cx.now - since).to_std().unwrap_or_default();
    let plan = cx.plan.path.display().to_string();
    bypass::measure(clients, in_force, count_limit(threshold), &plan)
}

fn soak(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let Some(Threshold::Duration(text)) = threshold else {
        return no_data("no soak threshold");
    };
    let Ok(need) = units::parse_duration(text) else {
        return no_data("bad soak threshold");
    };
    let Some(since) = cx.state.entered_at else {
        return no_data("phase entry time unknown");
    };
    let elapsed = (cx.now - since).to_std().unwrap_or_default();
    let shown = units::format_duration(std::time::Duration::from_secs(elapsed.as_secs()));
    (
        format!("{} in force for {shown}", cx.state.phase),
        verdict(elapsed >= need),
    )
}

#[cfg(test)]
mod tests;
