//! Issue 11, CI dry runs: the recipe of `docs/ci.md`, run as a pipeline would. Plans are checked
//! without secrets (`plan --offline`), and a pipeline branches on the exit codes of
//! `plan --detailed-exitcode` and `advance --dry-run --format json` against a real sandbox.

mod common;

use std::path::PathBuf;

use common::Cachemig;
use common::sandbox::Sandbox;

/// Every plan shipped in `plans/`.
fn shipped_plans() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut plans: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    plans.sort();
    assert!(!plans.is_empty(), "no plan in {}", dir.display());
    plans
}

#[test]
fn every_shipped_plan_validates_offline_without_its_secrets() {
    for plan in shipped_plans() {
        let text = std::fs::read_to_string(&plan).unwrap();
        let mut run = Cachemig::new().args(["plan".as_ref(), plan.as_os_str(), "--offline".as_ref()]);
        // CI has no secrets: every variable a plan names is unset.
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("password_env"))
        {
            let var = line.split('"').nth(1).unwrap();
            run = run.env_remove(var);
        }
        let out = run.run();
        out.assert_code(0).assert_stdout_contains("is valid");
        if text.contains("password_env") {
            out.assert_stdout_contains("which is not set (fine offline");
        }
        // The same with --detailed-exitcode: valid, and the next step cannot be shown ready
        // without the servers, so 3 ("blocked"), never 2 ("invalid").
        let mut detailed = Cachemig::new().args([
            "plan".as_ref(),
            plan.as_os_str(),
            "--offline".as_ref(),
            "--detailed-exitcode".as_ref(),
        ]);
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("password_env"))
        {
            detailed = detailed.env_remove(line.split('"').nth(1).unwrap());
        }
        detailed.run().assert_code(3);
    }
}

#[test]
fn an_invalid_plan_fails_offline_with_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("broken.toml");
    std::fs::write(
        &plan,
        "[migration]\nname = \"x\"\n[source]\nurl = \"redis://127.0.0.1:1\"\n[target]\nurls = [\"redis://127.0.0.1:2\"]\n[keys]\ninclude = [\"a:*\"]\n[proxies]\nexpected = -1\n",
    )
    .unwrap();
    let out = common::cachemig(&["plan", plan.to_str().unwrap(), "--offline"]);
    out.assert_code(2);
    assert!(out.stderr.contains("broken.toml:10:"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

#[test]
fn a_pipeline_branches_on_the_exit_codes_of_plan_and_advance_dry_run() {
    let sb = Sandbox::start();
    sb.source_cmd(&["SET", "token:1", "v"]);
    // Blocked: new already holds a migrated key (gate `target-empty`). plan says 3; the dry run
    // exits 3 with the gate in its JSON, writing nothing.
    sb.target_cmd(&["SET", "token:stray", "x"]);
    sb.cachemig(&["plan", "--detailed-exitcode"]).assert_code(3);
    let before = sb.snapshot();
    let dry = sb.cachemig(&["advance", "--dry-run", "--format", "json"]);
    dry.assert_code(3);
    let report = dry.json();
    assert_eq!(report["allowed"], false, "{report}");
    let blocking: Vec<&str> = report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["verdict"] == "blocked")
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(blocking, ["target-empty"], "{report}");
    assert_eq!(before, sb.snapshot(), "a blocked dry run wrote something");
    // Ready: plan says 4; the dry run says what it would do and exits 0, writing nothing.
    sb.target_cmd(&["DEL", "token:stray"]);
    sb.cachemig(&["plan", "--detailed-exitcode"]).assert_code(4);
    let dry = sb.cachemig(&["advance", "--dry-run", "--format", "json"]);
    dry.assert_code(0);
    let report = dry.json();
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["allowed"], true, "{report}");
    assert_eq!(report["applied"], false, "{report}");
    assert_eq!(report["to"]["phase"], "backfill", "{report}");
    assert_eq!(before, sb.snapshot(), "a dry run wrote something");
    // Invalid input: exit 2.
    sb.cachemig(&["advance", "--dry-run", "--phase", "no-such-phase"])
        .assert_code(2);
}
