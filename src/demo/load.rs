//! The application the demo migrates under: writers, readers and a blocking queue, all talking
//! to the two proxies only, while the walk moves the phases underneath them.
//!
//! Each writer owns its keys, so its model of them is exact: every reply is checked against the
//! model (read-your-writes, INCR results, LPUSH lengths…), and at the end old and new are
//! compared with it key by key. Readers check the loaded keys, whose content follows from their
//! number. The queue's consumer must take every item its producer pushed exactly once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Commands;

use super::model::{Model, Value};
use super::seed::{self, Kind, PREFIX};
use super::stats::Stats;

/// Writer threads (spread over the proxies).
const WRITERS: usize = 4;
/// Reader threads.
const READERS: usize = 2;
/// Keys each writer owns.
const KEYS_PER_WRITER: u64 = 10;
/// Pause between two requests of one thread: a steady load that leaves CPU for the servers.
const PACE: Duration = Duration::from_millis(1);
/// The blocking queue.
pub const QUEUE: &str = "demo:queue";

type Conn = redis::Connection;

/// The running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    producing: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Model>>,
    readers: Vec<JoinHandle<()>>,
    producer: JoinHandle<u64>,
    consumer: JoinHandle<Vec<u64>>,
    stats: Arc<Stats>,
}

/// A connection to the proxy on `port`.
fn connect(port: u16) -> anyhow::Result<Conn> {
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(conn)
}

/// Runs `op` until `stop`, timing each call into `stats`.
fn run_until(stop: &AtomicBool, stats: &Stats, mut op: impl FnMut(u64) -> Result<(), String>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let start = Instant::now();
        let outcome = op(n);
        stats.record(start.elapsed(), outcome);
        std::thread::sleep(PACE);
    }
}

impl Load {
    /// Starts the load through the proxies on `ports`; readers read loaded keys `0..keys`.
    pub fn start(ports: &[u16], keys: u64, stats: Arc<Stats>) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let producing = Arc::new(AtomicBool::new(true));
        let port = |i: usize| ports[i % ports.len()];
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (mut conn, stop, stats) = (connect(port(w))?, stop.clone(), stats.clone());
            writers.push(std::thread::spawn(move || {
                let mut model = Model::new();
                run_until(&stop, &stats, |n| write(&mut conn, &mut model, w, n));
                model
            }));
        }
        let mut readers = Vec::new();
        for r in 0..READERS {
            let (mut conn, stop, stats) = (connect(port(r + 1))?, stop.clone(), stats.clone());
            readers.push(std::thread::spawn(move || {
                run_until(&stop, &stats, |_| {
                    read_seeded(&mut conn, rand::random_range(0..keys.max(1)))
                });
            }));
        }
        let (mut conn, flag, s) = (connect(port(0))?, producing.clone(), stats.clone());
        let producer = std::thread::spawn(move || {
            let mut pushed = 0;
            run_until(&flag, &s, |n| {
                let _: u64 = conn.lpush(QUEUE, n).map_err(|e| format!("LPUSH {QUEUE}: {e}"))?;
                pushed = n;
                Ok(())
            });
            pushed
        });
        let (mut conn, flag, s) = (connect(port(1))?, producing.clone(), stats.clone());
        let consumer = std::thread::spawn(move || consume(&mut conn, &flag, &s));
        Ok(Load {
            stop,
            producing,
            writers,
            readers,
            producer,
            consumer,
            stats,
        })
    }

    /// Stops the load; the model of every acknowledged write (the queue emptied), after checking
    /// that every queue item was taken exactly once.
    pub fn finish(self) -> Model {
        // The producer stops first; the consumer then drains the queue and stops on the first
        // empty BLPOP.
        self.producing.store(false, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        // The last phase's throughput ends with the load, not with the checks after it.
        self.stats.finish();
        let pushed = self.producer.join().expect("queue producer panicked");
        let taken = self.consumer.join().expect("queue consumer panicked");
        check_queue(&self.stats, pushed, &taken);
        self.readers
            .into_iter()
            .for_each(|r| r.join().expect("reader panicked"));
        let mut model = Model::new();
        for w in self.writers {
            model.extend(w.join().expect("writer panicked"));
        }
        model.insert(QUEUE.to_string(), None);
        model
    }
}

/// Takes queue items with BLPOP until the producer stopped and the queue is empty.
fn consume(conn: &mut Conn, producing: &AtomicBool, stats: &Stats) -> Vec<u64> {
    let mut taken = Vec::new();
    loop {
        let still = producing.load(Ordering::Relaxed);
        let got: redis::RedisResult<Option<(String, u64)>> = conn.blpop(QUEUE, 1.0);
        match got {
            Ok(Some((_, item))) => taken.push(item),
            Ok(None) if !still => return taken,
            Ok(None) => {}
            Err(e) => {
                stats.fail(format!("BLPOP {QUEUE}: {e}"));
                return taken;
            }
        }
    }
}

/// Every item 1..=pushed taken exactly once.
fn check_queue(stats: &Stats, pushed: u64, taken: &[u64]) {
    let unique: BTreeSet<u64> = taken.iter().copied().collect();
    if unique.len() != taken.len() {
        stats.fail(format!(
            "queue: {} item(s) taken twice",
            taken.len() - unique.len()
        ));
    }
    let missing = (1..=pushed).filter(|i| !unique.contains(i)).count();
    if missing > 0 {
        stats.fail(format!("queue: {missing} of {pushed} item(s) never taken"));
    }
}

