//! The key-sync primitive against real Redis (design §4): write-then-recheck compares the
//! absolute expiry, so a late, stale RESTORE of an old TTL does not stick (issue 9).

mod common;

use cachemig::keysync::{self, Applied, ScriptSupport, Snapshot, SyncOptions};
use common::RedisServer;
use redis::aio::MultiplexedConnection;

const RECHECK: SyncOptions = SyncOptions {
    replace: true,
    recheck: true,
};

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

/// The snapshot a mirror would have read right after a write (its sync then runs late).
async fn snapshot(origin: &MultiplexedConnection, key: &str, scripts: &ScriptSupport) -> Snapshot {
    keysync::read_many(origin, &[key.as_bytes().to_vec()], scripts)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

/// Proxy A mirrors `SET k v EX 5`; proxy B mirrors the later `EXPIRE k 86400` first; A's RESTORE
/// of the 5 s TTL lands last. Without the re-check the copy expires in seconds; with it, the
/// re-check sees the origin's expiry moved and syncs again. The same in the other direction (a
/// long TTL shortened).
#[test]
fn a_late_restore_of_an_old_ttl_is_corrected_by_the_recheck() {
    let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut origin, mut dest) = (connect(&origin_server).await, connect(&dest_server).await);
        let scripts = ScriptSupport::default();

        // The scenario is real: without the re-check, the stale TTL sticks.
        run(&mut origin, &["SET", "k0", "v", "EX", "5"]).await;
        let stale = snapshot(&origin, "k0", &scripts).await;
        run(&mut origin, &["EXPIRE", "k0", "86400"]).await;
        keysync::sync_key(&origin, &mut dest, b"k0", RECHECK, &scripts)
            .await
            .unwrap();
        let no_recheck = SyncOptions {
            replace: true,
            recheck: false,
        };
        keysync::sync_key_from(&origin, &mut dest, b"k0", no_recheck, &scripts, Some(stale))
            .await
            .unwrap();
        assert!(
            pttl(&mut dest, "k0").await <= 5_000,
            "the stale RESTORE landed last"
        );

        // With the re-check it is re-synced: the copy keeps the origin's day.
        run(&mut origin, &["SET", "k", "v", "EX", "5"]).await;
        let stale = snapshot(&origin, "k", &scripts).await;
        run(&mut origin, &["EXPIRE", "k", "86400"]).await;
        keysync::sync_key(&origin, &mut dest, b"k", RECHECK, &scripts)
            .await
            .unwrap();
        let applied = keysync::sync_key_from(&origin, &mut dest, b"k", RECHECK, &scripts, Some(stale))
            .await
            .unwrap();
        assert_eq!(applied, Applied::Restored);
        let left = pttl(&mut dest, "k").await;
        assert!(
            left > 86_000_000,
            "the re-check restored the origin's TTL, got {left} ms"
        );

        // A long TTL shortened on the origin (EXPIRE k 60 after EX 86400): a late RESTORE of the
        // day must not make the copy outlive the origin by a day.
        run(&mut origin, &["SET", "j", "v", "EX", "86400"]).await;
        let stale = snapshot(&origin, "j", &scripts).await;
        run(&mut origin, &["EXPIRE", "j", "60"]).await;
        keysync::sync_key(&origin, &mut dest, b"j", RECHECK, &scripts)
            .await
            .unwrap();
        keysync::sync_key_from(&origin, &mut dest, b"j", RECHECK, &scripts, Some(stale))
            .await
            .unwrap();
        let left = pttl(&mut dest, "j").await;
        assert!((1..=60_000).contains(&left), "the origin's 60 s, got {left} ms");
    });
}

/// An unchanged key with a TTL is written once: the TTL shrinking between the write and the
/// re-check is not a change.
#[test]
fn an_unchanged_expiring_key_is_restored_once() {
    let (origin_server, dest_server) = (RedisServer::start(), RedisServer::start());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut origin, mut dest) = (connect(&origin_server).await, connect(&dest_server).await);
        let scripts = ScriptSupport::default();
        run(&mut origin, &["SET", "k", "v", "PX", "3600000"]).await;
        run(&mut dest, &["CONFIG", "RESETSTAT"]).await;
        for _ in 0..20 {
            keysync::sync_key(&origin, &mut dest, b"k", RECHECK, &scripts)
                .await
                .unwrap();
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
    });
}
