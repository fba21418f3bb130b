//! A writer load for the fault-matrix rows: writers through real proxies, every acknowledged
//! write kept in a model, old and new compared with the model key by key at the end; and the
//! CLI walked forward as an operator would (once the next step's gates pass).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::compare::canonical;
use super::proxy::ProxyProcess;
use super::sandbox::Sandbox;

/// What a key holds according to the acknowledged writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (SET, INCR).
    Text(String),
    /// A list (RPUSH).
    List(Vec<String>),
}

/// Key → value, for every acknowledged write.
pub type Model = BTreeMap<String, Value>;

/// Plan settings that let the gates pass quickly with real proxies (no soak, a few shadow
/// samples), `expected` proxies that must ack and `proxies` further lines of `[proxies]`.
pub fn configure(sb: &mut Sandbox, expected: u32, proxies: &str) {
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 5000\n\n[shadow_read]\nsample_rate = 0.5\nmin_samples = 5\nmax_mismatch_ratio = 0.5\n",
    );
    let proxies = format!("max_write_pause = \"5s\"\n{proxies}");
    super::reports::expect_proxies(sb, expected, &proxies);
}

/// A client that does what redis-py's `Retry`, ioredis (`autoResendUnfulfilledCommands`) and
/// go-redis do: when its connection is closed or reset before a request's reply, it opens a new
/// connection and sends the request again. (Safe with a proxy that closes connections only for
/// a restart, at a request boundary: a request without a reply was not executed.)
pub struct Reconnecting {
    port: u16,
    conn: Option<redis::Connection>,
    /// How many times the connection was replaced.
    pub reconnects: u64,
}

/// How long a [`Reconnecting`] client keeps trying before it reports the error.
const RETRY_FOR: Duration = Duration::from_secs(20);

impl Reconnecting {
    /// A client of the proxy on `port` (connects on first use).
    pub fn new(port: u16) -> Reconnecting {
        Reconnecting {
            port,
            conn: None,
            reconnects: 0,
        }
    }

    /// Runs `cmd`, resending it on a new connection if the connection drops before its reply.
    pub fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let result = self.connection().and_then(|c| cmd.query(c));
            match result {
                Err(e) if e.is_connection_dropped() && Instant::now() < deadline => {
                    self.conn = None;
                    self.reconnects += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
            let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }
}

/// What the writers did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every acknowledged write.
    pub model: Model,
    /// Requests acknowledged.
    pub ops: u64,
    /// Errors the clients saw (after their retries), with the request.
    pub errors: Vec<String>,
    /// Connections replaced by the clients.
    pub reconnects: u64,
}

/// Writers issuing INCR, RPUSH, SET and GET (checked against the model) on keys of their own,
/// each through one of the proxies (by port), until [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Outcome>>,
    ops: Arc<Mutex<u64>>,
}

impl Writers {
    /// `writers` writers on keys `{prefix}:w{W}:…`, writer W through `ports[W % ports.len()]`.
    pub fn start(prefix: &str, ports: &[u16], writers: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(0));
        let threads = (0..writers)
            .map(|w| {
                let (stop, ops) = (stop.clone(), ops.clone());
                let port = ports[w % ports.len()];
                let prefix = format!("{prefix}:w{w}");
                std::thread::spawn(move || write_until(&prefix, port, &stop, &ops))
            })
            .collect();
        Writers { stop, threads, ops }
    }

    /// Requests acknowledged so far, all writers together.
    pub fn ops(&self) -> u64 {
        *self.ops.lock().unwrap()
    }

    /// Waits until `more` further requests were acknowledged (the load is running).
    pub fn wait_progress(&self, more: u64) {
        let target = self.ops() + more;
        super::wait_for("writer progress", Duration::from_secs(30), || {
            self.ops() >= target
        });
    }

    /// Stops the writers; what they did, all together.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Outcome::default();
        for t in self.threads {
            let o = t.join().expect("a writer panicked");
            all.model.extend(o.model);
            all.ops += o.ops;
            all.errors.extend(o.errors);
            all.reconnects += o.reconnects;
        }
        all
    }
}

/// Keys per writer.
const KEYS: u64 = 8;

