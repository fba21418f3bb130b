//! Real client libraries, in their default configuration, through `cachemig proxy` (issue 8).
//!
//! Each library runs a script of application-like steps (tests/clients/: `app.py` for redis-py
//! 8.x and 5.x, `node_redis.mjs`, `ioredis.mjs`; libraries pinned and installed under
//! `target/clients/` by `scripts/install-clients`, which these tests call first; `rs/app.rs` for
//! redis-rs, the dev-dependency, run in-process on a thread of its own). A script prints
//! one JSON line per step and, last, the model of every acknowledged write of the steps that
//! passed: `{"writes": {KEY: "value" | ["list", "items"] | null}}` (null: the key must not exist).
//!
//! - The baseline tests run every step against plain Redis (the `cluster` step against a real
//!   Redis Cluster), so the scripts and their models are proved right independently of the proxy.
//! - The proxy tests run [`PROXY_STEPS`] through `cachemig proxy` in the phases `planned`,
//!   `sync-dual-write`, `read-cutover` and `write-stop` (entered through the fence, as `advance`
//!   does), each phase under its own key prefix. After each phase, old and new are compared key by
//!   key over every key the client wrote, and both against the model: zero differences. In
//!   `planned` nothing may reach new; the catch-up (`cachemig verify --repair`, what `advance` runs
//!   on the way to the dual-write phases) then copies those keys before `sync-dual-write`.

mod common;
#[path = "clients/rs/app.rs"]
mod redis_rs_app;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use common::{Bounded as Output, RedisCluster, RedisServer, run_bounded};

/// The steps every client runs through the proxy, in every phase. It grows as the proxy learns
/// what real applications send; [`ALL_STEPS`] is the goal. To try others without editing this,
/// set `CACHEMIG_PROXY_STEPS` (e.g. `CACHEMIG_PROXY_STEPS=connect,transaction cargo test --test
/// app_clients`).
const PROXY_STEPS: &str = "connect,pipeline,transaction,watch,lock,blmove,pubsub,scan,cluster";

/// Every step of the client scripts (the baseline tests run them all).
const ALL_STEPS: &str = "connect,pipeline,transaction,watch,lock,blmove,pubsub,scan,cluster";

/// The phases the proxy tests walk through, in order.
const PHASES: [&str; 4] = ["planned", "sync-dual-write", "read-cutover", "write-stop"];

/// Bounds one run of a client script (each step bounds its own waits far below this).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Bounds `scripts/install-clients` (a first install downloads from the registries).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// Bounds waiting for the proxy's mirror to drain or its fence to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client library under test.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// redis-py, latest 8.x: RESP3 by default (`HELLO 3`, no fallback).
    RedisPy8,
    /// redis-py 5.x: RESP2 by default.
    RedisPy5,
    /// node-redis (npm `redis`): RESP3 by default.
    NodeRedis,
    /// ioredis: `HELLO 3` by default, RESP2 on `NOPROTO`.
    Ioredis,
    /// redis-rs (the `redis` crate): RESP2 by default.
    RedisRs,
}

impl Client {
    /// A short name, used in key prefixes and messages.
    fn name(self) -> &'static str {
        match self {
            Client::RedisPy8 => "redis-py8",
            Client::RedisPy5 => "redis-py5",
            Client::NodeRedis => "node-redis",
            Client::Ioredis => "ioredis",
            Client::RedisRs => "redis-rs",
        }
    }

    /// The RESP version the library speaks in its default configuration against Redis 7.
    fn default_protocol(self) -> u64 {
        match self {
            Client::RedisPy5 | Client::RedisRs => 2,
            Client::RedisPy8 | Client::NodeRedis | Client::Ioredis => 3,
        }
    }

    /// The command running this client's script, libraries taken from `clients` (`None`: the
    /// client runs in-process).
    fn command(self, clients: &Path) -> Option<Command> {
        let scripts = repo().join("tests/clients");
        let (program, script) = match self {
            Client::RedisPy8 => (clients.join("py-redis8/bin/python"), scripts.join("py/app.py")),
            Client::RedisPy5 => (clients.join("py-redis5/bin/python"), scripts.join("py/app.py")),
            Client::NodeRedis => ("node".into(), scripts.join("node/node_redis.mjs")),
            Client::Ioredis => ("node".into(), scripts.join("node/ioredis.mjs")),
            Client::RedisRs => return None,
        };
        let mut cmd = Command::new(program);
        cmd.arg(script)
            .env("CACHEMIG_CLIENTS_DIR", clients)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        Some(cmd)
    }
}

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the redis-rs steps on a thread, bounded like a script (a step that hangs past
/// [`SCRIPT_TIMEOUT`] is reported, its thread left behind).
fn run_in_process(port: u16, prefix: &str, steps: &str) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    let (prefix, steps) = (prefix.to_string(), steps.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(redis_rs_app::run(port, &prefix, &steps));
    });
    match rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok((stdout, ok)) => Output {
            code: Some(if ok { 0 } else { 1 }),
            stdout,
            stderr: String::new(),
            timed_out: false,
        },
        Err(e) => Output {
            code: None,
            stdout: String::new(),
            stderr: format!("the redis-rs steps did not finish: {e}"),
            timed_out: true,
        },
    }
}

