//! Row: `verify --repair` in `write-stop`, with a writer running through both proxies. New is the
//! write primary there, so the repair copies new → old: keys written on new whose reverse mirror
//! was lost (deleted on old here) and keys old holds stale are repaired on old, and no
//! acknowledged write on new is reverted or deleted. Old and new then equal the model.

use std::time::Duration;

use redis::Commands;

use super::acked::{Model, Writer, assert_sides_equal, read_through};
use crate::common::load::advance_to;
use crate::common::proxy::ProxyProcess;
use crate::common::reports::expect_proxies;
use crate::common::sandbox::Sandbox;

#[test]
fn verify_repair_write_stop() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 5000\n\n[shadow_read]\nsample_rate = 1.0\nmin_samples = 5\nmax_mismatch_ratio = 0.5\n",
    );
    expect_proxies(&sb, 2, "max_write_pause = \"5s\"\n");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let proxies = [&p1, &p2];
    advance_to(&sb, &proxies, "backfill");
    let writer = Writer::start(&proxies, "w");
    advance_to(&sb, &proxies, "shadow-read");
    let keys: Vec<String> = (0..20).map(|i| format!("token:w:{i}")).collect();
    read_through(&proxies, &keys);
    for phase in ["read-cutover", "write-stop"] {
        // Runs the verify the `verified` gate into each needs first.
        advance_to(&sb, &proxies, phase);
        // Reads served by new: the data of `new-error-ratio`.
        read_through(&proxies, &keys);
    }

    // Keys written on new through a proxy, then lost on old (a reverse mirror that never
    // landed), and a key old holds stale.
    let mut created = Model::new();
    let mut conn = p1.conn();
    for i in 0..30 {
        let (key, value) = (format!("token:ws:{i}"), format!("new{i}"));
        conn.set::<_, _, ()>(&key, &value).unwrap();
        created.insert(key, value);
    }
    crate::common::wait_for("reverse mirror drained", Duration::from_secs(20), || {
        p1.status()["mirror"]["drained"] == true
    });
    let mut old = sb.source.conn();
    for key in created.keys() {
        let _: i64 = old.del(key).unwrap();
    }
    conn.set::<_, _, ()>("token:ws:stale", "fresh").unwrap();
    crate::common::wait_for("reverse mirror drained", Duration::from_secs(20), || {
        p1.status()["mirror"]["drained"] == true
    });
    old.set::<_, _, ()>("token:ws:stale", "stale").unwrap();
    created.insert("token:ws:stale".into(), "fresh".into());

    let run = sb.cachemig(&["verify", "--repair", "--format", "json"]);
    let summary = run.json();
    assert_eq!(run.status, 0, "{summary}\n{}", run.stderr);
    assert_eq!(summary["repair_from"], "new", "{summary}");
    assert!(summary["repaired"].as_u64().unwrap() >= 31, "{summary}");

    let (mut model, errors) = writer.finish();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    for p in proxies {
        crate::common::wait_for("mirror drained", Duration::from_secs(20), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    model.extend(created);
    assert_sides_equal(&sb, &model);
}
