//! Data through the proxy: mirrored writes on keys the backfill never copied, multi-key commands
//! split across cluster slots, and shadow reads that catch a divergent key.

mod common;

use std::time::Duration;

use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

/// Every key of `token:*` on a side: (key, type, DUMP-free canonical value, has TTL).
fn side_state(conn: &mut dyn redis::ConnectionLike, keys: &[String]) -> Vec<(String, String, String, bool)> {
    keys.iter()
        .map(|k| {
            let kind: String = redis::cmd("TYPE").arg(k).query(conn).unwrap();
            let value = match kind.as_str() {
                "string" => redis::cmd("GET").arg(k).query::<String>(conn).unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(k)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(conn)
                    .unwrap()
                    .join(","),
                "hash" => {
                    let mut v: Vec<(String, String)> = redis::cmd("HGETALL").arg(k).query(conn).unwrap();
                    v.sort();
                    format!("{v:?}")
                }
                _ => String::new(),
            };
            let ttl: i64 = redis::cmd("TTL").arg(k).query(conn).unwrap();
            (k.clone(), kind, value, ttl > 0)
        })
        .collect()
}

/// INCR, LPUSH, HINCRBY, EXPIRE and DEL on keys that exist only on old (never backfilled).
fn mutate(conn: &mut redis::Connection, tag: &str) -> Vec<String> {
    let keys: Vec<String> = ["counter", "list", "hash", "expiring", "deleted"]
        .iter()
        .map(|k| format!("token:{tag}:{k}"))
        .collect();
    for _ in 0..5 {
        let _: i64 = conn.incr(&keys[0], 1).unwrap();
        let _: i64 = conn.lpush(&keys[1], "x").unwrap();
        let _: i64 = conn.hincr(&keys[2], "f", 2).unwrap();
    }
    let _: () = conn.set(&keys[3], "soon").unwrap();
    let _: bool = conn.expire(&keys[3], 300).unwrap();
    let _: () = conn.set(&keys[4], "gone").unwrap();
    let _: i64 = conn.del(&keys[4]).unwrap();
    keys
}

fn seed_old_only(sb: &Sandbox, tag: &str) {
    let mut old = sb.source.conn();
    let _: () = old.set(format!("token:{tag}:counter"), 100).unwrap();
    let _: i64 = old.rpush(format!("token:{tag}:list"), "seed").unwrap();
    let _: i64 = old.hset(format!("token:{tag}:hash"), "f", 10).unwrap();
    let _: () = old.set(format!("token:{tag}:deleted"), "was here").unwrap();
}

#[test]
fn mirrored_writes_on_keys_never_backfilled_end_up_identical_in_async_and_sync_mode() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut conn = proxy.conn();
    for (generation, phase) in [(1u64, "async-dual-write"), (2, "sync-dual-write")] {
        seed_old_only(&sb, phase);
        set_phase(&sb.flag_path(), phase, generation, false, 0.0);
        proxy.wait_generation(generation);
        let keys = mutate(&mut conn, phase);
        let old = side_state(&mut sb.source.conn(), &keys);
        assert_eq!(old[0].2, "105", "the INCRs ran on old");
        let mut new_conn = sb.target.cluster_conn();
        if phase == "sync-dual-write" {
            assert_eq!(
                side_state(&mut new_conn, &keys),
                old,
                "sync: identical at reply time"
            );
        } else {
            wait_for("async mirror catches up", Duration::from_secs(10), || {
                side_state(&mut new_conn, &keys) == old
            });
        }
        // A sync is counted when its re-check ends, a moment after the data already matches.
        wait_for("every key's sync counted", Duration::from_secs(5), || {
            proxy.status()["counters_since_generation"]["mirror_ok"].as_u64() >= Some(5)
        });
        let status = proxy.status();
        assert_eq!(
            status["counters_since_generation"]["mirror_errors"], 0,
            "{status}"
        );
    }
}

