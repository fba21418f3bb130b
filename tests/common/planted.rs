//! Keys of every type planted on a source before a migration, and old and new compared over
//! every migrated key, type by type, by the harness (not by cachemig): the setup the
//! cross-version tests share.

use super::RedisServer;
use super::compare::differences_on;
use super::sandbox::Sandbox;

/// Every type, TTLs, a HyperLogLog, a stream with a consumer group and a pending entry, a binary
/// key, a few hundred small strings under `token:`, and one key the plan leaves behind.
pub fn plant(source: &RedisServer) {
    let mut conn = source.conn();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.set(format!("token:s:{i}"), format!("value-{i}")).ignore();
    }
    pipe.cmd("SET")
        .arg(b"token:bin\xff".as_slice())
        .arg(b"\x00\xfe".as_slice())
        .ignore();
    pipe.hset_multiple("token:{u1}:hash", &[("a", "1"), ("b", "2")])
        .ignore();
    pipe.rpush("token:{u1}:list", &["x", "y", "x"]).ignore();
    pipe.sadd("token:set", &["m1", "m2", "m3"]).ignore();
    pipe.zadd_multiple("token:zset", &[(1.5, "a"), (-2.25, "b")])
        .ignore();
    pipe.pfadd("token:hll", &["p", "q", "r"]).ignore();
    pipe.set("token:ttl", "t")
        .pexpire("token:ttl", 3_600_000)
        .ignore();
    pipe.hset("token:hash-ttl", "f", "v")
        .pexpire("token:hash-ttl", 3_600_000)
        .ignore();
    for id in ["1-1", "2-1", "3-1"] {
        pipe.cmd("XADD")
            .arg("token:stream")
            .arg(id)
            .arg("f")
            .arg(id)
            .ignore();
    }
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg("token:stream")
        .arg("g")
        .arg("0")
        .ignore();
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("token:stream")
        .arg(">")
        .ignore();
    pipe.set("other:not-migrated", "no").ignore();
    pipe.exec(&mut conn).unwrap();
}

/// The migrated keys (`token:*`) of one server, as text (the binary key is left out).
fn migrated(server: &RedisServer) -> Vec<String> {
    let keys: Vec<Vec<u8>> = server.query(&["KEYS", "token:*"]);
    keys.into_iter()
        .filter_map(|k| String::from_utf8(k).ok())
        .collect()
}

/// Old and new equal key by key over every migrated key (type, content, whether a TTL is set),
/// with as many migrated keys on each side, the binary key, and the stream's consumer group and
/// pending entries carried.
pub fn assert_same(sb: &Sandbox) {
    let keys = migrated(&sb.source);
    assert!(keys.len() > 300, "the planted keys are there");
    let on_new: usize = sb.target.masters().iter().map(|m| migrated(m).len()).sum();
    assert_eq!(on_new, keys.len(), "as many migrated keys on new as on old");
    let (mut old, mut new) = (sb.source.conn(), sb.target.cluster_conn());
    let differences = differences_on(&mut old, &mut new, &keys);
    assert!(
        differences.is_empty(),
        "old and new differ:\n{}",
        differences.join("\n")
    );
    let bin = |conn: &mut dyn redis::ConnectionLike| -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(b"token:bin\xff".as_slice())
            .query(conn)
            .unwrap()
    };
    assert_eq!(bin(&mut old), bin(&mut new), "a binary key and value");
    let left = super::compare::canonical(&mut new, "other:not-migrated");
    assert_eq!(left, None, "the key the plan leaves behind stays on old");
    let pending = |conn: &mut dyn redis::ConnectionLike| -> (i64, String) {
        let reply: (i64, String, String, redis::Value) = redis::cmd("XPENDING")
            .arg("token:stream")
            .arg("g")
            .query(conn)
            .unwrap();
        (reply.0, reply.2)
    };
    assert_eq!(
        pending(&mut old),
        pending(&mut new),
        "the group's pending entries"
    );
    assert_eq!(pending(&mut new).0, 2);
}
