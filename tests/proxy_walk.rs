//! The heart of design §8: two real proxies, concurrent writers issuing SET, INCR, LPUSH,
//! HINCRBY, SADD, EXPIRE and DEL, transactions and Lua scripts (EVALSHA), half of them in RESP3
//! (also on keys that exist before the backfill and keys it never saw), a blocking queue (BLMOVE
//! worker and producer) and a pub/sub subscriber, while the CLI walks every phase forward, back
//! from write-stop and forward again. At the end both sides equal an in-memory model of every
//! acknowledged write, every queue item was taken exactly once and every message heard. Also:
//! the CLI's fence with a proxy that stops acking.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::load::settle;
use common::proxy::ProxyProcess;
use common::reports::expect_proxies;
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

/// What a key holds according to the acknowledged writes.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    List(Vec<String>),
    Hash(BTreeMap<String, i64>),
    Set(BTreeSet<String>),
}

/// Key → (value, has a TTL).
type Model = BTreeMap<String, (Value, bool)>;

const KEYS_PER_WRITER: usize = 40;
const WRITERS: usize = 4;

fn sandbox() -> Sandbox {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 5000\n\n[shadow_read]\nsample_rate = 0.5\nmin_samples = 5\nmax_mismatch_ratio = 0.5\n",
    );
    expect_proxies(&sb, 2, "max_write_pause = \"5s\"\n");
    sb
}

/// One acknowledged operation of writer `w`, chosen by `n`; updates the model.
fn step(conn: &mut redis::Connection, model: &mut Model, w: usize, n: u64) -> redis::RedisResult<()> {
    let i = (n * 7 + n / 3) as usize % KEYS_PER_WRITER;
    let key = format!("token:w{w}:{i}");
    let roll = (n * 2_654_435_761) % 100;
    if roll < 4 {
        let _: i64 = conn.del(&key)?;
        model.remove(&key);
        return Ok(());
    }
    if roll < 8 {
        let set: bool = conn.expire(&key, 3600)?;
        if let Some(entry) = model.get_mut(&key) {
            assert!(set, "EXPIRE on a key the model holds: {key}");
            entry.1 = true;
        }
        return Ok(());
    }
    if roll >= 92 {
        return tagged_step(conn, model, w, n, roll >= 96);
    }
    if roll < 30 && i.is_multiple_of(5) {
        let got: Option<String> = conn.get(&key)?;
        let want = match model.get(&key) {
            Some((Value::Text(t), _)) => Some(t.clone()),
            _ => None,
        };
        assert_eq!(got, want, "read-your-writes on {key} (op {n})");
        return Ok(());
    }
    let (value, ttl) = model.remove(&key).unwrap_or((empty(i), false));
    let value = match value {
        Value::Text(_) if i.is_multiple_of(5) => {
            let v = format!("v{n}");
            let _: () = conn.set(&key, &v)?;
            (Value::Text(v), false)
        }
        Value::Text(t) => {
            let next: i64 = conn.incr(&key, 1)?;
            assert_eq!(next, t.parse::<i64>().unwrap_or(0) + 1, "INCR on {key}");
            (Value::Text(next.to_string()), ttl)
        }
        Value::List(mut l) => {
            let _: i64 = conn.lpush(&key, n)?;
            l.insert(0, n.to_string());
            (Value::List(l), ttl)
        }
        Value::Hash(mut h) => {
            let field = format!("f{}", n % 3);
            let _: i64 = conn.hincr(&key, &field, 2)?;
            *h.entry(field).or_default() += 2;
            (Value::Hash(h), ttl)
        }
        Value::Set(mut s) => {
            let _: i64 = conn.sadd(&key, n % 10)?;
            s.insert((n % 10).to_string());
            (Value::Set(s), ttl)
        }
    };
    model.insert(key, value);
    Ok(())
}

/// Counters of writer `w` that share a hash tag, so a transaction or a script may take two of
/// them on a cluster primary.
const TAGGED: u64 = 4;

