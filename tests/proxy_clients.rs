//! What client libraries need from the proxy (issue 8): RESP3, cluster mode, keyspace commands,
//! and backend connections that use the source's database and ACL user.

mod common;

use std::time::Duration;

use common::compare::differences;
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;
use common::wire::{exchange, phase, raw, resp};
use redis::Commands;

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
