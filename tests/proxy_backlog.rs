//! The persisted mirror backlog (design §4): a dead proxy's backlog shows in `status`, blocks the
//! acks, and `advance` drains it; the counters the gates read survive a restart.

mod common;

use std::time::Duration;

use common::compare;
use common::proxy::{ProxyProcess, set_phase};
use common::reports::{expect_proxies, walk_to};
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

fn pause_new_writes(sb: &Sandbox, ms: u64) {
    for node in sb.target.masters() {
        let _: () = node.query(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]);
    }
}

#[test]
fn a_dead_proxys_backlog_blocks_the_acks_until_advance_drains_it() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[gates]\nsoak = \"0s\"\n\n[shadow_read]\nmin_samples = 10\n");
    expect_proxies(&sb, 2, "heartbeat_timeout = \"2s\"\n");
    walk_to(&sb, "async-dual-write");
    let generation = sb.flag().unwrap().generation;
    let mut p1 = ProxyProcess::start(&sb, "p1");
    let _p2 = ProxyProcess::start(&sb, "p2");
    p1.wait_generation(generation);
    let keys: Vec<String> = (0..20).map(|i| format!("token:owed:{i}")).collect();
    let mut conn = p1.conn();
    for k in &keys {
        let _: () = conn.set(k, "first").unwrap();
    }
    // Written again while new refuses writes: acknowledged (the keys are already in p1's
    // backlog), their syncs wait; p1 dies before they run.
    pause_new_writes(&sb, 1500);
    for k in &keys {
        let _: () = conn.set(k, "second").unwrap();
    }
    p1.kill();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !compare::differences(&sb, &keys).is_empty(),
        "nothing was left owed: the test proves nothing"
    );
    let status = sb.cachemig(&["status"]);
    assert!(
        status.stdout.contains("p1 left") && status.stdout.contains("mirror backlog undrained"),
        "status does not show the dead proxy's backlog:\n{}",
        status.stdout
    );

    let advance = sb.cachemig(&["advance", "--yes"]);
    assert!(
        advance.stderr.contains("drained the mirror backlog of proxy p1"),
        "{advance:?}"
    );
    assert_eq!(compare::differences(&sb, &keys), Vec::<String>::new());
    let status = sb.cachemig(&["status"]);
    assert!(
        !status.stdout.contains("mirror backlog undrained"),
        "{}",
        status.stdout
    );
}

/// `sync_mirror_failures` in `p1`'s report at generation 1, read from the reports hash.
fn reported_failures(sb: &Sandbox) -> Option<u64> {
    let json: Option<String> = redis::cmd("HGET")
        .arg(cachemig::report::reports_key("sandbox"))
        .arg("p1")
        .query(&mut sb.target.cluster_conn())
        .unwrap();
    let report: cachemig::report::ProxyReport = serde_json::from_str(&json?).ok()?;
    (report.generation == 1).then_some(report.counters.sync_mirror_failures)
}

#[test]
fn the_counters_the_gates_read_survive_a_restart_at_the_same_generation() {
    let sb = Sandbox::start();
    set_phase(&sb.flag_path(), "sync-dual-write", 1, false, 0.0);
    let mut p1 = ProxyProcess::start(&sb, "p1");
    p1.wait_generation(1);
    pause_new_writes(&sb, 1500);
    let n: i64 = p1.conn().incr("token:count", 1).unwrap();
    assert_eq!(n, 1);
    wait_for("the failure reported", Duration::from_secs(10), || {
        reported_failures(&sb) == Some(1)
    });
    p1.kill();
    let p1 = ProxyProcess::start(&sb, "p1");
    p1.wait_generation(1);
    // Carried over once the restarted proxy read its earlier report (before its first report).
    wait_for("the restarted proxy's counters", Duration::from_secs(10), || {
        p1.status()["counters_since_generation"]["sync_mirror_failures"].as_u64() == Some(1)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reported_failures(&sb), Some(1), "the report forgot the failure");
}