/// A transaction (`MULTI`/`EXEC` incrementing two tagged counters) or a script (`EVALSHA` of an
/// INCRBY, with the NOSCRIPT fallback of the client) on writer `w`'s tagged counters.
fn tagged_step(
    conn: &mut redis::Connection,
    model: &mut Model,
    w: usize,
    n: u64,
    transaction: bool,
) -> redis::RedisResult<()> {
    let key = |j: u64| format!("token:{{w{w}}}:t{j}");
    let (a, b) = (key(n % TAGGED), key((n + 1) % TAGGED));
    let current = |model: &Model, k: &str| match model.get(k) {
        Some((Value::Text(t), _)) => t.parse::<i64>().unwrap(),
        _ => 0,
    };
    let (want_a, want_b) = (current(model, &a) + 1, current(model, &b) + 2);
    if transaction {
        let (got_a, got_b): (i64, i64) = redis::pipe().atomic().incr(&a, 1).incr(&b, 2).query(conn)?;
        assert_eq!(
            (got_a, got_b),
            (want_a, want_b),
            "transaction on {a}, {b} (op {n})"
        );
    } else {
        let script = redis::Script::new(
            "return {redis.call('INCRBY', KEYS[1], ARGV[1]), redis.call('INCRBY', KEYS[2], ARGV[2])}",
        );
        let (got_a, got_b): (i64, i64) = script.key(&a).key(&b).arg(1).arg(2).invoke(conn)?;
        assert_eq!((got_a, got_b), (want_a, want_b), "script on {a}, {b} (op {n})");
    }
    model.insert(a, (Value::Text(want_a.to_string()), false));
    model.insert(b, (Value::Text(want_b.to_string()), false));
    Ok(())
}

/// The kind of value key number `i` holds (SET replaces TTLs, the others keep them).
fn empty(i: usize) -> Value {
    match i % 5 {
        0 => Value::Text(String::new()),
        1 => Value::Text("0".into()),
        2 => Value::List(Vec::new()),
        3 => Value::Hash(BTreeMap::new()),
        _ => Value::Set(BTreeSet::new()),
    }
}

/// Reads `key` from a side the way the model describes it.
fn observed(conn: &mut dyn redis::ConnectionLike, key: &str) -> Option<(Value, bool)> {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    let value = match kind.as_str() {
        "none" => return None,
        "string" => Value::Text(redis::cmd("GET").arg(key).query(conn).unwrap()),
        "list" => Value::List(redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).unwrap()),
        "hash" => Value::Hash(redis::cmd("HGETALL").arg(key).query(conn).unwrap()),
        "set" => Value::Set(redis::cmd("SMEMBERS").arg(key).query(conn).unwrap()),
        other => panic!("{key}: unexpected type {other}"),
    };
    let ttl: i64 = redis::cmd("TTL").arg(key).query(conn).unwrap();
    Some((value, ttl > 0))
}

/// Writers running against the proxies until stopped; each owns its keys, so its model is exact.
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(Model, u64)>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Writers {
    fn start(proxies: &[&ProxyProcess], seeded: &Model) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..WRITERS)
            .map(|w| {
                // Half the writers speak RESP3.
                let proxy = proxies[w % proxies.len()];
                let mut conn = if w / 2 % 2 == 0 {
                    proxy.conn()
                } else {
                    proxy.conn_resp3()
                };
                let mut model: Model = seeded
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("token:w{w}:")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let (stop, errors) = (stop.clone(), errors.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        if let Err(e) = step(&mut conn, &mut model, w, n) {
                            errors.lock().unwrap().push(format!("writer {w} op {n}: {e}"));
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    (model, n)
                })
            })
            .collect();
        Writers {
            stop,
            handles,
            errors,
        }
    }

    fn finish(self) -> (Model, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Model::new();
        let mut ops = 0;
        for h in self.handles {
            let (model, n) = h.join().expect("a writer panicked");
            all.extend(model);
            ops += n;
        }
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
        (all, ops)
    }
}

/// A blocking queue (a producer on one proxy, a BLMOVE worker on the other) and a pub/sub pair
/// (a publisher on one proxy, a subscriber on the other), running until stopped.
struct Apps {
    stop: Arc<AtomicBool>,
    producer: std::thread::JoinHandle<usize>,
    worker: std::thread::JoinHandle<Vec<String>>,
    publisher: std::thread::JoinHandle<usize>,
    subscriber: std::thread::JoinHandle<Vec<String>>,
}

const QUEUE: &str = "token:{queue}:in";
const TAKEN: &str = "token:{queue}:taken";

