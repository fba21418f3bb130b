//! Issue 3: the backfill copies every type, honours filters and existing-key policies, resumes
//! after kill -9, and reads from a source that is itself a cluster.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cachemig::backfill::BackfillDir;
use common::sandbox::Sandbox;
use common::{Cachemig, RedisCluster, write_plan};
use redis::{Commands, Value};

/// Writes one key of every type (binary-safe names and values, hashtags, TTLs) on `conn`.
fn plant_every_type(conn: &mut impl redis::ConnectionLike) {
    redis::pipe()
        .set(
            b"token:str:\xff\x00bin".as_slice(),
            b"\x00\x01\xfe value".as_slice(),
        )
        .hset_multiple("token:{user42}:hash", &[("a", "1"), ("b", "2"), ("c", "3")])
        .rpush("token:{user42}:list", &["x", "y", "z", "x"])
        .sadd("token:set", &["m1", "m2", "m3"])
        .zadd_multiple("token:zset", &[(1.5, "a"), (2.25, "b"), (-3.0, "c")])
        .cmd("XADD")
        .arg("token:stream")
        .arg("1-1")
        .arg("f")
        .arg("v1")
        .cmd("XADD")
        .arg("token:stream")
        .arg("2-1")
        .arg("f")
        .arg("v2")
        .set("token:ttl-long", "L")
        .pexpire("token:ttl-long", 3_600_000)
        .set("token:ttl-short", "S")
        .pexpire("token:ttl-short", 60_000)
        .set("other:not-migrated", "no")
        .set("token:tmp:excluded", "no")
        .set("__cachemig:{sandbox}:reserved", "no")
        .exec(conn)
        .unwrap();
}

/// An independent, type-by-type reading of every key (value and whether it has a TTL, and the
/// TTL in seconds rounded down to a minute so copies compare equal).
fn dump_keyspace(conns: &mut [redis::Connection]) -> BTreeMap<Vec<u8>, (String, String, i64)> {
    let mut out = BTreeMap::new();
    for conn in conns.iter_mut() {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
        // cachemig's own bookkeeping (the generation beacon) is not data.
        for key in keys.into_iter().filter(|k| !k.starts_with(b"__cachemig:")) {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            let value = match kind.as_str() {
                "string" => format!("{:?}", conn.get::<_, Vec<u8>>(&key).unwrap()),
                "hash" => format!("{:?}", conn.hgetall::<_, BTreeMap<String, String>>(&key).unwrap()),
                "list" => format!("{:?}", conn.lrange::<_, Vec<String>>(&key, 0, -1).unwrap()),
                "set" => {
                    let mut m: Vec<String> = conn.smembers(&key).unwrap();
                    m.sort();
                    format!("{m:?}")
                }
                "zset" => format!(
                    "{:?}",
                    conn.zrange_withscores::<_, Vec<(String, f64)>>(&key, 0, -1)
                        .unwrap()
                ),
                "stream" => format!(
                    "{:?}",
                    redis::cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .query::<Value>(conn)
                        .unwrap()
                ),
                other => panic!("unexpected type {other}"),
            };
            let ttl: i64 = conn.ttl(&key).unwrap();
            out.insert(key, (kind, value, if ttl > 0 { ttl / 60 } else { ttl }));
        }
    }
    out
}

fn target_conns(cluster: &RedisCluster) -> Vec<redis::Connection> {
    cluster.masters().iter().map(|m| m.conn()).collect()
}

