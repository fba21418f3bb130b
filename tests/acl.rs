//! Issue 12, item 2: ACL users. A least-privilege user on each side, named by `username_env`
//! (passwords by `password_env`): the `acl-permissions` gate into `backfill` names what a user
//! may not run, and with the right permissions the backfill and verify go through those users
//! only (the `default` user of each side may not DUMP or RESTORE, so nothing else could copy).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::compare::canonical;
use common::proxy::ProxyProcess;
use common::sandbox::Sandbox;
use common::{Cachemig, Run, write_plan};

const USER: &str = "migrator";
const SOURCE_PASSWORD: &str = "src-acl-secret";
const TARGET_PASSWORD: &str = "tgt-acl-secret";
const VARS: [&str; 4] = [
    "CACHEMIG_TEST_SRC_USER",
    "CACHEMIG_TEST_SRC_PASS",
    "CACHEMIG_TEST_TGT_USER",
    "CACHEMIG_TEST_TGT_PASS",
];

/// What the source's user is granted: every command of `src/inspect/acl_needs.rs`'s source list
/// but DUMP (granted later), on the migrated keys and cachemig's own. `+multi +exec` and no
/// `acl|dryrun`: the check goes by the MULTI probe here.
const SOURCE_RULES: &str = "~token:* ~__cachemig:* +ping +info +dbsize +scan +pttl +memory|usage \
    +type +exists +evalsha +script|load +hscan +sscan +zscan +lrange +getrange +xrange \
    +xinfo|stream +xinfo|groups +xinfo|consumers +xpending +zrange +smembers +strlen +hlen +llen \
    +scard +zcard +xlen +function|list +function|dump +client|list +client|setname +restore +del +get +set +pexpire +persist +hmget +hset +hincrby +multi +exec";

/// The target's user: what the target list names, with `acl|dryrun` (the check uses ACL DRYRUN).
const TARGET_RULES: &str = "~token:* ~__cachemig:* +ping +info +dbsize +scan +cluster|info \
    +cluster|nodes +cluster|slots +asking +restore +del +set +setrange +hset +sadd +zadd +rpush \
    +xadd +xgroup|create +xsetid +pexpire +eval +rename +renamenx +persist +function|restore \
    +pttl +dump +memory|usage +type +exists +evalsha +script|load +hscan +sscan +zscan +lrange \
    +getrange +xrange +xinfo|stream +xinfo|groups +xinfo|consumers +xpending +zrange +smembers \
    +strlen +hlen +llen +scard +zcard +xlen +xgroup|createconsumer +xclaim +get +hmget +hincrby \
    +hget +hgetall +hdel +time +srem +sunionstore +expire +client|setname +acl|dryrun";

fn setuser(node: &common::RedisServer, password: &str, rules: &str) {
    let mut args = vec!["ACL", "SETUSER", USER, "reset", "on"];
    let secret = format!(">{password}");
    args.push(&secret);
    args.extend(rules.split_whitespace());
    assert_eq!(node.cli(&args).trim(), "OK");
}

fn run(sb: &Sandbox, args: &[&str]) -> Run {
    let mut c = sb.command(args);
    for (var, value) in VARS.iter().zip([USER, SOURCE_PASSWORD, USER, TARGET_PASSWORD]) {
        c = c.env(var, value);
    }
    c.run()
}

