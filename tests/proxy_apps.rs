//! What applications send, through the proxy (issue 8): transactions, WATCH, Lua scripts across
//! the cutover, RESP3 clients and cluster clients. Every test ends with old and new compared key
//! by key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::compare::differences;
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use redis::Commands;

/// Puts `phase` in force at `generation` and waits until the proxy applied it.
fn phase(sb: &Sandbox, proxy: &ProxyProcess, name: &str, generation: u64) {
    set_phase(&sb.flag_path(), name, generation, false, 0.0);
    proxy.wait_generation(generation);
}

/// Sends raw RESP and reads until `want` replies' worth of bytes stop arriving (the proxy
/// answers a pipeline in one write, so a short quiet period ends it).
fn exchange(stream: &mut TcpStream, request: &[u8], expect_end: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(expect_end) {
        let n = stream.read(&mut buf).expect("a reply within the read timeout");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn raw(proxy: &ProxyProcess) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn resp(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

#[test]
fn issue_8_a_refused_command_inside_multi_aborts_the_transaction_and_nothing_runs() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut s = raw(&proxy);
    let mut req = resp(&["MULTI"]);
    req.extend(resp(&["INCR", "token:tx"]));
    req.extend(resp(&["FCALL", "f", "0"])); // refused by the proxy
    req.extend(resp(&["NOSUCHCOMMAND"])); // unknown
    req.extend(resp(&["INCR", "token:tx"]));
    req.extend(resp(&["EXEC"]));
    let got = exchange(&mut s, &req, b"errors.\r\n");
    let lines: Vec<&str> = got.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "+OK");
    assert_eq!(lines[1], "+QUEUED");
    assert!(lines[2].starts_with("-ERR cachemig: FCALL"), "{got}");
    assert!(
        lines[3].starts_with("-ERR unknown command 'NOSUCHCOMMAND'"),
        "{got}"
    );
    assert_eq!(lines[4], "+QUEUED");
    assert_eq!(
        lines[5],
        "-EXECABORT Transaction discarded because of previous errors."
    );
    let old: Option<i64> = sb.source.conn().get("token:tx").unwrap();
    assert_eq!(
        old, None,
        "an aborted transaction must not run any of its commands"
    );
    // The connection is usable and out of MULTI afterwards.
    let got = exchange(&mut s, &resp(&["INCR", "token:tx"]), b"\r\n");
    assert_eq!(got, ":1\r\n");
}

#[test]
fn transactions_run_whole_on_the_primary_and_are_mirrored_in_every_phase() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut conn = proxy.conn();
    let mut keys = Vec::new();
    for (generation, name) in [
        (1, "planned"),
        (2, "sync-dual-write"),
        (3, "read-cutover"),
        (4, "write-stop"),
    ] {
        phase(&sb, &proxy, name, generation);
        // One hash tag: on a cluster primary a transaction's keys must share a slot.
        let (counter, list) = (
            format!("token:{{t{generation}}}:n"),
            format!("token:{{t{generation}}}:l"),
        );
        let (n, len): (i64, i64) = redis::pipe()
            .atomic()
            .incr(&counter, 5)
            .ignore()
            .incr(&counter, 1)
            .rpush(&list, "a")
            .query(&mut conn)
            .unwrap();
        assert_eq!((n, len), (6, 1), "{name}");
        keys.extend([counter, list]);
        // Keys of two slots in one transaction: refused as Redis Cluster refuses them once the
        // primary is the cluster, and run as one transaction while it is old.
        let mixed: redis::RedisResult<(i64, i64)> = redis::pipe()
            .atomic()
            .incr(format!("token:a{generation}"), 1)
            .incr(format!("token:b{generation}"), 1)
            .query(&mut conn);
        if name == "write-stop" {
            let e = mixed.unwrap_err().to_string().to_ascii_uppercase();
            assert!(e.contains("CROSSSLOT"), "{e}");
        } else {
            assert_eq!(mixed.unwrap(), (1, 1), "{name}");
            keys.extend([format!("token:a{generation}"), format!("token:b{generation}")]);
        }
    }
    // planned does not mirror; from sync-dual-write on every phase does.
    let diffs = differences(&sb, &keys[4..]);
    assert!(diffs.is_empty(), "{diffs:#?}");
    let new: Option<i64> = sb.target.cluster_conn().get("token:{t1}:n").unwrap();
    assert_eq!(new, None, "planned mirrors nothing");
}

