//! Issue 2: one writer at a time, crash consistency (the journal wins), and secrets stay secret.

mod common;

use std::time::Duration;

use cachemig::state::Lock;
use common::sandbox::{Sandbox, SlowProxy};

#[test]
fn a_second_advance_fails_at_once_naming_the_lock_holder() {
    let sb = Sandbox::start();
    let _held = Lock::acquire(&sb.state_dir().join("lock"), "pid 4242 (advance) alice@bastion").unwrap();
    let run = sb.cachemig(&["advance", "--yes"]);
    run.assert_code(1)
        .assert_stderr_contains("holds the lock")
        .assert_stderr_contains("alice@bastion");
    assert!(sb.flag().is_none());
}

#[test]
fn two_concurrent_advances_exactly_one_wins() {
    // The source answers through a proxy that delays replies, so the first advance holds the lock
    // for a while; the second one starts inside that window.
    let mut sb = Sandbox::start();
    let slow = SlowProxy::start(sb.source.port(), Duration::from_millis(800));
    sb.rewrite_plan_source(&format!("redis://127.0.0.1:{}", slow.port()));
    let first = sb.spawn(&["advance", "--yes"]);
    std::thread::sleep(Duration::from_millis(300));
    let second = sb.spawn(&["advance", "--yes"]);
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap_or(-1)).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count(),
        1,
        "exactly one must win: {codes:?}"
    );
    let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
    let stderr = String::from_utf8_lossy(&loser.stderr);
    assert!(
        stderr.contains("holds the lock"),
        "loser must name the lock: {stderr}"
    );
    assert_eq!(sb.flag().unwrap().generation, 1);
    assert_eq!(sb.journal_text().matches("\"event\":\"transition\"").count(), 1);
}

#[test]
fn status_reports_drift_and_repair_rewrites_from_the_journal() {
    let sb = Sandbox::start();
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    // Simulate a crash between the journal commit and the derived files of a later step: put an
    // older flag file and a stale state record back.
    let flag_path = sb.flag_path();
    let old_flag = std::fs::read(&flag_path).unwrap();
    let old_state = std::fs::read(sb.state_dir().join("state.json")).unwrap();
    sb.cachemig(&["rollback", "--yes"]).assert_code(0);
    std::fs::write(&flag_path, &old_flag).unwrap();
    std::fs::write(sb.state_dir().join("state.json"), &old_state).unwrap();

    let status = sb.cachemig(&["status"]);
    status.assert_code(0).assert_stdout_contains("DRIFT");
    assert_eq!(
        sb.flag().unwrap().generation,
        1,
        "status without --repair must not write"
    );
    sb.cachemig(&["status", "--repair"])
        .assert_code(0)
        .assert_stdout_contains("repaired");
    let flag = sb.flag().unwrap();
    assert_eq!((flag.generation, flag.phase.as_str()), (2, "planned"));
    sb.cachemig(&["status"]).assert_code(0);
    assert!(!sb.cachemig(&["status"]).stdout.contains("DRIFT"));
}

#[test]
fn kill_9_at_any_instant_leaves_a_consistent_or_repairable_state() {
    let sb = Sandbox::start();
    for round in 0..12u64 {
        let child = sb.spawn(&[if round % 2 == 0 { "advance" } else { "rollback" }, "--yes"]);
        std::thread::sleep(Duration::from_millis(round * 7));
        let pid = child.id();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        let _ = child.wait_with_output();
        // The next command repairs whatever the kill left behind; the journal wins.
        sb.cachemig(&["status", "--repair"]).assert_code(0);
        let journal = sb.journal_entries();
        let generation = journal.last().map_or(0, |e| e.generation);
        match sb.flag() {
            Some(flag) => assert_eq!(flag.generation, generation, "round {round}"),
            None => assert_eq!(generation, 0, "round {round}"),
        }
        assert!(
            !sb.cachemig(&["status"]).stdout.contains("DRIFT"),
            "round {round}"
        );
        // Move back to planned so the next round can advance again.
        if journal.iter().rev().find_map(|e| match &e.event {
            cachemig::state::Event::Transition { to, .. } => Some(to.clone()),
            _ => None,
        }) == Some("backfill".into())
        {
            sb.cachemig(&["rollback", "--yes"]).assert_code(0);
        }
    }
}

#[test]
fn secrets_never_reach_output_journal_or_flag_file() {
    let secret = "s3cret-Pa55word-xyz";
    let sb = Sandbox::start_with_source_password(secret);
    for args in [
        &["plan"][..],
        &["advance", "--yes"],
        &["status", "--format", "json"],
        &["plan", "--format", "json"],
    ] {
        let run = sb.cachemig(args);
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{args:?} leaked the secret"
        );
    }
    assert_eq!(
        sb.flag().unwrap().phase,
        "backfill",
        "advance with the password from the env must work"
    );
    for (path, bytes) in sb.snapshot() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the secret",
            path.display()
        );
    }
}
