//! Issue 2: every malformed plan exits 2 with file:line:column, what is wrong and a fix hint.

mod common;

use common::{Cachemig, write_plan};

/// A valid plan; each case edits one thing. Line numbers below refer to the edited text.
const BASE: &str = r#"[migration]
name = "tokens"

[source]
url = "redis://127.0.0.1:6379/0"

[target]
urls = ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]

[keys]
include = ["token:*"]

[backfill]
workers = 8
big_key_bytes = "8MiB"
on_existing = "skip"

[gates]
soak = "10m"

[proxies]
expected = 2
heartbeat_timeout = "10s"
"#;

/// (case, replace this, with this, line, column, message part, hint part)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    usize,
    usize,
    &'static str,
    &'static str,
);

const CASES: &[Case] = &[
    (
        "unknown top-level table",
        "[keys]",
        "[kees]",
        10,
        2,
        "unknown key `kees`",
        "did you mean `keys`",
    ),
    (
        "unknown key with typo",
        "workers = 8",
        "worker = 8",
        14,
        1,
        "unknown key `worker`",
        "did you mean `workers`",
    ),
    (
        "unknown key, no near match",
        "workers = 8",
        "colour = 8",
        14,
        1,
        "unknown key `colour`",
        "allowed here",
    ),
    (
        "wrong type: string for integer",
        "workers = 8",
        "workers = \"eight\"",
        14,
        11,
        "invalid type",
        "workers = 8",
    ),
    (
        "wrong type: integer for string",
        "name = \"tokens\"",
        "name = 5",
        2,
        8,
        "invalid type",
        "name = \"tokens\"",
    ),
    (
        "bad enum value",
        "on_existing = \"skip\"",
        "on_existing = \"skp\"",
        16,
        15,
        "unknown value \"skp\"",
        "did you mean \"skip\"",
    ),
    (
        "bad copy mode",
        "on_existing = \"skip\"",
        "on_existing = \"skip\"\ncopy_mode = \"bytype\"",
        17,
        13,
        "unknown value \"bytype\"",
        "by-type",
    ),
    (
        "missing required table key",
        "url = \"redis://127.0.0.1:6379/0\"",
        "",
        4,
        1,
        "missing required key `url`",
        "url = ",
    ),
    (
        "bad migration name",
        "name = \"tokens\"",
        "name = \"Tokens_1\"",
        2,
        8,
        "migration name \"Tokens_1\"",
        "a-z, 0-9 and -",
    ),
    (
        "source url not a url",
        "url = \"redis://127.0.0.1:6379/0\"",
        "url = \"not a url\"",
        5,
        7,
        "not a valid URL",
        "redis://127.0.0.1:6379/0",
    ),
    (
        "source url wrong scheme",
        "url = \"redis://127.0.0.1:6379/0\"",
        "url = \"http://127.0.0.1:6379\"",
        5,
        7,
        "scheme `http`",
        "redis:// or rediss://",
    ),
    (
        "password inside the url",
        "url = \"redis://127.0.0.1:6379/0\"",
        "url = \"redis://:hunter2@127.0.0.1:6379\"",
        5,
        7,
        "contains a password",
        "password_env",
    ),
    (
        "duplicate target seed",
        "\"redis://127.0.0.1:7002\"]",
        "\"redis://127.0.0.1:7001\"]",
        8,
        35,
        "listed twice",
        "remove the duplicate",
    ),
    (
        "empty target list",
        "urls = [\"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]",
        "urls = []",
        8,
        8,
        "`urls` is empty",
        "at least one master",
    ),
    (
        "target db other than 0",
        "\"redis://127.0.0.1:7002\"]",
        "\"redis://127.0.0.1:7002/3\"]",
        8,
        35,
        "selects database 3",
        "only database 0",
    ),
    (
        "bad size",
        "big_key_bytes = \"8MiB\"",
        "big_key_bytes = \"eight\"",
        15,
        17,
        "not a size",
        "8MiB",
    ),
    (
        "bad duration",
        "heartbeat_timeout = \"10s\"",
        "heartbeat_timeout = \"soon\"",
        23,
        21,
        "not a duration",
        "10s",
    ),
    (
        "heartbeat_timeout zero",
        "heartbeat_timeout = \"10s\"",
        "heartbeat_timeout = \"0s\"",
        23,
        21,
        "`heartbeat_timeout` is zero",
        "heartbeat_timeout = \"10s\"",
    ),
    (
        "heartbeat_timeout below the report interval",
        "heartbeat_timeout = \"10s\"",
        "heartbeat_timeout = \"500ms\"",
        23,
        21,
        "`heartbeat_timeout` is 500ms, less than 1s",
        "at least 1s",
    ),
    (
        "max_write_pause zero",
        "heartbeat_timeout = \"10s\"",
        "heartbeat_timeout = \"10s\"\nmax_write_pause = \"0ms\"",
        24,
        19,
        "`max_write_pause` is zero",
        "max_write_pause = \"5s\"",
    ),
    (
        "bad gates soak",
        "soak = \"10m\"",
        "soak = \"ten\"",
        19,
        8,
        "`soak` is not a duration",
        "soak = \"10m\"",
    ),
    (
        "unknown phase under gates",
        "[gates]\nsoak = \"10m\"",
        "[gates]\nsoak = \"10m\"\n[gates.read-cutovr]\nsoak = \"1h\"",
        20,
        8,
        "unknown phase `read-cutovr`",
        "did you mean `read-cutover`",
    ),
    (
        "unknown gate in a phase",
        "[gates]\nsoak = \"10m\"",
        "[gates]\nsoak = \"10m\"\n[gates.sync-dual-write]\nmirror-lagg = 5",
        21,
        1,
        "no gate `mirror-lagg`",
        "did you mean `mirror-lag`",
    ),
    (
        "gate threshold of the wrong type",
        "[gates]\nsoak = \"10m\"",
        "[gates]\nsoak = \"10m\"\n[gates.sync-dual-write]\nmirror-lag = \"fast\"",
        21,
        1,
        "takes a non-negative number",
        "mirror-lag = 1000",
    ),
    (
        "workers out of range",
        "workers = 8",
        "workers = 0",
        14,
        11,
        "outside 1..=256",
        "workers = 8",
    ),
    (
        "password_env not a variable name",
        "[target]",
        "[target]\npassword_env = \"my password\"",
        8,
        16,
        "not an environment variable name",
        "never the password itself",
    ),
    (
        "toml syntax error",
        "workers = 8",
        "workers = = 8",
        14,
        11,
        "",
        "fix the TOML syntax",
    ),
    (
        "duplicate key",
        "workers = 8",
        "workers = 8\nworkers = 9",
        15,
        1,
        "duplicate key",
        "remove one",
    ),
    (
        "empty include pattern",
        "include = [\"token:*\"]",
        "include = [\"\"]",
        11,
        12,
        "empty pattern",
        "Redis glob",
    ),
    (
        "proxies expected missing",
        "expected = 2\n",
        "",
        21,
        1,
        "`expected` is missing from [proxies]",
        "expected = N",
    ),
    (
        "no proxies table",
        "[proxies]\nexpected = 2\nheartbeat_timeout = \"10s\"\n",
        "",
        21,
        1,
        "no [proxies] table",
        "expected = N",
    ),
    (
        "ratio gate above 1",
        "[gates]\nsoak = \"10m\"",
        "[gates]\nsoak = \"10m\"\n[gates.sync-dual-write]\nmirror-error-ratio = 2",
        21,
        1,
        "takes a ratio between 0 and 1",
        "mirror-error-ratio = 0.001",
    ),
    (
        "empty state_dir",
        "name = \"tokens\"",
        "name = \"tokens\"\nstate_dir = \"\"",
        3,
        13,
        "`state_dir` is empty",
        "state_dir = ",
    ),
    (
        "ratio out of range",
        "[gates]",
        "[shadow_read]\nsample_rate = 1.5\n[gates]",
        19,
        15,
        "outside 0.0..=1.0",
        "sample_rate = 0.05",
    ),
    (
        "negative verify gate sample",
        "[gates]",
        "[verify]\ngate_sample = -1\n[gates]",
        19,
        15,
        "`gate_sample` is -1, outside 0..=",
        "gate_sample = 0",
    ),
    (
        "verify sample ratio without a sample size",
        "[gates]",
        "[verify]\ngate_sample_ratio = 0.5\n[gates]",
        19,
        21,
        "`gate_sample` is 0, so only a full verify counts",
        "gate_sample = N",
    ),
    (
        "verify sample ratio out of range",
        "[gates]",
        "[verify]\ngate_sample = 10\ngate_sample_ratio = 2.0\n[gates]",
        20,
        21,
        "`gate_sample_ratio` is 2, outside 0.0..=1.0",
        "gate_sample_ratio = 0",
    ),
];