#[test]
fn watch_aborts_on_a_concurrent_change_and_a_retry_loop_converges() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 1);
    let (mut a, mut b) = (proxy.conn(), proxy.conn());
    let key = "token:watched";
    let _: () = a.set(key, 10).unwrap();
    // A change by another client between WATCH and EXEC aborts the transaction (null reply).
    let _: () = redis::cmd("WATCH").arg(key).query(&mut a).unwrap();
    let _: i64 = b.incr(key, 1).unwrap();
    let aborted: Option<(i64,)> = redis::pipe().atomic().incr(key, 100).query(&mut a).unwrap();
    assert_eq!(aborted, None, "EXEC must fail after a watched key changed");
    // The classic optimistic loop, against a competing writer, loses no increment.
    let writer = std::thread::spawn(move || {
        for _ in 0..50 {
            let _: i64 = b.incr(key, 1).unwrap();
        }
    });
    for _ in 0..50 {
        let () = redis::transaction(&mut a, &[key], |conn, pipe| {
            let v: i64 = conn.get(key)?;
            pipe.set(key, v + 1).ignore().query(conn)
        })
        .unwrap();
    }
    writer.join().unwrap();
    let v: i64 = a.get(key).unwrap();
    assert_eq!(v, 10 + 1 + 50 + 50);
    let diffs = differences(&sb, &[key.to_string()]);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn evalsha_keeps_working_across_the_primary_switch_and_script_writes_are_mirrored() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 1);
    let mut conn = proxy.conn();
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let n: i64 = script.key("token:lua").arg(5).invoke(&mut conn).unwrap();
    assert_eq!(n, 5);
    // A syntax error is the server's, as it would be without the proxy.
    let bad: redis::RedisResult<String> = redis::cmd("SCRIPT").arg("LOAD").arg("return (").query(&mut conn);
    assert!(bad.is_err());
    phase(&sb, &proxy, "read-cutover", 2);
    phase(&sb, &proxy, "write-stop", 3);
    // The script was loaded on old only; on new a bare EVALSHA is answered by the proxy's retry.
    let n: i64 = redis::cmd("EVALSHA")
        .arg(script.get_hash())
        .arg(1)
        .arg("token:lua")
        .arg(2)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 7);
    let on_new: i64 = sb.target.cluster_conn().get("token:lua").unwrap();
    assert_eq!(on_new, 7, "write-stop writes new");
    phase(&sb, &proxy, "read-cutover", 4);
    let diffs = differences(&sb, &["token:lua".to_string()]);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn resp3_clients_get_resp3_replies_from_either_side() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut s = raw(&proxy);
    let hello = exchange(&mut s, &resp(&["HELLO", "3"]), b"*0\r\n");
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{hello}"
    );
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    let mut req = resp(&["HSET", "token:h", "f", "v"]);
    req.extend(resp(&["HGETALL", "token:h"]));
    req.extend(resp(&["GET", "token:missing"]));
    req.extend(resp(&["ZADD", "token:z", "1.5", "m"]));
    req.extend(resp(&["ZSCORE", "token:z", "m"]));
    let expected = ":1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n:1\r\n,1.5\r\n";
    assert_eq!(exchange(&mut s, &req, b",1.5\r\n"), expected, "from old");
    for (generation, name) in [(1, "sync-dual-write"), (2, "read-cutover")] {
        phase(&sb, &proxy, name, generation);
    }
    // From new (a cluster), a split MGET keeps RESP3 nulls in place.
    let mut req = resp(&["HGETALL", "token:h"]);
    req.extend(resp(&["MGET", "token:a", "token:h2", "token:b"]));
    let got = exchange(&mut s, &req, b"_\r\n_\r\n_\r\n");
    assert_eq!(
        got, "%0\r\n*3\r\n_\r\n_\r\n_\r\n",
        "token:h was not mirrored (planned)"
    );
    let mut c = proxy.conn(); // RESP2 on the same proxy keeps RESP2
    let v: Option<String> = c.get("token:missing").unwrap();
    assert_eq!(v, None);
    let mut s2 = raw(&proxy);
    assert_eq!(
        exchange(&mut s2, &resp(&["GET", "token:missing"]), b"\r\n"),
        "$-1\r\n"
    );
}

