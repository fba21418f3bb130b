//! `cachemig verify` against real Redis: a standalone source and a 3-master cluster target.
//!
//! Data is written to both sides directly (redis-cli, or the redis crate for binary keys and
//! values), never through the backfill, so these tests depend on verify alone.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cachemig::state::Lock;
use common::reports::{expect_proxies, walk_to};
use common::sandbox::Sandbox;
use common::{Cachemig, Run, write_plan};
use redis::{ConnectionLike, Value};

/// Runs `cmd` (one command, binary-safe arguments) on a connection.
fn exec(conn: &mut dyn ConnectionLike, args: &[&[u8]]) -> Value {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(conn)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

/// Runs the same command on the source and on the target.
fn both(sb: &Sandbox, args: &[&[u8]]) {
    exec(&mut sb.source.conn(), args);
    exec(&mut sb.target.cluster_conn(), args);
}

/// Borrowed arguments for [`exec`].
fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Runs a command on the source only.
fn on_source(sb: &Sandbox, args: &[&[u8]]) -> Value {
    exec(&mut sb.source.conn(), args)
}

/// Runs a command on the target only.
fn on_target(sb: &Sandbox, args: &[&[u8]]) -> Value {
    exec(&mut sb.target.cluster_conn(), args)
}

/// A binary key in the plan's `token:*` filter.
const BIN_KEY: &[u8] = b"token:bin:\x00\xff\xfe,\"quoted\"\n";
/// A binary value (NUL, invalid UTF-8, CR LF).
const BIN_VALUE: &[u8] = b"\x00\x01\xff\xfe\r\n\xc3\x28 value";

/// Identical data of every type on both sides, written in the same order. Returns the keys in
/// the plan's filter.
fn seed_identical(sb: &Sandbox) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut add = |args: &[&[u8]]| {
        both(sb, args);
        keys.push(args[1].to_vec());
    };
    add(&[b"SET", b"token:s1", b"hello"]);
    add(&[b"SET", b"token:int", b"12345"]);
    add(&[b"SET", BIN_KEY, BIN_VALUE]);
    add(&[b"HSET", b"token:h1", b"f1", b"v1", b"f2", BIN_VALUE, b"f3", b""]);
    add(&[b"RPUSH", b"token:l1", b"a", b"b", b"a", BIN_VALUE]);
    add(&[b"SADD", b"token:set-int", b"3", b"1", b"2"]);
    add(&[b"SADD", b"token:set-str", b"apple", b"banana", BIN_VALUE]);
    add(&[
        b"ZADD",
        b"token:z1",
        b"1",
        b"one",
        b"2.5",
        b"two",
        b"-3.14",
        b"neg",
        b"inf",
        b"top",
    ]);
    add(&[b"XADD", b"token:stream", b"1-1", b"f", b"v", b"g", BIN_VALUE]);
    both(sb, &[b"XADD", b"token:stream", b"2-0", b"f", b"w"]);
    add(&[b"SET", b"token:{user7}:name", b"ada"]);
    add(&[b"HSET", b"token:{user7}:profile", b"lang", b"en"]);
    add(&[b"SET", b"token:ttl:long", b"x", b"PX", b"3600000"]);
    add(&[b"HSET", b"token:ttl:hash", b"f", b"v"]);
    both(sb, &[b"PEXPIRE", b"token:ttl:hash", b"600000"]);
    keys
}

/// Keys verify must ignore: outside the filter (on one side only) and the reserved prefix.
fn seed_ignored(sb: &Sandbox) {
    on_source(sb, &[b"SET", b"other:only-in-source", b"1"]);
    on_target(sb, &[b"SET", b"other:only-in-target", b"1"]);
    sb.target_cmd(&["SET", "__cachemig:{x}:proxies", "reserved"]);
    sb.target_cmd(&["SET", "__cachemig:token:y", "reserved"]);
}

