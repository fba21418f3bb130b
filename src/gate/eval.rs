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
    /// The phase the step enters (whose gates these are).
    to: &'a str,
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
    "reverse-mirror-drained",
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
        to: &phase.name,
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
        "source-reachable" => reachable(cx, cx.inspection.map(|i| &i.source)),
        "target-reachable" => reachable(cx, cx.inspection.map(|i| &i.target)),
        "target-cluster-ok" => with_target(cx, target_cluster_ok),
        "rdb-compatible" => rdb_compatible(cx),
        "memory-headroom" => memory_headroom(cx, threshold),
        "target-empty" => with_target(cx, |t| target_empty(cx, t, threshold)),
        "proxies-acked" => proxies_acked(cx),
        "soak" => soak(cx, threshold),
        "backfill-complete" => backfill_complete(cx),
        "failed-keys" => failed_keys(cx, threshold),
        "catch-up-clean" => catch_up_clean(cx, threshold),
        "mirror-error-ratio" => with_counters(cx, |c| mirror_error_ratio(cx, c, ratio_limit(threshold))),
        "mirror-lag" => mirror_lag(cx, threshold),
        "sync-mirror-failures" => with_counters(cx, |c| sync_mirror_failures(cx, c, threshold)),
        "shadow-samples" => with_counters(cx, |c| shadow_samples(c, count_limit(threshold))),
        "shadow-mismatch-ratio" => {
            with_counters(cx, |c| shadow_mismatch_ratio(cx, c, ratio_limit(threshold)))
        }
        "new-error-ratio" => with_counters(cx, |c| new_error_ratio(cx, c, ratio_limit(threshold))),
        "fence" => fence_ready(cx.plan, cx.proxies),
        "reverse-mirror-drained" => super::drained::measure(cx.plan, cx.state, cx.proxies),
        "verified" => super::verified::measure(cx.plan, cx.state, count_limit(threshold)),
        "bypass-writers" => bypass_writers(cx, threshold),
        other => no_data(&format!("cachemig does not know how to measure gate `{other}`")),
    }
}

fn reachable(cx: &Ctx, side: Option<&Result<NodeSetReport, String>>) -> Measure {
    match side {
        None => no_data("offline (not inspected)"),
        Some(Err(e)) => (
            format!(
                "unreachable: {e}; check the address, the password variable and the network, then `cachemig plan {}`",
                cx.plan.path.display()
            ),
            Verdict::Blocked,
        ),
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
        return (
            "not a cluster (cluster_enabled:0); point [target] urls at the nodes of a Redis Cluster".into(),
            Verdict::Blocked,
        );
    }
    let state = t.cluster_state.clone().unwrap_or_else(|| "unknown".into());
    let slots = t.slots_covered.unwrap_or(0);
    let ok = state == "ok" && slots == 16384;
    let hint = if ok {
        ""
    } else {
        "; fix the cluster until every slot is served (`redis-cli --cluster check HOST:PORT`, `--cluster fix`)"
    };
    (
        format!("cluster_state:{state}, {slots}/16384 slots{hint}"),
        verdict(ok),
    )
}

fn rdb_compatible(cx: &Ctx) -> Measure {
    let Some(i) = cx.inspection else {
        return no_data("offline (not inspected)");
    };
    let (Ok(s), Ok(t)) = (&i.source, &i.target) else {
        return no_data("source or target unreachable");
    };
    // A target that cannot RESTORE the source's payloads is fine when keys are copied by type.
    match crate::server::choose(cx.plan.backfill.copy_mode, s, t) {
        Some(choice) if choice.blocked => (
            format!(
                "copy mode {}: {}; set [backfill] copy_mode = \"auto\" to copy by type, or run a target that loads the source's payloads",
                choice.mode, choice.reason
            ),
            Verdict::Blocked,
        ),
        Some(choice) => (format!("copy mode {}: {}", choice.mode, choice.reason), Verdict::Pass),
        None => no_data("RDB version unknown"),
    }
}

/// Whether a server writing RDB `dst` can RESTORE a payload of RDB `src` (the table's
/// [`crate::server::restores`]).
#[cfg(test)]
fn rdb_loadable(src: u16, dst: u16) -> bool {
    crate::server::restores(src, dst)
}

