//! The `reverse-mirror-drained` gate of `finalize`: old holds every write the proxies took on new
//! up to now, as far as the proxies know.
//!
//! Finalizing turns the reverse mirror off for good. What a proxy still owes old at that moment
//! would never reach it, so the gate asks every live proxy's last report for an empty mirror
//! queue and no failed (dirty) key, at the generation in force, and blocks on any dead proxy's
//! crash-safe backlog left undrained (`finalize` drains those first, like `advance`). The
//! backlog set of a *live* proxy is not counted: besides what the queue and the dirty set
//! already count, it holds only keys whose sync landed and that linger a second (see
//! `proxy::backlog`), so under steady writes it is never empty while owing nothing.

use super::eval::{expected_reports, start_proxies_hint};
use super::{ProxyView, Verdict};
use crate::plan::Plan;
use crate::state::State;

/// Measures the gate from the proxies' reports (`None` when they were not read).
pub(super) fn measure(plan: &Plan, state: &State, proxies: Option<&ProxyView>) -> (String, Verdict) {
    let expected = plan.proxies.expected;
    let none = " ([proxies] expected = 0): no reverse mirror to drain";
    let view = match expected_reports(plan, proxies, none) {
        Ok(v) => v,
        Err(m) => return m,
    };
    let generation = state.generation;
    let acks = view.acks(generation, false);
    if !acks.enough(expected) {
        return (
            format!(
                "{}; {}",
                acks.describe(expected, &format!("live at generation {generation}")),
                start_proxies_hint(plan)
            ),
            Verdict::Blocked,
        );
    }
    let owing: Vec<String> = view
        .current()
        .iter()
        .filter(|r| r.mirror_queue_depth > 0 || r.dirty_keys > 0)
        .map(|r| {
            format!(
                "{} {} queued, {} failed",
                r.id, r.mirror_queue_depth, r.dirty_keys
            )
        })
        .collect();
    if !owing.is_empty() {
        return (
            format!(
                "the reverse mirror still owes old: {}; wait until `cachemig status {}` shows every mirror queue and dirty count at 0 (a failed key is retried by its proxy: check that old is reachable), then run finalize again",
                owing.join(", "),
                plan.path.display()
            ),
            Verdict::Blocked,
        );
    }
    (
        format!(
            "{} live proxy(ies) at generation {generation} ({}): mirror queues empty, no failed key, no undrained backlog",
            acks.acked.len(),
            acks.acked.join(", ")
        ),
        Verdict::Pass,
    )
}