/// `verify --format json` plus `extra` arguments.
fn verify_json(sb: &Sandbox, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["verify", "--format", "json"];
    args.extend_from_slice(extra);
    let run = sb.cachemig(&args);
    let json = run.json();
    (run, json)
}

/// [`verify_json`] of a plan file other than the sandbox's.
fn verify_plan_json(plan: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let run = Cachemig::new()
        .arg("verify")
        .arg(plan)
        .args(["--format", "json"])
        .args(extra)
        .run();
    let json = run.json();
    (run, json)
}

/// The CSV report as key (escaped) → (kind, details).
fn read_report(path: &Path) -> BTreeMap<String, (String, String)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["key", "kind", "details"]);
    let mut out = BTreeMap::new();
    for row in reader.records() {
        let row = row.unwrap();
        let previous = out.insert(row[0].to_string(), (row[1].to_string(), row[2].to_string()));
        assert!(previous.is_none(), "key {} reported twice", &row[0]);
    }
    out
}

/// Everything a key holds, read type by type with plain commands (independent of verify):
/// type, an order-normalised value and whether it expires.
fn read_key(conn: &mut dyn ConnectionLike, key: &[u8]) -> (String, Vec<Vec<u8>>, bool) {
    let ty: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    let mut value: Vec<Vec<u8>> = match ty.as_str() {
        "none" => vec![],
        "string" => vec![redis::cmd("GET").arg(key).query(conn).unwrap()],
        "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).unwrap(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .unwrap(),
        "hash" => {
            let map: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL").arg(key).query(conn).unwrap();
            map.into_iter().flat_map(|(f, v)| [f, v]).collect()
        }
        "set" => redis::cmd("SMEMBERS").arg(key).query(conn).unwrap(),
        "stream" => {
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query(conn)
                .unwrap();
            entries
                .into_iter()
                .flat_map(|(id, f)| std::iter::once(id.into_bytes()).chain(f))
                .collect()
        }
        other => panic!("unexpected type {other}"),
    };
    if ty == "set" {
        value.sort();
    }
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(conn).unwrap();
    (ty, value, pttl >= 0)
}

/// Independent comparison: every key reads the same on both sides.
fn assert_sides_agree(sb: &Sandbox, keys: &[Vec<u8>]) {
    let (mut src, mut dst) = (sb.source.conn(), sb.target.cluster_conn());
    for key in keys {
        assert_eq!(
            read_key(&mut src, key),
            read_key(&mut dst, key),
            "key {:?} differs between source and target",
            String::from_utf8_lossy(key)
        );
    }
}

fn report_path(sb: &Sandbox, name: &str) -> PathBuf {
    sb.plan().parent().unwrap().join(name)
}

