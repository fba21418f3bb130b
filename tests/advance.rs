//! Issue 2, against real Redis: plan shows the inspection and the gates; advance and rollback
//! write the catalog's routing at rising generations; dry runs change nothing; gates block.

mod common;

use cachemig::phase::Catalog;
use common::sandbox::Sandbox;

#[test]
fn plan_shows_inspection_and_gates() {
    let sb = Sandbox::start();
    sb.source_cmd(&["SET", "token:1", "a"]);
    let run = sb.cachemig(&["plan"]);
    run.assert_code(0)
        .assert_stdout_contains("source: standalone")
        .assert_stdout_contains("cluster_state:ok")
        .assert_stdout_contains("16384/16384 slots")
        .assert_stdout_contains("next phase: backfill")
        .assert_stdout_contains("rdb-compatible");

    let json: serde_json::Value =
        serde_json::from_str(&sb.cachemig(&["plan", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["current"]["phase"], "planned");
    assert_eq!(json["next"]["phase"], "backfill");
    assert_eq!(json["source"]["report"]["masters"][0]["dbsize"], 1);
    assert_eq!(json["target"]["report"]["masters"].as_array().unwrap().len(), 3);
    let verdicts: Vec<(String, String)> = json["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["gate"].as_str().unwrap().to_string(),
                g["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(verdicts.iter().all(|(_, v)| v == "pass"), "{verdicts:?}");
    assert_eq!(json["ready"], true);
    sb.cachemig(&["plan", "--detailed-exitcode"]).assert_code(4);
}

#[test]
fn advance_writes_the_next_generation_with_the_catalog_routing() {
    let sb = Sandbox::start();
    sb.cachemig(&["advance", "--phase", "backfill", "--yes"])
        .assert_code(0)
        .assert_stdout_contains("wrote generation 1");
    let flag = sb.flag().expect("flag file written");
    let backfill = Catalog::builtin().get("backfill").unwrap();
    assert_eq!((flag.generation, flag.phase.as_str()), (1, "backfill"));
    assert_eq!(
        (flag.routing.read, flag.routing.write, flag.routing.mirror),
        (
            backfill.routing.read,
            backfill.routing.write,
            backfill.routing.mirror
        )
    );
    assert_eq!(flag.routing.fence, backfill.routing.fence);

    // rollback is a new decision: a higher generation with the earlier phase
    sb.cachemig(&["rollback", "--yes"]).assert_code(0);
    let flag = sb.flag().unwrap();
    assert_eq!((flag.generation, flag.phase.as_str()), (2, "planned"));
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    assert_eq!(sb.flag().unwrap().generation, 3);
}

#[test]
fn skipping_a_phase_is_refused_and_changes_nothing() {
    let sb = Sandbox::start();
    let before = sb.snapshot();
    sb.cachemig(&["advance", "--phase", "sync-dual-write", "--yes"])
        .assert_code(2)
        .assert_stderr_contains("cannot be skipped");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn dry_run_changes_no_byte_on_disk() {
    let sb = Sandbox::start();
    // Before anything exists…
    let before = sb.snapshot();
    sb.cachemig(&["advance", "--phase", "backfill", "--dry-run"])
        .assert_code(0)
        .assert_stdout_contains("would write generation 1");
    assert_eq!(
        before,
        sb.snapshot(),
        "dry run on a fresh migration wrote something"
    );
    // …and once state exists: a dry run whose gates pass (no entry action runs), one that is
    // blocked, and a dry rollback.
    sb.source_cmd(&["SET", "token:1", "v"]);
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    let before = sb.snapshot();
    assert!(before.keys().any(|p| p.ends_with("journal.jsonl")));
    sb.cachemig(&["advance", "--dry-run"])
        .assert_code(0)
        .assert_stdout_contains("would write generation 2");
    assert_eq!(
        before,
        sb.snapshot(),
        "a dry run that passes its gates wrote something"
    );
    sb.target_cmd(&["DEL", "token:1"]);
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    assert_eq!(
        sb.target_cmd(&["GET", "token:1"]),
        "v",
        "the catch-up repaired the key"
    );
    let before = sb.snapshot();
    sb.cachemig(&["advance", "--dry-run"]).assert_code(3);
    sb.cachemig(&["rollback", "--dry-run"])
        .assert_code(0)
        .assert_stdout_contains("would write generation 3");
    sb.cachemig(&["plan"]).assert_code(0);
    sb.cachemig(&["status"]).assert_code(0);
    assert_eq!(
        before,
        sb.snapshot(),
        "a dry run or a read-only command wrote something"
    );
}

#[test]
fn a_blocked_gate_exits_3_naming_the_gate_and_its_value() {
    let sb = Sandbox::start();
    sb.target_cmd(&["SET", "token:already-there", "x"]);
    let run = sb.cachemig(&["advance", "--yes"]);
    run.assert_code(3)
        .assert_stderr_contains("target-empty")
        .assert_stderr_contains("1 key(s) in range");
    assert!(sb.flag().is_none(), "a blocked step wrote the flag file");
    // the evaluation is journaled
    let journal = sb.journal_text();
    assert!(
        journal.contains("\"event\":\"gates\"") && journal.contains("\"passed\":false"),
        "{journal}"
    );
}

#[test]
fn skip_gate_is_journaled_and_shown_by_status_forever_after() {
    let sb = Sandbox::start();
    sb.target_cmd(&["SET", "token:already-there", "x"]);
    sb.advance_acknowledging_existing_keys("stale keys from a test run, CHG-42")
        .assert_code(0);
    assert_eq!(sb.flag().unwrap().phase, "backfill");
    sb.cachemig(&["rollback", "--yes"]).assert_code(0);
    let status = sb.cachemig(&["status"]);
    status
        .assert_code(0)
        .assert_stdout_contains("target-empty")
        .assert_stdout_contains("CHG-42");
    let json: serde_json::Value =
        serde_json::from_str(&sb.cachemig(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["overrides"][0]["gate"], "target-empty");
    assert_eq!(
        json["overrides"][0]["reason"],
        "stale keys from a test run, CHG-42"
    );
    // a typo in --skip-gate is an error, never a silent no-op
    sb.cachemig(&["advance", "--yes", "--skip-gate", "target-empt", "--reason", "x"])
        .assert_code(2);
    // an empty reason is refused: the journal keeps the why of an override forever
    let empty = sb.cachemig(&["advance", "--yes", "--skip-gate", "target-empty", "--reason", " "]);
    empty.assert_code(2);
    assert!(empty.stderr.contains("the reason is empty"), "{}", empty.stderr);
}

/// Issue 11: the journal names the real user even where `$USER` and `$LOGNAME` are not set (a
/// container, cron): the login name of the uid, and the host.
#[test]
fn the_journal_records_the_real_user_without_user_or_logname() {
    let sb = Sandbox::start();
    sb.source_cmd(&["SET", "token:1", "v"]);
    common::Cachemig::new()
        .args(["advance".as_ref(), sb.plan().as_os_str(), "--yes".as_ref()])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .run()
        .assert_code(0);
    let whoami = std::process::Command::new("id").arg("-un").output().unwrap();
    let login = String::from_utf8(whoami.stdout).unwrap().trim().to_string();
    let entries = sb.journal_entries();
    let last = entries.last().unwrap();
    assert!(
        last.user.starts_with(&format!("{login}@")) && last.user.len() > login.len() + 1,
        "journal user {:?}, login {login:?}",
        last.user
    );
}

#[test]
fn gates_without_data_block_and_never_pass_by_default() {
    let sb = Sandbox::start();
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    // Mirror statistics come from proxies, which report nothing here: the step is blocked.
    let run = sb.cachemig(&["advance", "--yes"]);
    run.assert_code(3)
        .assert_stderr_contains("mirror-error-ratio")
        .assert_stderr_contains("no data");
    assert_eq!(sb.flag().unwrap().phase, "async-dual-write");
}

#[test]
fn mutation_without_yes_is_refused_when_stdin_is_not_a_terminal() {
    let sb = Sandbox::start();
    sb.cachemig(&["advance"])
        .assert_code(2)
        .assert_stderr_contains("--yes");
    assert!(sb.flag().is_none());
}
