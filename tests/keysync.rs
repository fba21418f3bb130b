//! The key-sync primitive against real Redis (design §4, issue 9): syncs of one key run under a
//! lease on the destination, so a key that never goes quiet converges with no error, a stale
//! snapshot can never land after a fresh one, and the TTL written is the origin's.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachemig::keysync::lock::Session;
use cachemig::keysync::{
    self, Acquire, Applied, Commit, KeySync, NoExclusive, NodeExclusive, ScriptSupport, Snapshot,
};
use common::RedisServer;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

async fn connect(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn run(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(conn).await.unwrap()
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

fn exclusive(server: &RedisServer) -> NodeExclusive {
    NodeExclusive::new(url::Url::parse(&server.url()).unwrap(), None)
}

/// The destination refuses every script (an ACL without `@scripting`): the lock runs as WATCH
/// transactions.
async fn refuse_scripts(dest: &mut MultiplexedConnection) {
    run(dest, &["ACL", "SETUSER", "default", "-@scripting"]).await;
    let err = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query_async::<i64>(dest)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What the hot-key run saw.
#[derive(Debug, Default)]
struct Tally {
    syncs: AtomicU64,
    covered: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
    incrs: AtomicU64,
}

/// Four "proxies" (each its own `KeySync`, its own tokens) write one counter (INCR) and one
/// queue (RPUSH / LPOP) on the origin as fast as they can for `for_how_long`, each write followed
/// by a sync of its key, as a sync mirror does; a watcher reads the destination's counter all
/// the while. Checks: no sync fails; right after a sync returns, the destination holds that
/// write (the counter is at least the INCR's reply); the destination's counter never goes back
/// (no stale RESTORE lands after a fresh one); at the end both sides equal the model.
/// (`min_writes`: each of the four writers writes at least this often, however long it takes.)
async fn hot_key_run(scripts: bool, for_how_long: Duration, min_writes: u64) -> Tally {
    let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
    let mut dest = connect(&dest_server).await;
    if !scripts {
        refuse_scripts(&mut dest).await;
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (mut dest, stop) = (dest.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = 0i64;
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now: Option<i64> = dest.get("hot:counter").await.unwrap();
                let now = now.unwrap_or(0);
                assert!(now >= seen, "the copy went back from {seen} to {now}");
                seen = now;
                looks += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            looks
        })
    };
    let exclusive = Arc::new(exclusive(&dest_server));
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let keysync = Arc::new(KeySync::default());
        let origin = connect(&origin_server).await;
        let (mut dest, exclusive, tally) = (dest.clone(), exclusive.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut pushed = Vec::new();
            let mut popped = Vec::new();
            let mut n = 0u64;
            let mut o = origin.clone();
            // Time alone would make the load depend on the machine's: each writer also makes at
            // least `min_writes` writes, so the key is as hot on a loaded machine.
            while started.elapsed() < for_how_long || n < min_writes {
                n += 1;
                let (key, counted) = if n.is_multiple_of(3) {
                    if p.is_multiple_of(2) {
                        let item = format!("p{p}:{n}");
                        let _: i64 = o.rpush("hot:queue", &item).await.unwrap();
                        pushed.push(item);
                    } else if let Some(item) = o.lpop::<_, Option<String>>("hot:queue", None).await.unwrap() {
                        popped.push(item);
                    }
                    ("hot:queue", None)
                } else {
                    let v: i64 = o.incr("hot:counter", 1).await.unwrap();
                    tally.incrs.fetch_add(1, Ordering::Relaxed);
                    ("hot:counter", Some(v))
                };
                tally.writes.fetch_add(1, Ordering::Relaxed);
                match keysync::sync_key(&origin, &mut dest, &*exclusive, key.as_bytes(), &keysync).await {
                    Ok(s) => {
                        tally.syncs.fetch_add(1, Ordering::Relaxed);
                        if s.applied == Applied::Covered {
                            tally.covered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("sync of {key} failed: {e}");
                    }
                }
                if let Some(v) = counted {
                    let copy: Option<i64> = dest.get("hot:counter").await.unwrap();
                    assert!(
                        copy.unwrap_or(0) >= v,
                        "after its sync, the copy holds INCR → {v}: {copy:?}"
                    );
                }
            }
            (pushed, popped)
        }));
    }
    let mut pushed = Vec::new();
    let mut popped = Vec::new();
    for t in tasks {
        let (a, b) = t.await.unwrap();
        pushed.extend(a);
        popped.extend(b);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);

    let tally = Arc::try_unwrap(tally).unwrap();
    let mut origin = connect(&origin_server).await;
    let total: i64 = origin.get("hot:counter").await.unwrap();
    assert_eq!(
        total as u64,
        tally.incrs.load(Ordering::Relaxed),
        "every INCR once"
    );
    let copy: i64 = dest.get("hot:counter").await.unwrap();
    assert_eq!(copy, total, "the copy's counter equals every INCR");
    let queue: Vec<String> = origin.lrange("hot:queue", 0, -1).await.unwrap();
    let copy: Vec<String> = dest.lrange("hot:queue", 0, -1).await.unwrap();
    assert_eq!(copy, queue, "the queue");
    assert_eq!(
        pushed.len(),
        popped.len() + queue.len(),
        "every item pushed is popped or queued"
    );
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "no sync failed");
    // No lease is left behind; contention records expire on their own.
    let locks: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("__cachemig:lock:*")
        .query_async(&mut dest)
        .await
        .unwrap();
    assert!(locks.is_empty(), "every lease released");
    let records: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("__cachemig:wait:*")
        .query_async(&mut dest)
        .await
        .unwrap();
    for record in records {
        let ttl: i64 = dest.pttl(&record).await.unwrap();
        assert!(ttl > 0, "contention records expire");
    }
    tally
}