#[test]
fn every_malformed_plan_exits_2_with_location_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (case, from, to, line, column, message, hint)) in CASES.iter().enumerate() {
        assert!(BASE.contains(from), "case {case}: base does not contain {from:?}");
        let body = BASE.replacen(from, to, 1);
        let path = write_plan(dir.path(), &format!("case{i}.toml"), &body);
        let run = Cachemig::new()
            .args(["plan", path.to_str().unwrap(), "--offline"])
            .run();
        let expected_location = format!("{}:{line}:{column}:", path.display());
        let ok = run.status == 2
            && run.stderr.contains(&expected_location)
            && run.stderr.contains(message)
            && run.stderr.contains("hint:")
            && run.stderr.contains(hint)
            && !run.stderr.contains("hunter2");
        if !ok {
            failures.push(format!(
                "{case}: exit {} expected {expected_location} / {message:?} / {hint:?}\n{}",
                run.status, run.stderr
            ));
        }
    }
    assert!(CASES.len() >= 20);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_missing_plan_file_exits_2_naming_it() {
    let run = Cachemig::new()
        .args(["plan", "/nonexistent/plan.toml", "--offline"])
        .run();
    run.assert_code(2)
        .assert_stderr_contains("/nonexistent/plan.toml")
        .assert_stderr_contains("cannot read the plan");
}

