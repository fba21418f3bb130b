//! Hot keys through two real proxies (issue 9, item 8): a counter INCRed from eight threads
//! through both proxies and a queue (RPUSH through one proxy, LPOP through the other), together
//! about a thousand writes a second or more on two keys (the sync modes are bounded by the sync's
//! latency on the loaded 2-core test machine: at least 400/s is required), in `async-dual-write`,
//! `sync-dual-write` and `read-cutover`, and with a new cluster that refuses scripts. No client
//! error, no failed mirror sync or sync-mirror failure in either proxy's `/status`, and at the end
//! old and new both equal the model (the counter = the INCRs acknowledged). Then the catch-up and
//! `verify --repair` while such writers run: nothing unresolved.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::{ProxyProcess, set_phase};
use common::reports::expect_proxies;
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

/// The hot counter, INCRed by eight threads, four through each proxy.
const COUNTER: &str = "token:hot:counter";
const INCR_THREADS: usize = 8;
const QUEUE: &str = "token:hot:queue";
/// Each writer thread aims at one write per this long: up to 2,000 INCR/s on the counter and
/// 250/s each of RPUSH and LPOP on the queue.
const PACE: Duration = Duration::from_millis(4);

/// A sandbox whose sync mirror waits long enough that a loaded 2-core test machine cannot make
/// it time out: this file tests hot keys, not latency.
fn sandbox() -> Sandbox {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 2000\n");
    sb
}

/// What the writers were told happened.
#[derive(Debug, Default)]
struct Acked {
    incrs: u64,
    pushed: Vec<String>,
    popped: Vec<String>,
    ops: u64,
    elapsed: Duration,
}

/// Writers on the hot keys, running until stopped.
struct HotLoad {
    stop: Arc<AtomicBool>,
    started: Instant,
    incr: Vec<std::thread::JoinHandle<u64>>,
    producer: std::thread::JoinHandle<Vec<String>>,
    consumer: std::thread::JoinHandle<(Vec<String>, u64)>,
    errors: Arc<Mutex<Vec<String>>>,
    /// INCRs acknowledged so far, by every thread.
    incrs: Arc<AtomicU64>,
}

/// Sleeps what is left of `PACE` since `since`.
fn pace(since: Instant) {
    if let Some(left) = PACE.checked_sub(since.elapsed()) {
        std::thread::sleep(left);
    }
}

impl HotLoad {
    fn start(p1: &ProxyProcess, p2: &ProxyProcess) -> HotLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let incrs = Arc::new(AtomicU64::new(0));
        let incr = (0..INCR_THREADS)
            .map(|t| {
                let mut conn = [p1, p2][t % 2].conn();
                let (stop, errors, incrs) = (stop.clone(), errors.clone(), incrs.clone());
                std::thread::spawn(move || {
                    let mut acked = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        match conn.incr::<_, _, i64>(COUNTER, 1) {
                            Ok(_) => {
                                acked += 1;
                                incrs.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors.lock().unwrap().push(format!("INCR: {e}"));
                                break;
                            }
                        }
                        pace(at);
                    }
                    acked
                })
            })
            .collect();
        let producer = {
            let mut conn = p1.conn();
            let (stop, errors) = (stop.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut pushed = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let item = format!("job{n}");
                    match conn.rpush::<_, _, i64>(QUEUE, &item) {
                        Ok(_) => pushed.push(item),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("RPUSH: {e}"));
                            break;
                        }
                    }
                    n += 1;
                    pace(at);
                }
                pushed
            })
        };
        let consumer = {
            let mut conn = p2.conn();
            let (stop, errors) = (stop.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut popped = Vec::new();
                let mut ops = 0;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    match conn.lpop::<_, Option<String>>(QUEUE, None) {
                        Ok(item) => popped.extend(item),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("LPOP: {e}"));
                            break;
                        }
                    }
                    ops += 1;
                    pace(at);
                }
                (popped, ops)
            })
        };
        HotLoad {
            stop,
            started: Instant::now(),
            incr,
            producer,
            consumer,
            errors,
            incrs,
        }
    }

    fn finish(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Acked::default();
        for h in self.incr {
            let n = h.join().expect("an INCR thread panicked");
            acked.incrs += n;
            acked.ops += n;
        }
        acked.pushed = self.producer.join().expect("producer");
        let (popped, pops) = self.consumer.join().expect("consumer");
        acked.popped = popped;
        acked.ops += acked.pushed.len() as u64 + pops;
        acked.elapsed = self.started.elapsed();
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
        acked
    }
}

