//! Row: a proxy started without a flag file during `write-stop` (a replacement pod whose
//! ConfigMap is not mounted yet, or a wrong path).
//!
//! Two proxies and writers walk to `write-stop`. A third proxy whose flag file does not exist
//! refuses to start (the beacon in new says `write-stop`); started with
//! `--allow-missing-flag-file` it serves stale: its writes are refused with `TRYAGAIN` and land
//! nowhere (a write it took would go to old unmirrored: a second primary), its reads are served.
//! At the end old and new equal the model of every acknowledged write, and the refused keys
//! exist on neither side.

use std::time::Duration;

use crate::common::load::{self, Writers};
use crate::common::proxy::ProxyProcess;
use crate::common::sandbox::Sandbox;
use crate::common::{Cachemig, wait_for};

#[test]
fn missing_flag_file_in_write_stop() {
    let mut sb = Sandbox::start();
    load::configure(&mut sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let writers = Writers::start("token:mf", &[p1.port, p2.port], 4);
    load::advance_to(&sb, &[&p1, &p2], "write-stop");
    writers.wait_progress(100);

    let dir = tempfile::tempdir().unwrap();
    let plan = sb.plan_with_flag_file(dir.path(), &dir.path().join("not-mounted/flag.json"));
    let run = Cachemig::new()
        .arg("proxy")
        .arg(&plan)
        .args(["--listen", "127.0.0.1:0", "--id", "p3"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("no valid flag file") && run.stderr.contains("(write-stop)"),
        "{}",
        run.stderr
    );

    let p3 = ProxyProcess::start_on_with_args(&plan, "p3", &[], &["--allow-missing-flag-file"]);
    wait_for("p3 stale", Duration::from_secs(10), || {
        p3.status()["stale"].is_string()
    });
    let mut conn = p3.conn();
    // A write of its own key and a write to a key the writers own: both refused.
    for (cmd, key) in [("SET", "token:mf:p3"), ("INCR", "token:mf:w0:counter0")] {
        let mut c = redis::cmd(cmd);
        c.arg(key);
        if cmd == "SET" {
            c.arg("x");
        }
        let refused = c.query::<redis::Value>(&mut conn).unwrap_err();
        assert_eq!(refused.code(), Some("TRYAGAIN"), "{cmd} {key}: {refused}");
    }
    // Reads follow the last good routing (planned: old, which the reverse mirror keeps current).
    let read: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("token:mf:w0:text0").query(&mut conn);
    assert!(read.is_ok(), "a read through the stale proxy: {read:?}");
    writers.wait_progress(100);

    let out = writers.finish();
    assert!(out.errors.is_empty(), "client errors: {:?}", out.errors);
    for p in [&p1, &p2] {
        wait_for("reverse mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let differences = load::differences(&sb, &out.model);
    assert!(differences.is_empty(), "{differences:#?}");
    let old: Option<String> = redis::cmd("GET")
        .arg("token:mf:p3")
        .query(&mut sb.source.conn())
        .unwrap();
    let new: Option<String> = redis::cmd("GET")
        .arg("token:mf:p3")
        .query(&mut sb.target.cluster_conn())
        .unwrap();
    assert_eq!((old, new), (None, None), "a refused write landed");
}