#[test]
fn a_hot_key_synced_by_four_writers_converges_without_errors_under_lua_leases() {
    runtime().block_on(async {
        let tally = hot_key_run(true, Duration::from_secs(3), 300).await;
        eprintln!("{tally:?}");
        assert!(tally.writes.load(Ordering::Relaxed) > 1000, "hot: {tally:?}");
        assert!(
            tally.covered.load(Ordering::Relaxed) > 0,
            "writers share rounds: {tally:?}"
        );
    });
}

#[test]
fn a_hot_key_converges_without_errors_when_the_destination_refuses_scripts() {
    runtime().block_on(async {
        let tally = hot_key_run(false, Duration::from_secs(3), 100).await;
        eprintln!("{tally:?}");
        assert!(tally.writes.load(Ordering::Relaxed) > 300, "hot: {tally:?}");
        assert!(
            tally.covered.load(Ordering::Relaxed) > 0,
            "writers share rounds: {tally:?}"
        );
    });
}

/// A holder that read `SET k v EX 5` and then froze past its lease: another sync takes the
/// lease over and writes the origin's later `EXPIRE k 86400`; the frozen holder's commit finds
/// the lease gone and writes nothing, so the copy keeps the day. The same with the WATCH
/// transactions. (Under write-then-recheck the stale RESTORE landed and stayed until a re-check.)
#[test]
fn a_holder_frozen_past_its_lease_cannot_land_its_stale_snapshot() {
    runtime().block_on(async {
        for scripts in [true, false] {
            let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
            let (mut origin, mut dest) = (connect(&origin_server).await, connect(&dest_server).await);
            if !scripts {
                refuse_scripts(&mut dest).await;
            }
            let exclusive = exclusive(&dest_server);
            let (frozen, other) = (
                KeySync::with_lease(Duration::from_millis(100)),
                KeySync::default(),
            );
            run(&mut origin, &["SET", "k", "v", "EX", "5"]).await;
            let mut held = dest.clone();
            let mut session = Session::new(&mut held, &exclusive, &frozen.dest_scripts, frozen.lease(), b"k");
            let token = frozen.token();
            assert_eq!(session.acquire(&token, None).await.unwrap(), Acquire::Acquired);
            let stale = keysync::read_many(&origin, &[b"k".to_vec()], &ScriptSupport::default())
                .await
                .unwrap()
                .pop()
                .unwrap();
            run(&mut origin, &["EXPIRE", "k", "86400"]).await;
            // While the lease holds, the other sync waits; once it runs out, it takes over.
            let started = Instant::now();
            let synced = keysync::sync_key(&origin, &mut dest, &exclusive, b"k", &other)
                .await
                .unwrap();
            assert_eq!(synced.applied, Applied::Restored);
            assert!(
                started.elapsed() >= Duration::from_millis(50),
                "waited for the lease ({:?})",
                started.elapsed()
            );
            let got = session.commit(&token, Some(&stale)).await.unwrap();
            assert!(matches!(got, Commit::Lost(_)), "{got:?} (scripts: {scripts})");
            drop(session);
            let left = pttl(&mut dest, "k").await;
            assert!(
                left > 86_000_000,
                "the copy keeps the origin's day, got {left} ms"
            );
        }
    });
}