#[test]
fn example_plans_validate_offline() {
    let root = env!("CARGO_MANIFEST_DIR");
    for plan in [
        "plans/standalone-to-cluster.toml",
        "plans/cluster-to-cluster.toml",
        "plans/redis-to-valkey.toml",
    ] {
        let run = Cachemig::new()
            .args(["plan", &format!("{root}/{plan}"), "--offline"])
            .env("OLD_REDIS_PASSWORD", "old-secret")
            .env("NEW_REDIS_PASSWORD", "new-secret")
            .run();
        run.assert_code(0).assert_stdout_contains("is valid");
        assert!(
            !run.stdout.contains("old-secret") && !run.stdout.contains("new-secret"),
            "a secret leaked: {}",
            run.stdout
        );
    }
}

#[test]
fn every_file_in_plans_is_covered_by_a_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut names: Vec<String> = std::fs::read_dir(format!("{root}/plans"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cluster-to-cluster.toml",
            "redis-to-valkey.toml",
            "standalone-to-cluster.toml"
        ],
        "add new example plans to example_plans_validate_offline"
    );
}

/// Issue 11: offline, an unset secret's variable is a note (CI validates plans without secrets);
/// online, every command refuses it at load, naming file, line and what to export.
#[test]
fn an_unset_password_env_is_a_note_offline_and_an_error_online() {
    let dir = tempfile::tempdir().unwrap();
    let body = BASE.replacen(
        "[target]",
        "[target]\npassword_env = \"CACHEMIG_TEST_SURELY_UNSET_VAR\"",
        1,
    );
    let path = write_plan(dir.path(), "unset.toml", &body);
    let plan = path.to_str().unwrap();
    let offline = Cachemig::new().args(["plan", plan, "--offline"]).run();
    offline
        .assert_code(0)
        .assert_stdout_contains(&format!("note: {}:8:16:", path.display()))
        .assert_stdout_contains("$CACHEMIG_TEST_SURELY_UNSET_VAR, which is not set");
    for command in ["plan", "status", "advance"] {
        let online = Cachemig::new().args([command, plan]).run();
        online.assert_code(2);
        assert!(
            online.stderr.contains(&format!("{}:8:16:", path.display()))
                && online.stderr.contains("export CACHEMIG_TEST_SURELY_UNSET_VAR"),
            "{command}: {}",
            online.stderr
        );
    }
}

/// A heartbeat shorter than a Kubernetes ConfigMap's delivery (up to 90 s) makes `plan` warn,
/// naming the value to write; one at least that long, or a plan without proxies, does not.
#[test]
fn a_heartbeat_shorter_than_a_configmap_delivery_warns() {
    let dir = tempfile::tempdir().unwrap();
    let heartbeat = |value: &str| BASE.replacen("\"10s\"", &format!("\"{value}\""), 1);
    let cases = [
        ("default 10s", BASE.to_string(), true),
        ("89s", heartbeat("89s"), true),
        ("90s", heartbeat("90s"), false),
        ("2m", heartbeat("2m"), false),
        (
            "no proxies",
            BASE.replacen("expected = 2", "expected = 0", 1),
            false,
        ),
    ];
    for (i, (case, body, warns)) in cases.iter().enumerate() {
        let path = write_plan(dir.path(), &format!("heartbeat{i}.toml"), body);
        let run = Cachemig::new()
            .args(["plan", path.to_str().unwrap(), "--offline"])
            .run();
        run.assert_code(0);
        let warned = run.stderr.contains("heartbeat_timeout = \"")
            && run.stderr.contains("is shorter than a Kubernetes ConfigMap")
            && run.stderr.contains("write `heartbeat_timeout = \"2m\"` there");
        assert_eq!(warned, *warns, "{case}: {}", run.stderr);
    }
}
