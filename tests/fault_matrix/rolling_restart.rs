//! Row: a rolling restart of both proxies under load in `sync-dual-write`.
//!
//! Each proxy in turn is restarted the way docs/proxy.md says: a new process with the same id
//! starts on the same port (SO_REUSEPORT), and once it listens the old one gets SIGTERM; the old
//! one drops its listener, closes every client connection at a request boundary, drains its
//! mirror and exits 0. The writers are clients that resend a request whose connection closed
//! before its reply (see `Reconnecting`): they see zero errors, were moved (reconnected), and at
//! the end old and new equal the model of every acknowledged INCR, RPUSH and SET. During the
//! overlap the two processes of one id report under two fields (the id, and `ID~PID` for the
//! newcomer) and after it the id alone, written by the new process; the CLI then advances with
//! the restarted fleet acking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::load::{self, Reconnecting, Writers};
use crate::common::proxy::ProxyProcess;
use crate::common::sandbox::Sandbox;
use crate::common::wait_for;

const WRITERS: usize = 6;
const QUEUE: &str = "token:rr:queue";

/// A worker blocked in `BLPOP` (timeout 0) through `port`: what it popped, how often a restart
/// released it (a null reply, as on a timeout), and its errors. It ends on the item `stop`.
fn worker(port: u16) -> JoinHandle<(Vec<String>, u64, Vec<String>)> {
    std::thread::spawn(move || {
        let mut client = Reconnecting::new(port);
        let (mut popped, mut released, mut errors) = (Vec::new(), 0, Vec::new());
        loop {
            match client.query::<Option<(String, String)>>(redis::cmd("BLPOP").arg(QUEUE).arg(0)) {
                Ok(Some((_, item))) if item == "stop" => return (popped, released, errors),
                Ok(Some((_, item))) => popped.push(item),
                Ok(None) => released += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
    })
}

/// Pushes `q0`, `q1`, … onto the queue through `port` every few milliseconds, except while
/// `pause` is set; the items acknowledged.
fn producer(port: u16, stop: Arc<AtomicBool>, pause: Arc<AtomicBool>) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut client = Reconnecting::new(port);
        let mut pushed = Vec::new();
        for n in 0.. {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if pause.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let item = format!("q{n}");
            let acked: redis::RedisResult<i64> = client.query(redis::cmd("RPUSH").arg(QUEUE).arg(&item));
            if acked.is_ok() {
                pushed.push(item);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pushed
    })
}

/// The fields of the reports hash whose report is fresh (written in the last 3 s).
fn live_report_fields(sb: &Sandbox) -> Vec<String> {
    let mut conn = sb.target.cluster_conn();
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(cachemig::report::reports_key("sandbox"))
        .query(&mut conn)
        .unwrap();
    let now = cachemig::report::now_ms();
    let mut live: Vec<String> = all
        .into_iter()
        .filter(|(_, json)| {
            let r: cachemig::report::ProxyReport = serde_json::from_str(json).unwrap();
            r.age_ms(now) < 3000
        })
        .map(|(field, _)| field)
        .collect();
    live.sort();
    live
}

/// Waits until a client of old is blocked in `BLPOP` (the worker, once the queue is empty).
fn worker_blocked(sb: &Sandbox) {
    wait_for("the worker blocked in BLPOP", Duration::from_secs(10), || {
        let clients = sb.source_cmd(&["CLIENT", "LIST"]);
        clients
            .lines()
            .any(|l| l.contains("cmd=blpop") && l.contains("flags=b"))
    });
}

/// Restarts `old` (id `id`, the other proxy being `other`) under load, with the queue worker
/// blocked (the producer paused meanwhile); the new process.
fn restart(
    sb: &Sandbox,
    mut old: ProxyProcess,
    id: &str,
    other: &str,
    writers: &Writers,
    pause: &AtomicBool,
) -> ProxyProcess {
    let new = ProxyProcess::successor(&old, sb.plan(), id, &[]);
    wait_for("the new process listening", Duration::from_secs(10), || {
        new.log().contains("listening on")
    });
    let interim = format!("{id}~{}", new.pid());
    let mut both = vec![id.to_string(), interim, other.to_string()];
    both.sort();
    wait_for(
        "both processes of one id reporting",
        Duration::from_secs(10),
        || live_report_fields(sb) == both,
    );
    writers.wait_progress(100);
    pause.store(true, Ordering::SeqCst);
    worker_blocked(sb);
    old.terminate();
    assert_eq!(old.wait_exit(Duration::from_secs(60)), Some(0), "{}", old.log());
    assert!(old.log().contains("stopped by SIGTERM"), "{}", old.log());
    assert!(
        !old.log().contains("still open after"),
        "every client moved: {}",
        old.log()
    );
    let mut after = vec![id.to_string(), other.to_string()];
    after.sort();
    wait_for(
        "the new process reporting as the id",
        Duration::from_secs(10),
        || live_report_fields(sb) == after,
    );
    assert!(new.log().contains("the predecessor stopped"), "{}", new.log());
    pause.store(false, Ordering::SeqCst);
    writers.wait_progress(100);
    new
}

#[test]
fn rolling_restart_of_both_proxies_under_load_in_sync_dual_write() {
    let mut sb = Sandbox::start();
    load::configure(&mut sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    load::advance_to(&sb, &[&p1, &p2], "sync-dual-write");
    let writers = Writers::start("token:rr", &[p1.port, p2.port], WRITERS);
    let (worker, stop) = (worker(p1.port), Arc::new(AtomicBool::new(false)));
    let pause = Arc::new(AtomicBool::new(false));
    let producer = producer(p2.port, stop.clone(), pause.clone());
    writers.wait_progress(200);
    let p1 = restart(&sb, p1, "p1", "p2", &writers, &pause);
    let p2 = restart(&sb, p2, "p2", "p1", &writers, &pause);
    stop.store(true, Ordering::SeqCst);
    let pushed = producer.join().unwrap();
    let _: i64 = redis::cmd("RPUSH")
        .arg(QUEUE)
        .arg("stop")
        .query(&mut p2.conn())
        .unwrap();
    let (popped, released, errors) = worker.join().unwrap();
    assert!(errors.is_empty(), "worker errors: {errors:?}");
    assert_eq!(
        popped, pushed,
        "every item taken exactly once ({released} release(s))"
    );
    // The restarted fleet acks the next generation like the old one did.
    load::advance_to(&sb, &[&p1, &p2], "shadow-read");
    writers.wait_progress(100);
    let out = writers.finish();
    assert!(out.errors.is_empty(), "client errors: {:?}", out.errors);
    assert!(
        out.reconnects >= WRITERS as u64,
        "every writer was moved by a restart: {} reconnects",
        out.reconnects
    );
    for p in [&p1, &p2] {
        wait_for("mirror drained", Duration::from_secs(10), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    let differences = load::differences(&sb, &out.model);
    assert!(differences.is_empty(), "{differences:#?}");
    assert!(out.ops > 500, "the writers were busy: {} requests", out.ops);
}