impl Apps {
    fn start(p1: &ProxyProcess, p2: &ProxyProcess) -> Apps {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut producer, mut worker, mut publisher) = (p1.conn(), p2.conn_resp3(), p2.conn());
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut sub = p1.conn();
        let subscriber = {
            let (stop, subscribed) = (stop.clone(), subscribed.clone());
            std::thread::spawn(move || {
                let mut pubsub = sub.as_pubsub();
                pubsub.subscribe("walk").unwrap();
                pubsub.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                subscribed.store(true, Ordering::SeqCst);
                let mut heard = Vec::new();
                loop {
                    match pubsub.get_message() {
                        Ok(m) => heard.push(m.get_payload::<String>().unwrap()),
                        Err(e) if e.is_timeout() && stop.load(Ordering::SeqCst) => return heard,
                        Err(e) if e.is_timeout() => {}
                        Err(e) => panic!("subscriber: {e}"),
                    }
                }
            })
        };
        wait_for("subscribed", Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        });
        let until = |stop: &Arc<AtomicBool>| {
            let stop = stop.clone();
            move || !stop.load(Ordering::SeqCst)
        };
        let running = until(&stop);
        let producer = std::thread::spawn(move || {
            let mut n = 0;
            while running() {
                let _: i64 = producer
                    .rpush(QUEUE, format!("job{n}"))
                    .expect("RPUSH acknowledged");
                n += 1;
                // A hot key: a job every 10 ms, taken at once through the other proxy, so both
                // proxies mirror the queue (and the taken list) while it keeps changing; it
                // converges without a failed sync (issue 9; `proxy_hotkeys.rs` runs it hotter).
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        });
        let running = until(&stop);
        let worker = std::thread::spawn(move || {
            let mut taken = Vec::new();
            loop {
                let job: Option<String> = redis::cmd("BLMOVE")
                    .arg(QUEUE)
                    .arg(TAKEN)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .arg(1)
                    .query(&mut worker)
                    .expect("BLMOVE answered");
                match job {
                    Some(job) => taken.push(job),
                    None if !running() => return taken,
                    None => {}
                }
            }
        });
        let running = until(&stop);
        let publisher = std::thread::spawn(move || {
            let mut n = 0;
            while running() {
                let _: i64 = publisher
                    .publish("walk", format!("msg{n}"))
                    .expect("PUBLISH acknowledged");
                n += 1;
                std::thread::sleep(Duration::from_millis(11));
            }
            n
        });
        Apps {
            stop,
            producer,
            worker,
            publisher,
            subscriber,
        }
    }

    /// Stops everything and checks: every job taken exactly once, in order, and recorded on
    /// both sides; every message heard exactly once.
    fn finish(self, sb: &Sandbox) {
        self.stop.store(true, Ordering::SeqCst);
        let produced = self.producer.join().expect("producer");
        let published = self.publisher.join().expect("publisher");
        let taken = self.worker.join().expect("worker");
        let jobs: Vec<String> = (0..produced).map(|n| format!("job{n}")).collect();
        assert_eq!(
            taken, jobs,
            "every job taken once, in order ({produced} produced)"
        );
        let mut heard = self.subscriber.join().expect("subscriber");
        heard.sort();
        let mut messages: Vec<String> = (0..published).map(|n| format!("msg{n}")).collect();
        messages.sort();
        assert_eq!(heard, messages, "every message heard once");
        let on_new: Vec<String> = sb.target.cluster_conn().lrange(TAKEN, 0, -1).unwrap();
        assert_eq!(on_new, jobs, "the taken list on new");
        wait_for("the taken list on old", Duration::from_secs(10), || {
            sb.source.conn().lrange::<_, Vec<String>>(TAKEN, 0, -1).unwrap() == jobs
        });
        assert!(
            produced > 20 && published > 100,
            "busy: {produced} jobs, {published} messages"
        );
    }
}