/// Old and new both hold exactly what the writers were told.
fn assert_sides_equal_the_model(sb: &Sandbox, acked: &Acked) {
    let mut old = sb.source.conn();
    let mut new = sb.target.cluster_conn();
    let on_old: Option<u64> = old.get(COUNTER).unwrap();
    assert_eq!(
        on_old.unwrap_or(0),
        acked.incrs,
        "old: the counter = acknowledged INCRs"
    );
    let on_new: Option<u64> = new.get(COUNTER).unwrap();
    assert_eq!(
        on_new.unwrap_or(0),
        acked.incrs,
        "new: the counter = acknowledged INCRs"
    );
    assert!(
        acked.pushed.starts_with(&acked.popped),
        "popped in order what was pushed"
    );
    let left = &acked.pushed[acked.popped.len()..];
    let on_old: Vec<String> = old.lrange(QUEUE, 0, -1).unwrap();
    assert_eq!(on_old, left, "old: the queue");
    let on_new: Vec<String> = new.lrange(QUEUE, 0, -1).unwrap();
    assert_eq!(on_new, left, "new: the queue");
}

/// Both proxies report no failed mirror sync and no sync-mirror failure, ever, and drained.
fn assert_no_mirror_errors(proxies: &[&ProxyProcess]) {
    for p in proxies {
        wait_for("mirror drained", Duration::from_secs(20), || {
            p.status()["mirror"]["drained"] == true
        });
        let status = p.status();
        let total = &status["counters_total"];
        assert_eq!(total["mirror_errors"], 0, "{status}");
        assert_eq!(total["sync_mirror_failures"], 0, "{status}");
        assert_eq!(total["errors"], 0, "{status}");
        assert!(total["mirror_ok"].as_u64().unwrap() > 0, "{status}");
        assert!(status["mirror"]["last_error"].is_null(), "{status}");
    }
}

/// Waits (bounded) until `plan --detailed-exitcode` says the next step is ready (exit 4): every
/// proxy reported the generation, the gates have their data.
fn wait_until_ready(sb: &Sandbox) {
    wait_for("the next step's gates to pass", Duration::from_secs(60), || {
        sb.cachemig(&["plan", "--detailed-exitcode"]).status == 4
    });
}

/// Puts `phase` in force on both proxies, runs the hot writers for a few seconds, and checks.
fn hot_keys_in(phase: &str) {
    hot_keys_on(sandbox(), phase);
}

fn hot_keys_on(sb: Sandbox, phase: &str) {
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    set_phase(&sb.flag_path(), phase, 1, false, 0.0);
    p1.wait_generation(1);
    p2.wait_generation(1);
    let load = HotLoad::start(&p1, &p2);
    std::thread::sleep(Duration::from_secs(5));
    // However loaded the machine, the key takes at least this many writes before the checks.
    wait_for("2,000 acknowledged INCRs", Duration::from_secs(120), || {
        load.incrs.load(Ordering::Relaxed) >= 2_000 || !load.errors.lock().unwrap().is_empty()
    });
    let acked = load.finish();
    let rate = acked.ops as f64 / acked.elapsed.as_secs_f64();
    eprintln!(
        "{phase}: {} acknowledged writes ({} INCR) on 2 keys in {:.1}s ({rate:.0}/s)",
        acked.ops,
        acked.incrs,
        acked.elapsed.as_secs_f64()
    );
    assert_no_mirror_errors(&[&p1, &p2]);
    assert_sides_equal_the_model(&sb, &acked);
}

