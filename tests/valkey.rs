//! Issue 12, item 3: Valkey on either side. Two real proxies and concurrent writers walk the
//! phases into `write-stop` and back once, with a Valkey 8.1 cluster as the target (from
//! Debian's Redis 7.0; the reverse mirror copies by type) and with a Valkey 8.1 standalone
//! source; a Valkey cluster as the source is backfilled and verified into a Redis 7.0 cluster (by
//! type: Valkey's payloads are RDB 11). Each ends with old and new compared key by key against a
//! model of every acknowledged write, or against each other type by type.

mod common;

use std::time::Duration;

use common::compare::differences_on;
use common::load::{self, Writers};
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;
use common::{Cachemig, Flavor, RedisCluster, wait_for, write_plan};

/// Writers through two proxies from `planned` to `last`, one rollback and forward again; no
/// client error, and old = new = the model.
fn walk(from: Flavor, to: Flavor, last: &str) {
    let mut sb = Sandbox::start_of(from, to);
    sb.fill_source(200);
    load::configure(&mut sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let writers = Writers::start("token:vk", &[p1.port, p2.port], 4);
    writers.wait_progress(50);
    load::advance_to(&sb, &[&p1, &p2], last);
    writers.wait_progress(50);
    sb.cachemig(&["rollback", "--yes"]).assert_success();
    load::settle(&sb, &[&p1, &p2]);
    writers.wait_progress(50);
    load::advance_to(&sb, &[&p1, &p2], last);
    writers.wait_progress(50);
    let out = writers.finish();
    assert!(out.errors.is_empty(), "client errors: {:?}", out.errors);
    for p in [&p1, &p2] {
        wait_for("mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let differences = load::differences(&sb, &out.model);
    assert!(differences.is_empty(), "{differences:#?}");
    // The keys written before the backfill, which no writer touched, came over too.
    let untouched: Vec<String> = (0..200).map(|i| format!("token:{i}")).collect();
    assert!(common::compare::differences(&sb, &untouched).is_empty());
}

/// Into `write-stop` and back: there the reverse mirror copies Valkey's RDB 11 keys to Redis 7.0,
/// which cannot RESTORE them, by type.
#[test]
fn redis_7_0_to_a_valkey_8_1_cluster_walks_every_phase_through_two_proxies() {
    walk(Flavor::Redis70, Flavor::Valkey81, "write-stop");
}

#[test]
fn a_valkey_8_1_source_walks_every_phase_through_two_proxies() {
    walk(Flavor::Valkey81, Flavor::Valkey81, "write-stop");
}

#[test]
fn a_valkey_8_1_cluster_source_is_backfilled_by_type_into_redis_7_0_and_verified() {
    let (source, target) = std::thread::scope(|s| {
        let t = s.spawn(|| RedisCluster::start_of(Flavor::Redis70, 3, 0, None));
        (
            RedisCluster::start_of(Flavor::Valkey81, 3, 0, None),
            t.join().unwrap(),
        )
    });
    let mut conn = source.cluster_conn();
    let keys: Vec<String> = (0..300).map(|i| format!("k:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: () = match i % 3 {
            0 => redis::cmd("SET").arg(key).arg(i).query(&mut conn).unwrap(),
            1 => redis::cmd("RPUSH")
                .arg(key)
                .arg("a")
                .arg(i)
                .query(&mut conn)
                .unwrap(),
            _ => redis::cmd("HSET")
                .arg(key)
                .arg("f")
                .arg(i)
                .query(&mut conn)
                .unwrap(),
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = target.seed_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let body = format!(
        "[migration]\nname = \"vk\"\n[source]\nurl = \"{}\"\n[target]\nurls = [{}]\n[proxies]\nexpected = 0\n",
        source.seed_urls()[0],
        urls.join(", ")
    );
    let plan = write_plan(dir.path(), "plan.toml", &body);
    let run = |args: &[&str]| Cachemig::new().arg(args[0]).arg(&plan).args(&args[1..]).run();
    run(&["plan"])
        .assert_success()
        .assert_stdout_contains("copy mode: by-type");
    run(&["advance", "--yes"])
        .assert_success()
        .assert_stderr_contains("copy mode by-type");
    run(&["verify"]).assert_success();
    assert_eq!(target.dbsize(), 300);
    let differing = differences_on(&mut conn, &mut target.cluster_conn(), &keys);
    assert!(differing.is_empty(), "old and new differ: {differing:#?}");
}
