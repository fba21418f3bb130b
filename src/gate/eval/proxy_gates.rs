//! The gates read from the proxies' reports: mirror and shadow counters, lag, acks, the fence,
//! and writers that bypass the proxies.

use super::*;
/// A ratio threshold (0 when the gate has none).
pub(super) fn ratio_limit(threshold: Option<&Threshold>) -> f64 {
    match threshold {
        Some(Threshold::Number(x)) => *x,
        _ => 0.0,
    }
}

/// The proxy reports, or why the gate has no data.
pub(super) fn reports<'a>(cx: &Ctx<'a>) -> Result<&'a ProxyView, Measure> {
    reports_of(cx.proxies)
}

/// [`reports`] of a view that may not have been read.
pub(in crate::gate) fn reports_of(proxies: Option<&ProxyView>) -> Result<&ProxyView, Measure> {
    let view = proxies.ok_or_else(|| no_data("offline (proxy reports not read)"))?;
    match view.unreadable() {
        Some(e) => Err(no_data(&format!("proxy reports unreadable: {e}"))),
        None => Ok(view),
    }
}

/// The reports of the proxies the plan expects. With `[proxies] expected = 0` there is nothing to
/// wait for: the gate passes, `none` saying what that means for it.
pub(in crate::gate) fn expected_reports<'a>(
    plan: &Plan,
    proxies: Option<&'a ProxyView>,
    none: &str,
) -> Result<&'a ProxyView, Measure> {
    if plan.proxies.expected == 0 {
        return Err((format!("0 proxies expected{none}"), Verdict::Pass));
    }
    reports_of(proxies)
}

/// Runs `f` on the counters summed over the live proxies at the current generation.
pub(super) fn with_counters(cx: &Ctx, f: impl Fn(&Counters) -> Measure) -> Measure {
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
pub(super) fn sync_mirror_failures(cx: &Ctx, c: &Counters, threshold: Option<&Threshold>) -> Measure {
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

pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The way out of a gate fed by counters that only restart with the next generation: fix the
/// cause, prove the data with a clean verify, and record the override.
pub(super) fn counted_way_out(cx: &Ctx, gate: &str) -> String {
    let plan = cx.plan.path.display();
    format!(
        "; the counters restart only with the next generation: once the cause is fixed and `cachemig verify {plan}` is clean, `cachemig advance {plan} --skip-gate {gate} --reason TEXT` records the override"
    )
}

pub(super) fn mirror_error_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    let syncs = c.mirror_ok + c.mirror_errors;
    if syncs == 0 {
        return ("ratio 0 (0 syncs)".into(), Verdict::Pass);
    }
    counted_ratio(
        cx,
        "mirror-error-ratio",
        (c.mirror_errors, syncs),
        &format!("{} failed of {syncs} syncs", c.mirror_errors),
        limit,
        "the failed keys were marked for repair (the proxies' `last error` in `cachemig status` says why)",
    )
}

/// A ratio gate on counters that restart only with the next generation: `part` of `whole`
/// (`counted` says of what) against `limit`; when it blocks, `cause` says where to look and
/// [`counted_way_out`] how to get past it.
fn counted_ratio(
    cx: &Ctx,
    gate: &str,
    (part, whole): (u64, u64),
    counted: &str,
    limit: f64,
    cause: &str,
) -> Measure {
    let r = ratio(part, whole);
    let ok = r <= limit;
    let hint = if ok {
        String::new()
    } else {
        format!("; {cause}{}", counted_way_out(cx, gate))
    };
    (format!("ratio {r:.6} ({counted}){hint}"), verdict(ok))
}

pub(super) fn shadow_samples(c: &Counters, limit: u64) -> Measure {
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

pub(super) fn shadow_mismatch_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    if c.shadow_samples == 0 {
        return no_data("0 shadow samples; wait for reads through the proxies");
    }
    counted_ratio(
        cx,
        "shadow-mismatch-ratio",
        (c.shadow_mismatches, c.shadow_samples),
        &format!(
            "{} mismatch(es) of {} samples",
            c.shadow_mismatches, c.shadow_samples
        ),
        limit,
        &format!(
            "`cachemig verify {}` lists the keys that differ",
            cx.plan.path.display()
        ),
    )
}

/// With no request served by new there is no evidence that new serves well: no data.
pub(super) fn new_error_ratio(cx: &Ctx, c: &Counters, limit: f64) -> Measure {
    if c.new_requests == 0 {
        return no_data("0 requests served by new; wait for traffic through the proxies");
    }
    counted_ratio(
        cx,
        "new-error-ratio",
        (c.new_errors, c.new_requests),
        &format!("{} error(s) of {} requests on new", c.new_errors, c.new_requests),
        limit,
        &format!(
            "the proxies' `last error` in `cachemig status {}` shows what new answered",
            cx.plan.path.display()
        ),
    )
}

pub(super) fn mirror_lag(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
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

pub(super) fn proxies_acked(cx: &Ctx) -> Measure {
    let expected = cx.plan.proxies.expected;
    let view = match expected_reports(cx.plan, cx.proxies, " ([proxies] expected = 0)") {
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
pub(in crate::gate) fn start_proxies_hint(plan: &Plan) -> String {
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
    let view = match expected_reports(plan, proxies, ": the primary switches directly, without a fence") {
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
pub(super) fn bypass_writers(cx: &Ctx, threshold: Option<&Threshold>) -> Measure {
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