#[test]
fn identical_data_of_every_type_verifies_clean() {
    let sb = Sandbox::start();
    let keys = seed_identical(&sb);
    seed_ignored(&sb);
    assert_sides_agree(&sb, &keys);

    let report = report_path(&sb, "clean.csv");
    let (run, json) = verify_json(&sb, &["--report", report.to_str().unwrap()]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
    assert_eq!(json["unresolved"], 0);
    // Every key in the filter was checked from each side; the ignored ones were not.
    assert_eq!(json["source_checked"], keys.len() as u64, "{json:#}");
    assert_eq!(json["target_checked"], keys.len() as u64, "{json:#}");
    assert_eq!(json["report"], report.to_str().unwrap());
    assert!(read_report(&report).is_empty());

    // Table output and the default report path.
    let table = sb.cachemig(&["verify"]);
    table
        .assert_success()
        .assert_stdout_contains("unresolved")
        .assert_stdout_contains("verify-report.csv");
    assert!(sb.state_dir().join("verify-report.csv").exists());
}

#[test]
fn planted_differences_are_found_and_repaired() {
    let sb = Sandbox::start();
    let mut keys = seed_identical(&sb);
    seed_ignored(&sb);
    // missing: only in the source.
    on_source(&sb, &[b"HSET", b"token:missing", b"f", b"v"]);
    // extra: only in the target (also a binary one).
    on_target(&sb, &[b"SET", b"token:extra", b"x"]);
    on_target(&sb, &[b"RPUSH", b"token:extra:\xff", b"x"]);
    // type: string on the source, hash on the target.
    on_source(&sb, &[b"SET", b"token:type", b"x"]);
    on_target(&sb, &[b"HSET", b"token:type", b"x", b"y"]);
    // value: a string, a hash field, a list order, a set member, a zset score, a stream entry.
    on_source(&sb, &[b"SET", b"token:value:s", b"a"]);
    on_target(&sb, &[b"SET", b"token:value:s", b"b"]);
    on_source(&sb, &[b"HSET", b"token:value:h", b"f1", b"1", b"f2", b"2"]);
    on_target(&sb, &[b"HSET", b"token:value:h", b"f1", b"1", b"f2", b"3"]);
    on_source(&sb, &[b"RPUSH", b"token:value:l", b"a", b"b"]);
    on_target(&sb, &[b"RPUSH", b"token:value:l", b"b", b"a"]);
    on_source(&sb, &[b"SADD", b"token:value:set", b"a", b"b"]);
    on_target(&sb, &[b"SADD", b"token:value:set", b"a", b"c"]);
    on_source(&sb, &[b"ZADD", b"token:value:z", b"1", b"m"]);
    on_target(&sb, &[b"ZADD", b"token:value:z", b"2", b"m"]);
    on_source(&sb, &[b"XADD", b"token:value:x", b"1-1", b"f", b"v"]);
    on_target(&sb, &[b"XADD", b"token:value:x", b"1-1", b"f", b"w"]);
    // value, binary: the binary key with another binary value.
    on_target(&sb, &[b"SET", BIN_KEY, b"\xff\x00"]);
    // ttl: no expiry on the source, an expiry on the target; and two far-apart TTLs.
    on_source(&sb, &[b"SET", b"token:ttl:persist", b"x"]);
    on_target(&sb, &[b"SET", b"token:ttl:persist", b"x", b"PX", b"3600000"]);
    on_source(&sb, &[b"SET", b"token:ttl:far", b"x", b"PX", b"3600000"]);
    on_target(&sb, &[b"SET", b"token:ttl:far", b"x", b"PX", b"60000"]);
    let expected: BTreeMap<&str, &str> = [
        ("token:missing", "missing"),
        ("token:extra", "extra"),
        ("token:extra:\\xff", "extra"),
        ("token:type", "type"),
        ("token:value:s", "value"),
        ("token:value:h", "value"),
        ("token:value:l", "value"),
        ("token:value:set", "value"),
        ("token:value:z", "value"),
        ("token:value:x", "value"),
        ("token:bin:\u{0}\\xff\\xfe,\"quoted\"\n", "value"),
        ("token:ttl:persist", "ttl"),
        ("token:ttl:far", "ttl"),
    ]
    .into_iter()
    .collect();

    // Plain verify: every planted difference, with the right kind; exit 1 naming count and report.
    let report = report_path(&sb, "diff.csv");
    let run = sb.cachemig(&["verify", "--report", report.to_str().unwrap()]);
    run.assert_code(1)
        .assert_stderr_contains(&format!("{} difference(s)", expected.len()))
        .assert_stderr_contains(report.to_str().unwrap());
    let found = read_report(&report);
    let kinds: BTreeMap<&str, &str> = found
        .iter()
        .map(|(k, (kind, _))| (k.as_str(), kind.as_str()))
        .collect();
    assert_eq!(kinds, expected, "report: {found:#?}");
    assert!(
        found["token:type"].1.contains("string") && found["token:type"].1.contains("hash"),
        "{found:#?}"
    );
    assert!(
        found["token:ttl:persist"].1.contains("never expires"),
        "{found:#?}"
    );
    // Verify without --repair changed nothing.
    assert_eq!(
        on_target(&sb, &[b"GET", b"token:value:s"]),
        Value::BulkString(b"b".to_vec())
    );
    assert_eq!(on_target(&sb, &[b"EXISTS", b"token:missing"]), Value::Int(0));

    // --repair: the source wins for every one of them.
    let repair_report = report_path(&sb, "repair.csv");
    let (run, json) = verify_json(&sb, &["--repair", "--report", repair_report.to_str().unwrap()]);
    run.assert_success();
    assert_eq!(json["found"], expected.len() as u64, "{json:#}");
    assert_eq!(json["repaired"], expected.len() as u64, "{json:#}");
    assert_eq!(json["unresolved"], 0, "{json:#}");
    assert_eq!(json["kinds"]["extra"], 2);
    assert_eq!(json["kinds"]["value"], 7);
    assert_eq!(json["kinds"]["ttl"], 2);
    let repaired = read_report(&repair_report);
    assert_eq!(repaired.len(), expected.len());
    assert!(
        repaired.values().all(|(_, d)| d.ends_with("; repaired")),
        "{repaired:#?}"
    );

    // Independent check: the target now reads like the source, the extras are gone.
    for planted in [
        &b"token:missing"[..],
        b"token:type",
        b"token:value:s",
        b"token:value:h",
        b"token:value:l",
        b"token:value:set",
        b"token:value:z",
        b"token:value:x",
        b"token:ttl:persist",
        b"token:ttl:far",
    ] {
        keys.push(planted.to_vec());
    }
    assert_sides_agree(&sb, &keys);
    assert_eq!(
        on_target(&sb, &[b"EXISTS", b"token:extra", b"token:extra:\xff"]),
        Value::Int(0)
    );
    let pttl: i64 = redis::from_redis_value(on_target(&sb, &[b"PTTL", b"token:ttl:far"])).unwrap();
    assert!(pttl > 60_000, "the source's TTL (1 h) was restored, got {pttl}");
    // Keys outside the filter and reserved keys were left alone.
    assert_eq!(
        on_target(&sb, &[b"EXISTS", b"other:only-in-target"]),
        Value::Int(1)
    );
    assert_eq!(
        on_target(&sb, &[b"EXISTS", b"__cachemig:{x}:proxies"]),
        Value::Int(1)
    );
    assert_eq!(
        on_target(&sb, &[b"EXISTS", b"other:only-in-source"]),
        Value::Int(0)
    );

    // A second verify finds nothing.
    let (run, json) = verify_json(&sb, &[]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
}

#[test]
fn order_only_differences_are_not_differences() {
    let sb = Sandbox::start();
    // A small hash and set (listpack / hashtable) and a large hash and set (hashtable),
    // with the same content inserted in opposite orders.
    on_source(&sb, &[b"HSET", b"token:h", b"a", b"1", b"b", b"2", b"c", b"3"]);
    on_target(&sb, &[b"HSET", b"token:h", b"c", b"3", b"b", b"2", b"a", b"1"]);
    on_source(&sb, &[b"SADD", b"token:s", b"x", b"y", b"z"]);
    on_target(&sb, &[b"SADD", b"token:s", b"z", b"y", b"x"]);
    let fields: Vec<Vec<u8>> = (0..300).map(|i| format!("field-{i}").into_bytes()).collect();
    for (i, f) in fields.iter().enumerate() {
        on_source(&sb, &[b"HSET", b"token:bigh", f, format!("v{i}").as_bytes()]);
        on_source(&sb, &[b"SADD", b"token:bigs", f]);
    }
    for (i, f) in fields.iter().enumerate().rev() {
        on_target(&sb, &[b"HSET", b"token:bigh", f, format!("v{i}").as_bytes()]);
        on_target(&sb, &[b"SADD", b"token:bigs", f]);
    }
    // The test exercises the canonical digest: the DUMP payloads really differ.
    let dump = |v: Value| match v {
        Value::BulkString(b) => b,
        other => panic!("DUMP: {other:?}"),
    };
    assert_ne!(
        dump(on_source(&sb, &[b"DUMP", b"token:h"])),
        dump(on_target(&sb, &[b"DUMP", b"token:h"]))
    );
    let keys: Vec<Vec<u8>> = ["token:h", "token:s", "token:bigh", "token:bigs"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    assert_sides_agree(&sb, &keys);

    let (run, json) = verify_json(&sb, &[]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
    assert_eq!(json["source_checked"], 4);

    // But one changed member in the big set is a value difference.
    on_target(&sb, &[b"SREM", b"token:bigs", b"field-7"]);
    on_target(&sb, &[b"SADD", b"token:bigs", b"field-x"]);
    let (run, json) = verify_json(&sb, &[]);
    run.assert_code(1);
    assert_eq!(json["kinds"]["value"], 1, "{json:#}");
    assert_eq!(json["examples"][0]["key"], "token:bigs");
}

/// A plan on the sandbox's servers with a tiny `big_key_bytes`, so values are read in chunks.
fn big_key_plan(sb: &Sandbox) -> PathBuf {
    let urls: Vec<String> = sb.target.seed_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let body = format!(
        "[migration]\nname = \"bigkeys\"\n\n[source]\nurl = \"{}\"\n\n[target]\nurls = [{}]\n\n[keys]\ninclude = [\"token:*\"]\n\n[backfill]\nbig_key_bytes = \"1KiB\"\n\n[proxies]\nexpected = 0\n",
        sb.source.url(),
        urls.join(", ")
    );
    write_plan(sb.plan().parent().unwrap(), "bigkeys.toml", &body)
}

#[test]
fn big_keys_are_compared_in_chunks_and_repaired() {
    let sb = Sandbox::start();
    let plan = big_key_plan(&sb);
    let verify = |extra: &[&str]| verify_plan_json(&plan, extra);
    // A 3 MiB string (several GETRANGE windows) and collections of 3000 elements, same content
    // on both sides but hashes and sets inserted in another order.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    both(&sb, &[b"SET", b"token:big:string", &big]);
    let n = 3000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut fwd_h: Vec<Vec<u8>> = vec![b"HSET".to_vec(), b"token:big:hash".to_vec()];
        let mut fwd_s: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"token:big:set".to_vec()];
        let mut list: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"token:big:list".to_vec()];
        let mut zset: Vec<Vec<u8>> = vec![b"ZADD".to_vec(), b"token:big:zset".to_vec()];
        for i in chunk {
            fwd_h.push(format!("field-{i:05}").into_bytes());
            fwd_h.push(format!("value-{i}-{}", "x".repeat(20)).into_bytes());
            fwd_s.push(format!("member-{i:05}").into_bytes());
            list.push(format!("item-{i}").into_bytes());
            zset.push(format!("{}", *i as f64 / 7.0).into_bytes());
            zset.push(format!("m{i}").into_bytes());
        }
        on_source(&sb, &refs(&fwd_h));
        on_source(&sb, &refs(&fwd_s));
        both(&sb, &refs(&list));
        both(&sb, &refs(&zset));
    }
    for chunk in (0..n).rev().collect::<Vec<_>>().chunks(500) {
        let mut h: Vec<Vec<u8>> = vec![b"HSET".to_vec(), b"token:big:hash".to_vec()];
        let mut s: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"token:big:set".to_vec()];
        for i in chunk {
            h.push(format!("field-{i:05}").into_bytes());
            h.push(format!("value-{i}-{}", "x".repeat(20)).into_bytes());
            s.push(format!("member-{i:05}").into_bytes());
        }
        on_target(&sb, &refs(&h));
        on_target(&sb, &refs(&s));
    }
    for i in 0..1500u32 {
        let id = format!("{}-{}", 1000 + i / 3, i % 3);
        both(
            &sb,
            &[
                b"XADD",
                b"token:big:stream",
                id.as_bytes(),
                b"field",
                format!("value-{i}").as_bytes(),
            ],
        );
    }
    let keys: Vec<Vec<u8>> = ["string", "hash", "set", "list", "zset", "stream"]
        .iter()
        .map(|t| format!("token:big:{t}").into_bytes())
        .collect();
    assert_sides_agree(&sb, &keys);

    let (run, json) = verify(&[]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
    assert_eq!(json["source_checked"], 6);

    // One byte deep inside the string, one field value, one list element, one stream entry.
    on_target(&sb, &[b"SETRANGE", b"token:big:string", b"2500000", b"!"]);
    on_target(&sb, &[b"HSET", b"token:big:hash", b"field-02999", b"changed"]);
    on_target(&sb, &[b"LSET", b"token:big:list", b"2998", b"changed"]);
    on_target(&sb, &[b"ZADD", b"token:big:zset", b"0.5", b"m2999"]);
    on_target(&sb, &[b"XADD", b"token:big:stream", b"9999-0", b"field", b"new"]);
    let (run, json) = verify(&[]);
    run.assert_code(1);
    assert_eq!(json["kinds"]["value"], 5, "{json:#}");
    assert_eq!(json["found"], 5, "{json:#}");

    // Repair (chunked copies), then verify again.
    let (run, json) = verify(&["--repair"]);
    run.assert_success();
    assert_eq!(json["repaired"], 5, "{json:#}");
    assert_sides_agree(&sb, &keys);
    let (run, json) = verify(&[]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
}

#[test]
fn sample_checks_about_n_keys_per_side() {
    let sb = Sandbox::start();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("token:{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut sb.source.conn()).unwrap();
    let mut cluster_pipe = redis::cluster::cluster_pipe();
    for i in 0..2000 {
        cluster_pipe.cmd("SET").arg(format!("token:{i}")).arg(i).ignore();
    }
    cluster_pipe.query::<()>(&mut sb.target.cluster_conn()).unwrap();
    let (run, json) = verify_json(&sb, &["--sample", "100"]);
    run.assert_success();
    let (s, t) = (
        json["source_checked"].as_u64().unwrap(),
        json["target_checked"].as_u64().unwrap(),
    );
    assert!(s > 0 && s <= 100, "source side checked {s}");
    assert!(t > 0 && t <= 100, "target side checked {t}");
    assert_eq!(json["sample"], 100);
    // Without --sample, everything.
    let (run, json) = verify_json(&sb, &[]);
    run.assert_success();
    assert_eq!(json["source_checked"], 2000);
    assert_eq!(json["target_checked"], 2000);
}

#[test]
fn verify_never_prints_the_source_password() {
    let password = "s3cr3t-verify-pw";
    let sb = Sandbox::start_with_source_password(password);
    sb.source_cmd(&["SET", "token:a", "1"]);
    let run = sb.cachemig(&["verify"]);
    run.assert_code(1)
        .assert_stderr_contains("1 difference(s)")
        .assert_output_lacks(password);
    let report = std::fs::read_to_string(sb.state_dir().join("verify-report.csv")).unwrap();
    assert!(!report.contains(password));
    assert!(report.contains("token:a,missing"), "{report}");
}

#[test]
fn invalid_plan_or_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), "bad.toml", "[migration]\nname = \"Bad Name\"\n");
    let run = Cachemig::new().arg("verify").arg(&plan).run();
    run.assert_code(2);
    let good = write_plan(
        dir.path(),
        "good.toml",
        "[migration]\nname = \"x\"\n\n[source]\nurl = \"redis://127.0.0.1:1\"\n\n[target]\nurls = [\"redis://127.0.0.1:2\"]\n\n[proxies]\nexpected = 0\n",
    );
    Cachemig::new()
        .arg("verify")
        .arg(&good)
        .args(["--sample", "0"])
        .run()
        .assert_code(2);
    // Unreachable Redis is a runtime failure (1), not a crash.
    Cachemig::new()
        .arg("verify")
        .arg(&good)
        .run()
        .assert_code(1)
        .assert_stderr_contains("source");
}