#[test]
fn hot_keys_through_two_proxies_in_async_dual_write() {
    hot_keys_in("async-dual-write");
}

#[test]
fn hot_keys_through_two_proxies_in_sync_dual_write() {
    hot_keys_in("sync-dual-write");
}

#[test]
fn hot_keys_through_two_proxies_in_read_cutover() {
    hot_keys_in("read-cutover");
}

/// New refuses scripts (an ACL without `@scripting`): the proxies' syncs take the key's lease
/// with `WATCH` transactions on connections of their own, with the same outcome.
#[test]
fn hot_keys_through_two_proxies_when_new_refuses_scripts() {
    let sb = sandbox();
    for node in sb.target.masters() {
        let _: () = node.query(&["ACL", "SETUSER", "default", "-@scripting"]);
    }
    let refused = sb.target_cmd(&["EVAL", "return 1", "0"]);
    assert!(refused.contains("NOPERM"), "{refused}");
    hot_keys_on(sb, "sync-dual-write");
}

/// `verify --repair` while the hot writers run in `backfill` (no mirror yet: the hot keys differ
/// on new and keep changing after the repair), then the catch-up on entering `async-dual-write`
/// with the writers still running, then `verify --repair` three times in `async-dual-write`:
/// nothing unresolved, ever, so `catch-up-clean` passes.
#[test]
fn the_catch_up_and_verify_repair_leave_no_hot_key_unresolved() {
    let sb = sandbox();
    expect_proxies(&sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    wait_until_ready(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    let generation = sb.flag().unwrap().generation;
    p1.wait_generation(generation);
    p2.wait_generation(generation);
    let load = HotLoad::start(&p1, &p2);
    std::thread::sleep(Duration::from_millis(500));

    // In backfill the writes are not mirrored: every hot key differs at both looks, and is
    // written again right after its repair.
    let summary = verify_repair(&sb);
    assert!(
        summary["found"].as_u64().unwrap() >= 1,
        "the hot keys differ: {summary}"
    );
    assert_eq!(summary["repaired"], summary["found"], "{summary}");

    wait_until_ready(&sb);
    let run = sb.cachemig(&["advance", "--yes"]);
    assert_eq!(
        run.status, 0,
        "into async-dual-write with its catch-up:\n{}\n{}",
        run.stdout, run.stderr
    );
    let plan = sb.cachemig(&["plan", "--format", "json"]).json();
    let gate = plan["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "catch-up-clean")
        .unwrap_or_else(|| panic!("no catch-up-clean gate: {plan}"))
        .clone();
    let measured = gate["measured"].as_str().unwrap();
    eprintln!("catch-up-clean: {measured}");
    assert_eq!(gate["verdict"], "pass", "{gate}");
    assert!(measured.starts_with("0 unresolved of "), "{measured}");

    for _ in 0..3 {
        verify_repair(&sb);
    }
    wait_until_ready(&sb);
    sb.cachemig(&["advance", "--yes"]).assert_success();
    assert_eq!(sb.flag().unwrap().phase, "sync-dual-write");

    let acked = load.finish();
    assert_no_mirror_errors(&[&p1, &p2]);
    assert_sides_equal_the_model(&sb, &acked);
}

/// `verify --repair --format json`: nothing unresolved; the summary.
fn verify_repair(sb: &Sandbox) -> serde_json::Value {
    let run = sb.cachemig(&["verify", "--repair", "--format", "json"]);
    let summary = run.json();
    eprintln!(
        "verify --repair ({}): found {}, repaired {}, unresolved {}",
        sb.flag().unwrap().phase,
        summary["found"],
        summary["repaired"],
        summary["unresolved"]
    );
    assert_eq!(summary["unresolved"], 0, "{summary}\n{}", run.stderr);
    assert_eq!(run.status, 0, "{summary}\n{}", run.stderr);
    summary
}