#[test]
fn a_cluster_client_pointed_at_the_proxy_sees_one_node_owning_every_slot() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://127.0.0.1:{}/", proxy.port)]).unwrap();
    let mut keys = Vec::new();
    for (generation, name) in [(1, "sync-dual-write"), (2, "write-stop")] {
        phase(&sb, &proxy, name, generation);
        let mut conn = client.get_connection().unwrap();
        for i in 0..20 {
            let key = format!("token:c{generation}:{i}");
            let n: i64 = conn.incr(&key, i).unwrap();
            assert_eq!(n, i);
            keys.push(key);
        }
        let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        assert!(
            format!("{slots:?}").contains(&proxy.port.to_string()),
            "{slots:?}"
        );
    }
    phase(&sb, &proxy, "read-cutover", 3);
    let diffs = differences(&sb, &keys);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn a_blmove_worker_consumes_every_item_once_across_switches_and_does_not_hold_the_fence() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 1);
    let (src, dst) = ("token:{q}:in", "token:{q}:done");
    const ITEMS: usize = 200;
    let mut worker = proxy.conn();
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < ITEMS {
            // A long timeout: an idle worker stays blocked across the switches below.
            let item: Option<String> = redis::cmd("BLMOVE")
                .arg(src)
                .arg(dst)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(30)
                .query(&mut worker)
                .unwrap();
            got.extend(item);
        }
        got
    });
    let mut producer = proxy.conn();
    let produce = |producer: &mut redis::Connection, range: std::ops::Range<usize>| {
        for i in range {
            let _: i64 = producer.rpush(src, format!("item-{i}")).unwrap();
        }
    };
    produce(&mut producer, 0..50);
    std::thread::sleep(Duration::from_millis(300)); // the worker drains the queue and blocks
    phase(&sb, &proxy, "read-cutover", 2);
    produce(&mut producer, 50..100);
    std::thread::sleep(Duration::from_millis(300));
    // The fence must drain with the worker blocked: the blocked call is cancelled, not waited on.
    set_phase(&sb.flag_path(), "read-cutover", 3, true, 0.0);
    proxy.wait_generation(3);
    common::wait_for(
        "fence drained with a blocked worker",
        Duration::from_secs(10),
        || proxy.status()["fence"] == "drained",
    );
    phase(&sb, &proxy, "write-stop", 4);
    produce(&mut producer, 100..ITEMS);
    let got = consumer.join().unwrap();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ITEMS, "every item exactly once: {got:?}");
    let done: Vec<String> = sb.target.cluster_conn().lrange(dst, 0, -1).unwrap();
    assert_eq!(
        done, got,
        "the processing list on new holds every item in consumption order"
    );
    let keys = [src.to_string(), dst.to_string()];
    common::wait_for("old equals new", Duration::from_secs(10), || {
        differences(&sb, &keys).is_empty()
    });
}

