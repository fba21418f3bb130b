//! What the load measured, per phase: requests, errors and each request's latency, attributed
//! to the phase in force when it was sent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many error messages are kept (all are counted).
const KEPT_ERRORS: usize = 20;

/// One phase's measurements.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    /// The phase.
    pub name: String,
    /// When it came into force (for the load).
    pub started: Instant,
    /// When the next one did (`None` while in force).
    pub ended: Option<Instant>,
    /// Requests answered without error.
    pub ops: u64,
    /// Requests answered with an error, or with a reply the model did not expect.
    pub errors: u64,
    /// Latency of each answered request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// The largest mirror lag a proxy's `/status` showed during the phase, in milliseconds.
    pub max_mirror_lag_ms: u64,
}

impl PhaseStats {
    /// How long the phase was (or has been) in force.
    pub fn elapsed(&self) -> Duration {
        self.ended.unwrap_or_else(Instant::now) - self.started
    }

    /// Requests per second over the phase.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed().as_secs_f64().max(0.001)
    }
}

/// Measurements shared by every load thread.
#[derive(Debug)]
pub struct Stats {
    phases: Mutex<Vec<PhaseStats>>,
    ops: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Stats {
    /// Measurements starting in phase `first`.
    pub fn new(first: &str) -> Stats {
        let stats = Stats {
            phases: Mutex::new(Vec::new()),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
        };
        stats.enter(first);
        stats
    }

    /// From now on requests count for phase `name`.
    pub fn enter(&self, name: &str) {
        let mut phases = self.phases.lock().expect("stats lock");
        let now = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(now);
        }
        phases.push(PhaseStats {
            name: name.to_string(),
            started: now,
            ended: None,
            ops: 0,
            errors: 0,
            latencies_us: Vec::new(),
            max_mirror_lag_ms: 0,
        });
    }

    /// Records one request that took `took`; `Err` carries what went wrong.
    pub fn record(&self, took: Duration, outcome: Result<(), String>) {
        let mut phases = self.phases.lock().expect("stats lock");
        let phase = phases.last_mut().expect("a phase is always in force");
        match outcome {
            Ok(()) => {
                phase.ops += 1;
                phase
                    .latencies_us
                    .push(took.as_micros().min(u32::MAX as u128) as u32);
                self.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(message) => {
                phase.errors += 1;
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut kept = self.messages.lock().expect("stats lock");
                if kept.len() < KEPT_ERRORS {
                    kept.push(format!("[{}] {message}", phase.name));
                }
            }
        }
    }

    /// Notes a mirror lag the proxies showed (the phase keeps the largest).
    pub fn note_mirror_lag(&self, lag_ms: u64) {
        let mut phases = self.phases.lock().expect("stats lock");
        if let Some(phase) = phases.last_mut().filter(|p| p.ended.is_none()) {
            phase.max_mirror_lag_ms = phase.max_mirror_lag_ms.max(lag_ms);
        }
    }

    /// Records a finding that is not one request (e.g. a queue item taken twice).
    pub fn fail(&self, message: String) {
        self.record(Duration::ZERO, Err(message));
    }

    /// Requests answered so far, every phase.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Errors so far, every phase.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The first error messages.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("stats lock").clone()
    }

    /// Every phase so far, the one in force last; ends the one in force.
    pub fn finish(&self) -> Vec<PhaseStats> {
        let mut phases = self.phases.lock().expect("stats lock");
        if let Some(last) = phases.last_mut() {
            last.ended.get_or_insert_with(Instant::now);
        }
        phases.clone()
    }
}