fn write_until(prefix: &str, port: u16, stop: &AtomicBool, ops: &Mutex<u64>) -> Outcome {
    let mut client = Reconnecting::new(port);
    let mut out = Outcome::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        match step(&mut client, &mut out.model, prefix, n) {
            Ok(()) => {
                out.ops += 1;
                *ops.lock().unwrap() += 1;
            }
            Err(e) => out.errors.push(e),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    out.reconnects = client.reconnects;
    out
}

/// One request of a writer, chosen by `n`; the model follows what was acknowledged.
fn step(client: &mut Reconnecting, model: &mut Model, prefix: &str, n: u64) -> Result<(), String> {
    let i = n % KEYS;
    let fail = |what: &str, e: redis::RedisError| format!("{what}: {e}");
    match (n / KEYS) % 4 {
        0 => {
            let key = format!("{prefix}:counter{i}");
            let got: i64 = client
                .query(redis::cmd("INCR").arg(&key))
                .map_err(|e| fail(&format!("INCR {key}"), e))?;
            model.insert(key, Value::Text(got.to_string()));
        }
        1 => {
            let key = format!("{prefix}:list{i}");
            let item = format!("i{n}");
            let len: usize = client
                .query(redis::cmd("RPUSH").arg(&key).arg(&item))
                .map_err(|e| fail(&format!("RPUSH {key}"), e))?;
            let list = match model.entry(key.clone()).or_insert(Value::List(Vec::new())) {
                Value::List(l) => l,
                Value::Text(_) => unreachable!("list keys hold lists"),
            };
            list.push(item);
            if len != list.len() {
                return Err(format!("RPUSH {key}: length {len}, the model has {}", list.len()));
            }
        }
        2 => {
            let key = format!("{prefix}:text{i}");
            let value = format!("v{n}");
            let () = client
                .query(redis::cmd("SET").arg(&key).arg(&value))
                .map_err(|e| fail(&format!("SET {key}"), e))?;
            model.insert(key, Value::Text(value));
        }
        _ => {
            let key = format!("{prefix}:text{i}");
            let got: Option<String> = client
                .query(redis::cmd("GET").arg(&key))
                .map_err(|e| fail(&format!("GET {key}"), e))?;
            let want = match model.get(&key) {
                Some(Value::Text(v)) => Some(v.clone()),
                _ => None,
            };
            if got != want {
                return Err(format!("GET {key}: {got:?}, the model has {want:?}"));
            }
        }
    }
    Ok(())
}

/// The keys whose value on old or new differs from the model (in the form of
/// [`canonical`](super::compare::canonical)); empty when both sides hold every acknowledged write.
pub fn differences(sb: &Sandbox, model: &Model) -> Vec<String> {
    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    differences_on(&mut old, &mut new, model)
}

/// [`differences`] with the connections given (e.g. old's database 3 as an ACL user).
pub fn differences_on(
    old: &mut dyn redis::ConnectionLike,
    new: &mut dyn redis::ConnectionLike,
    model: &Model,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in model {
        let want = Some(match value {
            Value::Text(v) => format!("string:{:?} ttl:false", vec![v]),
            Value::List(l) => format!("list:{l:?} ttl:false"),
        });
        let got = [("old", canonical(old, key)), ("new", canonical(new, key))];
        for (side, got) in got {
            if got != want {
                out.push(format!("{side} {key}: {got:?}, the model has {want:?}"));
            }
        }
    }
    out
}

/// Waits until every proxy routes by the flag file's generation.
pub fn settle(sb: &Sandbox, proxies: &[&ProxyProcess]) {
    let generation = sb.flag().map_or(0, |f| f.generation);
    for p in proxies {
        p.wait_generation(generation);
    }
}

/// How long the next step's gates may take to pass.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits, as an operator would, until `plan --detailed-exitcode` says the next step's gates
/// pass (exit 4); the last output names the gate that blocked when it times out. Before a step
/// that needs a fresh verify (the `verified` gate), runs it, as the operator would.
pub fn wait_ready(sb: &Sandbox) {
    let current = sb.flag().map_or("planned".to_string(), |f| f.phase);
    let next = cachemig::phase::Catalog::builtin()
        .next(&current)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    if super::reports::needs_verify(&next) {
        super::reports::verify_for_gate(sb);
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let run = sb.cachemig(&["plan", "--detailed-exitcode"]);
        if run.status == 4 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the next step's gates did not pass within {READY_TIMEOUT:?} (exit {}):\n{}\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Advances, one step at a time and each once its gates pass ([`wait_ready`]), until `phase` is
/// in force; every proxy follows each generation.
pub fn advance_to(sb: &Sandbox, proxies: &[&ProxyProcess], phase: &str) {
    while sb.flag().map(|f| f.phase) != Some(phase.to_string()) {
        settle(sb, proxies);
        wait_ready(sb);
        sb.cachemig(&["advance", "--yes"]).assert_success();
    }
    settle(sb, proxies);
}
