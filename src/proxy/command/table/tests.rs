//! Unit tests of `table`.

use super::*;
use crate::proxy::command::lookup;
use bytes::Bytes;

fn get(name: &str) -> &'static Spec {
    lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} missing from the table"))
}

#[test]
fn commands_are_classified_as_specified() {
    let cases: &[(Class, &str)] = &[
        (
            Class::Read,
            "GET MGET EXISTS STRLEN GETRANGE SUBSTR TYPE TTL PTTL EXPIRETIME PEXPIRETIME HGET HMGET \
             HGETALL HKEYS HVALS HLEN HEXISTS HSTRLEN HSCAN SSCAN ZSCAN HRANDFIELD LLEN LRANGE LINDEX \
             LPOS SCARD SISMEMBER SMISMEMBER SMEMBERS SRANDMEMBER SINTER SUNION SDIFF SINTERCARD ZCARD \
             ZSCORE ZMSCORE ZRANGE ZRANGEBYSCORE ZRANGEBYLEX ZREVRANGE ZREVRANGEBYSCORE ZREVRANGEBYLEX \
             ZRANK ZREVRANK ZCOUNT ZLEXCOUNT ZRANDMEMBER ZUNION ZINTER ZDIFF ZINTERCARD GETBIT BITCOUNT \
             BITPOS BITFIELD_RO XRANGE XREVRANGE XLEN XPENDING XINFO PFCOUNT GEOPOS GEODIST GEOHASH \
             GEOSEARCH GEORADIUS_RO GEORADIUSBYMEMBER_RO OBJECT MEMORY DUMP LCS SORT_RO TIME PUBLISH \
             SPUBLISH TOUCH COMMAND SCRIPT EVAL_RO EVALSHA_RO XREAD PUBSUB FCALL_RO",
        ),
        (
            Class::Write,
            "SET SETNX SETEX PSETEX GETSET GETDEL GETEX APPEND INCR DECR INCRBY DECRBY INCRBYFLOAT \
             SETRANGE MSET MSETNX DEL UNLINK EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST RENAME RENAMENX \
             COPY HSET HSETNX HMSET HDEL HINCRBY HINCRBYFLOAT LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LSET \
             LREM LTRIM LINSERT LMOVE RPOPLPUSH LMPOP SADD SREM SPOP SMOVE SINTERSTORE SUNIONSTORE \
             SDIFFSTORE ZADD ZINCRBY ZREM ZREMRANGEBYSCORE ZREMRANGEBYRANK ZREMRANGEBYLEX ZPOPMIN \
             ZPOPMAX ZMPOP ZUNIONSTORE ZINTERSTORE ZDIFFSTORE ZRANGESTORE SETBIT BITFIELD BITOP PFADD \
             PFMERGE GEOADD GEOSEARCHSTORE RESTORE XADD XDEL XTRIM XACK XCLAIM XAUTOCLAIM XGROUP XSETID \
             EVAL EVALSHA BLPOP BRPOP BLMOVE BRPOPLPUSH BZPOPMIN BZPOPMAX BLMPOP BZMPOP XREADGROUP FCALL",
        ),
        (
            Class::Local,
            "PING ECHO QUIT AUTH HELLO SELECT CLIENT INFO RESET CLUSTER ASKING READONLY READWRITE",
        ),
        (Class::Transaction, "MULTI EXEC DISCARD WATCH UNWATCH"),
        (Class::Keyspace, "SCAN KEYS DBSIZE RANDOMKEY"),
        (
            Class::PubSub,
            "SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE",
        ),
        (Class::Function, "FUNCTION"),
        (Class::Wait, "WAIT"),
        (Class::Flush, "FLUSHALL FLUSHDB"),
    ];
    for (class, names) in cases {
        for name in names.split_whitespace() {
            assert_eq!(get(name).class, *class, "{name}");
        }
    }
    let rejected = "MONITOR \
         SWAPDB MOVE MIGRATE CONFIG SHUTDOWN DEBUG SAVE BGSAVE \
         BGREWRITEAOF LASTSAVE REPLICAOF SLAVEOF SYNC PSYNC ACL SLOWLOG \
         LATENCY MODULE FAILOVER ROLE LOLWUT SORT GEORADIUS GEORADIUSBYMEMBER";
    for name in rejected.split_whitespace() {
        assert!(
            matches!(get(name).class, Class::Reject(why) if !why.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn merges_and_reply_flags_are_as_specified() {
    let merged: Vec<_> = TABLE
        .iter()
        .filter(|s| s.merge != Merge::None)
        .map(|s| (s.name, s.merge))
        .collect();
    let want = [
        ("MGET", Merge::Array),
        ("MSET", Merge::AllOk),
        ("EXISTS", Merge::Sum),
        ("TOUCH", Merge::Sum),
        ("DEL", Merge::Sum),
        ("UNLINK", Merge::Sum),
    ];
    assert_eq!(merged.len(), want.len(), "{merged:?}");
    for w in want {
        assert!(merged.contains(&w), "{w:?}");
    }
    assert_eq!(
        (
            get("MSET").key_stride,
            get("MSETNX").key_stride,
            get("MSETNX").merge
        ),
        (2, 2, Merge::None)
    );
    let flagged =
        |f: fn(&Spec) -> bool| -> Vec<&str> { TABLE.iter().filter(|s| f(s)).map(|s| s.name).collect() };
    assert_eq!(flagged(|s| s.ttl), ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"]);
    for name in "SMEMBERS SINTER SUNION SDIFF HGETALL HKEYS HVALS".split_whitespace() {
        assert!(get(name).unordered, "{name}");
    }
    let random = "DUMP OBJECT MEMORY HRANDFIELD HSCAN SSCAN ZSCAN SRANDMEMBER SPOP ZRANDMEMBER TIME";
    for name in random.split_whitespace() {
        assert!(get(name).random, "{name}");
    }
    assert!(!get("GET").random && !get("GET").unordered && !get("GET").ttl);
}

#[test]
fn split_commands_step_by_their_stride() {
    for s in TABLE.iter().filter(|s| s.merge != Merge::None) {
        assert!(
            matches!(s.keys, KeySpec::Range { first: 1, last: -1, step } if step == s.key_stride),
            "{}",
            s.name
        );
    }
    for s in TABLE {
        assert!(s.key_stride >= 1, "{}", s.name);
        if let KeySpec::Range { step, .. } = s.keys {
            assert_eq!(step, s.key_stride, "{}", s.name);
        }
    }
}
/// A throwaway `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> (Server, redis::Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn();
    // scripts/test installs redis-server; without it this test fails rather than pass unseen.
    let child = child.unwrap_or_else(|e| panic!("redis-server (run scripts/install-deps): {e}"));
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).expect("client");
    for _ in 0..100 {
        if let Ok(mut con) = client.get_connection()
            && redis::cmd("PING").query::<String>(&mut con).is_ok()
        {
            return (server, con);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("redis-server on port {} did not come up", server.port);
}

/// An argv exercising `spec`'s keys: every arg is unique ("a<i>") so keys can be told apart by value.
fn sample(spec: &Spec) -> Option<Vec<String>> {
    let fixed: &[&str] = match spec.name {
        "XINFO" => &["STREAM"],
        "OBJECT" => &["ENCODING"],
        "MEMORY" => &["USAGE"],
        "XGROUP" => &["CREATE"],
        "EVAL" | "EVAL_RO" => &["return 1"],
        "BLMPOP" | "BZMPOP" => &["0"],
        "XREAD" => &["STREAMS", "k1", "k2", "0", "0"],
        "XREADGROUP" => &["GROUP", "g", "c", "STREAMS", "k1", "0"],
        "EVALSHA" | "EVALSHA_RO" => &["e0e1f9fabfc9d4800c877a703b823ac0578ff8db"],
        "FCALL" | "FCALL_RO" => &["f"],
        _ => &[],
    };
    let min = spec.arity.unsigned_abs() as usize;
    let mut out: Vec<String> = vec![spec.name.to_string()];
    out.extend(fixed.iter().map(|s| s.to_string()));
    match spec.keys {
        // Enough plain args for the arity, to hear the server say there are no keys.
        KeySpec::None | KeySpec::Streams => {}
        KeySpec::Range { first, last, step } => {
            let len = if last < 0 {
                first + 3 * step
            } else {
                last as usize + 1
            };
            while out.len() < len.max(min) {
                out.push(format!("a{}", out.len()));
            }
        }
        KeySpec::NumKeys { numkeys_at, dest } => {
            if dest {
                out.push("a1".into());
            }
            assert_eq!(out.len(), numkeys_at, "{}", spec.name);
            out.push("2".into());
            out.extend(["k1".into(), "k2".into()]);
        }
    }
    // XGROUP CREATE key group id: pad past the subcommand's own arity.
    while out.len() < min.max(if spec.name == "XGROUP" { 5 } else { 0 }) {
        out.push(format!("a{}", out.len()));
    }
    // COMMAND GETKEYS needs the name plus at least one arg.
    (out.len() > 1).then_some(out)
}

#[test]
fn table_agrees_with_a_live_redis() {
    let (_server, mut con) = start_server();
    let mut problems = Vec::new();

    // Completeness: every top-level command of the running server is classified.
    let names: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .query(&mut con)
        .expect("COMMAND LIST");
    for name in names.iter().filter(|n| !n.contains('|')) {
        if lookup(name.as_bytes()).is_none() {
            problems.push(format!("{name}: not in the table"));
        }
    }

    let mut checked = 0;
    for spec in TABLE {
        let info: Vec<redis::Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(spec.name)
            .query(&mut con)
            .expect("COMMAND INFO");
        let Some(redis::Value::Array(info)) = info.into_iter().next() else {
            continue; // Newer than the installed server (WAITAOF).
        };
        let arity: i64 = redis::from_redis_value_ref(&info[1]).expect("arity");
        if arity != i64::from(spec.arity) {
            problems.push(format!(
                "{}: arity {} but server says {arity}",
                spec.name, spec.arity
            ));
        }
        let flags: Vec<String> = redis::from_redis_value_ref(&info[2]).expect("flags");
        let has = |f: &str| flags.iter().any(|g| g == f);
        let is_container = matches!(
            spec.keys,
            KeySpec::Range {
                first: 2,
                last: 2,
                ..
            }
        );
        match spec.class {
            // Scripts declare no write flag: what they do depends on the script.
            Class::Write if !has("write") && !is_container && !has("noscript") => {
                problems.push(format!("{}: not write", spec.name))
            }
            Class::Read if has("write") => problems.push(format!("{}: server says write", spec.name)),
            _ => {}
        }
        let own = matches!(
            spec.class,
            Class::Reject(_)
                | Class::Local
                | Class::Transaction
                | Class::Keyspace
                | Class::PubSub
                | Class::Function
                | Class::Wait
                | Class::Flush
        );
        // SCRIPT's and PUBSUB's subcommands take no keys; GETKEYS wants a subcommand it knows.
        // SPUBLISH's shard channel routes like a key, though Redis flags it "not a key".
        if own || matches!(spec.name, "SCRIPT" | "PUBSUB" | "SPUBLISH") {
            continue;
        }
        let Some(argv) = sample(spec) else { continue };
        let bytes: Vec<Bytes> = argv.iter().map(|a| Bytes::from(a.clone())).collect();
        let ours: Vec<&str> = spec
            .key_indices(bytes.len(), &bytes)
            .iter()
            .map(|&i| argv[i].as_str())
            .collect();
        let theirs: redis::RedisResult<Vec<String>> =
            redis::cmd("COMMAND").arg("GETKEYS").arg(&argv).query(&mut con);
        match theirs {
            Ok(theirs) if theirs == ours => checked += 1,
            Err(e) if ours.is_empty() && e.to_string().contains("no key arguments") => checked += 1,
            Ok(theirs) => problems.push(format!("{argv:?}: ours {ours:?}, server {theirs:?}")),
            Err(e) => problems.push(format!("{argv:?}: GETKEYS failed: {e}")),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 40, "only {checked} commands checked against GETKEYS");
}

/// docs/proxy.md's coverage table names every command of the table.
#[test]
fn every_command_is_in_the_coverage_table() {
    let doc = include_str!("../../../../docs/proxy.md");
    let start = doc.find("### Command coverage").expect("a coverage section");
    let section = &doc[start..];
    let end = section.find("\n## ").unwrap_or(section.len());
    let words: std::collections::HashSet<&str> = section[..end]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .collect();
    let missing: Vec<&str> = TABLE
        .iter()
        .map(|s| s.name)
        .filter(|n| !words.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/proxy.md's coverage table: {missing:?}"
    );
}