/// The directory holding the installed client libraries, after running `scripts/install-clients`
/// once per test process (fast when they are already installed).
fn clients_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // Cargo's target directory, wherever CARGO_TARGET_DIR put it.
            let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .to_path_buf();
            let mut cmd = Command::new(repo().join("scripts/install-clients"));
            cmd.env("CARGO_TARGET_DIR", &target);
            let out = run_bounded(cmd, INSTALL_TIMEOUT);
            assert!(
                out.code == Some(0),
                "scripts/install-clients failed (timed out: {}):\n{}\n{}",
                out.timed_out,
                out.stdout,
                out.stderr
            );
            target.join("clients")
        })
        .clone()
}

/// What a key must hold according to a client's model.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// A string key with this value.
    Text(String),
    /// A list key with these elements, in order.
    List(Vec<String>),
    /// No such key.
    Absent,
}

/// Key → what it must hold.
type Model = BTreeMap<String, Expected>;

/// One run of a client script.
struct AppRun {
    /// What ran, for messages: client, endpoint, prefix.
    label: String,
    output: Output,
    /// The step lines, in order.
    steps: Vec<serde_json::Value>,
    /// The model printed last (empty if the script never got there).
    writes: Model,
}

/// Runs `client`'s script against 127.0.0.1:`port` with `steps`, every key under `prefix`.
fn run_app(client: Client, port: u16, prefix: &str, steps: &str) -> AppRun {
    // The in-process client needs none of the installed libraries.
    let external = (!matches!(client, Client::RedisRs))
        .then(|| client.command(&clients_dir()))
        .flatten();
    let output = match external {
        Some(mut cmd) => {
            cmd.args(["--port", &port.to_string(), "--prefix", prefix, "--steps", steps]);
            run_bounded(cmd, SCRIPT_TIMEOUT)
        }
        None => run_in_process(port, prefix, steps),
    };
    let mut run = AppRun {
        label: format!("{} on port {port}, prefix {prefix}", client.name()),
        output,
        steps: Vec::new(),
        writes: Model::new(),
    };
    for line in run.output.stdout.lines() {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(writes) = json.get("writes").and_then(|w| w.as_object()) {
            run.writes = writes.iter().map(|(k, v)| (k.clone(), expected(k, v))).collect();
        } else if json.get("step").is_some() {
            run.steps.push(json);
        }
    }
    run
}

/// Reads one model entry.
fn expected(key: &str, value: &serde_json::Value) -> Expected {
    match value {
        serde_json::Value::Null => Expected::Absent,
        serde_json::Value::String(s) => Expected::Text(s.clone()),
        serde_json::Value::Array(items) => Expected::List(
            items
                .iter()
                .map(|i| i.as_str().expect("list items are strings").to_string())
                .collect(),
        ),
        other => panic!("model entry {key}: unexpected {other}"),
    }
}

impl AppRun {
    /// Everything wrong with the run: a wanted step that is missing or failed, a bad exit.
    fn failures(&self, wanted: &str) -> Vec<String> {
        let mut out = Vec::new();
        for name in wanted.split(',') {
            match self.steps.iter().find(|s| s["step"] == name) {
                None => out.push(format!("step {name}: no result")),
                Some(s) if s["ok"] != true => out.push(format!("step {name}: {}", s["error"])),
                Some(_) => {}
            }
        }
        if self.output.timed_out {
            out.push(format!("killed after {SCRIPT_TIMEOUT:?}"));
        } else if self.output.code != Some(0) && out.is_empty() {
            out.push(format!("exit code {:?}", self.output.code));
        }
        out
    }

    /// The RESP version the `connect` step reported.
    fn protocol(&self) -> Option<u64> {
        self.steps
            .iter()
            .find(|s| s["step"] == "connect")
            .and_then(|s| s["protocol"].as_u64())
    }

