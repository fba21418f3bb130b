//! Issue 9, the verify before the switches: entering `read-cutover` (and `write-stop`) needs a
//! `cachemig verify` recorded in the phase in force, at its generation, started after every
//! live proxy acked it, large enough for `[verify]` and with no unresolved difference. Each way
//! of failing that blocks, naming the command that clears it.

mod common;

use common::reports::{
    FakeProxies, clear_reports, expect_proxies, next_gate, report, wait_for_reports_at_flag_generation,
    walk_to, write_report,
};
use common::sandbox::Sandbox;

/// Asserts the `verified` gate's verdict and that its measured value contains `text`.
fn assert_verified(sb: &Sandbox, verdict: &str, text: &str) {
    let (v, measured) = next_gate(sb, "verified");
    assert_eq!(v, verdict, "{measured}");
    assert!(measured.contains(text), "wanted {text:?} in: {measured}");
}

#[test]
fn the_switches_need_a_fresh_clean_verify_taken_after_the_acks() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[shadow_read]\nmin_samples = 10\n\n[verify]\ngate_sample = 5\n",
    );
    expect_proxies(&sb, 2, "");
    sb.fill_source(20);
    walk_to(&sb, "shadow-read");
    let proxies = FakeProxies::start(&sb, &["p1", "p2"], true);
    wait_for_reports_at_flag_generation(&sb);
    assert_verified(&sb, "no-data", "no verify recorded; run `cachemig verify");

    // A verify that started while a live proxy was still behind vouches for nothing.
    let generation = sb.flag().unwrap().generation;
    write_report(&sb, &report("p3", generation - 1, "sync-dual-write"));
    sb.cachemig(&["verify"]).assert_success();
    assert_verified(&sb, "blocked", "started before every live proxy acked");
    clear_reports(&sb);
    wait_for_reports_at_flag_generation(&sb);

    // A difference: blocked, and the way out is a repair, which leaves none.
    sb.target_cmd(&["SET", "token:only-on-new", "x"]);
    sb.cachemig(&["verify"]).assert_code(1);
    assert_verified(&sb, "blocked", "1 unresolved difference(s)");
    assert_verified(&sb, "blocked", "--repair");
    sb.cachemig(&["verify", "--repair"]).assert_success();
    assert_verified(&sb, "pass", "0 unresolved");

    // A sample smaller than the plan accepts, then one large enough.
    sb.cachemig(&["verify", "--sample", "2"]).assert_success();
    assert_verified(&sb, "blocked", "below [verify] gate_sample = 5");
    sb.cachemig(&["verify", "--sample", "50"]).assert_success();
    assert_verified(&sb, "pass", "verify --sample 50");

    // The step makes the record stale for the next switch.
    sb.cachemig(&["advance", "--yes"]).assert_success();
    assert_eq!(sb.flag().unwrap().phase, "read-cutover");
    wait_for_reports_at_flag_generation(&sb);
    assert_verified(&sb, "blocked", "not fresh");
    drop(proxies);
}
