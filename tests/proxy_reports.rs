//! Gates, catch-up, status and the fence from proxy reports, against a real target cluster. The
//! tests play the proxies' part by writing their reports into the target (tests/common/reports.rs).

mod common;

use std::time::{Duration, Instant};

use cachemig::report::now_ms;
use cachemig::state::{Event, FenceStage};
use common::reports::{
    FakeProxies, clear_reports, expect_proxies, next_gate, report, verify_for_gate, walk_to, write_report,
};
use common::sandbox::Sandbox;
use common::wait_for;

/// A sandbox with two expected proxies, no soak and a small shadow-sample minimum.
fn sandbox(proxies_extra: &str) -> Sandbox {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[gates]\nsoak = \"0s\"\n\n[shadow_read]\nmin_samples = 10\n");
    expect_proxies(&sb, 2, proxies_extra);
    sb
}

/// The flag file is at `generation`, in `phase`, with `fence`.
fn assert_flag(sb: &Sandbox, generation: u64, phase: &str, fence: bool) {
    let flag = sb.flag().unwrap();
    assert_eq!(
        (flag.generation, flag.phase.as_str(), flag.routing.fence),
        (generation, phase, fence)
    );
}

fn fence_events(sb: &Sandbox) -> Vec<(u64, FenceStage)> {
    sb.journal_entries()
        .iter()
        .filter_map(|e| match &e.event {
            Event::Fence { stage, .. } => Some((e.generation, *stage)),
            _ => None,
        })
        .collect()
}

#[test]
fn proxies_acked_needs_every_expected_proxy_live_at_the_generation() {
    let sb = sandbox("");
    walk_to(&sb, "async-dual-write");
    let generation = sb.flag().unwrap().generation;
    clear_reports(&sb);
    assert_eq!(next_gate(&sb, "proxies-acked").0, "no-data");

    let mut stale = report("p2", generation, "async-dual-write");
    stale.written_at_ms = now_ms() - 60_000;
    write_report(&sb, &report("p1", generation, "async-dual-write"));
    write_report(&sb, &stale);
    let (verdict, measured) = next_gate(&sb, "proxies-acked");
    assert_eq!(verdict, "blocked");
    assert!(
        measured.contains("1 of 2") && measured.contains("p2 missing"),
        "{measured}"
    );

    write_report(&sb, &report("p2", generation - 1, "backfill"));
    let (verdict, measured) = next_gate(&sb, "proxies-acked");
    assert_eq!(verdict, "blocked");
    assert!(
        measured.contains(&format!("p2 at generation {}", generation - 1)),
        "{measured}"
    );

    let mut failing = report("p2", generation, "async-dual-write");
    failing.counters.mirror_ok = 800;
    failing.counters.mirror_errors = 100;
    failing.mirror_lag_ms = 2500;
    write_report(&sb, &failing);
    let (verdict, measured) = next_gate(&sb, "proxies-acked");
    assert_eq!(verdict, "pass", "{measured}");
    assert!(
        measured.contains("2 of 2") && measured.contains("(p1, p2)"),
        "{measured}"
    );
    // counters are summed over both: 100 failed of 1000 syncs
    let (verdict, measured) = next_gate(&sb, "mirror-error-ratio");
    assert_eq!(verdict, "blocked");
    assert!(measured.contains("100 failed of 1000 syncs"), "{measured}");
    let (verdict, measured) = next_gate(&sb, "mirror-lag");
    assert_eq!(verdict, "blocked");
    assert!(measured.contains("max 2500 ms (p2"), "{measured}");
}

#[test]
fn the_catch_up_waits_for_acks_and_resume_retries() {
    let sb = sandbox("heartbeat_timeout = \"1s\"\n");
    sb.source_cmd(&["SET", "token:1", "v"]);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    let started = Instant::now();
    sb.cachemig(&["advance", "--yes"])
        .assert_code(1)
        .assert_stderr_contains("the catch-up did not start")
        .assert_stderr_contains("0 of 2 expected proxies");
    assert!(
        started.elapsed() >= Duration::from_secs(12),
        "waited 2 x 1s + 10s"
    );
    assert_eq!(sb.flag().unwrap().phase, "async-dual-write");
    assert!(sb.journal_text().contains("\"outcome\":\"failed\""));

    sb.target_cmd(&["DEL", "token:1"]);
    let _proxies = FakeProxies::start(&sb, &["p1", "p2"], true);
    sb.cachemig(&["resume"])
        .assert_success()
        .assert_stdout_contains("2 of 2 expected proxies");
    assert_eq!(sb.target_cmd(&["GET", "token:1"]), "v", "the catch-up ran");
}

