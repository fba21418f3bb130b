//! Row: a writer that bypasses the proxies. A raw connection writes old directly from
//! `sync-dual-write` on, unmirrored; `advance` into `read-cutover` is blocked by the
//! `bypass-writers` gate naming its address. Once it stops, `verify --repair` copies its writes
//! from old (the write primary) and a clean `verify` opens the `verified` gate: the walk goes on
//! into `read-cutover`, and old and new both equal the model of every acknowledged write, those
//! of the proxies' writer and those of the bypassing one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::acked::{Model, Writer, assert_sides_equal, read_through};
use crate::common::load::advance_to;
use crate::common::proxy::ProxyProcess;
use crate::common::reports::{expect_proxies, wait_for_reports_at_flag_generation};
use crate::common::sandbox::Sandbox;

/// SETs `token:bypass:<n>` on old over one raw connection every 20 ms until stopped; what old
/// acknowledged goes into the model.
struct Bypass {
    addr: String,
    stop: Arc<AtomicBool>,
    model: Arc<Mutex<Model>>,
    thread: std::thread::JoinHandle<()>,
}

impl Bypass {
    fn start(sb: &Sandbox) -> Bypass {
        let stream = TcpStream::connect(("127.0.0.1", sb.source.port())).unwrap();
        let addr = stream.local_addr().unwrap().to_string();
        let (stop, model) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Model::new())),
        );
        let (stopping, acked) = (stop.clone(), model.clone());
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut stream = stream;
            let mut n = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let (key, value) = (format!("token:bypass:{}", n % 50), format!("b{n}"));
                let req = format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                    key.len(),
                    value.len()
                );
                stream.write_all(req.as_bytes()).unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "+OK\r\n", "old acknowledged the bypassing SET");
                acked.lock().unwrap().insert(key, value);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Bypass {
            addr,
            stop,
            model,
            thread,
        }
    }

    /// Stops writing and closes the connection; the model of what old acknowledged.
    fn finish(self) -> Model {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the bypassing writer panicked");
        Arc::try_unwrap(self.model)
            .expect("the writer thread has ended")
            .into_inner()
            .unwrap()
    }
}

/// The result of gate `name` in `advance --dry-run --format json`.
fn gate(sb: &Sandbox, name: &str) -> serde_json::Value {
    let report = sb.cachemig(&["advance", "--dry-run", "--format", "json"]).json();
    report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == name)
        .unwrap_or_else(|| panic!("no gate {name}: {report}"))
        .clone()
}

#[test]
fn bypassing_writer() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra(
        "[gates]\nsoak = \"0s\"\n\n[dual_write]\nsync_timeout_ms = 5000\n\n[shadow_read]\nsample_rate = 1.0\nmin_samples = 5\nmax_mismatch_ratio = 0.5\n",
    );
    expect_proxies(&sb, 2, "");
    let (p1, p2) = (ProxyProcess::start(&sb, "p1"), ProxyProcess::start(&sb, "p2"));
    let proxies = [&p1, &p2];
    advance_to(&sb, &proxies, "backfill");
    let writer = Writer::start(&proxies, "w");
    advance_to(&sb, &proxies, "sync-dual-write");

    let bypass = Bypass::start(&sb);
    advance_to(&sb, &proxies, "shadow-read");
    let keys: Vec<String> = (0..20).map(|i| format!("token:w:{i}")).collect();
    read_through(&proxies, &keys);

    // Blocked, naming the bypassing connection; advance changes nothing.
    let g = gate(&sb, "bypass-writers");
    assert_eq!(g["verdict"], "blocked", "{g}");
    assert!(
        g["measured"].as_str().unwrap().contains(&bypass.addr),
        "names {}: {g}",
        bypass.addr
    );
    let run = sb.cachemig(&["advance", "--yes"]);
    assert_eq!(
        run.status, 3,
        "advance is blocked:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains(&bypass.addr), "{}", run.stdout);
    assert_eq!(sb.flag().unwrap().phase, "shadow-read");

    // The way out: stop it, repair from old, verify, advance.
    let bypassed = bypass.finish();
    assert!(!bypassed.is_empty());
    wait_for_reports_at_flag_generation(&sb);
    sb.cachemig(&["verify", "--repair"]).assert_success();
    sb.cachemig(&["verify"]).assert_success();
    assert_eq!(gate(&sb, "bypass-writers")["verdict"], "pass");
    assert_eq!(
        gate(&sb, "verified")["verdict"],
        "pass",
        "the clean verify opens the gate"
    );
    advance_to(&sb, &proxies, "read-cutover");

    let (mut model, errors) = writer.finish();
    assert!(errors.is_empty(), "the proxies' clients saw errors: {errors:?}");
    for p in proxies {
        crate::common::wait_for("mirror drained", Duration::from_secs(20), || {
            p.status()["mirror"]["drained"] == true
        });
    }
    model.extend(bypassed);
    assert_sides_equal(&sb, &model);
}