fn memory_headroom(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let Some(i) = cx.inspection else {
        return no_data("offline (not inspected)");
    };
    let (Ok(s), Ok(t)) = (&i.source, &i.target) else {
        return no_data("source or target unreachable");
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
        Some(free) if free >= need => (
            format!("target free {} vs needed {}", mib(free), mib(need)),
            Verdict::Pass,
        ),
        Some(free) => (
            format!(
                "target free {} vs needed {}; raise maxmemory on the target masters or add masters (or set [gates.backfill] memory-headroom lower)",
                mib(free),
                mib(need)
            ),
            Verdict::Blocked,
        ),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

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
            let hint = if ok {
                String::new()
            } else {
                format!(
                    "; remove them from the target (a rollback to planned leaves the keys an earlier backfill copied), set [backfill] on_existing = \"replace\", or `cachemig advance {} --skip-gate target-empty --reason TEXT`",
                    cx.plan.path.display()
                )
            };
            (format!("{measured}{hint}"), verdict(ok))
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
        Ok(p) => {
            let hint = if p.complete() {
                String::new()
            } else {
                format!(
                    "; wait for it, or `cachemig resume {}` if it stopped",
                    cx.plan.path.display()
                )
            };
            (
                format!(
                    "{}/{} source node(s) done, {} key(s) copied{hint}",
                    p.nodes_done, p.nodes, p.counters.copied
                ),
                verdict(p.complete()),
            )
        }
    }
}

fn failed_keys(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
    let allowed = count_limit(threshold);
    match backfill_progress(cx) {
        Err(m) => m,
        Ok(p) => {
            let ok = p.counters.failed <= allowed;
            let plan = cx.plan.path.display();
            let hint = if ok {
                String::new()
            } else {
                format!(
                    "; fix the cause, then `cachemig verify {plan} --repair` copies them and `cachemig advance {plan} --skip-gate failed-keys --reason TEXT` records the override (docs/runbook.md, \"Dead letters\")"
                )
            };
            (
                format!(
                    "{} failed (see {}){hint}",
                    p.counters.failed,
                    BackfillDir::new(&cx.plan.state_dir).dead_letter_path().display()
                ),
                verdict(ok),
            )
        }
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
        Ok(Some(r)) => {
            let ok = r.unresolved <= allowed;
            let hint = if ok {
                String::new()
            } else {
                format!(
                    "; `cachemig resume {}` runs the catch-up again",
                    cx.plan.path.display()
                )
            };
            (
                format!(
                    "{} unresolved of {} found ({} keys checked, {} repaired){hint}",
                    r.unresolved, r.found, r.checked, r.repaired
                ),
                verdict(ok),
            )
        }
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
    reports_of(cx.proxies)
}

/// [`reports`] of a view that may not have been read.
pub(super) fn reports_of(proxies: Option<&ProxyView>) -> Result<&ProxyView, Measure> {
    let view = proxies.ok_or_else(|| no_data("offline (proxy reports not read)"))?;
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

/// The way out of a gate fed by counters that only restart with the next generation: fix the
/// cause, prove the data with a clean verify, and record the override.
fn counted_way_out(cx: &Ctx, gate: &str) -> String {
    let plan = cx.plan.path.display();
    format!(
        "; the counters restart only with the next generation: once the cause is fixed and `cachemig verify {plan}` is clean, `cachemig advance {plan} --skip-gate {gate} --reason TEXT` records the override"
    )
}

fn mirror_error_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    let syncs = c.mirror_ok + c.mirror_errors;
    if syncs == 0 {
        return ("ratio 0 (0 syncs)".into(), Verdict::Pass);
    }
    let r = ratio(c.mirror_errors, syncs);
    let ok = r <= limit;
    let hint = if ok {
        String::new()
    } else {
        format!(
            "; the failed keys were marked for repair (the proxies' `last error` in `cachemig status` says why){}",
            counted_way_out(cx, "mirror-error-ratio")
        )
    };
    (
        format!("ratio {r:.6} ({} failed of {syncs} syncs){hint}", c.mirror_errors),
        verdict(ok),
    )
}

fn shadow_samples(c: &Counters, limit: u64) -> Measure {
    let n = c.shadow_samples;
    if n >= limit {
        return (format!("{n} sample(s)"), Verdict::Pass);
    }
    (
        format!(
            "{n} sample(s); wait for more reads through the proxies (or raise [shadow_read] sample_rate, or lower min_samples, in the plan)"
        ),
        Verdict::Blocked,
    )
}

fn shadow_mismatch_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    if c.shadow_samples == 0 {
        return no_data("0 shadow samples; wait for reads through the proxies");
    }
    let r = ratio(c.shadow_mismatches, c.shadow_samples);
    let ok = r <= limit;
    let hint = if ok {
        String::new()
    } else {
        format!(
            "; `cachemig verify {}` lists the keys that differ{}",
            cx.plan.path.display(),
            counted_way_out(cx, "shadow-mismatch-ratio")
        )
    };
    (
        format!(
            "ratio {r:.6} ({} mismatch(es) of {} samples){hint}",
            c.shadow_mismatches, c.shadow_samples
        ),
        verdict(ok),
    )
}

