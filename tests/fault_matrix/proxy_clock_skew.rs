//! Row: a proxy host whose clock runs 60 s ahead, and one 60 s behind (their process sees the
//! skewed time through libfaketime). Liveness is judged on the new cluster's clock, so the one
//! behind is live while it reports, and the one ahead is missing soon after it dies. A writer
//! through both in `sync-dual-write` meanwhile: old and new equal the model of its writes.

use std::time::Duration;

use super::acked::{Writer, assert_sides_equal};
use crate::common::proxy::{ProxyProcess, set_phase};
use crate::common::reports::expect_proxies;
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

/// libfaketime, installed by `scripts/install-deps` (Debian package `faketime`).
fn libfaketime() -> String {
    let listed = std::process::Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output();
    let text = listed
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.ends_with("/libfaketime.so.1"))
        .expect("libfaketime is installed (scripts/install-deps installs the faketime package)")
        .to_string()
}

/// A proxy whose process sees the wall clock shifted by `offset` (e.g. "+60s"); its monotonic
/// clock is left alone, as on a real host with a wrong wall clock.
fn skewed_proxy(sb: &Sandbox, id: &str, offset: &str) -> ProxyProcess {
    let lib = libfaketime();
    ProxyProcess::start_with_env(
        sb,
        id,
        &[
            ("LD_PRELOAD", &lib),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

/// `(live, age_ms)` of proxy `id` as `cachemig status` reports it.
fn liveness(sb: &Sandbox, id: &str) -> Option<(bool, u64)> {
    let status = sb.cachemig(&["status", "--format", "json"]).json();
    let reports = status["proxies"]["reports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    reports
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| (r["live"].as_bool().unwrap(), r["age_ms"].as_u64().unwrap()))
}

#[test]
fn proxy_clock_skew() {
    let sb = Sandbox::start();
    expect_proxies(&sb, 2, "heartbeat_timeout = \"3s\"\n");
    set_phase(&sb.flag_path(), "sync-dual-write", 1, false, 0.0);
    let mut ahead = skewed_proxy(&sb, "ahead", "+60s");
    let behind = skewed_proxy(&sb, "behind", "-60s");
    ahead.wait_generation(1);
    behind.wait_generation(1);
    let writer = Writer::start(&[&ahead, &behind], "clock");
    wait_for("both proxies live", Duration::from_secs(15), || {
        liveness(&sb, "ahead").is_some_and(|(live, _)| live)
            && liveness(&sb, "behind").is_some_and(|(live, _)| live)
    });
    let (_, age) = liveness(&sb, "behind").unwrap();
    assert!(
        age < 3_000,
        "a report of the proxy behind is fresh, not 60 s old: {age} ms"
    );
    let (model, errors) = writer.finish();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(!model.is_empty());
    for p in [&ahead, &behind] {
        wait_for("mirror drained", Duration::from_secs(20), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    ahead.kill();
    // Judged by its own clock the dead proxy's last report would stay "fresh" for a minute.
    wait_for("the dead proxy counted missing", Duration::from_secs(15), || {
        liveness(&sb, "ahead").is_some_and(|(live, _)| !live)
    });
    assert!(
        liveness(&sb, "behind").unwrap().0,
        "the live proxy behind is still live"
    );
    assert_sides_equal(&sb, &model);
}