/// A stale snapshot handed to a commit whose lease is still held lands (nobody else could have
/// written meanwhile), and the next sync, which reads later, replaces it: landings follow the
/// order of their reads.
#[test]
fn landings_follow_the_order_of_their_reads() {
    runtime().block_on(async {
        let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
        let (mut origin, mut dest) = (connect(&origin_server).await, connect(&dest_server).await);
        let ks = KeySync::default();
        run(&mut origin, &["SET", "k", "1"]).await;
        let mut held = dest.clone();
        let mut session = Session::new(&mut held, &NoExclusive, &ks.dest_scripts, ks.lease(), b"k");
        let token = ks.token();
        assert_eq!(session.acquire(&token, None).await.unwrap(), Acquire::Acquired);
        let first = keysync::read_many(&origin, &[b"k".to_vec()], &ScriptSupport::default())
            .await
            .unwrap()
            .pop()
            .unwrap();
        run(&mut origin, &["SET", "k", "2"]).await;
        // A second sync started now waits for the lease, then reads "2".
        let later = tokio::spawn({
            let (origin, mut dest) = (origin.clone(), dest.clone());
            async move {
                let ks = KeySync::default();
                keysync::sync_key(&origin, &mut dest, &NoExclusive, b"k", &ks).await
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            session.commit(&token, Some(&first)).await.unwrap(),
            Commit::Landed
        );
        let synced = later.await.unwrap().unwrap();
        assert_eq!(
            synced.applied,
            Applied::Restored,
            "a round of its own: the first read too early"
        );
        let v: String = dest.get("k").await.unwrap();
        assert_eq!(v, "2");
    });
}

/// An unchanged key with a TTL is written once per sync, with the origin's expiry, and an
/// uncontended sync leaves no lock behind.
#[test]
fn an_expiring_key_is_restored_once_per_sync_with_the_origins_expiry() {
    runtime().block_on(async {
        let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
        let (mut origin, mut dest) = (connect(&origin_server).await, connect(&dest_server).await);
        let ks = KeySync::default();
        run(&mut origin, &["SET", "k", "v", "PX", "3600000"]).await;
        run(&mut dest, &["CONFIG", "RESETSTAT"]).await;
        for _ in 0..20 {
            let synced = keysync::sync_key(&origin, &mut dest, &NoExclusive, b"k", &ks)
                .await
                .unwrap();
            assert_eq!(synced.applied, Applied::Restored);
        }
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut dest)
            .await
            .unwrap();
        assert!(
            info.contains("cmdstat_restore:calls=20,"),
            "one RESTORE per sync: {info}"
        );
        let (left, origin_left) = (pttl(&mut dest, "k").await, pttl(&mut origin, "k").await);
        assert!(
            (origin_left - left).abs() <= 1000 && left <= origin_left + 5,
            "the origin's expiry: {left} vs {origin_left} ms"
        );
        let keys: Vec<String> = dest.keys("*").await.unwrap();
        assert_eq!(keys, vec!["k".to_string()], "no lock left behind");
        // A key gone from the origin is deleted.
        run(&mut origin, &["DEL", "k"]).await;
        let synced = keysync::sync_key(&origin, &mut dest, &NoExclusive, b"k", &ks)
            .await
            .unwrap();
        assert_eq!(synced.applied, Applied::Deleted);
        assert!(synced.landed.is_some_and(|l| l.snapshot == Snapshot::Absent));
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut dest).await.unwrap();
        assert_eq!(n, 0);
    });
}
