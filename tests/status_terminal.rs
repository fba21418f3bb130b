//! Issue 11, item 3: `status` fits the operator's terminal (`COLUMNS` when stdout is not one),
//! never splits a word, keeps the full journal text in `--format json`; `status --watch`
//! redraws until Ctrl-C; a proxy that stops cleanly leaves the table, a long-dead one drops out.

mod common;

use std::time::Duration;

use cachemig::report::now_ms;
use common::proxy::ProxyProcess;
use common::reports::{report, write_report};
use common::sandbox::Sandbox;
use common::{Cachemig, wait_for};

/// The override reason: long enough to wrap at every width, with words a reader greps for.
const REASON: &str = "the target already holds token:seed written by the load-test-harness-2026 \
     before the change window; approved by the on-call storage engineer under INC-4711";

fn status(sb: &Sandbox, columns: &str, args: &[&str]) -> common::Run {
    let mut c = Cachemig::new().arg("status").arg(sb.plan()).args(args);
    for (k, v) in sb.env() {
        c = c.env(k, v);
    }
    c.env("COLUMNS", columns).run()
}

/// A sandbox in `backfill` with an override, journal entries and a (fake, live) proxy report.
fn busy_sandbox() -> Sandbox {
    let sb = Sandbox::start();
    sb.fill_source(20);
    sb.target_cmd(&["SET", "token:seed", "1"]);
    sb.advance_acknowledging_existing_keys(REASON).assert_success();
    write_report(&sb, &report("proxy-a.example.internal:6400", 1, "backfill"));
    sb
}

#[test]
fn status_fits_the_width_without_splitting_words() {
    let sb = busy_sandbox();
    let whole = [
        "load-test-harness-2026",
        "INC-4711",
        "target-empty",
        "async-dual-write",
        "proxy-a.example.internal:6400",
        "backfill-complete",
    ];
    for width in [60usize, 100, 200] {
        let run = status(&sb, &width.to_string(), &[]);
        run.assert_success();
        for line in run.stdout.lines() {
            assert!(
                line.chars().count() <= width,
                "line wider than {width}: {line:?}\n{}",
                run.stdout
            );
        }
        for word in whole {
            assert!(
                run.stdout.contains(word),
                "{word:?} split or lost at width {width}:\n{}",
                run.stdout
            );
        }
        if width < 200 {
            // Eleven proxy columns with a long host name do not fit with whole words: stacked.
            assert!(run.stdout.contains("mirror queue: 0"), "{}", run.stdout);
        } else {
            assert!(!run.stdout.contains("mirror queue: 0"), "{}", run.stdout);
        }
    }
    // Wide, the override's journal line keeps most of its reason on its first line; narrow,
    // it wraps over several.
    let lines_with = |width: &str, word: &str| {
        let run = status(&sb, width, &[]);
        let first = run
            .stdout
            .lines()
            .position(|l| l.contains("skipped gate target-empty into"))
            .unwrap();
        let last = run
            .stdout
            .lines()
            .skip(first)
            .position(|l| l.contains(word))
            .unwrap();
        (first, first + last)
    };
    let (first, last) = lines_with("200", "change window");
    assert_eq!(first, last, "at 200 columns the event wraps only near its end");
    let (first, last) = lines_with("100", "change window");
    assert!(last > first, "at 100 columns the event wraps");
    // The full text is in JSON whatever the width.
    let json = status(&sb, "60", &["--format", "json"]).json();
    let recent = json["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|e| e["event"] == "override" && e["reason"].as_str() == Some(REASON)),
        "{json:#}"
    );
}

#[test]
fn status_watch_redraws_until_ctrl_c() {
    let sb = Sandbox::start();
    let dir = tempfile::tempdir().unwrap();
    for (format, frames_in) in [("table", "━━ "), ("json", "{\"migration\"")] {
        let log = dir.path().join(format!("watch-{format}.log"));
        let mut c = Cachemig::new().arg("status").arg(sb.plan()).args([
            "--watch",
            "--interval",
            "0.2",
            "--format",
            format,
        ]);
        for (k, v) in sb.env() {
            c = c.env(k, v);
        }
        let mut child = c.env("COLUMNS", "80").spawn_logged(&log);
        let frames = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with(frames_in))
                .count()
        };
        wait_for("three frames", Duration::from_secs(60), || frames() >= 3);
        let sent = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let code = wait_exit(&mut child, Duration::from_secs(30));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(code, Some(0), "Ctrl-C must stop the watch cleanly:\n{text}");
        if format == "json" {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert_eq!(v["migration"], "sandbox");
            }
        } else {
            assert!(text.contains("frame 2 · every 200ms · Ctrl-C stops"), "{text}");
            assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        }
    }
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let mut code = None;
    wait_for("the watch to exit", timeout, || match child.try_wait().unwrap() {
        Some(status) => {
            code = status.code();
            true
        }
        None => false,
    });
    code
}

#[test]
fn proxy_stopped_cleanly_is_not_missing_forever() {
    let sb = Sandbox::start();
    let mut proxy = ProxyProcess::start(&sb, "p1");
    let ids = |sb: &Sandbox| -> Vec<String> {
        let json = status(sb, "100", &["--format", "json"]).json();
        json["proxies"]["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("p1's report", Duration::from_secs(20), || ids(&sb) == ["p1"]);
    proxy.terminate();
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        proxy.log()
    );
    // A clean stop removes the report at once: no "missing" row at all.
    assert_eq!(ids(&sb), Vec::<String>::new());
    status(&sb, "100", &[])
        .assert_success()
        .assert_stdout_contains("no proxy has")
        .assert_output_lacks("missing");

    // A proxy that could not deregister (killed long ago) drops out of the table.
    let mut dead = report("p-dead", 0, "planned");
    dead.written_at_ms = now_ms() - 2 * 3600 * 1000;
    write_report(&sb, &dead);
    let recent = report("p-recent", 0, "planned");
    write_report(&sb, &recent);
    let run = status(&sb, "200", &[]);
    run.assert_success();
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.contains("p-dead")).collect();
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    assert!(
        rows[0].starts_with("not shown: 1 proxy report(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("p-recent"), "{}", run.stdout);
    let json = status(&sb, "200", &["--format", "json"]).json();
    let gone: Vec<(String, bool)> = json["proxies"]["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["gone"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        gone,
        vec![("p-dead".to_string(), true), ("p-recent".to_string(), false)]
    );
}
