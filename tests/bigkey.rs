//! The chunked big-key copy (`cachemig::backfill::bigkey`) against a real standalone source and a
//! real 3-master target cluster: every type with enough elements for several chunks, binary-safe
//! keys and values, hashtags and keys that hash awkwardly, TTLs, both existing-key policies,
//! vanished keys, and no temporary key left behind. Target and source are compared with
//! independent, type-specific reads.

mod common;

use std::collections::BTreeMap;

use cachemig::backfill::bigkey::{self, BigCopy};
use cachemig::endpoint::{connect_cluster, connect_node};
use common::{RedisCluster, RedisServer};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Value};
use url::Url;

/// A source server, a target cluster, async connections for the copy and sync ones for checks.
struct Fixture {
    _source: RedisServer,
    cluster: RedisCluster,
    src: MultiplexedConnection,
    dst: ClusterConnection,
    src_sync: redis::Connection,
    dst_sync: redis::cluster::ClusterConnection,
}

impl Fixture {
    async fn start() -> Fixture {
        let source = RedisServer::start();
        let cluster = RedisCluster::start(3, 0);
        let src = connect_node(&Url::parse(&source.url()).unwrap(), None, None)
            .await
            .unwrap();
        let urls: Vec<Url> = cluster
            .seed_urls()
            .iter()
            .map(|u| Url::parse(u).unwrap())
            .collect();
        let dst = connect_cluster(&urls, None, None).await.unwrap();
        let (src_sync, dst_sync) = (source.conn(), cluster.cluster_conn());
        Fixture {
            _source: source,
            cluster,
            src,
            dst,
            src_sync,
            dst_sync,
        }
    }

    async fn copy(&mut self, key: &[u8], replace: bool) -> BigCopy {
        bigkey::copy(&mut self.src, &mut self.dst, key, replace)
            .await
            .unwrap_or_else(|e| panic!("copy of {:?} failed: {e}", String::from_utf8_lossy(key)))
    }

    fn src<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.src_sync).unwrap()
    }

    fn dst<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.dst_sync).unwrap()
    }

    /// Runs `cmd` on both sides; panics unless the replies are equal.
    fn same<T: FromRedisValue + PartialEq + std::fmt::Debug>(&mut self, cmd: &redis::Cmd) -> T {
        let (a, b): (T, T) = (self.src(cmd), self.dst(cmd));
        assert!(
            a == b,
            "{:?} differs\nsource: {a:?}\ntarget: {b:?}",
            String::from_utf8_lossy(&cmd.get_packed_command())
        );
        a
    }

    /// Loads `cmds` into the source in pipelines of 500.
    fn load(&mut self, cmds: Vec<redis::Cmd>) {
        for batch in cmds.chunks(500) {
            let mut pipe = redis::pipe();
            for c in batch {
                pipe.add_command(c.clone()).ignore();
            }
            pipe.query::<()>(&mut self.src_sync).unwrap();
        }
    }

    /// Panics if any master holds a key of cachemig's reserved namespace.
    fn assert_no_temp_keys(&self) {
        for m in self.cluster.masters() {
            let keys: Vec<Vec<u8>> = m.query(&["KEYS", "__cachemig:*"]);
            assert!(keys.is_empty(), "leftover keys on {}: {:?}", m.url(), keys);
        }
    }

    /// Asserts the target holds the TTL of `key` that the source was given (`set_ms`) within
    /// the last 10 s, never longer than the source's own.
    fn assert_ttl_copied(&mut self, key: &[u8], set_ms: i64) {
        let (s, t) = self.pttl(key);
        assert!(
            t > set_ms - 10_000 && t <= s.max(set_ms),
            "TTL source {s} ms, target {t} ms"
        );
    }

    /// Source and target PTTL.
    fn pttl(&mut self, key: &[u8]) -> (i64, i64) {
        let cmd = cmd("PTTL", &[key]);
        (self.src(&cmd), self.dst(&cmd))
    }
}

fn cmd(name: &str, args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(name);
    for a in args {
        c.arg(*a);
    }
    c
}

/// Deterministic bytes with every value 0..=255 likely, including NUL, CR, LF and `{` `}`.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Unique bytes for element `i`: a binary prefix, the index, and random bytes.
    fn element(&mut self, i: usize, extra: usize) -> Vec<u8> {
        let mut v = b"\x00\r\n\xff{}".to_vec();
        v.extend_from_slice(i.to_string().as_bytes());
        v.push(b':');
        let n = (self.next() % extra as u64) as usize;
        v.extend(self.take(n));
        v
    }
}