/// With no request served by new there is no evidence that new serves well: no data.
fn new_error_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    if c.new_requests == 0 {
        return no_data("0 requests served by new; wait for traffic through the proxies");
    }
    let r = ratio(c.new_errors, c.new_requests);
    let ok = r <= limit;
    let hint = if ok {
        String::new()
    } else {
        format!(
            "; the proxies' `last error` in `cachemig status {}` shows what new answered{}",
            cx.plan.path.display(),
            counted_way_out(cx, "new-error-ratio")
        )
    };
    (
        format!(
            "ratio {r:.6} ({} error(s) of {} requests on new){hint}",
            c.new_errors, c.new_requests
        ),
        verdict(ok),
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
    let ok = worst.mirror_lag_ms <= limit;
    let hint = if ok {
        ""
    } else {
        "; wait for the mirror to catch up (each report says the lag of that moment), or lower the write load"
    };
    (
        format!(
            "max {} ms ({}, queue depth {}){hint}",
            worst.mirror_lag_ms, worst.id, worst.mirror_queue_depth
        ),
        verdict(ok),
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
            "no live proxy reports ({expected} expected, {} report(s) in all); {}",
            view.all().len(),
            start_proxies_hint(cx.plan)
        ));
    }
    let generation = cx.state.generation;
    let acks = view.acks(generation, false);
    let ok = acks.enough(expected);
    let hint = if ok {
        String::new()
    } else {
        format!("; {}", start_proxies_hint(cx.plan))
    };
    (
        format!(
            "{}{hint}",
            acks.describe(expected, &format!("live at generation {generation}"))
        ),
        verdict(ok),
    )
}

/// What clears a gate waiting for proxies.
pub(super) fn start_proxies_hint(plan: &Plan) -> String {
    format!(
        "start the missing proxies (or wait until each applied the flag file), then check `cachemig status {}`",
        plan.path.display()
    )
}

/// Measured before the switch: whether a fence can be acked now (it blocks early when fewer
/// proxies than expected are live, or a report cannot be read, instead of holding writes for
/// nothing). The fence then needs every live proxy to drain, not just `expected` of them.
/// `advance` replaces this result with the fence's outcome; `rollback` out of write-stop checks it
/// before holding any write.
pub fn fence_ready(plan: &Plan, proxies: Option<&ProxyView>) -> (String, Verdict) {
    let expected = plan.proxies.expected;
    if expected == 0 {
        return (
            "0 proxies expected: the primary switches directly, without a fence".into(),
            Verdict::Pass,
        );
    }
    let view = match reports_of(proxies) {
        Ok(v) => v,
        Err(m) => return m,
    };
    let live: Vec<String> = view
        .live()
        .iter()
        .map(|r| format!("{} at generation {}", r.id, r.generation))
        .collect();
    let pause = units::format_duration(plan.proxies.max_write_pause);
    let acks = view.acks(0, false);
    let list =
        |items: &[crate::gate::Pending]| items.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    if !acks.blocking.is_empty() {
        return (
            format!(
                "cannot fence: {}; {}",
                list(&acks.blocking),
                start_proxies_hint(plan)
            ),
            Verdict::Blocked,
        );
    }
    if live.len() < expected as usize {
        return (
            format!(
                "cannot fence: {} of {expected} expected proxies live{}; {}",
                live.len(),
                if acks.missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", list(&acks.missing))
                },
                start_proxies_hint(plan)
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
    let whole = |d: std::time::Duration| units::format_duration(std::time::Duration::from_secs(d.as_secs()));
    let shown = whole(elapsed);
    if elapsed >= need {
        return (format!("{} in force for {shown}", cx.state.phase), Verdict::Pass);
    }
    (
        format!(
            "{} in force for {shown}; wait {} more (or set [gates.{}] soak lower in the plan)",
            cx.state.phase,
            whole(need - elapsed + std::time::Duration::from_millis(999)),
            cx.to
        ),
        Verdict::Blocked,
    )
}

#[cfg(test)]
mod tests;