/// Every key a full SCAN through the proxy returns (redis-rs iterates the cursor).
fn scan_all(conn: &mut redis::Connection, pattern: &str) -> std::collections::BTreeSet<String> {
    conn.scan_match::<_, String>(pattern)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn scan_keys_dbsize_and_randomkey_read_the_primary_walk_every_master_and_hide_reserved_keys() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 1);
    let mut conn = proxy.conn();
    let keys: std::collections::BTreeSet<String> = (0..300).map(|i| format!("token:s:{i}")).collect();
    for k in &keys {
        let _: () = conn.set(k, 1).unwrap();
    }
    // A key only old has (written behind the proxy's back): old answers until write-stop.
    let _: () = sb.source.conn().set("token:old-only", 1).unwrap();
    let mut on_old = keys.clone();
    on_old.insert("token:old-only".into());
    assert_eq!(scan_all(&mut conn, "token:*"), on_old);
    let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(n, 301);
    phase(&sb, &proxy, "read-cutover", 2);
    phase(&sb, &proxy, "write-stop", 3);
    // New is a 3-master cluster holding the proxies' report hash under the reserved prefix.
    common::wait_for("the proxy's report on new", Duration::from_secs(10), || {
        sb.target
            .cluster_conn()
            .exists::<_, bool>("__cachemig:{sandbox}:proxies")
            .unwrap()
    });
    assert_eq!(
        scan_all(&mut conn, "*"),
        keys,
        "every master walked, reserved keys hidden"
    );
    let with_count: std::collections::BTreeSet<String> = conn
        .scan_options::<String>(redis::ScanOptions::default().with_count(7))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(with_count, keys);
    let listed: std::collections::BTreeSet<String> = conn.keys("*").unwrap();
    assert_eq!(listed, keys);
    let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(n, 300);
    for _ in 0..20 {
        let k: String = redis::cmd("RANDOMKEY").query(&mut conn).unwrap();
        assert!(keys.contains(&k), "{k}");
    }
    let bad = redis::cmd("SCAN")
        .arg("nope")
        .query::<redis::Value>(&mut conn)
        .unwrap_err();
    assert!(bad.to_string().contains("invalid cursor"), "{bad}");
}