#[tokio::test]
async fn hash_of_5000_fields_with_a_hashtag_and_a_ttl() {
    let mut f = Fixture::start().await;
    let key: &[u8] = b"user:{shard\x00\xff}:big hash";
    let mut rng = Bytes(1);
    let cmds: Vec<redis::Cmd> = (0..5000)
        .map(|i| {
            let (field, value) = (rng.element(i, 40), rng.element(i, 300));
            cmd("HSET", &[key, &field, &value])
        })
        .collect();
    f.load(cmds);
    f.src::<()>(&cmd("PEXPIRE", &[key, b"100000"]));

    let BigCopy::Copied { bytes } = f.copy(key, false).await else {
        panic!("not copied")
    };
    let all: BTreeMap<Vec<u8>, Vec<u8>> = f.same(&cmd("HGETALL", &[key]));
    assert_eq!(all.len(), 5000);
    let value_bytes: u64 = all.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    assert!(
        bytes >= value_bytes,
        "reported {bytes} bytes, values are {value_bytes}"
    );
    f.assert_ttl_copied(key, 100_000);
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn strings_of_3_mib_and_odd_sizes_without_ttl() {
    let mut f = Fixture::start().await;
    let mut rng = Bytes(2);
    let exact = rng.take(3 * 1024 * 1024);
    let odd = rng.take(1024 * 1024 + 12_345);
    let small = b"\x00tiny\r\n".to_vec();
    let keys: [(&[u8], &Vec<u8>); 3] = [
        (b"str:exact\x00", &exact),
        (b"str:odd{tag}", &odd),
        (b"str:small", &small),
    ];
    for (key, value) in keys {
        f.src::<()>(&cmd("SET", &[key, value]));
        assert_eq!(
            f.copy(key, false).await,
            BigCopy::Copied {
                bytes: value.len() as u64
            }
        );
        let got: Vec<u8> = f.same(&cmd("GET", &[key]));
        assert_eq!(&got, value);
        assert_eq!(f.pttl(key), (-1, -1), "no TTL must stay no TTL");
    }
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn list_of_5000_elements_in_order() {
    let mut f = Fixture::start().await;
    let key: &[u8] = b"list}with a closing brace";
    let mut rng = Bytes(3);
    let mut elements: Vec<Vec<u8>> = (0..5000).map(|i| rng.element(i, 200)).collect();
    elements.push(Vec::new()); // an empty element
    elements.push(elements[0].clone()); // a duplicate
    let cmds = elements.iter().map(|e| cmd("RPUSH", &[key, e])).collect();
    f.load(cmds);
    f.src::<()>(&cmd("PEXPIRE", &[key, b"3600000"]));

    assert!(matches!(f.copy(key, true).await, BigCopy::Copied { .. }));
    let got: Vec<Vec<u8>> = f.same(&cmd("LRANGE", &[key, b"0", b"-1"]));
    assert_eq!(got, elements);
    let (_, t) = f.pttl(key);
    assert!(t > 3_500_000 && t <= 3_600_000, "target TTL {t}");
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn set_of_5000_members_with_an_empty_hashtag_and_the_empty_key() {
    let mut f = Fixture::start().await;
    let mut rng = Bytes(4);
    for key in [&b"{}set"[..], &b""[..]] {
        let members: Vec<Vec<u8>> = (0..5000).map(|i| rng.element(i, 120)).collect();
        let cmds = members.iter().map(|m| cmd("SADD", &[key, m])).collect();
        f.load(cmds);
        assert!(matches!(f.copy(key, false).await, BigCopy::Copied { .. }));
        let mut a: Vec<Vec<u8>> = f.src(&cmd("SMEMBERS", &[key]));
        let mut b: Vec<Vec<u8>> = f.dst(&cmd("SMEMBERS", &[key]));
        a.sort();
        b.sort();
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        assert_eq!(f.pttl(key), (-1, -1));
    }
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn sorted_set_of_5000_members_keeps_exact_scores() {
    let mut f = Fixture::start().await;
    let key: &[u8] = b"zs}et{x}";
    let mut rng = Bytes(5);
    let special = [
        "inf",
        "-inf",
        "0.1",
        "-0",
        "1e-300",
        "9007199254740993",
        "3.141592653589793",
    ];
    let cmds = (0..5000)
        .map(|i| {
            let score = match special.get(i) {
                Some(s) => s.to_string(),
                None => format!("{:?}", (i as f64) / 3.0 - 700.0),
            };
            cmd("ZADD", &[key, score.as_bytes(), &rng.element(i, 80)])
        })
        .collect();
    f.load(cmds);
    f.src::<()>(&cmd("PEXPIRE", &[key, b"50000"]));

    assert!(matches!(f.copy(key, false).await, BigCopy::Copied { .. }));
    let all: Vec<Vec<u8>> = f.same(&cmd("ZRANGE", &[key, b"0", b"-1", b"WITHSCORES"]));
    assert_eq!(all.len(), 10_000);
    f.assert_ttl_copied(key, 50_000);
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn stream_of_3000_entries_with_groups_and_pending_entries() {
    let mut f = Fixture::start().await;
    let key: &[u8] = b"stream:{events}\x00";
    let mut rng = Bytes(6);
    let cmds = (0..3000)
        .map(|i| {
            let id = format!("{}-{}", 1_700_000_000_000u64 + (i / 3) as u64, i % 3);
            let (a, b) = (rng.element(i, 100), rng.element(i, 30));
            cmd(
                "XADD",
                &[key, id.as_bytes(), b"field\x00", &a, &b, b"second value"],
            )
        })
        .collect();
    f.load(cmds);
    // A deleted entry (max-deleted-entry-id), groups, pending entries, an idle consumer.
    f.src::<()>(&cmd("XDEL", &[key, b"1700000000500-1"]));
    f.src::<()>(&cmd("XGROUP", &[b"CREATE", key, b"workers", b"0"]));
    f.src::<()>(&cmd("XGROUP", &[b"CREATE", key, b"tail\xff", b"$"]));
    f.src::<Value>(&cmd(
        "XREADGROUP",
        &[
            b"GROUP", b"workers", b"alice", b"COUNT", b"1500", b"STREAMS", key, b">",
        ],
    ));
    f.src::<Value>(&cmd(
        "XREADGROUP",
        &[
            b"GROUP", b"workers", b"bob", b"COUNT", b"20", b"STREAMS", key, b">",
        ],
    ));
    f.src::<()>(&cmd(
        "XACK",
        &[key, b"workers", b"1700000000000-0", b"1700000000000-1"],
    ));
    // Delivered twice: bob claims one of alice's.
    f.src::<Value>(&cmd(
        "XCLAIM",
        &[key, b"workers", b"bob", b"0", b"1700000000001-0"],
    ));
    f.src::<()>(&cmd("XGROUP", &[b"CREATECONSUMER", key, b"workers", b"carol"]));

    assert!(matches!(f.copy(key, false).await, BigCopy::Copied { .. }));
    let entries: Value = f.same(&cmd("XRANGE", &[key, b"-", b"+"]));
    let Value::Array(entries) = entries else {
        panic!("XRANGE: {entries:?}")
    };
    assert_eq!(entries.len(), 2999);

    let info = |f: &mut Fixture, target: bool| -> BTreeMap<String, Value> {
        let c = cmd("XINFO", &[b"STREAM", key]);
        let v: BTreeMap<String, Value> = if target { f.dst(&c) } else { f.src(&c) };
        v
    };
    let (s, t) = (info(&mut f, false), info(&mut f, true));
    for field in [
        "length",
        "last-generated-id",
        "max-deleted-entry-id",
        "entries-added",
        "groups",
        "first-entry",
        "last-entry",
    ] {
        assert_eq!(s.get(field), t.get(field), "XINFO STREAM {field}");
    }
    let groups: Vec<BTreeMap<String, Value>> = f.same(&cmd("XINFO", &[b"GROUPS", key]));
    assert_eq!(groups.len(), 2);
    // Per consumer: name and pending count (idle times differ by nature).
    let consumers = |f: &mut Fixture, target: bool| -> Vec<(String, i64)> {
        let c = cmd("XINFO", &[b"CONSUMERS", key, b"workers"]);
        let v: Vec<BTreeMap<String, Value>> = if target { f.dst(&c) } else { f.src(&c) };
        v.into_iter()
            .map(|m| {
                (
                    redis::from_redis_value_ref(&m["name"]).unwrap(),
                    redis::from_redis_value_ref(&m["pending"]).unwrap(),
                )
            })
            .collect()
    };
    let (cs, ct) = (consumers(&mut f, false), consumers(&mut f, true));
    assert_eq!(cs, ct);
    assert_eq!(cs.len(), 3);
    // The pending entries lists: id, owner, delivery count equal; idle time close.
    let pel = |f: &mut Fixture, target: bool| -> Vec<(String, String, i64, i64)> {
        let c = cmd("XPENDING", &[key, b"workers", b"-", b"+", b"10000"]);
        if target { f.dst(&c) } else { f.src(&c) }
    };
    let (ps, pt) = (pel(&mut f, false), pel(&mut f, true));
    assert_eq!(ps.len(), 1518);
    assert_eq!(ps.len(), pt.len());
    for (a, b) in ps.iter().zip(&pt) {
        assert_eq!((&a.0, &a.1, a.3), (&b.0, &b.1, b.3), "pending entry");
        assert!((a.2 - b.2).abs() < 10_000, "idle {} vs {}", a.2, b.2);
    }
    assert!(
        ps.iter().any(|p| p.3 == 2),
        "a twice-delivered entry is part of the test"
    );
    assert_eq!(f.pttl(key), (-1, -1));

    // A stream whose entries were all deleted still exists, with its metadata and group.
    let empty: &[u8] = b"stream:emptied";
    f.src::<()>(&cmd("XADD", &[empty, b"5-1", b"f", b"v"]));
    f.src::<()>(&cmd("XDEL", &[empty, b"5-1"]));
    f.src::<()>(&cmd("XGROUP", &[b"CREATE", empty, b"g", b"5-1"]));
    assert!(matches!(f.copy(empty, false).await, BigCopy::Copied { .. }));
    let (s, t) = (
        f.src::<BTreeMap<String, Value>>(&cmd("XINFO", &[b"STREAM", empty])),
        f.dst::<BTreeMap<String, Value>>(&cmd("XINFO", &[b"STREAM", empty])),
    );
    for field in [
        "length",
        "last-generated-id",
        "max-deleted-entry-id",
        "entries-added",
        "groups",
    ] {
        assert_eq!(s.get(field), t.get(field), "emptied stream: XINFO STREAM {field}");
    }
    f.same::<Vec<BTreeMap<String, Value>>>(&cmd("XINFO", &[b"GROUPS", empty]));
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn existing_target_keys_follow_the_replace_policy() {
    let mut f = Fixture::start().await;
    let key: &[u8] = b"policy:{h}";
    let mut rng = Bytes(7);
    let cmds = (0..3000)
        .map(|i| cmd("HSET", &[key, &rng.element(i, 20), &rng.element(i, 100)]))
        .collect();
    f.load(cmds);
    f.dst::<()>(&cmd("HSET", &[key, b"newer", b"value on the target"]));
    f.dst::<()>(&cmd("PEXPIRE", &[key, b"777777"]));

    assert_eq!(f.copy(key, false).await, BigCopy::KeptExisting);
    let kept: BTreeMap<Vec<u8>, Vec<u8>> = f.dst(&cmd("HGETALL", &[key]));
    assert_eq!(
        kept,
        BTreeMap::from([(b"newer".to_vec(), b"value on the target".to_vec())])
    );
    let (_, t) = f.pttl(key);
    assert!(t > 700_000, "target TTL untouched, got {t}");
    f.assert_no_temp_keys();

    assert!(matches!(f.copy(key, true).await, BigCopy::Copied { .. }));
    let all: BTreeMap<Vec<u8>, Vec<u8>> = f.same(&cmd("HGETALL", &[key]));
    assert_eq!(all.len(), 3000);
    assert_eq!(f.pttl(key), (-1, -1), "replace gives the source's (absent) TTL");
    f.assert_no_temp_keys();
}

#[tokio::test]
async fn missing_keys_have_vanished() {
    let mut f = Fixture::start().await;
    assert_eq!(f.copy(b"never existed", false).await, BigCopy::Vanished);
    assert_eq!(f.copy(b"never existed", true).await, BigCopy::Vanished);
    let exists: bool = f.dst(&cmd("EXISTS", &[b"never existed"]));
    assert!(!exists);
    assert_eq!(f.cluster.dbsize(), 0);
    f.assert_no_temp_keys();
}
