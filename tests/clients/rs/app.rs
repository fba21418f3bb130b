//! The application's-eye steps of tests/clients/py/app.py, with redis-rs (the `redis` crate, a
//! dev-dependency) in its default configuration (RESP2), run in-process by tests/app_clients.rs.
//!
//! [`run`] prints what the scripts print: one JSON line per step, `{"step", "ok", "error", ...}`,
//! and last `{"writes": {KEY: "value" | ["list", "items"] | null}}`, the model of every
//! acknowledged write of the steps that passed.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use redis::{Direction, TypedCommands};
use serde_json::{Map, Value, json};

/// Every socket read or connect gives up after this long, so a step never hangs.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for waits on other threads (a producer, a competing writer, a subscriber).
const WAIT: Duration = Duration::from_secs(30);
/// The standard lock release: delete the key only if it still holds our token.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What a step wrote (key → model value) and extra facts worth printing.
type Step = Result<(Map<String, Value>, Map<String, Value>)>;

/// The steps, sharing the endpoint and the key prefix.
struct App {
    port: u16,
    prefix: String,
}

/// Runs `steps` (comma-separated) against 127.0.0.1:`port` with every key under `prefix`; the
/// output lines, and whether every step passed.
pub fn run(port: u16, prefix: &str, steps: &str) -> (String, bool) {
    let app = App {
        port,
        prefix: prefix.to_string(),
    };
    let (mut out, mut writes, mut all_ok) = (String::new(), Map::new(), true);
    for step in steps.split(',') {
        let mut line = json!({"step": step, "ok": false, "error": null});
        match app.step(step) {
            Ok((w, details)) => {
                writes.extend(w);
                line["ok"] = true.into();
                line.as_object_mut().unwrap().extend(details);
            }
            Err(e) => line["error"] = format!("{e:#}").into(),
        }
        all_ok &= line["ok"] == true;
        out += &format!("{line}\n");
    }
    out += &format!("{}\n", json!({"writes": writes, "library": "redis-rs 1.x"}));
    (out, all_ok)
}

