//! Issue 12: the proxy across server versions. Where the destination of a direction cannot
//! RESTORE the origin's payloads, the proxy's mirror copies by type; a command one side's
//! version lacks is refused by the proxy, naming the side and its version.
//!
//! - Valkey 8.1 → Redis 7.0 cluster and Redis 7.0 → Redis 6.2 cluster (old → new by type,
//!   new → old by DUMP/RESTORE): keys of every type planted on old, the backfill, then a proxy
//!   through every phase into `write-stop` with writers of every plain type through it; the
//!   reverse mirror drained, old and new compared key by key, type by type, with the model of
//!   every acknowledged write and with each other.
//! - Redis 6.2 → Redis 7.0 cluster: the same walk, old → new by DUMP/RESTORE and the reverse
//!   mirror of `write-stop` by type. (Redis 7.0 → Valkey 8.1 is walked in `tests/valkey.rs`.)
//! - The refusals: `LMPOP` when new is Redis 6.2 (naming new), and when old is (only until
//!   `finalized`).

mod common;

use std::time::Duration;

use common::planted::{assert_same, plant};
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::{Flavor, load, typed, wait_for};

/// A proxy of the sandbox, after checking its startup log and `/status` name each direction's
/// copy mode.
fn proxy_copying(sb: &Sandbox, forward: &str, backward: &str) -> ProxyProcess {
    let p = ProxyProcess::start(sb, "p1");
    let status = p.status();
    let copy = &status["servers"]["copy"];
    assert_eq!(copy["old_to_new"]["mode"], forward, "{copy}");
    assert_eq!(copy["new_to_old"]["mode"], backward, "{copy}");
    let log = p.log();
    assert!(log.contains(&format!("copy old → new: {forward} (RDB ")), "{log}");
    assert!(
        log.contains(&format!("copy new → old: {backward} (RDB ")),
        "{log}"
    );
    p
}

/// The walk for one pair whose directions copy as `forward` (old → new) and `backward`.
fn walk(from: Flavor, to: Flavor, forward: &str, backward: &str) {
    let mut sb = Sandbox::start_of(from, to);
    plant(&sb.source);
    load::configure(&mut sb, 1, "");
    let p = proxy_copying(&sb, forward, backward);
    let writers = typed::Writers::start("token:cv", &[p.port], 3);
    writers.wait_progress(50);
    for phase in ["sync-dual-write", "shadow-read", "read-cutover", "write-stop"] {
        load::advance_to(&sb, &[&p], phase);
        writers.wait_progress(100);
    }
    let out = writers.finish();
    assert!(out.errors.is_empty(), "client errors: {:#?}", out.errors);
    wait_for("the reverse mirror drained", Duration::from_secs(20), || {
        p.status()["mirror"]["drained"] == true
    });
    let status = p.status();
    let counters = &status["counters_total"];
    assert!(counters["mirror_ok"].as_u64() > Some(0), "{counters}");
    let differences = typed::differences(&sb, &out.model);
    assert!(differences.is_empty(), "{differences:#?}");
    assert!(out.model.len() >= 20, "every kind of key written");
    assert_same(&sb);
}

#[test]
fn valkey_8_1_to_a_redis_7_0_cluster_walks_into_write_stop_through_a_proxy_copying_by_type() {
    walk(Flavor::Valkey81, Flavor::Redis70, "by-type", "dump");
}

#[test]
fn redis_7_0_to_a_redis_6_2_cluster_walks_into_write_stop_through_a_proxy_copying_by_type() {
    walk(Flavor::Redis70, Flavor::Redis62, "by-type", "dump");
}

/// The other way round: old's payloads restore on new, but from `write-stop` on the reverse
/// mirror (new → old) must copy by type for old to keep every write.
#[test]
fn redis_6_2_to_a_redis_7_0_cluster_walks_into_write_stop_with_a_reverse_mirror_copying_by_type() {
    walk(Flavor::Redis62, Flavor::Redis70, "dump", "by-type");
}

/// The error the proxy answers to `args`.
fn refusal(conn: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(conn) {
        Ok(v) => panic!("{args:?} was not refused: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_proxy_refuses_lmpop_when_new_is_redis_6_2_naming_the_side() {
    let sb = Sandbox::start_of(Flavor::Redis70, Flavor::Redis62);
    let p = proxy_copying(&sb, "by-type", "dump");
    let mut conn = p.conn();
    let lmpop = refusal(&mut conn, &["LMPOP", "1", "token:l", "LEFT"]);
    assert!(lmpop.contains("LMPOP is refused: new (Redis 6.2)"), "{lmpop}");
    let expiretime = refusal(&mut conn, &["EXPIRETIME", "token:k"]);
    assert!(expiretime.contains("new (Redis 6.2)"), "{expiretime}");
    // Old (Redis 7.0) has no hash-field TTLs either: the side named is old.
    let hexpire = refusal(&mut conn, &["HEXPIRE", "token:h", "10", "FIELDS", "1", "f"]);
    assert!(
        hexpire.contains("HEXPIRE is refused: old (Redis 7.0)"),
        "{hexpire}"
    );
    // Queued in a transaction, it aborts the transaction; other commands still run.
    redis::cmd("MULTI").query::<()>(&mut conn).unwrap();
    refusal(&mut conn, &["BLMPOP", "1", "1", "token:l", "LEFT"]);
    let exec = refusal(&mut conn, &["EXEC"]);
    assert!(exec.to_ascii_uppercase().contains("EXECABORT"), "{exec}");
    redis::cmd("RPUSH")
        .arg("token:l")
        .arg("a")
        .query::<()>(&mut conn)
        .unwrap();
    let popped: String = redis::cmd("LPOP").arg("token:l").query(&mut conn).unwrap();
    assert_eq!(popped, "a");
    let refused = p.status()["servers"]["refused_until_finalized"].clone();
    for name in ["LMPOP", "ZMPOP", "BLMPOP", "BZMPOP", "FUNCTION", "HEXPIRE"] {
        assert!(
            refused.as_array().unwrap().iter().any(|n| n == name),
            "{name}: {refused}"
        );
    }
    assert!(p.log().contains("refused until finalized: BLMPOP"), "{}", p.log());
}

#[test]
fn a_command_old_lacks_is_refused_until_finalized() {
    let sb = Sandbox::start_of(Flavor::Redis62, Flavor::Redis70);
    let p = proxy_copying(&sb, "dump", "by-type");
    let mut conn = p.conn();
    for (generation, phase) in [(1, "read-cutover"), (2, "write-stop")] {
        set_phase(&sb.flag_path(), phase, generation, false, 0.0);
        p.wait_generation(generation);
        let lmpop = refusal(&mut conn, &["LMPOP", "1", "token:l", "LEFT"]);
        assert!(lmpop.contains("old (Redis 6.2)"), "{phase}: {lmpop}");
    }
    // Finalized: old is out of the picture, new (Redis 7.0) has it.
    set_phase(&sb.flag_path(), "finalized", 3, false, 0.0);
    p.wait_generation(3);
    redis::cmd("RPUSH")
        .arg("token:l")
        .arg("c")
        .query::<()>(&mut conn)
        .unwrap();
    let popped: (String, Vec<String>) = redis::cmd("LMPOP")
        .arg(1)
        .arg("token:l")
        .arg("LEFT")
        .query(&mut conn)
        .unwrap();
    assert_eq!(popped, ("token:l".to_string(), vec!["c".to_string()]));
}