#[test]
fn shadow_gates_and_status_come_from_the_reports() {
    let sb = sandbox("");
    walk_to(&sb, "shadow-read");
    let generation = sb.flag().unwrap().generation;
    let mut p1 = report("p1", generation, "shadow-read");
    let mut p2 = report("p2", generation, "shadow-read");
    p1.counters.shadow_samples = 0;
    p2.counters.shadow_samples = 0;
    write_report(&sb, &p1);
    write_report(&sb, &p2);
    assert_eq!(next_gate(&sb, "shadow-samples").0, "blocked");
    assert_eq!(next_gate(&sb, "shadow-mismatch-ratio").0, "no-data");

    p1.counters.shadow_samples = 60;
    p2.counters.shadow_samples = 40;
    p2.counters.shadow_mismatches = 1;
    write_report(&sb, &p1);
    write_report(&sb, &p2);
    assert_eq!(next_gate(&sb, "shadow-samples").0, "pass");
    let (verdict, measured) = next_gate(&sb, "shadow-mismatch-ratio");
    assert_eq!(verdict, "blocked");
    assert!(measured.contains("1 mismatch(es) of 100 samples"), "{measured}");

    p2.counters.shadow_mismatches = 0;
    p2.last_error = Some("mirror: connection reset".into());
    p2.hot_keys.push(cachemig::report::HotKey {
        key: "token:other".into(),
        count: 3,
        error: 0,
    });
    write_report(&sb, &p2);
    assert_eq!(next_gate(&sb, "shadow-mismatch-ratio").0, "pass");

    let status = sb.cachemig(&["status", "--format", "json"]).json();
    let proxies = &status["proxies"];
    assert_eq!(proxies["expected"], 2);
    assert_eq!(proxies["acked"], 2);
    assert_eq!(proxies["reports"][1]["id"], "p2");
    assert_eq!(proxies["reports"][1]["live"], true);
    assert_eq!(proxies["reports"][1]["last_error"], "mirror: connection reset");
    assert_eq!(proxies["hot_keys"][0]["key"], "token:hot");
    assert_eq!(proxies["hot_keys"][0]["count"], 14, "summed over p1 and p2");
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("mirror: connection reset")
        .assert_stdout_contains("token:hot");

    let mut sb = sb;
    for node in sb.target.nodes_mut() {
        node.kill();
    }
    let status = sb.cachemig(&["status", "--format", "json"]);
    status.assert_success();
    assert!(status.json()["proxies"]["error"].is_string(), "{}", status.stdout);
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("proxy reports unavailable");
}

#[test]
fn the_fence_switches_on_acks_both_ways() {
    let sb = sandbox("");
    walk_to(&sb, "read-cutover");
    let proxies = FakeProxies::start(&sb, &["p1", "p2"], true);
    verify_for_gate(&sb);
    let before = sb.snapshot();
    sb.cachemig(&["advance", "--dry-run"])
        .assert_success()
        .assert_stdout_contains("will fence now")
        .assert_stdout_contains("p1 at generation")
        .assert_stdout_contains("would fence at generation");
    assert_eq!(before, sb.snapshot(), "a dry run wrote something");

    let n = sb.flag().unwrap().generation + 1;
    sb.cachemig(&["advance", "--yes"])
        .assert_success()
        .assert_stdout_contains(&format!("fence generation {n} acked"));
    assert_flag(&sb, n + 1, "write-stop", false);
    assert_eq!(fence_events(&sb), vec![(n, FenceStage::Hold)]);

    sb.cachemig(&["rollback", "--yes"]).assert_success();
    assert_flag(&sb, n + 3, "read-cutover", false);
    assert_eq!(
        fence_events(&sb),
        vec![(n, FenceStage::Hold), (n + 2, FenceStage::Hold)]
    );
    drop(proxies);
}