    /// The script's whole output, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- {} ---\n{}--- stderr ---\n{}",
            self.label, self.output.stdout, self.output.stderr
        )
    }

    /// Panics with the transcript unless every step of `wanted` passed.
    fn assert_ok(&self, wanted: &str) {
        let failures = self.failures(wanted);
        assert!(
            failures.is_empty(),
            "{}: {failures:#?}\n{}",
            self.label,
            self.transcript()
        );
    }
}

/// A key as read from one side: its type, a canonical rendering of its value, whether it has a TTL.
#[derive(Debug, Clone, PartialEq)]
struct KeyState {
    kind: String,
    value: String,
    ttl: bool,
}

/// Reads `key` from a side (`None`: no such key).
fn key_state(conn: &mut dyn redis::ConnectionLike, key: &str) -> Option<KeyState> {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    let q = |conn: &mut dyn redis::ConnectionLike, args: &[&str]| -> redis::Value {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(conn).unwrap()
    };
    let value = match kind.as_str() {
        "none" => return None,
        "string" => {
            let v: Vec<u8> = redis::cmd("GET").arg(key).query(conn).unwrap();
            String::from_utf8_lossy(&v).into_owned()
        }
        "list" => {
            let v: Vec<String> = redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).unwrap();
            format!("{v:?}")
        }
        "hash" => {
            let mut v: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query(conn).unwrap();
            v.sort();
            format!("{v:?}")
        }
        "set" => {
            let mut v: Vec<String> = redis::cmd("SMEMBERS").arg(key).query(conn).unwrap();
            v.sort();
            format!("{v:?}")
        }
        "zset" => format!("{:?}", q(conn, &["ZRANGE", key, "0", "-1", "WITHSCORES"])),
        _ => format!("{:?}", q(conn, &["DUMP", key])),
    };
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(conn).unwrap();
    Some(KeyState {
        kind,
        value,
        ttl: ttl > 0,
    })
}

/// Whether `state` is what the model expects.
fn matches(expected: &Expected, state: &Option<KeyState>) -> bool {
    match (expected, state) {
        (Expected::Absent, None) => true,
        (Expected::Text(t), Some(s)) => s.kind == "string" && s.value == *t,
        (Expected::List(l), Some(s)) => s.kind == "list" && s.value == format!("{l:?}"),
        _ => false,
    }
}

/// Every key matching `pattern` on one node (a full SCAN).
fn scan(conn: &mut redis::Connection, pattern: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Every key under `prefix` on the old Redis.
fn old_keys(sb: &Sandbox, prefix: &str) -> BTreeSet<String> {
    scan(&mut sb.source.conn(), &format!("{prefix}*"))
}

/// Every key under `prefix` on the new cluster (every master scanned).
fn new_keys(sb: &Sandbox, prefix: &str) -> BTreeSet<String> {
    sb.target
        .masters()
        .iter()
        .flat_map(|m| scan(&mut m.conn(), &format!("{prefix}*")))
        .collect()
}

/// Every difference between old and new over the keys under `prefix`, and between each side and
/// `model`.
fn differences(sb: &Sandbox, prefix: &str, model: &Model) -> Vec<String> {
    let (mut old, mut new) = (sb.source.conn(), sb.target.cluster_conn());
    let mut keys = old_keys(sb, prefix);
    keys.extend(new_keys(sb, prefix));
    let mut out = Vec::new();
    for key in &keys {
        let (o, n) = (key_state(&mut old, key), key_state(&mut new, key));
        if o != n {
            out.push(format!("{key}: old {o:?}, new {n:?}"));
        }
    }
    for (key, want) in model {
        for (side, state) in [
            ("old", key_state(&mut old, key)),
            ("new", key_state(&mut new, key)),
        ] {
            if !matches(want, &state) {
                out.push(format!("{key}: {side} {state:?}, the model says {want:?}"));
            }
        }
    }
    out
}

/// Differences in `planned`, where nothing may reach new: old must match `model` and new must
/// hold no key under `prefix`.
fn planned_differences(sb: &Sandbox, prefix: &str, model: &Model) -> Vec<String> {
    let mut old = sb.source.conn();
    let mut out: Vec<String> = new_keys(sb, prefix)
        .into_iter()
        .map(|k| format!("{k}: on new although the mirror is off"))
        .collect();
    for (key, want) in model {
        let state = key_state(&mut old, key);
        if !matches(want, &state) {
            out.push(format!("{key}: old {state:?}, the model says {want:?}"));
        }
    }
    out
}

/// Panics unless the keys under `prefix` on one backend are exactly the model's present keys,
/// each holding what the model says (proves a script's model complete and right).
fn assert_model_holds(
    what: &str,
    conn: &mut dyn redis::ConnectionLike,
    keys: BTreeSet<String>,
    run: &AppRun,
) {
    let present: BTreeSet<String> = run
        .writes
        .iter()
        .filter(|(_, e)| **e != Expected::Absent)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        keys,
        present,
        "{what}: keys written vs the model\n{}",
        run.transcript()
    );
    for (key, want) in &run.writes {
        let state = key_state(conn, key);
        assert!(
            matches(want, &state),
            "{what}: {key} holds {state:?}, the model says {want:?}\n{}",
            run.transcript()
        );
    }
}

