//! Issue 9, the generation beacon: the CLI publishes its generation in the new cluster with every
//! flag write; a proxy without a valid flag file refuses to start past `planned`, and a proxy
//! whose flag file lags the beacon refuses writes (reads go on) and reports itself stale until
//! it catches up. A refused write is applied nowhere, so no second primary appears.

mod common;

use std::time::Duration;

use common::proxy::{ProxyProcess, set_phase};
use common::reports::expect_proxies;
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

/// What the beacon says, read straight from the new cluster.
fn beacon(sb: &Sandbox) -> Option<serde_json::Value> {
    let json: Option<String> = sb
        .target
        .cluster_conn()
        .get("__cachemig:{sandbox}:beacon")
        .unwrap();
    json.map(|j| serde_json::from_str(&j).unwrap())
}

/// Publishes a beacon as the CLI would after writing generation `generation` of `phase`.
fn publish(sb: &Sandbox, generation: u64, phase: &str) {
    let json = serde_json::json!({ "generation": generation, "phase": phase }).to_string();
    let _: () = sb
        .target
        .cluster_conn()
        .set("__cachemig:{sandbox}:beacon", json)
        .unwrap();
}

fn stale(proxy: &ProxyProcess) -> Option<String> {
    proxy.status()["stale"].as_str().map(str::to_string)
}

#[test]
fn every_flag_write_publishes_the_beacon() {
    let sb = Sandbox::start();
    assert_eq!(beacon(&sb), None);
    sb.cachemig(&["advance", "--phase", "backfill", "--yes"])
        .assert_success();
    let flag = sb.flag().unwrap();
    let b = beacon(&sb).expect("published");
    assert_eq!(b["generation"], flag.generation);
    assert_eq!(b["phase"], "backfill");
}

#[test]
fn a_proxy_without_its_flag_file_past_planned_refuses_to_start_or_refuses_writes() {
    let sb = Sandbox::start();
    publish(&sb, 7, "write-stop");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("missing/flag.json");
    let plan = sb.plan_with_flag_file(dir.path(), &flag);
    let run = common::Cachemig::new()
        .arg("proxy")
        .arg(&plan)
        .args(["--listen", "127.0.0.1:0"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("no valid flag file") && run.stderr.contains("generation 7 (write-stop)"),
        "{}",
        run.stderr
    );
    // Started anyway on purpose: stale at once, writes refused and applied nowhere, reads served.
    let proxy = ProxyProcess::start_on_with_args(&plan, "p1", &[], &["--allow-missing-flag-file"]);
    wait_for("stale", Duration::from_secs(10), || stale(&proxy).is_some());
    let mut conn = proxy.conn();
    let _: () = sb.source.conn().set("token:r", "old").unwrap();
    let refused = conn.set::<_, _, ()>("token:w", "x").unwrap_err();
    assert!(refused.to_string().contains("stale"), "{refused}");
    let read: String = conn.get("token:r").unwrap();
    assert_eq!(read, "old");
    assert_eq!(
        sb.source.conn().get::<_, Option<String>>("token:w").unwrap(),
        None
    );
    assert_eq!(
        sb.target
            .cluster_conn()
            .get::<_, Option<String>>("token:w")
            .unwrap(),
        None
    );
    assert!(proxy.metrics().contains("cachemig_proxy_stale 1"));
    // The flag file appears: current again, writes go where the phase says.
    set_phase(&flag, "write-stop", 7, false, 0.0);
    wait_for("no longer stale", Duration::from_secs(10), || {
        stale(&proxy).is_none()
    });
    let _: () = conn.set("token:w", "x").unwrap();
    assert_eq!(
        sb.target
            .cluster_conn()
            .get::<_, Option<String>>("token:w")
            .unwrap()
            .as_deref(),
        Some("x")
    );
}

#[test]
fn a_proxy_whose_flag_file_lags_the_beacon_refuses_writes_after_the_grace_and_recovers() {
    let sb = Sandbox::start();
    expect_proxies(&sb, 0, "heartbeat_timeout = \"2s\"\n");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag.json");
    set_phase(&flag, "sync-dual-write", 3, false, 0.0);
    publish(&sb, 3, "sync-dual-write");
    let proxy = ProxyProcess::start_on(&sb.plan_with_flag_file(dir.path(), &flag), "lagging", &[]);
    proxy.wait_generation(3);
    let mut conn = proxy.conn();
    let _: () = conn.set("token:a", 1).unwrap();
    // The fleet moves on; this proxy's ConfigMap does not.
    publish(&sb, 4, "shadow-read");
    let _: () = conn.set("token:b", 1).unwrap(); // within the grace: still served
    wait_for("stale after the grace", Duration::from_secs(10), || {
        stale(&proxy).is_some()
    });
    let refused = conn.incr::<_, _, i64>("token:a", 1).unwrap_err();
    assert_eq!(refused.code(), Some("TRYAGAIN"), "{refused}");
    assert!(refused.to_string().contains("stale"), "{refused}");
    assert_eq!(
        sb.source.conn().get::<_, i64>("token:a").unwrap(),
        1,
        "the refused INCR was not applied"
    );
    set_phase(&flag, "shadow-read", 4, false, 0.0);
    wait_for("caught up", Duration::from_secs(10), || stale(&proxy).is_none());
    assert_eq!(conn.incr::<_, _, i64>("token:a", 1).unwrap(), 2);
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    assert_eq!(status["proxies"]["reports"][0]["stale"], serde_json::Value::Null);
}
