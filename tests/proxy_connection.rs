//! Connection-level commands that change what the proxy does for one client (issue 8):
//! `CLIENT REPLY ON|OFF|SKIP` and `WAIT`.

mod common;

use std::time::Duration;

use common::RedisServer;
use common::compare::differences;
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;
use common::wire::{exchange, phase, raw, resp};

/// Several requests as one pipeline.
fn pipeline(requests: &[&[&str]]) -> Vec<u8> {
    requests.iter().flat_map(|r| resp(r)).collect()
}

#[test]
fn client_reply_off_and_skip_drop_replies_as_redis_does_and_the_writes_still_apply() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    phase(&sb, &proxy, "sync-dual-write", 1);
    for (proto, hello_end) in [("2", b"*0\r\n".as_slice()), ("3", b"*0\r\n".as_slice())] {
        let mut s = raw(&proxy);
        exchange(&mut s, &resp(&["HELLO", proto]), hello_end);
        let k = |n: &str| format!("token:reply:{proto}:{n}");
        let (a, b, c) = (k("a"), k("b"), k("c"));
        // SKIP: no reply to itself nor to the SET after it; the GET answers.
        let got = exchange(
            &mut s,
            &pipeline(&[&["CLIENT", "REPLY", "SKIP"], &["SET", &a, "1"], &["GET", &a]]),
            b"\r\n1\r\n",
        );
        assert_eq!(got, "$1\r\n1\r\n", "RESP{proto}");
        // OFF: nothing until ON, which answers OK.
        let got = exchange(
            &mut s,
            &pipeline(&[
                &["CLIENT", "REPLY", "OFF"],
                &["SET", &b, "2"],
                &["INCR", &c],
                &["GET", "token:nothing"],
                &["CLIENT", "REPLY", "ON"],
                &["GET", &b],
            ]),
            b"\r\n2\r\n",
        );
        assert_eq!(got, "+OK\r\n$1\r\n2\r\n", "RESP{proto}");
        // Muted across batches too: OFF alone, then a write, then ON.
        exchange(
            &mut s,
            &pipeline(&[&["CLIENT", "REPLY", "OFF"], &["INCR", &c]]),
            b"",
        );
        let got = exchange(
            &mut s,
            &pipeline(&[&["CLIENT", "REPLY", "ON"], &["GET", &c]]),
            b"\r\n2\r\n",
        );
        assert_eq!(got, "+OK\r\n$1\r\n2\r\n", "RESP{proto}");
        let bad = exchange(&mut s, &resp(&["CLIENT", "REPLY", "MAYBE"]), b"\r\n");
        assert_eq!(bad, "-ERR syntax error\r\n");
        let keys = [a, b, c];
        let mut old = sb.source.conn();
        let model = ["1", "2", "2"];
        for (key, want) in keys.iter().zip(model) {
            let got: String = redis::cmd("GET").arg(key).query(&mut old).unwrap();
            assert_eq!(got, want, "{key} on old");
        }
        common::wait_for("old equals new", Duration::from_secs(10), || {
            differences(&sb, &keys).is_empty()
        });
    }
}

/// The value of `key` as a replica of `masters`' cluster holds it (the replica serving its slot).
fn from_replica(replicas: &[&RedisServer], key: &str) -> Option<String> {
    for replica in replicas {
        let mut conn = replica.conn();
        let _: () = redis::cmd("READONLY").query(&mut conn).unwrap();
        if let Ok(value) = redis::cmd("GET").arg(key).query::<Option<String>>(&mut conn) {
            return value;
        }
    }
    panic!("no replica serves {key}");
}

#[test]
fn wait_counts_the_replicas_holding_every_write_the_client_made_on_each_node_it_wrote() {
    let sb = Sandbox::start_with_replicas();
    // A replica for old too.
    let port = sb.source.port().to_string();
    let old_replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    common::wait_for("old's replica in sync", Duration::from_secs(20), || {
        sb.source.info_field("connected_slaves").as_deref() == Some("1")
    });
    let proxy = ProxyProcess::start(&sb, "p1");
    let keys: Vec<String> = (0..30).map(|i| format!("token:wait:{i}")).collect();
    let mut model = std::collections::BTreeMap::new();
    let new_replicas: Vec<&RedisServer> = sb
        .target
        .nodes()
        .iter()
        .filter(|n| !sb.target.masters().iter().any(|m| m.port() == n.port()))
        .collect();
    for (generation, name) in [(1, "planned"), (2, "write-stop")] {
        phase(&sb, &proxy, name, generation);
        let mut c = proxy.conn();
        // Nothing written yet on this connection: Redis answers with the replicas it has.
        let fresh: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut c).unwrap();
        assert_eq!(fresh, 1, "{name}: WAIT before any write");
        let mut pipe = redis::pipe();
        for key in &keys {
            let value = format!("{name}-{key}");
            pipe.set(key, &value).ignore();
            model.insert(key.clone(), value);
        }
        // A keyless script counts as a write to any master.
        pipe.cmd("EVAL").arg("return 1").arg(0).ignore();
        pipe.exec(&mut c).unwrap();
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut c).unwrap();
        assert_eq!(acked, 1, "{name}: every node the writes went to has its replica");
        // Acknowledged means there: every replica already holds every write.
        for key in &keys {
            let held = if name == "planned" {
                old_replica.conn().get_value(key)
            } else {
                from_replica(&new_replicas, key)
            };
            assert_eq!(
                held.as_ref(),
                model.get(key),
                "{name}: {key} on the replica after WAIT"
            );
        }
        // More replicas than there are: the timeout passes and the count says so.
        let short: i64 = redis::cmd("WAIT").arg(2).arg(100).query(&mut c).unwrap();
        assert_eq!(short, 1, "{name}: WAIT 2 with one replica per node");
        let bad = redis::cmd("WAIT")
            .arg("x")
            .arg(0)
            .query::<i64>(&mut c)
            .unwrap_err();
        assert!(bad.to_string().contains("not an integer"), "{bad}");
    }
    // A replica that cannot acknowledge (stopped): a write of this client's is not acked, so
    // WAIT counts no replica, although the replica acknowledged everything before.
    phase(&sb, &proxy, "read-cutover", 3);
    let pid = old_replica.info_field("process_id").expect("the replica's pid");
    signal(&pid, "-STOP");
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET").arg(&keys[0]).arg("late").query(&mut c).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut c).unwrap();
    signal(&pid, "-CONT");
    assert_eq!(acked, 0, "WAIT counted a replica that could not have the write");
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut c).unwrap();
    assert_eq!(acked, 1, "the replica resumed and acknowledged");
    assert_eq!(old_replica.conn().get_value(&keys[0]).as_deref(), Some("late"));
    model.insert(keys[0].clone(), "late".into());
    let mut new = sb.target.cluster_conn();
    for (key, want) in &model {
        let got: String = redis::cmd("GET").arg(key).query(&mut new).unwrap();
        assert_eq!(&got, want, "{key} on new");
    }
    common::wait_for("old equals new", Duration::from_secs(10), || {
        differences(&sb, &keys).is_empty()
    });
}

/// Sends `sig` (`-STOP`, `-CONT`) to the process `pid`.
fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// A plain GET on a connection.
trait GetValue {
    fn get_value(&mut self, key: &str) -> Option<String>;
}

impl GetValue for redis::Connection {
    fn get_value(&mut self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(self).unwrap()
    }
}
