//! Restarting a proxy on its port (`SO_REUSEPORT`): only its predecessor — a live proxy of the
//! same id and migration — may share the port; anything else holding it stops the start, so a
//! mistyped `--listen` never silently splits one port's clients between two proxies. (The
//! restart itself under load is the fault-matrix row `rolling_restart`.)

mod common;

use std::time::Duration;

use common::Cachemig;
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;

/// `cachemig proxy` on `port` as `id`, to completion (it must fail at start).
fn start_refused(sb: &Sandbox, port: u16, id: &str) -> common::Run {
    let run = Cachemig::new()
        .arg("proxy")
        .arg(sb.plan())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--id", id])
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(run.status, 1, "{}", run.stderr);
    run
}

#[test]
fn only_a_live_proxy_of_the_same_id_may_share_the_port() {
    let sb = Sandbox::start();
    // Something else listens (here: the old Redis itself).
    let run = start_refused(&sb, sb.source.port(), "p1");
    assert!(
        run.stderr.contains("is in use, and not by a live proxy p1"),
        "{}",
        run.stderr
    );
    // A proxy of another id holds the port.
    let p1 = ProxyProcess::start(&sb, "p1");
    common::wait_for("p1's first report", Duration::from_secs(10), || {
        redis::cmd("HEXISTS")
            .arg(cachemig::report::reports_key("sandbox"))
            .arg("p1")
            .query(&mut sb.target.cluster_conn())
            .unwrap()
    });
    let run = start_refused(&sb, p1.port, "p2");
    assert!(run.stderr.contains("not by a live proxy p2"), "{}", run.stderr);
    // Its successor (same id) shares it and reports under an interim field until p1 stops.
    let successor = ProxyProcess::successor(&p1, sb.plan(), "p1", &[]);
    assert!(
        successor
            .log()
            .contains(&format!("reporting as p1~{}", successor.pid())),
        "{}",
        successor.log()
    );
}
