//! Unit tests of `eval`.

use super::*;
use crate::gate::GateResult;
use crate::phase::Catalog;

#[test]
fn rdb_compatibility() {
    assert!(rdb_loadable(9, 10));
    assert!(!rdb_loadable(11, 10));
    assert!(rdb_loadable(11, 80), "Valkey 9 loads Redis 7.2 payloads");
    assert!(!rdb_loadable(12, 80), "Valkey 9 refuses Redis 7.4 payloads");
}

#[test]
fn every_catalog_gate_has_an_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "[migration]\nname='t'\n[source]\nurl='redis://127.0.0.1:1'\n[target]\nurls=['redis://127.0.0.1:2']\n[proxies]\nexpected=0\n").unwrap();
    let plan = Plan::load(&path).unwrap();
    let state = State::from_journal("t", "planned", &[]);
    for phase in Catalog::builtin().phases() {
        for r in evaluate(&plan, &state, phase, None, None, Utc::now()) {
            assert!(
                !r.measured.contains("does not know"),
                "{}: {}",
                phase.name,
                r.gate
            );
        }
    }
}

/// A plan expecting two proxies, read-cutover in force at generation 5 for a minute, and a view
/// of two live proxies at that generation, p1 with `counters`, both with a mirror `queue`.
fn blocked_by(counters: Counters, queue: u64, to: &str) -> Vec<GateResult> {
    use crate::report::{FenceState, ProxyReport};
    use crate::state::{Entry, Event, TransitionKind};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "[migration]\nname='t'\n[source]\nurl='redis://127.0.0.1:1'\n[target]\nurls=['redis://127.0.0.1:2']\n[proxies]\nexpected=2\n").unwrap();
    let plan = Plan::load(&path).unwrap();
    let now = Utc::now();
    let from = if to == "finalized" {
        "write-stop"
    } else {
        "read-cutover"
    };
    let entry = Entry {
        seq: 1,
        time: now - chrono::Duration::seconds(60),
        user: "u@h".into(),
        generation: 5,
        event: Event::Transition {
            kind: TransitionKind::Advance,
            from: "x".into(),
            to: from.into(),
            plan_sha256: "s".into(),
            reason: None,
        },
    };
    let state = State::from_journal("t", "planned", &[entry]);
    let report = |id: &str, counters: Counters| ProxyReport {
        id: id.into(),
        generation: 5,
        phase: from.into(),
        fence: FenceState::Off,
        written_at_ms: 99_000,
        applied_at_ms: 0,
        counters,
        mirror_queue_depth: queue,
        mirror_lag_ms: 0,
        dirty_keys: 0,
        qps: 0.0,
        last_error: None,
        flag_error: None,
        hot_keys: Vec::new(),
        stale: None,
    };
    let view = ProxyView {
        reports: Ok(vec![report("p1", counters), report("p2", Counters::default())]),
        unparsable: Vec::new(),
        now_ms: 100_000,
        generation: 5,
        heartbeat_timeout: std::time::Duration::from_secs(10),
        expected: 2,
        backlogs: Vec::new(),
    };
    let phase = Catalog::builtin().get(to).unwrap();
    evaluate(&plan, &state, phase, None, Some(&view), now)
        .into_iter()
        .filter(|r| !r.verdict.allows())
        .collect()
}

#[test]
fn one_transient_sync_failure_names_the_commands_that_clear_it() {
    let counters = Counters {
        requests: 100,
        new_requests: 100,
        sync_mirror_failures: 1,
        ..Counters::default()
    };
    let blocked = blocked_by(counters, 0, "write-stop");
    let sync = blocked
        .iter()
        .find(|r| r.gate == "sync-mirror-failures")
        .expect("one failure blocks");
    assert!(
        sync.measured.contains("1 failed sync mirror(s)"),
        "{}",
        sync.measured
    );
    assert!(sync.measured.contains("`cachemig verify "), "{}", sync.measured);
    assert!(
        sync.measured
            .contains("--skip-gate sync-mirror-failures --reason TEXT"),
        "{}",
        sync.measured
    );
}

#[test]
fn every_blocking_counter_gate_and_the_soak_name_their_way_out() {
    let counters = Counters {
        requests: 100,
        new_requests: 100,
        new_errors: 50,
        mirror_ok: 10,
        mirror_errors: 10,
        shadow_samples: 1,
        shadow_mismatches: 1,
        ..Counters::default()
    };
    // The soak (10 minutes by default, a minute in force) and the error ratios block here.
    let mut blocked = blocked_by(counters, 0, "write-stop");
    blocked.extend(blocked_by(counters, 0, "read-cutover"));
    let mut phase3 = blocked_by(counters, 0, "sync-dual-write");
    phase3.retain(|r| r.gate != "catch-up-clean");
    blocked.extend(phase3);
    for gate in [
        "soak",
        "new-error-ratio",
        "mirror-error-ratio",
        "shadow-mismatch-ratio",
        "shadow-samples",
    ] {
        assert!(
            blocked.iter().any(|r| r.gate == gate),
            "{gate} should block: {blocked:?}"
        );
    }
    for r in blocked
        .iter()
        .filter(|r| r.gate != "verified" && r.gate != "bypass-writers")
    {
        assert!(
            r.measured.contains("`cachemig ") || r.measured.contains("wait "),
            "{} does not say the way out: {}",
            r.gate,
            r.measured
        );
    }
    let soak = blocked.iter().find(|r| r.gate == "soak").unwrap();
    assert!(soak.measured.contains("wait 9m"), "{}", soak.measured);
}

#[test]
fn finalize_waits_for_the_reverse_mirror_to_drain() {
    let counters = Counters::default();
    let blocked = blocked_by(counters, 3, "finalized");
    let drained = blocked
        .iter()
        .find(|r| r.gate == "reverse-mirror-drained")
        .expect("a queued key blocks");
    assert!(
        drained.measured.contains("p1 3 queued, 0 failed"),
        "{}",
        drained.measured
    );
    assert!(
        drained.measured.contains("run finalize again"),
        "{}",
        drained.measured
    );
    let blocked = blocked_by(counters, 0, "finalized");
    assert!(
        !blocked.iter().any(|r| r.gate == "reverse-mirror-drained"),
        "{blocked:?}"
    );
}
