//! The catch-up race (a `cachemig demo` run left one key "unresolved" right after entering
//! `async-dual-write`): writers hammer a small set of hot keys through two real proxies with
//! `SET` of unique values, `INCR`, `LPUSH` and, often, `DEL`, while `verify --repair` runs again
//! and again — in `backfill` (no mirror: every written key differs and is repaired), through
//! the catch-up on entering `async-dual-write`, then in `async-dual-write`. No run may leave a
//! difference unresolved, and at the end old and new both hold exactly what the writers were
//! told, key by key (a deleted key absent from both).
//!
//! What made it fail before the fix: a repair that read the key absent (just deleted) and landed
//! the `DEL`, a `SET` right after it (the re-check saw the key on old but not yet on new), then
//! another `DEL` before the primary was read again to tell "written again since" from "the repair
//! did not stick" — absent again, so it looked unchanged (docs/design.md, "Telling a hot key from
//! a repair that did not stick").

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::compare::canonical;
use common::load::wait_ready;
use common::proxy::ProxyProcess;
use common::reports::expect_proxies;
use common::sandbox::Sandbox;

/// Writer threads, alternating between the two proxies.
const WRITERS: usize = 8;
/// Keys each writer owns: a string (`SET` unique values), a counter (`INCR`), a list (`LPUSH`).
const KINDS: [&str; 3] = ["s", "c", "l"];
/// Of every 100 requests, this many are a `DEL` of the key chosen.
const DEL_PERCENT: u64 = 30;
/// Keys nobody writes: a keyspace to scan, so each run takes a while.
const COLD_KEYS: u64 = 10_000;
/// `verify --repair` runs in `backfill`, and again in `async-dual-write`.
const RUNS_PER_PHASE: usize = 8;

/// A key's value as the acknowledged writes left it; `None`: deleted (absent on both sides).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    List(Vec<String>),
}

type Model = BTreeMap<String, Option<Value>>;

/// The writers: each owns its keys, so its model of them is exact.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<Model, String>>>,
}

impl Writers {
    fn start(proxies: [&ProxyProcess; 2]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = (0..WRITERS)
            .map(|w| {
                let mut conn = proxies[w % 2].conn();
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut model = Model::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        write(&mut conn, &mut model, w, n)?;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(model)
                })
            })
            .collect();
        Writers { stop, acked, threads }
    }

    /// Waits (bounded) until `more` further writes were acknowledged.
    fn wait_progress(&self, more: u64) {
        let target = self.acked.load(Ordering::Relaxed) + more;
        common::wait_for("writer progress", Duration::from_secs(60), || {
            self.acked.load(Ordering::Relaxed) >= target || self.threads.iter().any(JoinHandle::is_finished)
        });
    }

    /// Stops the writers; the model of every acknowledged write. Panics on a client error.
    fn finish(self) -> Model {
        self.stop.store(true, Ordering::Relaxed);
        let mut model = Model::new();
        for t in self.threads {
            model.extend(t.join().expect("a writer panicked").expect("a client error"));
        }
        model
    }
}

/// Request `n` of writer `w`: a `DEL` of one of its keys ([`DEL_PERCENT`]), or that key's write,
/// checked against and folded into `model`.
fn write(conn: &mut redis::Connection, model: &mut Model, w: usize, n: u64) -> Result<(), String> {
    let kind = KINDS[(n % KINDS.len() as u64) as usize];
    let key = format!("token:race:w{w}:{kind}");
    let fail = |e: redis::RedisError| format!("{key} (request {n}): {e}");
    let roll = n.wrapping_mul(2_654_435_761) % 100;
    let current = model.get(&key).cloned().flatten();
    let next = if roll < DEL_PERCENT {
        let _: u64 = redis::cmd("DEL").arg(&key).query(conn).map_err(fail)?;
        None
    } else {
        match (kind, current) {
            ("s", _) => {
                let v = format!("v{w}.{n}");
                let () = redis::cmd("SET").arg(&key).arg(&v).query(conn).map_err(fail)?;
                Some(Value::Text(v))
            }
            ("c", current) => {
                let before = match current {
                    Some(Value::Text(t)) => t.parse::<i64>().unwrap_or(0),
                    _ => 0,
                };
                let got: i64 = redis::cmd("INCR").arg(&key).query(conn).map_err(fail)?;
                if got != before + 1 {
                    return Err(format!("INCR {key}: {got}, the model expects {}", before + 1));
                }
                Some(Value::Text(got.to_string()))
            }
            (_, current) => {
                let mut list = match current {
                    Some(Value::List(l)) => l,
                    _ => Vec::new(),
                };
                let len: usize = redis::cmd("LPUSH").arg(&key).arg(n).query(conn).map_err(fail)?;
                list.insert(0, n.to_string());
                if len != list.len() {
                    return Err(format!("LPUSH {key}: length {len}, the model has {}", list.len()));
                }
                Some(Value::List(list))
            }
        }
    };
    model.insert(key, next);
    Ok(())
}

