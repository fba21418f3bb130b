//! Blocking queues and pub/sub through the proxy (issue 8), across phase switches and the fence:
//! every item taken once, every message heard once.

mod common;

use std::time::Duration;

use common::compare::differences;
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::wire::{exchange, phase, raw, resp};
use redis::Commands;

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
    switch_both(&sb, [&p1, &p2], || {
        for _ in 0..20 {
            let _: i64 = publisher.publish("news", format!("m{sent}")).unwrap();
            sent += 1;
        }
    });
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

/// The payloads of every `smessage` frame in `text` (RESP2 arrays or RESP3 pushes), in order.
/// Puts in force, one generation after another, every switch of the read and the write side and
/// back (`planned` → `sync-dual-write` → `read-cutover` → `write-stop` → `read-cutover`), calling
/// `publish` while the proxies apply each, at different moments; waits until both applied it.
fn switch_both(sb: &Sandbox, proxies: [&ProxyProcess; 2], mut publish: impl FnMut()) {
    let phases = [
        "planned",
        "sync-dual-write",
        "read-cutover",
        "write-stop",
        "read-cutover",
    ];
    for (generation, name) in (1..).zip(phases) {
        set_phase(&sb.flag_path(), name, generation, false, 0.0);
        publish();
        for p in proxies {
            p.wait_generation(generation);
        }
    }
}

fn shard_payloads(text: &str) -> Vec<(String, String)> {
    let bulk = |s: &str| -> (String, usize) {
        // "$<n>\r\n<data>\r\n": the data and the length of the whole frame.
        let (len, rest) = s[1..].split_once("\r\n").unwrap();
        let n: usize = len.parse().unwrap();
        (rest[..n].to_string(), 1 + len.len() + 2 + n + 2)
    };
    text.split("$8\r\nsmessage\r\n")
        .skip(1)
        .map(|part| {
            let (channel, used) = bulk(part);
            (channel, bulk(&part[used..]).0)
        })
        .collect()
}

/// Reads from `s` until `count` shard messages arrived; their (channel, payload)s.
fn read_shard_messages(s: &mut std::net::TcpStream, count: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    while shard_payloads(&text).len() < count || !text.ends_with("\r\n") {
        text += &exchange(s, b"", b"\r\n");
    }
    shard_payloads(&text)
}

/// The id and port of the master of the new cluster that owns `slot`.
fn owner_of(sb: &Sandbox, slot: u16) -> (String, u16) {
    let nodes: String = sb.target.masters()[0].query(&["CLUSTER", "NODES"]);
    for line in nodes.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let owns = |r: &&str| match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot),
            None => r.parse::<u16>().ok() == Some(slot),
        };
        if f[2].contains("master") && f[8..].iter().any(owns) {
            let port = f[1].split('@').next().unwrap().rsplit(':').next().unwrap();
            return (f[0].to_string(), port.parse().unwrap());
        }
    }
    panic!("no master owns slot {slot}:\n{nodes}");
}

/// Moves an empty `slot` to another master, as a resharding does; the new owner's port.
fn move_slot(sb: &Sandbox, slot: u16) -> u16 {
    let (from_id, from_port) = owner_of(sb, slot);
    let masters = sb.target.masters();
    let from = masters.iter().find(|m| m.port() == from_port).unwrap();
    let to = masters.iter().find(|m| m.port() != from_port).unwrap();
    let to_id: String = to.query(&["CLUSTER", "MYID"]);
    let slot = slot.to_string();
    let _: () = to.query(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    let _: () = from.query(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    for m in std::iter::once(to).chain(std::iter::once(from)).chain(
        masters
            .iter()
            .filter(|m| m.port() != from_port && m.port() != to.port()),
    ) {
        let _: () = m.query(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    to.port()
}

/// Publishes the next message on `channel`, through the proxies in turn; both subscribers hear it.
fn spublish(publishers: &mut [redis::Connection; 2], channel: &str, sent: &mut Vec<(String, String)>) {
    let payload = format!("m{}", sent.len());
    let conn = &mut publishers[sent.len() % 2];
    let heard: i64 = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(&payload)
        .query(conn)
        .unwrap();
    assert_eq!(heard, 2, "SPUBLISH {channel} reached both subscribers");
    sent.push((channel.to_string(), payload));
}

#[test]
fn a_shard_subscriber_on_one_proxy_hears_every_spublish_through_another_across_switches_and_a_slot_move() {
    let sb = Sandbox::start();
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let channels = ["shard:{a}", "shard:{b}", "shard:{c}"];
    // RESP2 subscriber mode on p1, RESP3 pushes on p2; every channel confirmed with the shard count.
    let mut s2 = raw(&p1);
    let mut req = resp(&["SSUBSCRIBE", channels[0], channels[1]]);
    req.extend(resp(&["SSUBSCRIBE", channels[2]]));
    let confirmed = exchange(&mut s2, &req, b":3\r\n");
    let want: String = channels
        .iter()
        .enumerate()
        .map(|(i, c)| format!("*3\r\n$10\r\nssubscribe\r\n$9\r\n{c}\r\n:{}\r\n", i + 1))
        .collect();
    assert_eq!(confirmed, want);
    let mut s3 = raw(&p2);
    exchange(&mut s3, &resp(&["HELLO", "3"]), b"*0\r\n");
    let mut req = Vec::new();
    for c in channels {
        req.extend(resp(&["SSUBSCRIBE", c]));
    }
    let confirmed = exchange(&mut s3, &req, b":3\r\n");
    assert!(
        confirmed.starts_with(">3\r\n$10\r\nssubscribe\r\n"),
        "{confirmed}"
    );
    let mut publishers = [p1.conn(), p2.conn()];
    let mut sent = Vec::new();
    switch_both(&sb, [&p1, &p2], || {
        for i in 0..15 {
            spublish(&mut publishers, channels[i % 3], &mut sent);
        }
    });
    // A resharding moves a channel's slot: its node drops the subscription, the proxy places it
    // on the new owner (a message published before that would be lost, as for a direct client).
    let slot = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(channels[0])
        .query::<u16>(&mut sb.target.masters()[0].conn())
        .unwrap();
    let to = move_slot(&sb, slot);
    let owner = sb.target.masters().iter().find(|m| m.port() == to).unwrap();
    common::wait_for(
        "both subscriptions on the new owner",
        Duration::from_secs(10),
        || {
            let counts: Vec<redis::Value> = owner.query(&["PUBSUB", "SHARDNUMSUB", channels[0]]);
            counts.get(1) == Some(&redis::Value::Int(2))
        },
    );
    for _ in 0..10 {
        spublish(&mut publishers, channels[0], &mut sent);
    }
    let mut expected = sent.clone();
    expected.sort();
    for (what, s) in [("RESP2 on p1", &mut s2), ("RESP3 on p2", &mut s3)] {
        let mut heard = read_shard_messages(s, sent.len());
        heard.sort();
        assert_eq!(heard, expected, "{what}: every message exactly once");
    }
    // SUNSUBSCRIBE with no channel leaves them all; the client leaves subscriber mode.
    let left = exchange(&mut s2, &resp(&["SUNSUBSCRIBE"]), b":0\r\n");
    assert_eq!(left.matches("sunsubscribe").count(), 3, "{left}");
    assert_eq!(exchange(&mut s2, &resp(&["PING"]), b"\r\n"), "+PONG\r\n");
}
