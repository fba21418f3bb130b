//! Row: a proxy delayed 20 s on the flag file (its ConfigMap copy syncs late).
//!
//! Three proxies, writers through all three, walked to `read-cutover` with every flag file in
//! step. Then p3's copy starts lagging 20 s behind the others' and the CLI advances into
//! `write-stop`: p3 cannot ack the fence generation, so the fence releases writes on the old
//! primary after `max_write_pause` (exit 3) and nothing switches while p3 still routes by an
//! older generation. Meanwhile p3, behind the beacon past the grace, refuses writes as stale
//! (`TRYAGAIN`, applied nowhere). Once its copy catches up and syncs promptly again, the step is
//! taken. No acknowledged write is lost: old and new equal the model; the only errors the
//! writers saw are the stale refusals of p3 (and a write held past the fence's limit).

use std::time::Duration;

use crate::common::load::{self, Writers};
use crate::common::proxy::{FlagCopy, ProxyProcess};
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

const DELAY: Duration = Duration::from_secs(20);

#[test]
fn flag_file_delayed_20s() {
    let mut sb = Sandbox::start();
    // A lagging proxy turns stale after this grace (well inside the 20 s delay).
    load::configure(&mut sb, 3, "heartbeat_timeout = \"5s\"\n");
    let dir = tempfile::tempdir().unwrap();
    let p3_flag = dir.path().join("p3-flag.json");
    let copy = FlagCopy::start(sb.flag_path(), p3_flag.clone());
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let p3 = ProxyProcess::start_on(&sb.plan_with_flag_file(dir.path(), &p3_flag), "p3", &[]);
    let proxies = [&p1, &p2, &p3];
    let writers = Writers::start("token:late", &[p1.port, p2.port, p3.port], 6);
    load::advance_to(&sb, &proxies, "read-cutover");
    writers.wait_progress(100);

    copy.set_delay(DELAY);
    let before = sb.flag().unwrap().generation;
    load::wait_ready(&sb);
    let run = sb.cachemig(&["advance", "--yes"]);
    assert_eq!(
        run.status, 3,
        "the fence must not pass without p3:\n{}\n{}",
        run.stdout, run.stderr
    );
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("p3"), "the blocking proxy is named:\n{said}");
    assert_eq!(sb.flag().unwrap().phase, "read-cutover");
    wait_for("p3 stale", Duration::from_secs(15), || {
        p3.status()["stale"].is_string()
    });
    // p3 catches up with the release generation 20 s after it was written.
    let released = sb.flag().unwrap().generation;
    assert!(released > before);
    wait_for("p3 caught up", DELAY + Duration::from_secs(15), || {
        p3.status()["generation"].as_u64() == Some(released) && p3.status()["stale"].is_null()
    });
    copy.set_delay(Duration::ZERO);
    load::advance_to(&sb, &proxies, "write-stop");
    writers.wait_progress(100);

    let out = writers.finish();
    let unexpected: Vec<&String> = out
        .errors
        .iter()
        .filter(|e| !e.contains("TRYAGAIN") && !e.contains("stale") && !e.contains("held"))
        .collect();
    assert!(unexpected.is_empty(), "client errors: {unexpected:?}");
    for p in proxies {
        wait_for("reverse mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let differences = load::differences(&sb, &out.model);
    assert!(differences.is_empty(), "{differences:#?}");
}