#[test]
fn every_type_is_copied_and_filters_and_reserved_keys_hold() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[backfill]\nscan_count = 3\n");
    sb.cachemig(&["plan"]).assert_code(0);
    let mut src = sb.source.conn();
    plant_every_type(&mut src);
    // exclude patterns are honoured too
    let plan = std::fs::read_to_string(sb.plan()).unwrap().replace(
        "include = [\"token:*\"]",
        "include = [\"token:*\"]\nexclude = [\"token:tmp:*\"]",
    );
    std::fs::write(sb.plan(), plan).unwrap();

    sb.cachemig(&["advance", "--yes"])
        .assert_code(0)
        .assert_stdout_contains("entry action backfill");

    let mut source = dump_keyspace(&mut [sb.source.conn()]);
    source.retain(|k, _| k.starts_with(b"token:") && !k.starts_with(b"token:tmp:"));
    let target = dump_keyspace(&mut target_conns(&sb.target));
    assert_eq!(source.len(), 8);
    assert_eq!(
        target, source,
        "the target must equal the filtered source, type by type"
    );
    let progress = BackfillDir::new(&sb.state_dir()).progress().unwrap().unwrap();
    assert!(progress.complete());
    assert_eq!(progress.counters.copied, 8);
    assert_eq!(progress.counters.failed, 0);
}

#[test]
fn existing_keys_are_kept_under_skip_and_replaced_under_replace() {
    for (policy, expected) in [("skip", "target-value"), ("replace", "source-value")] {
        let mut sb = Sandbox::start();
        sb.set_plan_extra(&format!("[backfill]\non_existing = \"{policy}\"\n"));
        sb.source_cmd(&["SET", "token:a", "source-value"]);
        sb.source_cmd(&["SET", "token:b", "only-in-source"]);
        sb.target_cmd(&["SET", "token:a", "target-value"]);
        let mut args = vec!["advance", "--yes"];
        if policy == "skip" {
            // target-empty blocks under skip: the operator acknowledges the existing key
            args.extend(["--skip-gate", "target-empty", "--reason", "test"]);
        }
        sb.cachemig(&args).assert_code(0);
        assert_eq!(sb.target_cmd(&["GET", "token:a"]), expected, "policy {policy}");
        assert_eq!(sb.target_cmd(&["GET", "token:b"]), "only-in-source");
        let counters = BackfillDir::new(&sb.state_dir())
            .progress()
            .unwrap()
            .unwrap()
            .counters;
        assert_eq!(
            counters.skipped_existing,
            u64::from(policy == "skip"),
            "policy {policy}"
        );
    }
}

#[test]
fn kill_9_mid_backfill_then_resume_completes_without_starting_over() {
    let mut sb = Sandbox::start();
    // Slow enough (rate cap) that the kill lands mid-run; small batches so checkpoints move.
    sb.set_plan_extra(
        "[backfill]\nscan_count = 100\nmax_keys_per_sec = 10000\nmax_source_latency_ms = 1000\n",
    );
    let n = 40_000u64;
    sb.fill_source(n);
    let child = sb.spawn(&["advance", "--yes"]);
    let dir = BackfillDir::new(&sb.state_dir());
    common::wait_for("a checkpoint past 5000 keys", Duration::from_secs(60), || {
        dir.progress()
            .ok()
            .flatten()
            .is_some_and(|p| p.counters.copied >= 5000)
    });
    let _ = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait_with_output();
    let before = dir.progress().unwrap().unwrap();
    assert!(!before.complete(), "the kill must land mid-run");

    sb.set_plan_extra("[backfill]\nscan_count = 100\nmax_source_latency_ms = 1000\n");
    // The plan changed (rate cap lifted): resume uses the same checkpoints.
    sb.cachemig(&["resume"]).assert_code(0);
    let after = dir.progress().unwrap().unwrap();
    assert!(after.complete());
    assert_eq!(sb.target.dbsize(), n, "every key present after resume");
    // Resumed, not restarted: keys scanned over both runs stay well below two full scans.
    assert!(
        after.counters.scanned < n + before.counters.scanned,
        "{after:?} vs {before:?}"
    );
    assert!(after.counters.scanned >= n);
}