fn acl_gate(sb: &Sandbox) -> serde_json::Value {
    let json = run(sb, &["plan", "--format", "json"]).json();
    json["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "acl-permissions")
        .cloned()
        .unwrap_or_else(|| panic!("no acl-permissions gate: {json}"))
}

/// Strings, hashes (one above `big_key_bytes`, copied by type), lists and TTLs on the source,
/// as the default user; the model is what each key must read as on both sides.
fn seed(sb: &Sandbox) -> BTreeMap<String, String> {
    let mut model = BTreeMap::new();
    let mut conn = sb.source.conn();
    for i in 0..40 {
        let key = format!("token:s:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(format!("v{i}"))
            .query(&mut conn)
            .unwrap();
        model.insert(key, format!("string:[\"v{i}\"] ttl:false"));
        let key = format!("token:l:{i}");
        let _: () = redis::cmd("RPUSH")
            .arg(&key)
            .arg(&["a", "b"])
            .query(&mut conn)
            .unwrap();
        let _: () = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(600_000)
            .query(&mut conn)
            .unwrap();
        model.insert(key, "list:[\"a\", \"b\"] ttl:true".into());
    }
    let fields: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    for f in &fields {
        let _: () = redis::cmd("HSET")
            .arg("token:big")
            .arg(f)
            .arg("x".repeat(20))
            .query(&mut conn)
            .unwrap();
    }
    let mut content: Vec<String> = fields.iter().map(|f| format!("{f}={}", "x".repeat(20))).collect();
    content.sort();
    model.insert("token:big".into(), format!("hash:{content:?} ttl:false"));
    model
}

#[test]
fn least_privilege_users_from_username_env_are_checked_before_the_backfill_and_used_by_it() {
    let mut sb = Sandbox::start();
    sb.set_side_keys(
        &format!("username_env = \"{}\"\npassword_env = \"{}\"\n", VARS[0], VARS[1]),
        &format!("username_env = \"{}\"\npassword_env = \"{}\"\n", VARS[2], VARS[3]),
    );
    sb.set_plan_extra("[backfill]\nbig_key_bytes = \"2KiB\"\n");
    let model = seed(&sb);
    setuser(&sb.source, SOURCE_PASSWORD, SOURCE_RULES);
    for master in sb.target.masters() {
        setuser(master, TARGET_PASSWORD, TARGET_RULES);
        // Only the plan's user can copy onto new.
        assert_eq!(
            master.cli(&["ACL", "SETUSER", "default", "-restore"]).trim(),
            "OK"
        );
    }
    assert_eq!(
        sb.source.cli(&["ACL", "SETUSER", "default", "-dump"]).trim(),
        "OK"
    );

    // The source's user may not DUMP: the gate names it, on the source, and blocks the step.
    let gate = acl_gate(&sb);
    let measured = gate["measured"].as_str().unwrap();
    assert_eq!(gate["verdict"], "blocked", "{gate}");
    assert!(
        measured.contains(&format!("source (user {USER}) may not run DUMP")),
        "{measured}"
    );
    assert!(
        !measured.contains("target (user"),
        "the target's user lacks nothing: {measured}"
    );
    let blocked = run(&sb, &["advance", "--yes"]);
    blocked.assert_code(3).assert_output_lacks(SOURCE_PASSWORD);
    assert!(blocked.stdout.contains("DUMP") || blocked.stderr.contains("DUMP"));
    assert_eq!(sb.target.dbsize(), 0, "nothing copied while blocked");
    // The check ran as the plan's user (the probe's refusal is in the source's ACL LOG).
    assert!(sb.source.cli(&["ACL", "LOG"]).contains(USER));

    // Granted: the gate passes by each method, and the backfill and verify go through the users.
    assert_eq!(sb.source.cli(&["ACL", "SETUSER", USER, "+dump"]).trim(), "OK");
    let gate = acl_gate(&sb);
    assert_eq!(gate["verdict"], "pass", "{gate}");
    let measured = gate["measured"].as_str().unwrap();
    assert!(
        measured.contains(&format!("source user {USER} (MULTI probe)"))
            && measured.contains(&format!("target user {USER} (ACL DRYRUN)")),
        "{measured}"
    );
    run(&sb, &["advance", "--yes"]).assert_success();
    run(&sb, &["verify"]).assert_success();

    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    for (key, want) in &model {
        assert_eq!(
            canonical(&mut old, key).as_deref(),
            Some(want.as_str()),
            "old {key}"
        );
        assert_eq!(
            canonical(&mut new, key).as_deref(),
            Some(want.as_str()),
            "new {key}"
        );
    }
    assert_eq!(sb.target.dbsize(), model.len() as u64);

    // The proxy logs in as the same users on both sides.
    let env: Vec<(&str, &str)> = VARS
        .iter()
        .copied()
        .zip([USER, SOURCE_PASSWORD, USER, TARGET_PASSWORD])
        .collect();
    let proxy = ProxyProcess::start_with_env(&sb, "p1", &env);
    let mut conn = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("token:via-proxy")
        .arg("p")
        .query(&mut conn)
        .unwrap();
    assert_eq!(sb.source_cmd(&["GET", "token:via-proxy"]), "p");
    let proxy_lines = |node: &common::RedisServer| -> Vec<String> {
        node.cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains("name=cachemig-proxy"))
            .map(str::to_string)
            .collect()
    };
    let on_old = proxy_lines(&sb.source);
    assert!(!on_old.is_empty(), "the proxy holds connections to old");
    let on_new = || -> Vec<String> { sb.target.masters().iter().flat_map(proxy_lines).collect() };
    common::wait_for("the proxy's connections to new", Duration::from_secs(10), || {
        !on_new().is_empty()
    });
    let on_new = on_new();
    for line in on_old.iter().chain(&on_new) {
        assert!(line.contains(&format!("user={USER}")), "{line}");
    }
}

#[test]
fn a_user_in_the_url_and_username_env_together_is_a_plan_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |source: &str| {
        let text = format!(
            "[migration]\nname = \"acl\"\n\n[source]\nurl = \"{source}\"\nusername_env = \"{}\"\n\n\
             [target]\nurls = [\"redis://127.0.0.1:7001\"]\n\n[proxies]\nexpected = 0\n",
            VARS[0]
        );
        write_plan(dir.path(), "acl.toml", &text)
    };
    let both = plan("redis://app@127.0.0.1:6379/0");
    let out = Cachemig::new()
        .args(["plan".as_ref(), both.as_os_str(), "--offline".as_ref()])
        .env(VARS[0], USER)
        .run();
    out.assert_code(2)
        .assert_stderr_contains("`app` in the URL and username_env = \"CACHEMIG_TEST_SRC_USER\"");

    // Unset: offline it is a note, online an error naming the variable.
    let only_env = plan("redis://127.0.0.1:6379/0");
    let offline = Cachemig::new()
        .args(["plan".as_ref(), only_env.as_os_str(), "--offline".as_ref()])
        .env_remove(VARS[0])
        .run();
    offline
        .assert_success()
        .assert_stdout_contains("username_env names $CACHEMIG_TEST_SRC_USER, which is not set");
    Cachemig::new()
        .args(["plan".as_ref(), only_env.as_os_str()])
        .env_remove(VARS[0])
        .run()
        .assert_code(2)
        .assert_stderr_contains("username_env names $CACHEMIG_TEST_SRC_USER, which is not set");
}