/// One read of loaded key `i`, checked against what the load put there.
fn read_seeded(conn: &mut Conn, i: u64) -> Result<(), String> {
    let (key, want) = (seed::key(i), seed::marker(i));
    let fail = |e: redis::RedisError| format!("reading {key}: {e}");
    let got: Option<String> = match seed::kind(i) {
        Kind::String => conn.get(&key).map_err(fail)?,
        Kind::Hash => conn.hget(&key, "f0").map_err(fail)?,
        Kind::List => conn.lindex(&key, 0).map_err(fail)?,
        Kind::Set => {
            let member: bool = conn.sismember(&key, &want).map_err(fail)?;
            member.then(|| want.clone())
        }
        Kind::SortedSet => {
            let score: Option<f64> = conn.zscore(&key, &want).map_err(fail)?;
            score.filter(|s| *s == 2.0).map(|_| want.clone())
        }
        Kind::Stream => {
            let len: u64 = redis::cmd("XLEN").arg(&key).query(conn).map_err(fail)?;
            (len == 2).then(|| want.clone())
        }
    };
    if got.as_deref() == Some(want.as_str()) {
        Ok(())
    } else {
        Err(format!("{key}: read {got:?}, loaded {want:?}"))
    }
}

/// One request of writer `w`, chosen by `n`, checked against and folded into `model`.
fn write(conn: &mut Conn, model: &mut Model, w: usize, n: u64) -> Result<(), String> {
    let i = (n * 7 + n / 3) % KEYS_PER_WRITER;
    let key = format!("{PREFIX}w{w}:k{i}");
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: redis::RedisError| format!("{what}: {e}")
    };
    match (n * 2_654_435_761) % 100 {
        0..3 => {
            let _: u64 = conn.del(&key).map_err(fail(&format!("DEL {key}")))?;
            model.insert(key, None);
            Ok(())
        }
        3..6 => tagged(conn, model, w, n, true),
        6..9 => tagged(conn, model, w, n, false),
        roll => write_kind(conn, model, &key, i, n, roll < 40),
    }
}

/// The write (or, for strings and `read`, the checked read) that fits key number `i`'s kind.
fn write_kind(
    conn: &mut Conn,
    model: &mut Model,
    key: &str,
    i: u64,
    n: u64,
    read: bool,
) -> Result<(), String> {
    let fail = |e: redis::RedisError| format!("{key} (request {n}): {e}");
    let current = model.get(key).cloned().flatten();
    let next = match (i % 5, current) {
        (0, current) if read => {
            let got: Option<String> = conn.get(key).map_err(fail)?;
            let want = current.map(|v| match v {
                Value::Text(t) => t,
                other => format!("{other:?}"),
            });
            return check(key, "GET", got, want);
        }
        (0, _) => {
            let v = format!("v{n}");
            let () = conn.set(key, &v).map_err(fail)?;
            Value::Text(v)
        }
        (1, current) => {
            let before = match current {
                Some(Value::Text(t)) => t.parse::<i64>().unwrap_or(0),
                _ => 0,
            };
            let got: i64 = conn.incr(key, 1).map_err(fail)?;
            check(key, "INCR", got, before + 1)?;
            Value::Text(got.to_string())
        }
        (2, current) => {
            let mut list = match current {
                Some(Value::List(l)) => l,
                _ => Vec::new(),
            };
            let len: usize = conn.lpush(key, n).map_err(fail)?;
            list.insert(0, n.to_string());
            check(key, "LPUSH length", len, list.len())?;
            Value::List(list)
        }
        (3, current) => {
            let mut hash = match current {
                Some(Value::Hash(h)) => h,
                _ => Default::default(),
            };
            let field = format!("f{}", n % 3);
            let added: usize = conn.hset(key, &field, n).map_err(fail)?;
            let new = hash.insert(field, n.to_string()).is_none();
            check(key, "HSET fields added", added, usize::from(new))?;
            Value::Hash(hash)
        }
        (_, current) => {
            let mut set = match current {
                Some(Value::Set(s)) => s,
                _ => Default::default(),
            };
            let member = (n % 10).to_string();
            let added: usize = conn.sadd(key, &member).map_err(fail)?;
            let new = set.insert(member);
            check(key, "SADD members added", added, usize::from(new))?;
            Value::Set(set)
        }
    };
    model.insert(key.to_string(), Some(next));
    Ok(())
}

/// A MULTI/EXEC transaction (`transaction`) or an EVAL script incrementing two of writer `w`'s
/// counters that share a hash tag (one slot on the cluster).
fn tagged(conn: &mut Conn, model: &mut Model, w: usize, n: u64, transaction: bool) -> Result<(), String> {
    let (a, b) = (
        format!("{PREFIX}{{w{w}}}:t{}", n % 2),
        format!("{PREFIX}{{w{w}}}:t{}", (n + 1) % 2),
    );
    let value = |k: &str| match model.get(k) {
        Some(Some(Value::Text(t))) => t.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    let want = (value(&a) + 1, value(&b) + 2);
    let what = if transaction { "MULTI/EXEC" } else { "EVAL" };
    let got: (i64, i64) = if transaction {
        redis::pipe().atomic().incr(&a, 1).incr(&b, 2).query(conn)
    } else {
        redis::cmd("EVAL")
            .arg("return {redis.call('INCRBY', KEYS[1], ARGV[1]), redis.call('INCRBY', KEYS[2], ARGV[2])}")
            .arg(2)
            .arg(&a)
            .arg(&b)
            .arg(1)
            .arg(2)
            .query(conn)
    }
    .map_err(|e| format!("{what} on {a}, {b}: {e}"))?;
    check(&a, what, got, want)?;
    model.insert(a, Some(Value::Text(want.0.to_string())));
    model.insert(b, Some(Value::Text(want.1.to_string())));
    Ok(())
}

/// `Ok` when a reply is what the model expects.
fn check<T: PartialEq + std::fmt::Debug>(key: &str, what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} {key}: got {got:?}, the model expects {want:?}"))
    }
}