impl App {
    fn step(&self, name: &str) -> Step {
        match name {
            "connect" => self.connect(),
            "pipeline" => self.pipeline(),
            "transaction" => self.transaction(),
            "watch" => self.watch(),
            "lock" => self.lock(),
            "blmove" => self.blmove(),
            "pubsub" => self.pubsub(),
            "scan" => self.scan(),
            "cluster" => self.cluster(),
            other => bail!("unknown step {other}"),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A key whose hash tag puts every key of `group` in one slot.
    fn slot_key(&self, group: &str, name: &str) -> String {
        format!("{}{{{group}}}:{name}", self.prefix)
    }

    /// The library's client as an application makes it: defaults (protocol included).
    fn library(&self) -> Result<redis::Client> {
        Ok(redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?)
    }

    /// A connection of [`App::library`]'s, with timeouts so a step never hangs.
    fn client(&self) -> Result<redis::Connection> {
        let con = self.library()?.get_connection_with_timeout(SOCKET_TIMEOUT)?;
        con.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        con.set_write_timeout(Some(SOCKET_TIMEOUT))?;
        Ok(con)
    }

    /// PING, then SET and GET one key.
    fn connect(&self) -> Step {
        let mut r = self.client()?;
        let pong: String = redis::cmd("PING").query(&mut r)?;
        ensure!(pong == "PONG", "PING answered {pong}");
        let k = self.key("hello");
        r.set(&k, "world")?;
        let got = r.get(&k)?;
        ensure!(got.as_deref() == Some("world"), "GET {k} = {got:?}");
        let protocol = match self.library()?.get_connection_info().redis_settings().protocol() {
            redis::ProtocolVersion::RESP2 => 2,
            _ => 3,
        };
        Ok((
            model([(k, json!("world"))]),
            model([("protocol".into(), json!(protocol))]),
        ))
    }

    /// A non-transactional pipeline of 100 commands over keys in many slots.
    fn pipeline(&self) -> Step {
        let mut r = self.client()?;
        let mut pipe = redis::pipe();
        let counter = self.key("pipe:counter");
        for i in 0..40 {
            pipe.set(self.key(&format!("pipe:{i}")), format!("v{i}"));
        }
        for _ in 0..40 {
            pipe.incr(&counter, 1);
        }
        for i in 0..20 {
            pipe.get(self.key(&format!("pipe:{i}")));
        }
        let all: Vec<redis::Value> = pipe.query(&mut r)?;
        ensure!(all.len() == 100, "{} replies to 100 commands", all.len());
        ensure!(
            all[..40].iter().all(|v| *v == redis::Value::Okay),
            "SET replies: {:?}",
            &all[..40]
        );
        let incrs: Vec<i64> = all[40..80]
            .iter()
            .map(redis::from_redis_value_ref)
            .collect::<Result<_, _>>()?;
        let gets: Vec<String> = all[80..]
            .iter()
            .map(redis::from_redis_value_ref)
            .collect::<Result<_, _>>()?;
        ensure!(incrs == (1..=40).collect::<Vec<i64>>(), "INCR replies: {incrs:?}");
        ensure!(
            gets == (0..20).map(|i| format!("v{i}")).collect::<Vec<_>>(),
            "GET replies: {gets:?}"
        );
        let mut writes: Map<String, Value> = (0..40)
            .map(|i| (self.key(&format!("pipe:{i}")), json!(format!("v{i}"))))
            .collect();
        writes.insert(counter, json!("40"));
        Ok((writes, Map::new()))
    }

    /// An atomic pipeline (MULTI/EXEC), five times, on keys of one slot.
    fn transaction(&self) -> Step {
        let mut r = self.client()?;
        let [a, b, c] = ["a", "b", "c"].map(|n| self.slot_key("tx", n));
        for n in 1..=5i64 {
            let (x, y, z, got): (i64, i64, String, String) = redis::pipe()
                .atomic()
                .incr(&a, 1)
                .incr(&b, 2)
                .set(&c, format!("round-{n}"))
                .get(&a)
                .query(&mut r)?;
            ensure!(
                (x, y, z.as_str(), got.clone()) == (n, 2 * n, "OK", n.to_string()),
                "round {n}: EXEC replied {x} {y} {z} {got}"
            );
        }
        Ok((
            model([(a, json!("5")), (b, json!("10")), (c, json!("round-5"))]),
            Map::new(),
        ))
    }

    /// `redis::transaction` (WATCH, GET, MULTI, SET, EXEC, retried on a null EXEC) racing plain
    /// INCRs from another connection; no increment may be lost.
    fn watch(&self) -> Step {
        let k = self.key("watch:counter");
        let rounds = 30;
        let mut other = self.client()?;
        let key = k.clone();
        let racer = thread::spawn(move || -> Result<()> {
            for _ in 0..rounds {
                other.incr(&key, 1)?;
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        let mut r = self.client()?;
        let mut attempts = 0;
        for _ in 0..rounds {
            // An EXEC answered with null (the watched key changed) yields None: the helper retries.
            let () = redis::transaction(&mut r, &[&k], |con, pipe| {
                attempts += 1;
                let current: Option<i64> = redis::cmd("GET").arg(&k).query(con)?;
                pipe.set(&k, current.unwrap_or(0) + 1).ignore().query(con)
            })?;
        }
        racer
            .join()
            .expect("the racing writer panicked")
            .context("concurrent INCR")?;
        let got = r.get(&k)?;
        let want = (2 * rounds).to_string();
        ensure!(
            got.as_deref() == Some(want.as_str()),
            "{k} = {got:?}, expected {want}"
        );
        Ok((
            model([(k, json!(want))]),
            model([("conflicts".into(), json!(attempts - rounds))]),
        ))
    }

    /// A lock (SET NX PX to acquire, the Lua release by EVALSHA, falling back to EVAL), two
    /// threads taking turns to read-modify-write a counter under it.
    fn lock(&self) -> Step {
        let (name, counter) = (self.key("lock"), self.key("lock:counter"));
        let per_thread = 10;
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (mut r, name, counter) = (self.client(), name.clone(), counter.clone());
                thread::spawn(move || -> Result<()> {
                    let r = r.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let release = redis::Script::new(RELEASE);
                    for i in 0..per_thread {
                        let token = format!("worker-{w}-{i}");
                        acquire(r, &name, &token)?;
                        let value: i64 = r.get(&counter)?.map_or(Ok(0), |v| v.parse())?;
                        thread::sleep(Duration::from_millis(1));
                        r.set(&counter, value + 1)?;
                        let released: i64 = release.key(&name).arg(&token).invoke(r)?;
                        ensure!(released == 1, "the release found the lock gone");
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a lock worker panicked")?;
        }
        let mut r = self.client()?;
        let got = r.get(&counter)?;
        ensure!(
            got.as_deref() == Some("20"),
            "{counter} = {got:?}: the lock let an update through"
        );
        ensure!(!r.exists(&name)?, "the lock key is still there after release");
        Ok((model([(counter, json!("20")), (name, Value::Null)]), Map::new()))
    }

    /// A worker takes jobs with BLMOVE (blocking when the queue is empty) while another client
    /// fills the queue; every job is taken exactly once, in order.
    fn blmove(&self) -> Step {
        let (queue, done) = (self.slot_key("queue", "jobs"), self.slot_key("queue", "done"));
        let jobs: Vec<String> = (0..60).map(|i| format!("job-{i}")).collect();
        let (mut p, q, all) = (self.client()?, queue.clone(), jobs.clone());
        let producer = thread::spawn(move || -> Result<()> {
            for (i, job) in all.iter().enumerate() {
                p.rpush(&q, job)?;
                if i % 10 == 9 {
                    thread::sleep(Duration::from_millis(50)); // the worker drains and blocks
                }
            }
            Ok(())
        });
        let mut r = self.client()?;
        let (mut taken, deadline) = (Vec::new(), Instant::now() + WAIT);
        while taken.len() < jobs.len() && Instant::now() < deadline {
            let job = r.blmove(&queue, &done, Direction::Left, Direction::Right, 1.0)?;
            taken.extend(job);
        }
        producer
            .join()
            .expect("the producer panicked")
            .context("producer")?;
        ensure!(
            taken == jobs,
            "took {} of {} jobs: {taken:?}",
            taken.len(),
            jobs.len()
        );
        ensure!(r.llen(&queue)? == 0, "jobs left in the queue");
        let in_done: Vec<String> = r.lrange(&done, 0, -1)?;
        ensure!(in_done == jobs, "done list holds {in_done:?}");
        Ok((model([(queue, Value::Null), (done, json!(jobs))]), Map::new()))
    }

    /// A subscriber receives every message published by another client, in order.
    fn pubsub(&self) -> Step {
        let channel = self.key("channel");
        let messages: Vec<String> = (0..50).map(|i| format!("m-{i}")).collect();
        let mut sub = self.client()?;
        let mut sub = sub.as_pubsub();
        sub.subscribe(&channel)?; // returns once the subscription is confirmed
        sub.set_read_timeout(Some(WAIT))?;
        let mut publisher = self.client()?;
        for m in &messages {
            let n = publisher.publish(&channel, m)?;
            ensure!(n >= 1, "PUBLISH reached {n} subscribers");
        }
        let mut got = Vec::new();
        while got.len() < messages.len() {
            got.push(
                sub.get_message()
                    .context("waiting for a message")?
                    .get_payload::<String>()?,
            );
        }
        sub.unsubscribe(&channel)?;
        ensure!(got == messages, "received {got:?}");
        Ok((Map::new(), Map::new()))
    }

    /// A full SCAN MATCH iteration (the library's iterator) finds every key written.
    fn scan(&self) -> Step {
        let mut r = self.client()?;
        let keys: Map<String, Value> = (0..50)
            .map(|i| (self.key(&format!("scan:{i}")), json!(format!("s{i}"))))
            .collect();
        let mut pipe = redis::pipe();
        for (k, v) in &keys {
            pipe.set(k, v.as_str().unwrap()).ignore();
        }
        pipe.exec(&mut r)?;
        let found: BTreeSet<String> = r
            .scan_match::<_, String>(self.key("scan:*"))?
            .collect::<Result<_, _>>()?;
        let want: BTreeSet<String> = keys.keys().cloned().collect();
        ensure!(found == want, "SCAN found {} of {}", found.len(), want.len());
        Ok((keys, Map::new()))
    }

    /// The library's cluster client pointed at the port: SET, GET and INCR on keys in
    /// different slots.
    fn cluster(&self) -> Step {
        let client =
            redis::cluster::ClusterClient::builder(vec![format!("redis://127.0.0.1:{}/", self.port)])
                .connection_timeout(SOCKET_TIMEOUT)
                .response_timeout(SOCKET_TIMEOUT)
                .build()?;
        let mut rc = client.get_connection()?;
        let mut writes = Map::new();
        for i in 0..12 {
            let (k, counter) = (
                self.key(&format!("cluster:{i}")),
                self.key(&format!("cluster:counter:{i}")),
            );
            rc.set(&k, format!("c{i}"))?;
            let got = rc.get(&k)?;
            ensure!(got == Some(format!("c{i}")), "GET {k} = {got:?}");
            ensure!(
                rc.incr(&counter, 1)? == 1 && rc.incr(&counter, 4)? == 5,
                "INCR {counter}"
            );
            writes.insert(k, json!(format!("c{i}")));
            writes.insert(counter, json!("5"));
        }
        Ok((writes, Map::new()))
    }
}

/// Takes the lock `name` with `token` (SET NX PX), retrying until [`WAIT`] passed.
fn acquire(r: &mut redis::Connection, name: &str, token: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let opts = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(10_000));
    loop {
        let taken = r.set_options(name, token, opts.clone())?;
        if taken.is_some() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "could not acquire the lock");
        thread::sleep(Duration::from_millis(1));
    }
}

fn model<const N: usize>(entries: [(String, Value); N]) -> Map<String, Value> {
    entries.into_iter().collect()
}
