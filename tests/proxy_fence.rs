//! The primary-switch fence in a real proxy: writes are held while reads go on, and released on
//! the new primary by the next generation. (The CLI's side, acks and fallback, is in
//! tests/proxy_walk.rs with real proxies and in tests/proxy_reports.rs.)

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

/// Starts `SET key value` on its own connection; the receiver gets the result when it returns.
fn set_in_background(proxy: &ProxyProcess, key: &str, value: &str) -> mpsc::Receiver<redis::RedisResult<()>> {
    let (tx, rx) = mpsc::channel();
    let mut conn = proxy.conn();
    let (key, value) = (key.to_string(), value.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(conn.set(key, value));
    });
    rx
}

#[test]
fn the_fence_holds_writes_serves_reads_and_releases_writes_on_the_new_primary() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    set_phase(&sb.flag_path(), "read-cutover", 1, false, 0.0);
    proxy.wait_generation(1);
    set_phase(&sb.flag_path(), "read-cutover", 2, true, 0.0);
    proxy.wait_generation(2);
    wait_for("fence drained", Duration::from_secs(5), || {
        proxy.status()["fence"] == "drained"
    });

    let held = set_in_background(&proxy, "token:fenced", "v");
    std::thread::sleep(Duration::from_millis(300));
    assert!(held.try_recv().is_err(), "the write is held");
    assert_eq!(proxy.status()["held_writes"], 1);
    let _: () = sb.target.cluster_conn().set("token:r", "new").unwrap();
    let read: String = proxy.conn().get("token:r").unwrap();
    assert_eq!(read, "new", "reads go on during the fence");
    let on_old: Option<String> = sb.source.conn().get("token:fenced").unwrap();
    assert_eq!(on_old, None, "nothing applied while held");

    set_phase(&sb.flag_path(), "write-stop", 3, false, 0.0);
    held.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let on_new: Option<String> = sb.target.cluster_conn().get("token:fenced").unwrap();
    assert_eq!(on_new.as_deref(), Some("v"), "released onto the new primary");
    wait_for("reverse mirror to old", Duration::from_secs(5), || {
        sb.source
            .conn()
            .get::<_, Option<String>>("token:fenced")
            .unwrap()
            .as_deref()
            == Some("v")
    });
}
