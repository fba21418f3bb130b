//! Row: a surplus proxy that lags one generation.
//!
//! `[proxies] expected = 2` but three proxies run (a rolling update's surge, a forgotten host);
//! the third one's flag file stops updating at `read-cutover`. Writers through all three, and a
//! hot counter INCRed concurrently through all three: the INCRs that would be lost if the
//! surplus proxy kept writing the old primary after the others switched. The step into
//! `write-stop` must not pass on the two acks `expected` asks for: the live surplus proxy blocks
//! it (the fence releases writes on old, exit 3, the proxy named). It turns stale behind the
//! beacon and refuses writes. Once it is stopped (its report ages out), the step passes. At the
//! end old and new equal the model, and the counter equals the INCRs acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::load::{self, Model, Reconnecting, Value, Writers};
use crate::common::proxy::{FlagCopy, ProxyProcess};
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

const HOT: &str = "token:sp:hot";

/// Threads INCRing [`HOT`] through one proxy each, counting the acknowledged INCRs; refusals
/// as stale (`TRYAGAIN`, applied nowhere) are allowed, any other error is kept.
struct HotCounter {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl HotCounter {
    fn start(port: u16) -> HotCounter {
        let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stopping, count) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut client = Reconnecting::new(port);
            let mut errors = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match client.query::<i64>(redis::cmd("INCR").arg(HOT)) {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.code() == Some("TRYAGAIN") => {}
                    Err(e) => errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            errors
        });
        HotCounter {
            stop,
            acked,
            threads: vec![thread],
        }
    }

    /// Stops; the INCRs acknowledged and the errors seen.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        (self.acked.load(Ordering::SeqCst), errors)
    }
}

#[test]
fn surplus_proxy_lags_one_generation() {
    let mut sb = Sandbox::start();
    load::configure(&mut sb, 2, "heartbeat_timeout = \"3s\"\n");
    let dir = tempfile::tempdir().unwrap();
    let p3_flag = dir.path().join("p3-flag.json");
    let copy = FlagCopy::start(sb.flag_path(), p3_flag.clone());
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let mut p3 = ProxyProcess::start_on(&sb.plan_with_flag_file(dir.path(), &p3_flag), "p3", &[]);
    let fleet = Writers::start("token:sp", &[p1.port, p2.port], 4);
    let surplus = Writers::start("token:sp3", &[p3.port], 2);
    let hot: Vec<HotCounter> = [p1.port, p2.port, p3.port].map(HotCounter::start).into();
    load::advance_to(&sb, &[&p1, &p2, &p3], "read-cutover");
    fleet.wait_progress(100);

    // Ready (a fresh verify included) while p3 still follows; then p3's copy freezes, so it
    // never sees the fence generation.
    load::wait_ready(&sb);
    copy.freeze();
    let run = sb.cachemig(&["advance", "--yes"]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.status, 3,
        "two acks of two expected must not pass with p3 behind:\n{said}"
    );
    assert!(said.contains("p3 at generation"), "{said}");
    assert_eq!(sb.flag().unwrap().phase, "read-cutover");
    wait_for("p3 stale", Duration::from_secs(15), || {
        p3.status()["stale"].is_string()
    });
    fleet.wait_progress(100);

    // The forgotten host is found and stopped; its report ages out and the step passes.
    let surplus = surplus.finish();
    let mut hot = hot.into_iter();
    let (fleet_hot, p3_hot) = (hot.by_ref().take(2).collect::<Vec<_>>(), hot.next().unwrap());
    let (p3_acked, p3_errors) = p3_hot.finish();
    p3.kill();
    load::advance_to(&sb, &[&p1, &p2], "write-stop");
    fleet.wait_progress(100);

    let fleet = fleet.finish();
    let mut acked = p3_acked;
    let mut errors = [fleet.errors, p3_errors].concat();
    for h in fleet_hot {
        let (n, e) = h.finish();
        acked += n;
        errors.extend(e);
    }
    let refused_by_p3 = |e: &String| e.contains("TRYAGAIN") || e.contains("stale");
    assert!(surplus.errors.iter().all(refused_by_p3), "{:?}", surplus.errors);
    assert!(errors.is_empty(), "client errors: {errors:?}");
    for p in [&p1, &p2] {
        wait_for("reverse mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let mut model: Model = fleet.model;
    model.extend(surplus.model);
    model.insert(HOT.into(), Value::Text(acked.to_string()));
    let differences = load::differences(&sb, &model);
    assert!(differences.is_empty(), "{differences:#?}");
}
