//! Issue 11, item 6: the smaller defects found on the way, one regression test each (named
//! after the defect). The keys/s of a resumed backfill is `resume_keys_per_second_counts_only_
//! this_runs_keys` in src/backfill/progress.rs; a cleanly stopped proxy is
//! `proxy_stopped_cleanly_is_not_missing_forever` in tests/status_terminal.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::Cachemig;
use common::compare::differences;
use common::sandbox::Sandbox;

/// `cachemig plan` on the sandbox's plan with `var` set to `value` (overriding the sandbox's).
fn plan_with_env(sb: &Sandbox, var: &str, value: &str) -> common::Run {
    let mut c = Cachemig::new().arg("plan").arg(sb.plan());
    for (k, v) in sb.env() {
        c = c.env(k, v);
    }
    c.env(var, value).run()
}

/// A password `e` (wrong, and a letter of nearly every word) must not mask every `e` of the
/// message: only the token is masked.
#[test]
fn password_redaction_masks_only_whole_tokens() {
    let sb = Sandbox::start_with_source_password("the-right-password");
    let var = sb.env()[0].0.clone();
    let run = plan_with_env(&sb, &var, "e");
    // The driver's words; masking every "e" made them "Passwor*** auth***ntication fail***d".
    run.assert_stdout_contains("Password authentication failed")
        .assert_output_lacks("***ntication");
}

#[test]
fn authentication_failure_is_not_labelled_unreachable() {
    let sb = Sandbox::start_with_source_password("the-right-password");
    let var = sb.env()[0].0.clone();
    let run = plan_with_env(&sb, &var, "wrong-password");
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("source:"))
        .unwrap_or_else(|| panic!("no source line:\n{}", run.stdout));
    assert!(line.starts_with("source: AUTHENTICATION FAILED:"), "{line}");
    assert!(
        line.contains(&format!("the environment variable {var}"))
            && line.contains("the URL names none, so Redis's `default` user was used"),
        "{line}"
    );
    assert!(!run.stdout.contains("UNREACHABLE"), "{}", run.stdout);
    run.assert_output_lacks("wrong-password");
    // The gate says the same.
    let mut c = Cachemig::new()
        .arg("plan")
        .arg(sb.plan())
        .args(["--format", "json"]);
    c = c.env(&var, "wrong-password");
    let json = c.run().json();
    let gate = json["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "source-reachable")
        .unwrap()
        .clone();
    assert!(
        gate["measured"]
            .as_str()
            .unwrap()
            .starts_with("AUTHENTICATION FAILED:"),
        "{gate}"
    );
}

/// A tiny HTTP server: answers every connection with a 400, as a web server on a mistyped port.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request",
            );
        }
    });
    port
}

#[test]
fn wrong_port_on_a_non_redis_service_says_it_does_not_speak_resp() {
    let mut sb = Sandbox::start();
    let port = http_server();
    sb.rewrite_plan_source(&format!("redis://127.0.0.1:{port}"));
    let run = Cachemig::new().arg("plan").arg(sb.plan()).run();
    run.assert_stdout_contains(&format!(
        "source: NOT REDIS: source 127.0.0.1:{port} answered but does not speak RESP — is it a Redis port?"
    ))
    .assert_output_lacks("Incompatible type");
}

#[test]
fn rollback_to_planned_then_target_empty_says_how_to_clear() {
    let mut sb = Sandbox::start();
    sb.fill_source(200);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    sb.cachemig(&["rollback", "--yes"]).assert_success();
    // Written while back in planned: the copy on new is stale now.
    sb.source_cmd(&["SET", "token:7", "changed-after-rollback"]);
    sb.source_cmd(&["DEL", "token:8"]);
    let blocked = sb.cachemig(&["advance", "--yes"]);
    blocked
        .assert_code(3)
        .assert_stderr_contains("target-empty")
        .assert_stderr_contains("a rollback to planned keeps them")
        .assert_stderr_contains("on_existing = \"replace\" in [backfill]")
        .assert_stderr_contains("cachemig verify PLAN --repair");
    // The way out it names works: replace, then verify --repair for keys deleted on old since.
    sb.set_plan_extra("[backfill]\non_existing = \"replace\"\n");
    sb.cachemig(&["advance", "--yes"]).assert_success();
    sb.cachemig(&["verify", "--repair"]).assert_success();
    let keys: Vec<String> = (0..200).map(|i| format!("token:{i}")).collect();
    assert_eq!(differences(&sb, &keys), Vec::<String>::new());
    let on_new: i64 = redis::cmd("EXISTS")
        .arg("token:8")
        .query(&mut sb.target.cluster_conn())
        .unwrap();
    assert_eq!(on_new, 0, "a key deleted on old after the rollback stays on new");
}

#[test]
fn readme_tour_on_all_interfaces_says_the_proxy_needs_a_password() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let paragraphs: Vec<&str> = readme.split("\n\n").filter(|p| p.contains("0.0.0.0")).collect();
    assert!(!paragraphs.is_empty(), "the README tour listens on 0.0.0.0");
    for p in paragraphs {
        let block = readme[readme.find(p).unwrap()..]
            .chars()
            .take(p.len() + 600)
            .collect::<String>();
        assert!(
            block.contains("password_env") && block.contains("[proxies]"),
            "0.0.0.0 without the proxy password nearby:\n{p}"
        );
    }
}