/// `verify --repair --format json` while the writers run: nothing may be unresolved.
fn verify_repair(sb: &Sandbox, writers: &Writers, tally: &mut [u64; 2]) {
    writers.wait_progress(100);
    let run = sb.cachemig(&["verify", "--repair", "--format", "json"]);
    let summary = run.json();
    tally[0] += summary["found"].as_u64().unwrap_or(0);
    tally[1] += summary["repaired"].as_u64().unwrap_or(0);
    let report = std::fs::read_to_string(sb.state_dir().join("verify-report.csv")).unwrap_or_default();
    assert_eq!(
        summary["unresolved"], 0,
        "verify --repair left a difference unresolved:\n{report}\n{summary}\n{}",
        run.stderr
    );
    assert_eq!(run.status, 0, "{summary}\n{}", run.stderr);
}

/// Old and new both hold exactly what the model says (absent where it says deleted).
fn assert_sides_equal_the_model(sb: &Sandbox, model: &Model) {
    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    let mut wrong = Vec::new();
    for (key, value) in model {
        let want = value.as_ref().map(|v| match v {
            Value::Text(t) => format!("string:{:?} ttl:false", vec![t]),
            Value::List(l) => format!("list:{l:?} ttl:false"),
        });
        for (side, got) in [
            ("old", canonical(&mut old, key)),
            ("new", canonical(&mut new, key)),
        ] {
            if got != want {
                wrong.push(format!("{side} {key}: {got:?}, the model has {want:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn verify_repair_leaves_no_hot_key_unresolved_under_deletes() {
    let started = Instant::now();
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 5000\n");
    expect_proxies(&sb, 2, "");
    sb.fill_source(COLD_KEYS);
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    wait_ready(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    let generation = sb.flag().unwrap().generation;
    p1.wait_generation(generation);
    p2.wait_generation(generation);
    let writers = Writers::start([&p1, &p2]);
    let mut tally = [0u64; 2];

    // backfill: the writes are not mirrored, so every written key differs and is repaired, and
    // is written (or deleted) again right after its repair.
    for _ in 0..RUNS_PER_PHASE {
        verify_repair(&sb, &writers, &mut tally);
    }
    assert!(tally[1] > 0, "the hot keys were repaired: {tally:?}");

    // The catch-up on entering async-dual-write, with the writers still running.
    wait_ready(&sb);
    let run = sb.cachemig(&["advance", "--yes"]);
    let catch_up = std::fs::read_to_string(sb.state_dir().join("catch-up.json")).unwrap_or_default();
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(catch_up.contains("\"unresolved\": 0"), "catch-up: {catch_up}");
    p1.wait_generation(generation + 1);
    p2.wait_generation(generation + 1);

    for _ in 0..RUNS_PER_PHASE {
        verify_repair(&sb, &writers, &mut tally);
    }
    let model = writers.finish();
    for p in [&p1, &p2] {
        common::wait_for("mirror drained", Duration::from_secs(20), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    assert_sides_equal_the_model(&sb, &model);
    eprintln!(
        "{} verify --repair runs and a catch-up: {} differences found, {} repaired, none unresolved; {} keys; {:.1}s",
        2 * RUNS_PER_PHASE,
        tally[0],
        tally[1],
        model.len(),
        started.elapsed().as_secs_f64()
    );
}
