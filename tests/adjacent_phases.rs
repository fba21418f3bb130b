//! Adjacent phases run side by side while a flag file rolls out over the fleet
//! (docs/guarantees.md, "Adjacent phases"): 4 ↔ 5 is the pair where one proxy still reads old
//! and mirrors synchronously while its neighbour already reads new.

mod common;

use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use redis::Commands;

/// Pauses writes on every target master for `ms` milliseconds (reads are still served).
fn pause_new_writes(sb: &Sandbox, ms: u64) {
    for node in sb.target.masters() {
        let _: () = node.query(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]);
    }
}

/// A proxy in shadow-read whose sync mirror fails must not answer OK while a neighbour in
/// read-cutover reads new: every write it acknowledges is visible through the neighbour.
#[test]
fn shadow_read_never_acknowledges_a_write_that_read_cutover_cannot_read() {
    let sb = Sandbox::start();
    // The neighbour follows its own flag file: the rollout reached it first.
    let text = std::fs::read_to_string(sb.plan()).unwrap();
    let ahead_plan = sb.plan().with_file_name("ahead.toml");
    std::fs::write(
        &ahead_plan,
        text.replacen(
            "name = \"sandbox\"\n",
            "name = \"sandbox\"\nflag_file = \"flags/ahead.json\"\n",
            1,
        ),
    )
    .unwrap();
    let behind = ProxyProcess::start(&sb, "behind");
    let ahead = ProxyProcess::start_on(&ahead_plan, "ahead", &[]);
    set_phase(&sb.flag_path(), "shadow-read", 4, false, 0.0);
    set_phase(
        &sb.flag_path().with_file_name("ahead.json"),
        "read-cutover",
        5,
        false,
        0.0,
    );
    behind.wait_generation(4);
    ahead.wait_generation(5);

    let (mut w, mut r) = (behind.conn(), ahead.conn());
    w.set::<_, _, ()>("token:k", "v1").unwrap();
    let seen: Option<String> = r.get("token:k").unwrap();
    assert_eq!(
        seen.as_deref(),
        Some("v1"),
        "a healthy sync mirror: the neighbour reads it"
    );

    // New refuses writes for longer than two syncs take: the mirror of the next write fails.
    pause_new_writes(&sb, 3000);
    let reply = w.set::<_, _, ()>("token:k", "v2");
    let seen: Option<String> = r.get("token:k").unwrap();
    match reply {
        Ok(()) => assert_eq!(
            seen.as_deref(),
            Some("v2"),
            "shadow-read acknowledged v2 while its neighbour in read-cutover still reads {seen:?}"
        ),
        Err(e) => assert!(
            format!("{e:?}").contains("could not be mirrored"),
            "the error says what happened: {e:?}"
        ),
    }
    // Whatever the client was told, the write is on old and the dirty key reaches new.
    common::wait_for(
        "the key is repaired on new after the pause",
        std::time::Duration::from_secs(15),
        || r.get::<_, Option<String>>("token:k").unwrap().as_deref() == Some("v2"),
    );
    let on_old: Option<String> = sb.source.conn().get("token:k").unwrap();
    assert_eq!(on_old.as_deref(), Some("v2"));
}
