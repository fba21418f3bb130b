//! The proxy routes every phase as the catalog says, checked on the backends directly.

mod common;

use std::time::Duration;

use cachemig::phase::{Catalog, MirrorMode, Side};
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

fn get_side(sb: &Sandbox, side: Side, key: &str) -> Option<String> {
    match side {
        Side::Old => sb.source.conn().get(key).unwrap(),
        Side::New => sb.target.cluster_conn().get(key).unwrap(),
    }
}

#[test]
fn every_phase_routes_as_the_catalog_says() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut conn = proxy.conn();
    for (i, phase) in Catalog::builtin().phases().iter().enumerate() {
        let generation = i as u64 + 1;
        set_phase(&sb.flag_path(), &phase.name, generation, false, 0.0);
        proxy.wait_generation(generation);
        let r = phase.routing;

        // Reads: each side holds a different value; the reply tells which side served it.
        let read_key = format!("token:read:{}", phase.name);
        let _: () = sb.source.conn().set(&read_key, "old").unwrap();
        let _: () = sb.target.cluster_conn().set(&read_key, "new").unwrap();
        let got: String = conn.get(&read_key).unwrap();
        assert_eq!(got, r.read.to_string(), "{}: read side", phase.name);

        // Writes land on the write side, and on the other side as the mirror says.
        let key = format!("token:write:{}", phase.name);
        let _: () = conn.set(&key, "v").unwrap();
        assert_eq!(
            get_side(&sb, r.write, &key).as_deref(),
            Some("v"),
            "{}: write side",
            phase.name
        );
        let other = r.write.other();
        match r.mirror {
            MirrorMode::Sync => {
                assert_eq!(
                    get_side(&sb, other, &key).as_deref(),
                    Some("v"),
                    "{}: sync mirror",
                    phase.name
                )
            }
            MirrorMode::Async => wait_for(
                &format!("{}: async mirror", phase.name),
                Duration::from_secs(5),
                || get_side(&sb, other, &key).as_deref() == Some("v"),
            ),
            MirrorMode::Off => {
                std::thread::sleep(Duration::from_millis(200));
                assert_eq!(get_side(&sb, other, &key), None, "{}: no mirror", phase.name);
            }
        }
    }
    assert!(proxy.log().contains("applied generation 7"), "{}", proxy.log());
}

#[test]
fn cachemig_status_shows_the_live_proxy_and_its_hot_keys() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut conn = proxy.conn();
    for _ in 0..400 {
        let _: Option<String> = conn.get("token:hot").unwrap();
    }
    for i in 0..40 {
        let _: Option<String> = conn.get(format!("token:cold:{i}")).unwrap();
    }
    wait_for("a report with the hot key", Duration::from_secs(10), || {
        let json = sb.cachemig(&["status", "--format", "json"]).json();
        json["proxies"]["hot_keys"]
            .as_array()
            .and_then(|keys| keys.first())
            .is_some_and(|top| top["key"] == "token:hot")
    });
    let json = sb.cachemig(&["status", "--format", "json"]).json();
    let report = &json["proxies"]["reports"][0];
    assert_eq!(report["id"], "p1", "{json}");
    assert_eq!(report["live"], true, "{json}");
    sb.cachemig(&["status"])
        .assert_success()
        .assert_stdout_contains("token:hot");
}
