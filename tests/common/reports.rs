//! Playing the proxies' part against the real target cluster: proxy reports (design §5) written
//! into the reports hash as a proxy would, and fake proxies that follow the flag file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cachemig::report::{Counters, FenceState, HotKey, ProxyReport, now_ms, reports_key};

use super::sandbox::Sandbox;

/// Sets `[proxies] expected = N` (plus `extra` lines in `[proxies]`) in the sandbox plan. Call
/// after `set_plan_extra`, which rewrites the plan.
pub fn expect_proxies(sb: &Sandbox, expected: u32, extra: &str) {
    let text = std::fs::read_to_string(sb.plan()).unwrap();
    let text = text.replacen(
        "[proxies]\nexpected = 0\n",
        &format!("[proxies]\nexpected = {expected}\n{extra}"),
        1,
    );
    std::fs::write(sb.plan(), text).unwrap();
}

/// A fresh, healthy report of proxy `id` at `generation` in `phase`, written now.
pub fn report(id: &str, generation: u64, phase: &str) -> ProxyReport {
    let now = now_ms();
    ProxyReport {
        id: id.into(),
        generation,
        phase: phase.into(),
        fence: FenceState::Off,
        written_at_ms: now,
        applied_at_ms: now,
        counters: Counters {
            requests: 1000,
            new_requests: 500,
            mirror_ok: 100,
            shadow_samples: 1000,
            ..Counters::default()
        },
        mirror_queue_depth: 0,
        mirror_lag_ms: 0,
        dirty_keys: 0,
        qps: 10.0,
        last_error: None,
        flag_error: None,
        hot_keys: vec![HotKey {
            key: "token:hot".into(),
            count: 7,
            error: 0,
        }],
        stale: None,
    }
}

/// HSETs `report` into the sandbox migration's reports hash on the target cluster.
pub fn write_report(sb: &Sandbox, report: &ProxyReport) {
    let json = serde_json::to_string(report).unwrap();
    redis::cmd("HSET")
        .arg(reports_key("sandbox"))
        .arg(&report.id)
        .arg(json)
        .exec(&mut sb.target.cluster_conn())
        .unwrap();
}

/// Deletes every report.
pub fn clear_reports(sb: &Sandbox) {
    redis::cmd("DEL")
        .arg(reports_key("sandbox"))
        .exec(&mut sb.target.cluster_conn())
        .unwrap();
}

/// Waits until every report in the hash is at the flag file's generation.
pub fn wait_for_reports_at_flag_generation(sb: &Sandbox) {
    let generation = sb.flag().map_or(0, |f| f.generation);
    super::wait_for(
        "proxy reports at the flag generation",
        Duration::from_secs(10),
        || {
            let reports: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(reports_key("sandbox"))
                .query(&mut sb.target.cluster_conn())
                .unwrap();
            // Reports of dead proxies (killed by the test) stay until they age out: only those
            // written within the last 3 s (the target's clock, as the CLI judges) count.
            let now_ms = server_ms(&sb.target.masters()[0]);
            let live: Vec<ProxyReport> = reports
                .iter()
                .filter_map(|(_, json)| serde_json::from_str::<ProxyReport>(json).ok())
                .filter(|r| now_ms.saturating_sub(r.written_at_ms) <= 3_000)
                .collect();
            !live.is_empty() && live.iter().all(|r| r.generation >= generation)
        },
    );
}

/// A server's clock (`TIME`) in milliseconds.
fn server_ms(node: &super::RedisServer) -> u64 {
    let (secs, micros): (u64, u64) = node.query(&["TIME"]);
    secs * 1000 + micros / 1000
}

/// The gate `name` of the next step as `plan --format json` shows it: (verdict, measured).
pub fn next_gate(sb: &Sandbox, name: &str) -> (String, String) {
    let json = sb.cachemig(&["plan", "--format", "json"]).json();
    let g = json["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == name)
        .unwrap_or_else(|| panic!("no gate {name} in {json}"))
        .clone();
    (
        g["verdict"].as_str().unwrap().into(),
        g["measured"].as_str().unwrap().into(),
    )
}

/// Runs `cachemig verify --repair` once every report is at the flag file's generation, so the
/// `verified` gate into read-cutover or write-stop finds a fresh record; asserts it leaves no
/// unresolved difference. With `--repair`, as an operator with writers running would: a key
/// written every few milliseconds can differ at both looks of a plain verify, while the repair
/// (from the write primary) settles it.
pub fn verify_for_gate(sb: &Sandbox) {
    wait_for_reports_at_flag_generation(sb);
    sb.cachemig(&["verify", "--repair"]).assert_success();
}

/// Whether the step into `phase` has the `verified` gate.
pub fn needs_verify(phase: &str) -> bool {
    matches!(phase, "read-cutover" | "write-stop")
}

/// Advances (with healthy fake proxies `p1` and `p2` acking every generation) until `phase` is in
/// force. The plan must expect 2 proxies and let the shadow and soak gates pass (see
/// `tests/proxy_reports.rs`).
pub fn walk_to(sb: &Sandbox, phase: &str) {
    let _proxies = FakeProxies::start(sb, &["p1", "p2"], true);
    while sb.flag().map(|f| f.phase) != Some(phase.to_string()) {
        if sb.flag().is_some() {
            wait_for_reports_at_flag_generation(sb);
        }
        let next = cachemig::phase::Catalog::builtin()
            .next(&sb.flag().map_or("planned".to_string(), |f| f.phase))
            .map(|p| p.name.clone())
            .unwrap_or_default();
        if needs_verify(&next) {
            verify_for_gate(sb);
        }
        sb.cachemig(&["advance", "--yes"]).assert_success();
    }
}

/// Proxies that follow the flag file every 50 ms and report the generation they "applied"; on a
/// fence generation they report `drained` while `drain` is set, `holding` otherwise.
pub struct FakeProxies {
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeProxies {
    /// Starts proxies named `ids` for the sandbox.
    pub fn start(sb: &Sandbox, ids: &[&str], drain: bool) -> FakeProxies {
        let stop = Arc::new(AtomicBool::new(false));
        let drain = Arc::new(AtomicBool::new(drain));
        let (flag_path, seeds) = (sb.flag_path(), sb.target.seed_urls());
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let (stopping, draining) = (stop.clone(), drain.clone());
        let thread = std::thread::spawn(move || {
            let mut conn = redis::cluster::ClusterClient::new(seeds)
                .unwrap()
                .get_connection()
                .unwrap();
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(Some(flag)) = cachemig::flags::read(&flag_path) {
                    for id in &ids {
                        let mut r = report(id, flag.generation, &flag.phase);
                        r.fence = match (flag.routing.fence, draining.load(Ordering::Relaxed)) {
                            (false, _) => FenceState::Off,
                            (true, true) => FenceState::Drained,
                            (true, false) => FenceState::Holding,
                        };
                        let _ = redis::cmd("HSET")
                            .arg(reports_key("sandbox"))
                            .arg(id)
                            .arg(serde_json::to_string(&r).unwrap())
                            .exec(&mut conn);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        FakeProxies {
            stop,
            drain,
            thread: Some(thread),
        }
    }

    /// Whether they ack a fence (report `drained`) from now on.
    pub fn set_drain(&self, drain: bool) {
        self.drain.store(drain, Ordering::Relaxed);
    }
}

impl Drop for FakeProxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