/// Every step of `client` against plain Redis (and its cluster mode against a real cluster):
/// each passes, the default protocol is spoken, and the model is exactly what Redis holds.
fn baseline(client: Client) {
    // `cluster` needs a cluster to talk to; every other step runs against a standalone server.
    let standalone: Vec<&str> = ALL_STEPS.split(',').filter(|s| *s != "cluster").collect();
    let standalone = standalone.join(",");
    let server = RedisServer::start();
    let prefix = format!("token:base:{}:", client.name());
    let run = run_app(client, server.port(), &prefix, &standalone);
    run.assert_ok(&standalone);
    assert_eq!(
        run.protocol(),
        Some(client.default_protocol()),
        "the default protocol\n{}",
        run.transcript()
    );
    let keys = scan(&mut server.conn(), &format!("{prefix}*"));
    assert_model_holds("standalone", &mut server.conn(), keys, &run);

    let cluster = RedisCluster::start(3, 0);
    let run = run_app(client, cluster.masters()[0].port(), &prefix, "cluster");
    run.assert_ok("cluster");
    let keys = cluster
        .masters()
        .iter()
        .flat_map(|m| scan(&mut m.conn(), &format!("{prefix}*")))
        .collect();
    assert_model_holds("cluster", &mut cluster.cluster_conn(), keys, &run);
}

