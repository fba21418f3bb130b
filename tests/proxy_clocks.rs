//! Issue 9, clocks: a proxy host whose clock runs 60 s ahead, and one 60 s behind (their process
//! sees the skewed time through libfaketime). Liveness is judged on the new cluster's clock, so
//! the one behind is live while it reports, and the one ahead is missing soon after it dies.

mod common;

use std::time::Duration;

use common::proxy::ProxyProcess;
use common::reports::expect_proxies;
use common::sandbox::Sandbox;
use common::wait_for;

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
fn liveness_ignores_proxy_host_clocks_60s_ahead_or_behind() {
    let sb = Sandbox::start();
    expect_proxies(&sb, 2, "heartbeat_timeout = \"3s\"\n");
    let mut ahead = skewed_proxy(&sb, "ahead", "+60s");
    let _behind = skewed_proxy(&sb, "behind", "-60s");
    wait_for("both proxies live", Duration::from_secs(15), || {
        liveness(&sb, "ahead").is_some_and(|(live, _)| live)
            && liveness(&sb, "behind").is_some_and(|(live, _)| live)
    });
    let (_, age) = liveness(&sb, "behind").unwrap();
    assert!(
        age < 3_000,
        "a report of the proxy behind is fresh, not 60 s old: {age} ms"
    );
    ahead.kill();
    // Judged by its own clock the dead proxy's last report would stay "fresh" for a minute.
    wait_for("the dead proxy counted missing", Duration::from_secs(15), || {
        liveness(&sb, "ahead").is_some_and(|(live, _)| !live)
    });
    assert!(
        liveness(&sb, "behind").unwrap().0,
        "the live proxy behind is still live"
    );
}