/// Runs a CLI step once the proxies follow the current generation and, for `advance`, once its
/// gates pass (rollbacks are never gated; `resume` waits for the acks itself).
fn step_cli(sb: &Sandbox, proxies: &[&ProxyProcess], args: &[&str], expect: &str) {
    settle(sb, proxies);
    if args[0] == "advance" {
        // Runs the verify the `verified` gate needs first, as an operator would.
        common::load::wait_ready(sb);
    }
    let run = sb.cachemig(args);
    let phase = sb.flag().map(|f| f.phase).unwrap_or_default();
    assert!(
        run.status == 0 && phase == expect,
        "{args:?} → {phase} (wanted {expect}), exit {}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

#[test]
fn two_proxies_and_concurrent_writers_through_every_phase_lose_no_write() {
    let sb = sandbox();
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let proxies = [&p1, &p2];
    // Half the keys exist before the backfill (written straight to old).
    let mut seeded = Model::new();
    let mut old = sb.source.conn();
    for w in 0..WRITERS {
        for i in (0..KEYS_PER_WRITER).step_by(2) {
            let key = format!("token:w{w}:{i}");
            let value = match empty(i) {
                Value::Text(_) => {
                    let _: () = old.set(&key, "10").unwrap();
                    Value::Text("10".into())
                }
                Value::List(_) => {
                    let _: i64 = old.rpush(&key, "seed").unwrap();
                    Value::List(vec!["seed".into()])
                }
                Value::Hash(_) => {
                    let _: i64 = old.hset(&key, "f0", 1).unwrap();
                    Value::Hash(BTreeMap::from([("f0".to_string(), 1)]))
                }
                Value::Set(_) => {
                    let _: i64 = old.sadd(&key, "seed").unwrap();
                    Value::Set(BTreeSet::from(["seed".to_string()]))
                }
            };
            seeded.insert(key, (value, false));
        }
    }
    let writers = Writers::start(&proxies, &seeded);
    let apps = Apps::start(&p1, &p2);
    // Forward through every phase, with a step back (and forward again) at every pair whose
    // routing differs most: the dual-write modes, the read switch and the fenced write switch.
    // Re-entering sync-dual-write needs a fresh catch-up, which `resume` runs after a rollback.
    let (advance, rollback, resume): (&[&str], &[&str], &[&str]) =
        (&["advance", "--yes"], &["rollback", "--yes"], &["resume"]);
    let walk = [
        (advance, "backfill"),
        (advance, "async-dual-write"),
        (advance, "sync-dual-write"),
        (rollback, "async-dual-write"),
        (resume, "async-dual-write"),
        (advance, "sync-dual-write"),
        (advance, "shadow-read"),
        (advance, "read-cutover"),
        (rollback, "shadow-read"),
        (advance, "read-cutover"),
        (advance, "write-stop"),
        (rollback, "read-cutover"),
        (advance, "write-stop"),
    ];
    for (args, phase) in walk {
        step_cli(&sb, &proxies, args, phase);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (model, ops) = writers.finish();
    assert!(ops > 1000, "the writers were busy: {ops} ops");
    apps.finish(&sb);

    for p in proxies {
        wait_for("reverse mirror drained", Duration::from_secs(10), || {
            let s = p.status();
            s["mirror"]["drained"] == true
        });
    }
    let mut new = sb.target.cluster_conn();
    let mut old = sb.source.conn();
    let mut checked = 0;
    for w in 0..WRITERS {
        let tagged = (0..TAGGED).map(|j| format!("token:{{w{w}}}:t{j}"));
        for key in (0..KEYS_PER_WRITER)
            .map(|i| format!("token:w{w}:{i}"))
            .chain(tagged)
        {
            let want = model.get(&key).cloned();
            assert_eq!(observed(&mut new, &key), want, "new: {key}");
            assert_eq!(observed(&mut old, &key), want, "old (reverse mirror): {key}");
            checked += 1;
        }
    }
    assert_eq!(checked, WRITERS * (KEYS_PER_WRITER + TAGGED as usize));
    let tagged_written = model.keys().filter(|k| k.contains("}:t")).count();
    assert!(tagged_written > 0, "transactions and scripts ran");
}

#[test]
fn a_proxy_that_stops_acking_makes_the_fence_release_writes_on_the_old_primary() {
    let sb = sandbox();
    let p1 = ProxyProcess::start(&sb, "p1");
    let p2 = ProxyProcess::start(&sb, "p2");
    let mut conn = p1.conn();
    for phase in [
        "backfill",
        "async-dual-write",
        "sync-dual-write",
        "shadow-read",
        "read-cutover",
    ] {
        for i in 0..20 {
            let _: () = conn.set(format!("token:warm:{i}"), i).unwrap();
        }
        // Reads for the shadow samples read-cutover needs (5 at a 50 % sample rate).
        for i in 0..100 {
            let _: Option<String> = conn.get(format!("token:warm:{}", i % 20)).unwrap();
        }
        step_cli(&sb, &[&p1, &p2], &["advance", "--yes"], phase);
    }
    for i in 0..20 {
        let _: Option<String> = conn.get(format!("token:warm:{i}")).unwrap();
    }
    // Both proxies have reported read-cutover and the fence's gates pass: p2 is live and acking.
    settle(&sb, &[&p1, &p2]);
    common::load::wait_ready(&sb);
    // p2 freezes: still "live" by its last report, but it will never ack the fence.
    let p2_pid = p2.pid();
    freeze(p2_pid);
    let (tx, rx) = std::sync::mpsc::channel();
    // A write arrives while the fence holds (the CLI fences once its gates pass, ~1 s in).
    let mut c = p1.conn();
    let held = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let _ = tx.send(c.set::<_, _, ()>("token:during", "v"));
    });
    let run = sb.cachemig(&["advance", "--yes"]);
    held.join().unwrap();
    assert_eq!(
        run.status, 3,
        "the fence gate blocks: {}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("p2") || run.stderr.contains("p2"),
        "names the proxy that did not ack"
    );
    let flag = sb.flag().unwrap();
    assert_eq!((flag.phase.as_str(), flag.routing.fence), ("read-cutover", false));
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let on_old: Option<String> = sb.source.conn().get("token:during").unwrap();
    assert_eq!(
        on_old.as_deref(),
        Some("v"),
        "the held write went to old, the primary that stayed"
    );
    let on_new: Option<String> = sb.target.cluster_conn().get("token:during").unwrap();
    assert_eq!(
        on_new.as_deref(),
        Some("v"),
        "and was mirrored to new before the reply"
    );
    thaw(p2_pid);
}

/// Freezes a process (SIGSTOP) without killing it.
fn freeze(pid: u32) {
    std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
}

/// Thaws a process stopped by [`freeze`].
fn thaw(pid: u32) {
    std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
}
