//! Issue 12, items 3 and 4: copies across server versions and families. Each pair runs `plan`
//! (which names the copy mode), the backfill, a change on the source, the catch-up (entering
//! `async-dual-write`) and `verify`, and ends with old and new compared key by key, type by
//! type, by the harness (not by cachemig). The proxy's phases across the same pairs:
//! `tests/cross_version_proxy.rs`.
//!
//! - Valkey 8.1 (RDB 11) → Redis 7.0 (RDB 10) and Redis 7.0 → Redis 6.2 (RDB 9): the target
//!   cannot RESTORE the source's payloads, so every key is copied by type.
//! - Redis 6.2 → Redis 7.0 and Redis 7.0 → Valkey 8.1: DUMP/RESTORE.

mod common;

use common::planted::{assert_same, plant};
use common::sandbox::Sandbox;
use common::{Flavor, RedisServer};

/// Writes after the backfill, for the catch-up to carry: a changed, a deleted and a new key.
fn change(source: &RedisServer) {
    redis::pipe()
        .hset("token:{u1}:hash", "c", "3")
        .del("token:s:7")
        .rpush("token:new-list", &["n"])
        .exec(&mut source.conn())
        .unwrap();
}

/// The whole walk for one pair: `plan` names `mode`, the backfill copies in it, the catch-up
/// carries later writes, `verify` is clean, and the harness finds old = new.
fn migrate(from: Flavor, to: Flavor, mode: &str) {
    let mut sb = Sandbox::start_of(from, to);
    plant(&sb.source);
    if mode == "by-type" {
        // Forcing DUMP/RESTORE across this pair blocks at preflight, naming why.
        sb.set_plan_extra("[backfill]\ncopy_mode = \"dump\"\n");
        sb.cachemig(&["plan", "--detailed-exitcode"])
            .assert_code(3)
            .assert_stdout_contains("the plan says dump, but the target cannot RESTORE");
        sb.set_plan_extra("");
    }
    sb.cachemig(&["plan"])
        .assert_success()
        .assert_stdout_contains(&format!("copy mode: {mode}"));
    sb.cachemig(&["advance", "--yes"])
        .assert_success()
        .assert_stderr_contains(&format!("copy mode {mode}"));
    change(&sb.source);
    // The catch-up (verify --repair) runs on entering async-dual-write.
    sb.cachemig(&["advance", "--yes"]).assert_success();
    sb.cachemig(&["verify"]).assert_success();
    assert_same(&sb);
}

#[test]
fn valkey_8_1_to_redis_7_0_cluster_copies_by_type() {
    migrate(Flavor::Valkey81, Flavor::Redis70, "by-type");
}

#[test]
fn redis_7_0_to_redis_6_2_cluster_copies_by_type() {
    migrate(Flavor::Redis70, Flavor::Redis62, "by-type");
}

#[test]
fn redis_6_2_to_redis_7_0_cluster_copies_with_dump() {
    migrate(Flavor::Redis62, Flavor::Redis70, "dump");
}

#[test]
fn redis_7_0_to_valkey_8_1_cluster_copies_with_dump() {
    migrate(Flavor::Redis70, Flavor::Valkey81, "dump");
}
