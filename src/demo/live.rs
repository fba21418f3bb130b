//! The live line under the walk: the phase, the client's requests per second and errors, and
//! the proxies' mirror lag and queue from their `/status`, refreshed twice a second; plus what
//! the walk is waiting for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::servers::ProxyAddr;
use super::stats::Stats;

/// How often the line is refreshed.
const TICK: Duration = Duration::from_millis(500);

/// What the proxies' `/status` says, summed over them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mirror {
    /// The largest mirror lag, in milliseconds.
    pub lag_ms: u64,
    /// Keys waiting in the mirror queues.
    pub queue: u64,
    /// Whether every proxy's mirror is drained.
    pub drained: bool,
    /// The generations the proxies route by.
    pub generations: Vec<u64>,
}

/// `GET path` on a proxy's metrics port; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Reads every proxy's `/status`; `None` when one does not answer.
pub fn mirror(proxies: &[ProxyAddr]) -> Option<Mirror> {
    let mut m = Mirror {
        drained: true,
        ..Mirror::default()
    };
    for p in proxies {
        let status: serde_json::Value = serde_json::from_str(&http_get(p.metrics_port, "/status")?).ok()?;
        let mirror = &status["mirror"];
        m.lag_ms = m.lag_ms.max(mirror["lag_ms"].as_u64().unwrap_or(0));
        m.queue += mirror["queue_depth"].as_u64().unwrap_or(0);
        m.drained &= mirror["drained"].as_bool().unwrap_or(false);
        m.generations.push(status["generation"].as_u64().unwrap_or(0));
    }
    Some(m)
}

/// The refreshing line; paused while a command prints.
pub struct Live {
    bar: Arc<Mutex<Option<ProgressBar>>>,
    phase: Arc<Mutex<(String, String)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts refreshing from `stats` and the proxies' status.
    pub fn start(stats: Arc<Stats>, proxies: Vec<ProxyAddr>) -> Live {
        let bar = Arc::new(Mutex::new(None));
        let phase = Arc::new(Mutex::new((String::new(), String::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, p, s) = (bar.clone(), phase.clone(), stop.clone());
        let thread = std::thread::spawn(move || refresh(&b, &p, &s, &stats, &proxies));
        Live {
            bar,
            phase,
            stop,
            thread: Some(thread),
        }
    }

    /// Shows the line for `phase`, with `waiting` (what the walk waits for).
    pub fn show(&self, phase: &str, waiting: &str) {
        *self.phase.lock().expect("live lock") = (phase.to_string(), waiting.to_string());
        let mut bar = self.bar.lock().expect("live lock");
        if bar.is_none() {
            let b = ProgressBar::new_spinner()
                .with_style(ProgressStyle::with_template("  {spinner} {msg}").expect("valid template"));
            b.enable_steady_tick(Duration::from_millis(120));
            *bar = Some(b);
        }
    }

    /// Hides the line (a command is about to print).
    pub fn pause(&self) {
        if let Some(b) = self.bar.lock().expect("live lock").take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pause();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn refresh(
    bar: &Mutex<Option<ProgressBar>>,
    phase: &Mutex<(String, String)>,
    stop: &AtomicBool,
    stats: &Stats,
    proxies: &[ProxyAddr],
) {
    let (mut last_ops, mut last_at) = (stats.ops(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let (ops, now) = (stats.ops(), Instant::now());
        let rate = (ops - last_ops) as f64 / (now - last_at).as_secs_f64();
        (last_ops, last_at) = (ops, now);
        let mirror = match mirror(proxies) {
            Some(m) => {
                stats.note_mirror_lag(m.lag_ms);
                format!("mirror lag {} ms, queue {}", m.lag_ms, m.queue)
            }
            None => "mirror: a proxy did not answer /status".into(),
        };
        let (name, waiting) = phase.lock().expect("live lock").clone();
        let line = format!(
            "{name:<16} {rate:>6.0} ops/s  {} errors  {mirror}  {waiting}",
            stats.errors()
        );
        if let Some(b) = bar.lock().expect("live lock").as_ref() {
            b.set_message(line);
        }
    }
}
