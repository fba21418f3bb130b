//! Hot keys through two real proxies (issue 9, item 8): a counter INCRed from eight threads
//! through both proxies and a queue (RPUSH through one proxy, LPOP through the other), together
//! paced at up to 2,500 writes a second on two keys, each run until 4,000 INCRs were acknowledged
//! (a count, not a rate: the loaded 2-core test machine sets the rate), in `async-dual-write`,
//! `sync-dual-write` (`read-cutover` is the fault-matrix row `hot_key_read_cutover`), and with a
//! new cluster that refuses scripts (the writers live in `tests/common/hotkeys.rs`). No client
//! error, no failed mirror sync or sync-mirror failure in either proxy's `/status`, and at the end
//! old and new both equal the model (the counter = the INCRs acknowledged). Then the catch-up and
//! `verify --repair` while such writers run: nothing unresolved.

mod common;

use common::hotkeys::{
    HotLoad, assert_no_mirror_errors, assert_sides_equal_the_model, hot_keys_in, hot_keys_on, sandbox,
};
use common::load::wait_ready;
use common::proxy::ProxyProcess;
use common::reports::{expect_proxies, next_gate};
use common::sandbox::Sandbox;
use std::time::Duration;

#[test]
fn hot_keys_through_two_proxies_in_async_dual_write() {
    hot_keys_in("async-dual-write");
}

#[test]
fn hot_keys_through_two_proxies_in_sync_dual_write() {
    hot_keys_in("sync-dual-write");
}

/// New refuses scripts (an ACL without `@scripting`): the proxies' syncs take the key's lease
/// with `WATCH` transactions on connections of their own, with the same outcome.
#[test]
fn hot_keys_through_two_proxies_when_new_refuses_scripts() {
    let sb = sandbox();
    for node in sb.target.masters() {
        let _: () = node.query(&["ACL", "SETUSER", "default", "-@scripting"]);
    }
    let refused = sb.target_cmd(&["EVAL", "return 1", "0"]);
    assert!(refused.contains("NOPERM"), "{refused}");
    hot_keys_on(sb, "sync-dual-write");
}

/// `verify --repair` while the hot writers run in `backfill` (no mirror yet: the hot keys differ
/// on new and keep changing after the repair), then the catch-up on entering `async-dual-write`
/// with the writers still running, then `verify --repair` three times in `async-dual-write`:
/// nothing unresolved, ever, so `catch-up-clean` passes.
#[test]
fn the_catch_up_and_verify_repair_leave_no_hot_key_unresolved() {
    let sb = sandbox();
    expect_proxies(&sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    wait_ready(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    let generation = sb.flag().unwrap().generation;
    p1.wait_generation(generation);
    p2.wait_generation(generation);
    let load = HotLoad::start(&p1, &p2);
    std::thread::sleep(Duration::from_millis(500));

    // In backfill the writes are not mirrored: every hot key differs at both looks, and is
    // written again right after its repair.
    let summary = verify_repair(&sb);
    assert!(
        summary["found"].as_u64().unwrap() >= 1,
        "the hot keys differ: {summary}"
    );
    assert_eq!(summary["repaired"], summary["found"], "{summary}");

    wait_ready(&sb);
    let run = sb.cachemig(&["advance", "--yes"]);
    assert_eq!(
        run.status, 0,
        "into async-dual-write with its catch-up:\n{}\n{}",
        run.stdout, run.stderr
    );
    let (verdict, measured) = next_gate(&sb, "catch-up-clean");
    eprintln!("catch-up-clean: {measured}");
    assert_eq!(verdict, "pass", "{measured}");
    assert!(measured.starts_with("0 unresolved of "), "{measured}");

    for _ in 0..3 {
        verify_repair(&sb);
    }
    wait_ready(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    assert_eq!(sb.flag().unwrap().phase, "sync-dual-write");

    let acked = load.finish();
    assert_no_mirror_errors(&[&p1, &p2]);
    assert_sides_equal_the_model(&sb, &acked);
}

/// `verify --repair --format json`: nothing unresolved; the summary.
fn verify_repair(sb: &Sandbox) -> serde_json::Value {
    let run = sb.cachemig(&["verify", "--repair", "--format", "json"]);
    let summary = run.json();
    eprintln!(
        "verify --repair ({}): found {}, repaired {}, unresolved {}",
        sb.flag().unwrap().phase,
        summary["found"],
        summary["repaired"],
        summary["unresolved"]
    );
    assert_eq!(summary["unresolved"], 0, "{summary}\n{}", run.stderr);
    assert_eq!(run.status, 0, "{summary}\n{}", run.stderr);
    summary
}