#[test]
fn without_acks_the_fence_is_released_on_the_old_primary() {
    let sb = sandbox("max_write_pause = \"1s\"\n");
    walk_to(&sb, "read-cutover");
    let proxies = FakeProxies::start(&sb, &["p1", "p2"], false);
    verify_for_gate(&sb);
    let n = sb.flag().unwrap().generation + 1;
    sb.cachemig(&["advance", "--yes"])
        .assert_code(3)
        .assert_stderr_contains("fence")
        .assert_stderr_contains("p1 fence holding");
    assert_flag(&sb, n + 1, "read-cutover", false);
    assert_eq!(
        fence_events(&sb),
        vec![(n, FenceStage::Hold), (n + 1, FenceStage::Release)]
    );
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("fence release");

    // Into write-stop with acks, then a rollback whose fence is not acked stays in write-stop.
    proxies.set_drain(true);
    verify_for_gate(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    proxies.set_drain(false);
    let m = sb.flag().unwrap().generation + 1;
    sb.cachemig(&["rollback", "--yes"])
        .assert_code(1)
        .assert_stderr_contains("write-stop stays in force");
    assert_flag(&sb, m + 1, "write-stop", false);
}

#[test]
fn kill_9_mid_fence_then_repair_releases_without_switching() {
    let sb = sandbox("max_write_pause = \"60s\"\n");
    walk_to(&sb, "read-cutover");
    let _proxies = FakeProxies::start(&sb, &["p1", "p2"], false);
    verify_for_gate(&sb);
    let n = sb.flag().unwrap().generation + 1;
    let mut child = sb.spawn(&["advance", "--yes"]);
    wait_for("the fence generation", Duration::from_secs(20), || {
        sb.flag().is_some_and(|f| f.routing.fence)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("FENCE in force");
    // While the primary is switching, a repair could copy from the wrong side: refused.
    sb.cachemig(&["verify", "--repair"])
        .assert_code(1)
        .assert_stderr_contains("fence is in force")
        .assert_stderr_contains("status");
    let repair = sb.cachemig(&["status", "--repair"]);
    repair.assert_success();
    // Prose lines wrap at the width (100 off a terminal): compare words, not line breaks.
    let words = repair.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("released at generation"), "{}", repair.stdout);
    assert_flag(&sb, n + 1, "read-cutover", false);
    assert_eq!(
        fence_events(&sb),
        vec![(n, FenceStage::Hold), (n + 1, FenceStage::Release)]
    );
    assert!(!sb.cachemig(&["status"]).stdout.contains("DRIFT"));
}

/// Issue 9: acks come from every live proxy, not from any `expected` of them. A surplus proxy (a
/// rolling update's surge, one host nobody counted) that reports but has not applied the
/// generation blocks the gate, `status` names it, and it blocks the fence; once its report is
/// older than `heartbeat_timeout` (the proxy is gone) it no longer counts.
#[test]
fn a_surplus_live_proxy_that_has_not_acked_blocks_the_gate_and_the_fence() {
    let sb = sandbox("max_write_pause = \"1s\"\n");
    walk_to(&sb, "async-dual-write");
    let generation = sb.flag().unwrap().generation;
    clear_reports(&sb);
    write_report(&sb, &report("p1", generation, "async-dual-write"));
    write_report(&sb, &report("p2", generation, "async-dual-write"));
    assert_eq!(next_gate(&sb, "proxies-acked").0, "pass");

    write_report(&sb, &report("p3", generation - 1, "backfill"));
    let (verdict, measured) = next_gate(&sb, "proxies-acked");
    assert_eq!(verdict, "blocked", "{measured}");
    assert!(
        measured.contains("2 of 2")
            && measured.contains(&format!(
                "blocked by live proxies that have not acked: p3 at generation {}",
                generation - 1
            )),
        "{measured}"
    );
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    let blocking = &status["proxies"]["blocking"];
    assert_eq!(blocking.as_array().unwrap().len(), 1, "{status:#}");
    assert_eq!(blocking[0]["id"], "p3");
    assert_eq!(blocking[0]["why"], format!("at generation {}", generation - 1));
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("BLOCKING acks: p3 at generation");

    // Gone (its report aged past heartbeat_timeout): it neither acks nor blocks.
    let mut gone = report("p3", generation - 1, "backfill");
    gone.written_at_ms = now_ms() - 60_000;
    write_report(&sb, &gone);
    let (verdict, measured) = next_gate(&sb, "proxies-acked");
    assert_eq!(verdict, "pass", "{measured}");
    assert!(measured.contains("not live: p3 missing"), "{measured}");
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    assert_eq!(status["proxies"]["blocking"], serde_json::json!([]));

    // The fence: p1 and p2 drain, the surplus p3 is live but never applies the fence generation.
    clear_reports(&sb);
    walk_to(&sb, "read-cutover");
    let proxies = FakeProxies::start(&sb, &["p1", "p2"], true);
    verify_for_gate(&sb);
    let at = sb.flag().unwrap().generation;
    write_report(&sb, &report("p3", at, "read-cutover"));
    sb.cachemig(&["advance", "--yes"])
        .assert_code(3)
        .assert_stderr_contains(&format!("p3 at generation {at}"));
    assert_flag(&sb, at + 2, "read-cutover", false);
    assert_eq!(
        fence_events(&sb),
        vec![(at + 1, FenceStage::Hold), (at + 2, FenceStage::Release)]
    );
    drop(proxies);
}