#[test]
fn a_subscriber_on_one_proxy_hears_every_message_published_through_another_across_every_switch() {
    let sb = Sandbox::start();
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    // RESP2 subscriber (subscriber mode) on p1.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", p1.port)).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub.psubscribe("ne*").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // RESP3 subscriber on p2: messages arrive as push frames on a normal connection.
    let mut s3 = raw(&p2);
    exchange(&mut s3, &resp(&["HELLO", "3"]), b"*0\r\n");
    let confirmed = exchange(&mut s3, &resp(&["SUBSCRIBE", "news"]), b":1\r\n");
    assert_eq!(confirmed, ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    let mut publisher = p2.conn();
    let mut sent = 0;
    let phases = [
        "planned",
        "sync-dual-write",
        "read-cutover",
        "write-stop",
        "read-cutover",
    ];
    for (generation, name) in phases.iter().enumerate() {
        let generation = generation as u64 + 1;
        set_phase(&sb.flag_path(), name, generation, false, 0.0);
        // Publish while the proxies apply the switch, at different moments.
        for _ in 0..20 {
            let _: i64 = publisher.publish("news", format!("m{sent}")).unwrap();
            sent += 1;
        }
        p1.wait_generation(generation);
        p2.wait_generation(generation);
    }
    let mut heard = Vec::new();
    let mut by_pattern = 0;
    while heard.len() < sent {
        let msg = pubsub.get_message().expect("every message arrives");
        if msg.from_pattern() {
            by_pattern += 1;
        } else {
            heard.push(msg.get_payload::<String>().unwrap());
        }
    }
    // Messages published on different sides arrive over different connections: their order
    // across a switch is not guaranteed (as with Redis across connections), their delivery is.
    let mut expected: Vec<String> = (0..sent).map(|i| format!("m{i}")).collect();
    expected.sort();
    heard.sort();
    assert_eq!(heard, expected, "every message exactly once");
    while by_pattern < sent {
        assert!(pubsub.get_message().unwrap().from_pattern());
        by_pattern += 1;
    }
    let mut push = String::new();
    while push.matches(">3\r\n$7\r\nmessage\r\n").count() < sent {
        push += &exchange(&mut s3, b"", b"\r\n");
    }
    assert_eq!(push.matches(">3\r\n$7\r\nmessage\r\n").count(), sent, "{push}");
    // In RESP2 subscriber mode only the subscribe family and PING are allowed.
    let mut s2 = raw(&p1);
    exchange(&mut s2, &resp(&["SUBSCRIBE", "x"]), b":1\r\n");
    let refused = exchange(&mut s2, &resp(&["GET", "k"]), b"\r\n");
    assert!(refused.starts_with("-ERR Can't execute 'get'"), "{refused}");
    let pong = exchange(&mut s2, &resp(&["PING"]), b"$0\r\n\r\n");
    assert_eq!(pong, "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[test]
fn every_backend_connection_uses_the_source_database_and_acl_user() {
    let mut sb = Sandbox::start_with_source_password("app-secret");
    let port = sb.source.port();
    let admin = redis::Client::open(format!("redis://:app-secret@127.0.0.1:{port}/")).unwrap();
    let mut admin = admin.get_connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all"][..])
        .query(&mut admin)
        .unwrap();
    sb.rewrite_plan_source(&format!("redis://app@127.0.0.1:{port}/3"));
    let proxy = ProxyProcess::start_with_env(&sb, "p1", &[]);
    let mut conn = proxy.conn();
    let _: () = conn.set("token:db3", "v").unwrap();
    let n: i64 = redis::transaction(&mut conn, &["token:db3"], |c, pipe| {
        pipe.incr("token:n", 1).query(c).map(|(n,): (i64,)| Some(n))
    })
    .unwrap();
    assert_eq!(n, 1);
    let in_db3 = redis::Client::open(format!("redis://app:app-secret@127.0.0.1:{port}/3")).unwrap();
    let mut in_db3 = in_db3.get_connection().unwrap();
    let v: Option<String> = in_db3.get("token:db3").unwrap();
    assert_eq!(v.as_deref(), Some("v"), "written to the source URL's database");
    let in_db0: Option<String> = admin.get("token:db3").unwrap();
    assert_eq!(in_db0, None, "nothing in database 0");
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let proxies: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains("name=cachemig-proxy"))
        .collect();
    assert!(!proxies.is_empty(), "{clients}");
    assert!(
        proxies
            .iter()
            .all(|l| l.contains("user=app") && l.contains("db=3")),
        "{clients}"
    );
}

const LIBRARY: &str = "#!lua name=counters\nredis.register_function('bump', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)";

/// The libraries each master of a side lists.
fn libraries(nodes: &[&common::RedisServer]) -> Vec<usize> {
    nodes
        .iter()
        .map(|n| n.query::<Vec<redis::Value>>(&["FUNCTION", "LIST"]).len())
        .collect()
}

#[test]
fn function_libraries_are_copied_by_the_backfill_and_loaded_everywhere_through_the_proxy() {
    let sb = Sandbox::start();
    let _: () = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIBRARY)
        .query(&mut sb.source.conn())
        .unwrap();
    sb.cachemig(&["advance", "--phase", "backfill", "--yes"])
        .assert_success();
    let masters: Vec<&common::RedisServer> = sb.target.masters().iter().collect();
    assert_eq!(
        libraries(&masters),
        vec![1; masters.len()],
        "the backfill copied the library"
    );
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 10);
    let mut conn = proxy.conn();
    let second = LIBRARY.replace("counters", "more").replace("'bump'", "'bump2'");
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&second)
        .query(&mut conn)
        .unwrap();
    assert_eq!(name, "more");
    assert_eq!(
        libraries(&masters),
        vec![2; masters.len()],
        "loaded on every master of new"
    );
    assert_eq!(libraries(&[&sb.source]), vec![2], "and on old");
    let bad = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&second)
        .query::<String>(&mut conn)
        .unwrap_err();
    assert!(bad.to_string().contains("already exists"), "{bad}");
    let n: i64 = redis::cmd("FCALL")
        .arg("bump")
        .arg(1)
        .arg("token:f")
        .arg(5)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 5);
    phase(&sb, &proxy, "read-cutover", 11);
    phase(&sb, &proxy, "write-stop", 12);
    let n: i64 = redis::cmd("FCALL")
        .arg("bump2")
        .arg(1)
        .arg("token:f")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 6, "FCALL on new after the switch");
    let listed: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query(&mut conn).unwrap();
    assert_eq!(listed.len(), 2);
    common::wait_for("old = new", Duration::from_secs(10), || {
        differences(&sb, &["token:f".to_string()]).is_empty()
    });
}
