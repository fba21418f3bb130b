//! A proxy in front of an old Redis that is itself a cluster (cluster-to-cluster migrations),
//! with a slot being resharded on old while writes are sync-mirrored.

mod common;

use std::time::Duration;

use common::proxy::{ProxyProcess, set_phase};
use common::{RedisCluster, wait_for, write_plan};
use redis::Commands;

/// The index and id of the master serving `slot`, and of another master.
fn owner_and_other(cluster: &RedisCluster, slot: u16) -> (usize, usize, String, String) {
    let masters = cluster.masters();
    let ids: Vec<String> = masters.iter().map(|m| m.query(&["CLUSTER", "MYID"])).collect();
    let owner = masters
        .iter()
        .position(|m| {
            m.query::<Vec<Vec<redis::Value>>>(&["CLUSTER", "SLOTS"])
                .iter()
                .any(|r| {
                    let start: i64 = redis::from_redis_value(r[0].clone()).unwrap();
                    let end: i64 = redis::from_redis_value(r[1].clone()).unwrap();
                    let node: Vec<redis::Value> = redis::from_redis_value(r[2].clone()).unwrap();
                    let port: i64 = redis::from_redis_value(node[1].clone()).unwrap();
                    (start..=end).contains(&i64::from(slot)) && port == i64::from(m.port())
                })
        })
        .expect("a master serves the slot");
    let other = (owner + 1) % masters.len();
    (owner, other, ids[owner].clone(), ids[other].clone())
}

/// Review of issue 4: a sync-mirrored write sent with its snapshot read behind it was resent,
/// and so applied again, when the slot was being migrated (ASK) on old.
#[test]
fn issue4_a_write_during_a_slot_migration_on_old_is_applied_once_and_mirrored_after_it() {
    let old = RedisCluster::start(3, 0);
    let new = RedisCluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = new.seed_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let plan = write_plan(
        dir.path(),
        "plan.toml",
        &format!(
            "[migration]\nname = \"sandbox\"\n[source]\nurl = \"{}\"\n[target]\nurls = [{}]\n[proxies]\nexpected = 0\n",
            old.seed_urls()[0],
            urls.join(", ")
        ),
    );
    let proxy = ProxyProcess::start_on(&plan, "p1", &[]);
    let flag = dir.path().join("flags/sandbox.json");
    set_phase(&flag, "sync-dual-write", 1, false, 0.0);
    proxy.wait_generation(1);

    let key = "token:ask";
    let slot = cachemig::cluster::key_slot(key.as_bytes());
    let (from, to, from_id, to_id) = owner_and_other(&old, slot);
    let masters = old.masters();
    let s = slot.to_string();
    let _: () = masters[to].query(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
    let _: () = masters[from].query(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);

    let n: i64 = proxy.conn().incr(key, 1).unwrap();
    assert_eq!(n, 1, "applied once, through ASK");
    let on_importing: i64 = {
        let mut c = masters[to].conn();
        redis::pipe()
            .cmd("ASKING")
            .ignore()
            .cmd("GET")
            .arg(key)
            .query::<(i64,)>(&mut c)
            .unwrap()
            .0
    };
    assert_eq!(on_importing, 1, "the importing node holds it, incremented once");

    // The migration finishes; the mirror then brings new up to date.
    for m in masters {
        let _: () = m.query(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    }
    wait_for("new has the key", Duration::from_secs(15), || {
        new.cluster_conn().get::<_, Option<i64>>(key).unwrap() == Some(1)
    });
}