#[test]
fn cross_slot_multi_key_commands_are_split_and_merged_on_the_cluster() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    set_phase(&sb.flag_path(), "write-stop", 1, false, 0.0);
    proxy.wait_generation(1);
    let mut conn = proxy.conn();
    let keys: Vec<String> = (0..20).map(|i| format!("token:multi:{i}")).collect();
    let slots: std::collections::BTreeSet<u16> = keys
        .iter()
        .map(|k| cachemig::cluster::key_slot(k.as_bytes()))
        .collect();
    assert!(slots.len() > 3, "the keys span several slots");
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let _: () = conn.mset(&pairs).unwrap();
    let mut with_missing = keys.clone();
    with_missing.insert(3, "token:multi:absent".into());
    let got: Vec<Option<String>> = conn.mget(&with_missing).unwrap();
    let mut want: Vec<Option<String>> = keys.iter().map(|k| Some(format!("v-{k}"))).collect();
    want.insert(3, None);
    assert_eq!(got, want, "MGET keeps the key order across slots");
    let exists: i64 = redis::cmd("EXISTS").arg(&with_missing).query(&mut conn).unwrap();
    assert_eq!(exists, 20);
    let touched: i64 = redis::cmd("TOUCH").arg(&keys).query(&mut conn).unwrap();
    assert_eq!(touched, 20);
    // Checked on the cluster directly: every key is where its slot says.
    let direct: Vec<Option<String>> = keys
        .iter()
        .map(|k| sb.target.cluster_conn().get(k).unwrap())
        .collect();
    assert!(direct.iter().all(|v| v.is_some()));
    let deleted: i64 = conn.del(&keys[..10]).unwrap();
    assert_eq!(deleted, 10);
    let unlinked: i64 = conn.unlink(&with_missing).unwrap();
    assert_eq!(unlinked, 10);
    assert_eq!(sb.target.dbsize(), 0, "nothing left but cachemig's reserved keys");
    // MSETNX stays atomic: a cluster refuses it across slots, and the client sees that refusal.
    let err = redis::cmd("MSETNX")
        .arg(&keys[0])
        .arg(1)
        .arg(&keys[1])
        .arg(2)
        .query::<i64>(&mut conn);
    let err = err.unwrap_err();
    assert!(format!("{err:?}").to_uppercase().contains("CROSSSLOT"), "{err:?}");
}

#[test]
fn a_planted_divergent_key_is_caught_by_shadow_reads_counted_and_reported() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    for i in 0..50 {
        let _: () = old.set(format!("token:same:{i}"), i).unwrap();
        let _: () = new.set(format!("token:same:{i}"), i).unwrap();
    }
    let _: () = old.sadd("token:set", &["a", "b", "c"]).unwrap();
    let _: () = new.sadd("token:set", &["c", "b", "a"]).unwrap();
    let _: () = old.set("token:planted", "right").unwrap();
    let _: () = new.set("token:planted", "wrong").unwrap();
    set_phase(&sb.flag_path(), "shadow-read", 1, false, 1.0);
    proxy.wait_generation(1);
    let mut conn = proxy.conn();
    for i in 0..50 {
        let v: String = conn.get(format!("token:same:{i}")).unwrap();
        assert_eq!(v, i.to_string());
    }
    let _: Vec<String> = conn.smembers("token:set").unwrap();
    let v: String = conn.get("token:planted").unwrap();
    assert_eq!(v, "right", "the client is served by old");
    wait_for("shadow samples counted", Duration::from_secs(10), || {
        proxy.status()["counters_since_generation"]["shadow_samples"].as_u64() == Some(52)
    });
    let status = proxy.status();
    assert_eq!(
        status["counters_since_generation"]["shadow_mismatches"], 1,
        "{status}"
    );
    assert!(
        proxy.log().contains("shadow read mismatch: GET token:planted"),
        "{}",
        proxy.log()
    );
    assert!(
        proxy
            .metrics()
            .contains("cachemig_proxy_shadow_mismatches_total 1")
    );
    // The heartbeat carries it to the CLI.
    wait_for("heartbeat report", Duration::from_secs(5), || {
        let reports: std::collections::HashMap<String, String> =
            new.hgetall("__cachemig:{sandbox}:proxies").unwrap();
        reports
            .get("p1")
            .is_some_and(|r| r.contains("\"shadow_mismatches\":1"))
    });
}
