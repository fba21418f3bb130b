//! Issue 3: a target master killed and its replica promoted mid-backfill — the run completes and
//! `verify` finds zero differences.

mod common;

use std::time::Duration;

use cachemig::backfill::BackfillDir;
use common::sandbox::Sandbox;

#[test]
fn target_master_failover_mid_backfill_loses_nothing() {
    let mut sb = Sandbox::start_with_replicas();
    // Rate-capped so the failover lands mid-run.
    sb.set_plan_extra(
        "[backfill]\nscan_count = 200\nmax_keys_per_sec = 8000\nmax_source_latency_ms = 1000\n",
    );
    let n = 40_000u64;
    sb.fill_source(n);
    let child = sb.spawn(&["advance", "--yes"]);
    let dir = BackfillDir::new(&sb.state_dir());
    common::wait_for("the backfill to get going", Duration::from_secs(60), || {
        dir.progress()
            .ok()
            .flatten()
            .is_some_and(|p| p.counters.copied >= 8000)
    });
    // Kill the first master; its replica is promoted after the node timeout.
    sb.target.nodes_mut()[0].kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "backfill failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = dir.progress().unwrap().unwrap();
    assert!(progress.complete());
    assert_eq!(progress.counters.failed, 0, "{progress:?}");
    let run = sb.cachemig(&["verify"]);
    run.assert_code(0);
}