#[test]
fn a_source_cluster_is_verified_and_repaired() {
    use common::RedisCluster;
    let (source, target) = std::thread::scope(|s| {
        let a = s.spawn(|| RedisCluster::start(3, 0));
        let b = s.spawn(|| RedisCluster::start(3, 0));
        (a.join().unwrap(), b.join().unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let quoted = |urls: Vec<String>| {
        urls.iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = format!(
        "[migration]\nname = \"clusters\"\n\n[source]\nurl = \"{}\"\n\n[target]\nurls = [{}]\n\n[keys]\ninclude = [\"token:*\"]\n\n[proxies]\nexpected = 0\n",
        source.seed_urls()[0],
        quoted(target.seed_urls())
    );
    let plan = write_plan(dir.path(), "clusters.toml", &body);
    let (mut src, mut dst) = (source.cluster_conn(), target.cluster_conn());
    let mut keys = Vec::new();
    for i in 0..300 {
        for key in [format!("token:{i}"), format!("token:{{tag{}}}:{i}", i % 7)] {
            exec(&mut src, &[b"SET", key.as_bytes(), format!("v{i}").as_bytes()]);
            exec(&mut dst, &[b"SET", key.as_bytes(), format!("v{i}").as_bytes()]);
            keys.push(key);
        }
    }
    // Spread over every source master, so every one is scanned.
    assert!(source.masters().iter().all(|m| m.query::<u64>(&["DBSIZE"]) > 0));
    exec(&mut src, &[b"HSET", b"token:{tag1}:missing", b"f", b"v"]);
    exec(&mut dst, &[b"SET", b"token:{tag2}:extra", b"x"]);
    exec(&mut dst, &[b"SET", b"token:17", b"changed"]);
    let verify = |extra: &[&str]| verify_plan_json(&plan, extra);
    let (run, json) = verify(&[]);
    run.assert_code(1);
    assert_eq!(json["source_checked"], keys.len() as u64 + 1, "{json:#}");
    assert_eq!(json["target_checked"], keys.len() as u64 + 1, "{json:#}");
    assert_eq!(
        (json["kinds"]["missing"].as_u64(), json["kinds"]["extra"].as_u64()),
        (Some(1), Some(1)),
        "{json:#}"
    );
    assert_eq!(json["kinds"]["value"], 1, "{json:#}");

    let (run, json) = verify(&["--repair"]);
    run.assert_success();
    assert_eq!(json["repaired"], 3, "{json:#}");
    assert_eq!(
        exec(&mut dst, &[b"GET", b"token:17"]),
        Value::BulkString(b"v17".to_vec())
    );
    assert_eq!(exec(&mut dst, &[b"EXISTS", b"token:{tag2}:extra"]), Value::Int(0));
    assert_eq!(
        exec(&mut dst, &[b"HGET", b"token:{tag1}:missing", b"f"]),
        Value::BulkString(b"v".to_vec())
    );
    verify(&[]).0.assert_success();
}

#[test]
fn repair_holds_the_step_lock_and_plain_verify_takes_none() {
    let sb = Sandbox::start();
    on_source(&sb, &[b"SET", b"token:x", b"1"]);
    let held = Lock::acquire(&sb.state_dir().join("lock"), "pid 4242 (advance) alice@bastion").unwrap();
    sb.cachemig(&["verify", "--repair"])
        .assert_code(1)
        .assert_stderr_contains("holds the lock")
        .assert_stderr_contains("alice@bastion");
    assert_eq!(
        on_target(&sb, &[b"EXISTS", b"token:x"]),
        Value::Int(0),
        "nothing repaired"
    );
    // Read-only verify takes no lock, and names the side a repair would copy from.
    sb.cachemig(&["verify"])
        .assert_code(1)
        .assert_stderr_contains("key-syncs them from old (the write primary in planned)");
    drop(held);
    let (run, json) = verify_json(&sb, &["--repair"]);
    run.assert_success();
    assert_eq!(json["repair_from"], "old", "{json:#}");
    assert_eq!(
        on_target(&sb, &[b"GET", b"token:x"]),
        Value::BulkString(b"1".to_vec())
    );
}

/// Issue 9: in `write-stop` new is the write primary, so a repair copies new → old. Writes made
/// on new (a changed key, a key created on new only, a key deleted on new, a field of a big key
/// copied in chunks) survive it, and old ends equal to new, including a key a bypassing writer
/// changed on old.
#[test]
fn repair_in_write_stop_copies_from_new_and_keeps_the_writes_made_on_new() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[shadow_read]\nmin_samples = 10\n\n[backfill]\nbig_key_bytes = \"1KiB\"\n",
    );
    expect_proxies(&sb, 2, "");
    on_source(&sb, &[b"SET", b"token:changed", b"before"]);
    on_source(&sb, &[b"SET", b"token:deleted-on-new", b"x"]);
    on_source(&sb, &[b"SET", b"token:bypassed", b"v"]);
    let mut hset: Vec<Vec<u8>> = vec![b"HSET".to_vec(), b"token:big-hash".to_vec()];
    for i in 0..2000 {
        hset.push(format!("field-{i:05}").into_bytes());
        hset.push(format!("value-{i}-{}", "x".repeat(20)).into_bytes());
    }
    on_source(&sb, &refs(&hset));
    walk_to(&sb, "write-stop");
    let keys: Vec<Vec<u8>> = [
        "token:changed",
        "token:deleted-on-new",
        "token:bypassed",
        "token:big-hash",
        "token:created-on-new",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    assert_sides_agree(&sb, &keys);

    // Acknowledged writes on new that the reverse mirror never carried to old ...
    on_target(&sb, &[b"SET", b"token:changed", b"after"]);
    on_target(
        &sb,
        &[b"SET", b"token:created-on-new", b"fresh", b"PX", b"3600000"],
    );
    on_target(&sb, &[b"DEL", b"token:deleted-on-new"]);
    on_target(
        &sb,
        &[b"HSET", b"token:big-hash", b"field-00001", b"changed-on-new"],
    );
    // ... and a write on old that bypassed the proxies.
    on_source(&sb, &[b"SET", b"token:bypassed", b"stale"]);

    let run = sb.cachemig(&["verify"]);
    run.assert_code(1)
        .assert_stderr_contains("5 difference(s)")
        .assert_stderr_contains("key-syncs them from new (the write primary in write-stop)");

    let (run, json) = verify_json(&sb, &["--repair"]);
    run.assert_success();
    assert_eq!(json["repair_from"], "new", "{json:#}");
    assert_eq!(json["found"], 5, "{json:#}");
    assert_eq!(json["repaired"], 5, "{json:#}");
    assert_eq!(json["unresolved"], 0, "{json:#}");

    // New is intact ...
    let get = |args: &[&[u8]]| on_target(&sb, args);
    assert_eq!(
        get(&[b"GET", b"token:changed"]),
        Value::BulkString(b"after".to_vec())
    );
    assert_eq!(
        get(&[b"GET", b"token:created-on-new"]),
        Value::BulkString(b"fresh".to_vec())
    );
    assert_eq!(get(&[b"EXISTS", b"token:deleted-on-new"]), Value::Int(0));
    assert_eq!(
        get(&[b"HGET", b"token:big-hash", b"field-00001"]),
        Value::BulkString(b"changed-on-new".to_vec())
    );
    assert_eq!(
        get(&[b"GET", b"token:bypassed"]),
        Value::BulkString(b"v".to_vec())
    );
    // ... and old now equals new, TTL included.
    assert_sides_agree(&sb, &keys);
    let pttl: i64 = redis::from_redis_value(on_source(&sb, &[b"PTTL", b"token:created-on-new"])).unwrap();
    assert!(pttl > 3_500_000, "new's TTL copied to old, got {pttl}");
    let (run, json) = verify_json(&sb, &[]);
    run.assert_success();
    assert_eq!(json["found"], 0, "{json:#}");
}
