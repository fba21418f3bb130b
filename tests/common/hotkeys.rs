//! Hot keys through two real proxies (issue 9, item 8): a counter INCRed from eight threads
//! through both proxies and a queue (RPUSH through one proxy, LPOP through the other), together
//! about a thousand writes a second or more on two keys. Used by `tests/proxy_hotkeys.rs` and the
//! fault-matrix row `hot_key_read_cutover`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;

use super::proxy::{ProxyProcess, set_phase};
use super::sandbox::Sandbox;
use super::wait_for;

/// The hot counter, INCRed by eight threads, four through each proxy.
pub const COUNTER: &str = "token:hot:counter";
pub const INCR_THREADS: usize = 8;
pub const QUEUE: &str = "token:hot:queue";
/// Each writer thread aims at one write per this long: up to 2,000 INCR/s on the counter and
/// 250/s each of RPUSH and LPOP on the queue.
pub const PACE: Duration = Duration::from_millis(4);

/// A sandbox whose sync mirror waits long enough that a loaded 2-core test machine cannot make
/// it time out: this file tests hot keys, not latency.
pub fn sandbox() -> Sandbox {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 2000\n");
    sb
}

/// What the writers were told happened.
#[derive(Debug, Default)]
pub struct Acked {
    /// INCRs acknowledged.
    pub incrs: u64,
    /// Items RPUSHed (acknowledged), in order.
    pub pushed: Vec<String>,
    /// Items LPOPed, in order.
    pub popped: Vec<String>,
    /// Every acknowledged operation.
    pub ops: u64,
    /// How long the writers ran.
    pub elapsed: Duration,
}

/// Writers on the hot keys, running until stopped.
pub struct HotLoad {
    stop: Arc<AtomicBool>,
    started: Instant,
    incr: Vec<std::thread::JoinHandle<u64>>,
    producer: std::thread::JoinHandle<Vec<String>>,
    consumer: std::thread::JoinHandle<(Vec<String>, u64)>,
    errors: Arc<Mutex<Vec<String>>>,
    /// INCRs acknowledged so far, over every thread.
    incrs: Arc<AtomicU64>,
}

/// Acknowledged INCRs each run waits for: enough contention on one key (eight writers through
/// two proxies) whatever the machine's speed, instead of a rate the loaded test machine may miss.
pub const HOT_INCRS: u64 = 4_000;

/// Sleeps what is left of `PACE` since `since`.
fn pace(since: Instant) {
    if let Some(left) = PACE.checked_sub(since.elapsed()) {
        std::thread::sleep(left);
    }
}

impl HotLoad {
    /// Starts the writers: INCRs through both proxies, RPUSH through `p1`, LPOP through `p2`.
    pub fn start(p1: &ProxyProcess, p2: &ProxyProcess) -> HotLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let incrs = Arc::new(AtomicU64::new(0));
        let incr = (0..INCR_THREADS)
            .map(|t| {
                let mut conn = [p1, p2][t % 2].conn();
                let (stop, errors, progress) = (stop.clone(), errors.clone(), incrs.clone());
                std::thread::spawn(move || {
                    let mut acked = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        match conn.incr::<_, _, i64>(COUNTER, 1) {
                            Ok(_) => {
                                acked += 1;
                                progress.fetch_add(1, Ordering::Relaxed);
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

    /// Waits (bounded by a hang guard) until `n` INCRs were acknowledged.
    pub fn wait_for_incrs(&self, n: u64) {
        wait_for("the hot writers' INCRs", Duration::from_secs(180), || {
            self.incrs.load(Ordering::Relaxed) >= n || !self.errors.lock().unwrap().is_empty()
        });
    }

    /// Stops the writers; asserts that no client saw an error.
    pub fn finish(self) -> Acked {
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
pub fn assert_sides_equal_the_model(sb: &Sandbox, acked: &Acked) {
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
pub fn assert_no_mirror_errors(proxies: &[&ProxyProcess]) {
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

/// Puts `phase` in force on both proxies, runs the hot writers for a few seconds, and checks.
pub fn hot_keys_in(phase: &str) {
    hot_keys_on(sandbox(), phase);
}

/// [`hot_keys_in`] on a sandbox of the caller's.
pub fn hot_keys_on(sb: Sandbox, phase: &str) {
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    set_phase(&sb.flag_path(), phase, 1, false, 0.0);
    p1.wait_generation(1);
    p2.wait_generation(1);
    let load = HotLoad::start(&p1, &p2);
    load.wait_for_incrs(HOT_INCRS);
    let acked = load.finish();
    let rate = acked.ops as f64 / acked.elapsed.as_secs_f64();
    eprintln!(
        "{phase}: {} acknowledged writes ({} INCR) on 2 keys in {:.1}s ({rate:.0}/s)",
        acked.ops,
        acked.incrs,
        acked.elapsed.as_secs_f64()
    );
    assert!(acked.incrs >= HOT_INCRS, "{} INCRs", acked.incrs);
    assert_no_mirror_errors(&[&p1, &p2]);
    assert_sides_equal_the_model(&sb, &acked);
}