#[test]
fn a_source_that_is_a_cluster_is_scanned_on_every_master() {
    let source = RedisCluster::start(3, 0);
    let target = RedisCluster::start(3, 0);
    let mut conn = source.cluster_conn();
    for i in 0..300 {
        let _: () = conn.set(format!("k:{i}"), i).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = target.seed_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let body = format!(
        "[migration]\nname = \"c2c\"\n[source]\nurl = \"{}\"\n[target]\nurls = [{}]\n[proxies]\nexpected = 0\n",
        source.seed_urls()[0],
        urls.join(", ")
    );
    let plan = write_plan(dir.path(), "plan.toml", &body);
    Cachemig::new()
        .args(["advance", plan.to_str().unwrap(), "--yes"])
        .run()
        .assert_code(0);
    assert_eq!(target.dbsize(), 300);
    let progress = BackfillDir::new(&dir.path().join(".cachemig/c2c"))
        .progress()
        .unwrap()
        .unwrap();
    assert_eq!(progress.nodes, 3, "one checkpoint per source master");
    assert!(progress.complete());
}

#[test]
fn re_entering_backfill_after_a_rollback_copies_afresh() {
    let sb = Sandbox::start();
    sb.source_cmd(&["SET", "token:1", "a"]);
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    sb.cachemig(&["rollback", "--yes"]).assert_code(0);
    sb.source_cmd(&["SET", "token:2", "b"]);
    // The first run's keys are in the target now; the operator acknowledges them.
    sb.advance_acknowledging_existing_keys("our own first pass")
        .assert_code(0);
    assert_eq!(
        sb.target_cmd(&["GET", "token:2"]),
        "b",
        "a fresh entry must scan again, not reuse 'done'"
    );
    let archived = std::fs::read_dir(sb.state_dir()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("backfill.")
    });
    assert_eq!(archived.count(), 1, "the first run's files are kept aside");
}

#[test]
fn big_keys_and_keys_about_to_expire_go_through_the_backfill() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[backfill]\nbig_key_bytes = \"1KiB\"\n");
    let mut src = sb.source.conn();
    let fields: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("f{i}"), format!("value-{i}")))
        .collect();
    let _: () = src.hset_multiple("token:big-hash", &fields).unwrap();
    let _: () = src.pexpire("token:big-hash", 3_600_000).unwrap();
    let _: () = src.set("token:small", "s").unwrap();
    // Expires within milliseconds: it must never appear in the target without a TTL.
    let _: () = redis::cmd("SET")
        .arg("token:expiring")
        .arg("x")
        .arg("PX")
        .arg(5)
        .query(&mut src)
        .unwrap();
    sb.cachemig(&["advance", "--yes"]).assert_code(0);

    let mut target = sb.target.cluster_conn();
    let copied: BTreeMap<String, String> = target.hgetall("token:big-hash").unwrap();
    assert_eq!(copied.len(), 3000);
    assert_eq!(copied["f2999"], "value-2999");
    let ttl: i64 = target.ttl("token:big-hash").unwrap();
    assert!(ttl > 3500, "TTL applied last and kept: {ttl}");
    assert_eq!(
        target.get::<_, Option<String>>("token:small").unwrap().as_deref(),
        Some("s")
    );
    let expiring_ttl: i64 = target.pttl("token:expiring").unwrap();
    assert!(
        expiring_ttl != -1,
        "a key about to expire must not become persistent"
    );
    let counters = BackfillDir::new(&sb.state_dir())
        .progress()
        .unwrap()
        .unwrap()
        .counters;
    assert_eq!(counters.big_keys, 1, "{counters:?}");
    let leftovers: Vec<String> = sb
        .target
        .masters()
        .iter()
        .flat_map(|m| m.query::<Vec<String>>(&["KEYS", "__cachemig:tmp:*"]))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary key left behind: {leftovers:?}"
    );
}

#[test]
fn a_source_that_refuses_scripts_is_read_with_multi_exec() {
    let sb = Sandbox::start();
    sb.source_cmd(&[
        "ACL",
        "SETUSER",
        "default",
        "on",
        "nopass",
        "~*",
        "&*",
        "+@all",
        "-@scripting",
    ]);
    for i in 0..50 {
        sb.source_cmd(&["SET", &format!("token:{i}"), &i.to_string()]);
    }
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    assert_eq!(sb.target.dbsize(), 50);
    assert_eq!(sb.target_cmd(&["GET", "token:49"]), "49");
}
