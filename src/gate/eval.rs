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
        "acl-permissions" => super::acl::measure(cx.inspection),
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
        // Already labelled (UNREACHABLE, AUTHENTICATION FAILED, NOT REDIS, …) with what to check.
        Some(Err(e)) => (
            format!("{e}; then `cachemig plan {}`", cx.plan.path.display()),
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
        return no_data("source or target not inspected (see the -reachable gates)");
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
        Some(choice) => (
            format!("copy mode {}: {}", choice.mode, choice.reason),
            Verdict::Pass,
        ),
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

mod proxy_gates;

pub use proxy_gates::fence_ready;
use proxy_gates::*;
pub(super) use proxy_gates::{expected_reports, start_proxies_hint};

#[cfg(test)]
mod tests;