/// The proxy's `/status`, or `None` when it does not answer (e.g. it exited).
fn try_status(proxy: &ProxyProcess) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.metrics_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// The last `n` lines the proxy logged.
fn log_tail(proxy: &ProxyProcess, n: usize) -> String {
    let log = proxy.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until the proxy's `/status` satisfies `done`; panics naming `what`, with the last status
/// seen and the proxy's log (which shows why, if it stopped answering), after [`SETTLE_TIMEOUT`].
fn wait_status(proxy: &ProxyProcess, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = None;
    loop {
        last = try_status(proxy).or(last);
        if last.as_ref().is_some_and(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {SETTLE_TIMEOUT:?} waiting for {what}; last /status: {last:?}\n--- proxy log ---\n{}",
            log_tail(proxy, 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Puts `phase` in force at the next generation and waits until the proxy routes by it. Entering
/// `write-stop` switches the write primary, so it goes through the fence first, as `advance` does.
fn enter(sb: &Sandbox, proxy: &ProxyProcess, generation: &mut u64, phase: &str) {
    let applied = |g: u64| move |s: &serde_json::Value| s["generation"].as_u64() == Some(g);
    if phase == "write-stop" {
        *generation += 1;
        set_phase(&sb.flag_path(), "read-cutover", *generation, true, 0.0);
        wait_status(proxy, "the fence generation applied", applied(*generation));
        wait_status(proxy, "the fence drained", |s| s["fence"] == "drained");
    }
    *generation += 1;
    set_phase(&sb.flag_path(), phase, *generation, false, 0.0);
    wait_status(proxy, &format!("{phase} applied"), applied(*generation));
}

/// [`PROXY_STEPS`] of `client` through a proxy in each of [`PHASES`]; after each phase, old and
/// new compared key by key and against the model. Every phase runs even when one fails, so the
/// report shows the whole picture.
fn through_the_proxy(client: Client) {
    let steps = std::env::var("CACHEMIG_PROXY_STEPS").unwrap_or_else(|_| PROXY_STEPS.to_string());
    let mut sb = Sandbox::start();
    // The default 100 ms for a synchronous mirror is too tight for a loaded test machine: after
    // read-cutover a mirror that times out is the client's error (as tests/proxy_mirror.rs shows).
    sb.set_plan_extra("[dual_write]\nsync_timeout_ms = 5000\n");
    let proxy = ProxyProcess::start(&sb, "p1");
    let root = format!("token:app:{}:", client.name());
    let (mut generation, mut model, mut problems) = (0, Model::new(), Vec::new());
    let mut transcripts = String::new();
    for phase in PHASES {
        enter(&sb, &proxy, &mut generation, phase);
        let prefix = format!("{root}{phase}:");
        let run = run_app(client, proxy.port, &prefix, &steps);
        let mut found = run.failures(&steps);
        if run.protocol().is_some_and(|p| p != client.default_protocol()) {
            found.push(format!(
                "connect: spoke RESP{} instead of the default RESP{}",
                run.protocol().unwrap(),
                client.default_protocol()
            ));
        }
        wait_status(&proxy, "the mirror drained", |s| s["mirror"]["drained"] == true);
        if phase == "planned" {
            found.extend(planned_differences(&sb, &prefix, &run.writes));
            // The catch-up that `advance` runs before the dual-write phases.
            sb.cachemig(&["verify", "--repair"]).assert_success();
        }
        model.extend(run.writes.clone());
        found.extend(differences(&sb, &root, &model));
        problems.extend(found.into_iter().map(|p| format!("{phase}: {p}")));
        transcripts.push_str(&run.transcript());
    }
    assert!(
        problems.is_empty(),
        "{} through the proxy, steps {steps}: {problems:#?}\n{transcripts}--- proxy log (last lines) ---\n{}",
        client.name(),
        log_tail(&proxy, 40)
    );
}

/// node-redis's opt-in client-side cache (`RESP: 3, clientSideCache`; no popular client enables
/// one by default, and redis-py's `cache_config` wants Redis 7.4): against Redis a write by
/// another client invalidates the cached value; through the proxy, which refuses `CLIENT
/// TRACKING`, the client fails at connect with that refusal instead of serving stale values.
#[test]
fn node_redis_client_side_cache_fails_clearly_at_connect_through_the_proxy() {
    let tracking = |run: &AppRun| {
        run.assert_ok("tracking");
        let step = run.steps.iter().find(|s| s["step"] == "tracking").unwrap();
        step["tracking"].as_str().unwrap_or_default().to_string()
    };
    let server = RedisServer::start();
    let run = run_app(Client::NodeRedis, server.port(), "token:csc:base:", "tracking");
    assert_eq!(tracking(&run), "on", "{}", run.transcript());
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let mut generation = 0;
    let mut model = Model::new();
    for phase in ["planned", "sync-dual-write", "read-cutover"] {
        enter(&sb, &proxy, &mut generation, phase);
        let run = run_app(
            Client::NodeRedis,
            proxy.port,
            &format!("token:csc:{phase}:"),
            "tracking",
        );
        assert_eq!(tracking(&run), "refused", "{phase}\n{}", run.transcript());
        wait_status(&proxy, "the mirror drained", |s| s["mirror"]["drained"] == true);
        if phase == "planned" {
            sb.cachemig(&["verify", "--repair"]).assert_success();
        }
        model.extend(run.writes.clone());
        let found = differences(&sb, "token:csc:", &model);
        assert!(found.is_empty(), "{phase}: {found:#?}");
    }
}

#[test]
fn redis_py_8_passes_every_step_against_plain_redis() {
    baseline(Client::RedisPy8);
}

#[test]
fn redis_py_5_passes_every_step_against_plain_redis() {
    baseline(Client::RedisPy5);
}

#[test]
fn node_redis_passes_every_step_against_plain_redis() {
    baseline(Client::NodeRedis);
}

#[test]
fn ioredis_passes_every_step_against_plain_redis() {
    baseline(Client::Ioredis);
}

#[test]
fn redis_rs_passes_every_step_against_plain_redis() {
    baseline(Client::RedisRs);
}

#[test]
fn redis_rs_works_through_the_proxy_in_every_phase() {
    through_the_proxy(Client::RedisRs);
}

#[test]
fn redis_py_8_works_through_the_proxy_in_every_phase() {
    through_the_proxy(Client::RedisPy8);
}

#[test]
fn redis_py_5_works_through_the_proxy_in_every_phase() {
    through_the_proxy(Client::RedisPy5);
}

#[test]
fn node_redis_works_through_the_proxy_in_every_phase() {
    through_the_proxy(Client::NodeRedis);
}

#[test]
fn ioredis_works_through_the_proxy_in_every_phase() {
    through_the_proxy(Client::Ioredis);
}
