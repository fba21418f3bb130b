//! Rows "kill -9 of a proxy in phase 2, 3, 4, 5 and 6, then restart it": two proxies under a
//! concurrent writer load; the side the mirror writes to is paused (`CLIENT PAUSE … WRITE`) so
//! syncs are owed at the instant one proxy is killed (writes to keys it already holds in its
//! backlog are acknowledged in async mode; in sync mode they wait); the proxy is restarted with
//! the same id, takes over its backlog and syncs it once the pause ends; then, as an operator
//! would, the fleet is let drain and old and new are compared key by key against the model.
//!
//! Without the persisted backlog the killed proxy's queue (and, in sync mode, the syncs of
//! writes applied on the primary but not yet mirrored) vanish: the keys stay stale.

use std::time::Duration;

use super::load::{self, Load};
use crate::common::RedisServer;
use crate::common::proxy::{ProxyProcess, set_phase};
use crate::common::reports::expect_proxies;
use crate::common::sandbox::Sandbox;

/// How long the mirror's destination refuses writes; the proxy is killed halfway.
const PAUSE_MS: u64 = 2000;

/// The row for `phase`.
fn kill_and_restart_in(phase: &str) {
    let mut sb = Sandbox::start();
    // Syncs wait out the pause instead of failing; reads stay on the proxies' sides.
    sb.set_plan_extra("[dual_write]\nsync_timeout_ms = 8000\n");
    expect_proxies(&sb, 2, "heartbeat_timeout = \"3s\"\n");
    set_phase(&sb.flag_path(), phase, 1, false, 0.0);
    let mut p1 = ProxyProcess::start(&sb, "p1");
    let p2 = ProxyProcess::start(&sb, "p2");
    p1.wait_generation(1);
    p2.wait_generation(1);

    let load = Load::start(&[p1.port, p2.port]);
    load.wait_for_more(500);
    // Write-stop mirrors new → old: pause old. Before, pause new.
    let destinations: Vec<&RedisServer> = if phase == "write-stop" {
        vec![&sb.source]
    } else {
        sb.target.masters().iter().collect()
    };
    for node in &destinations {
        let _: () = node.query(&["CLIENT", "PAUSE", &PAUSE_MS.to_string(), "WRITE"]);
    }
    std::thread::sleep(Duration::from_millis(PAUSE_MS / 2));
    p1.kill();
    let p1 = ProxyProcess::start(&sb, "p1");
    p1.wait_generation(1);
    load.wait_for_more(500);
    let model = load.finish();

    load::assert_drained_and_equal(&sb, &[&p1, &p2], &model, &format!("kill -9 in {phase}"));
    assert!(
        p1.log().contains("from its backlog"),
        "the restarted proxy found nothing to take over: the row proved nothing\n{}",
        p1.log()
    );
}

#[test]
fn kill_proxy_in_async_dual_write() {
    kill_and_restart_in("async-dual-write");
}

#[test]
fn kill_proxy_in_sync_dual_write() {
    kill_and_restart_in("sync-dual-write");
}

#[test]
fn kill_proxy_in_shadow_read() {
    kill_and_restart_in("shadow-read");
}

#[test]
fn kill_proxy_in_read_cutover() {
    kill_and_restart_in("read-cutover");
}

#[test]
fn kill_proxy_in_write_stop() {
    kill_and_restart_in("write-stop");
}
