//! Reports (design §5): the heartbeat this proxy writes into the new cluster every second, and
//! the same facts for `/status` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::Proxy;
use super::http::Exporter;
use super::metrics::Metrics;
use super::mirror::Direction;
use super::succession::Succession;
use crate::cluster::Router;
use crate::report::{self, Counters, FenceState, ProxyReport};

/// How often the report is written.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How often while a fence is in force and not yet drained: the CLI waits on this ack.
const FENCE_INTERVAL: Duration = Duration::from_millis(100);
/// Hot keys in a report.
const HOT_KEYS: usize = 10;

/// The proxy's counters since it started.
pub fn totals(m: &Metrics) -> Counters {
    Counters {
        requests: m.requests.get(),
        errors: m.errors.get(),
        new_requests: m.new_requests.get(),
        new_errors: m.new_errors.get(),
        mirror_ok: m.mirror_ok.get(),
        mirror_errors: m.mirror_errors.get(),
        mirror_overflow: m.mirror_overflow.get(),
        sync_mirror_failures: m.sync_mirror_failures.get(),
        shadow_samples: m.shadow_samples.get(),
        shadow_mismatches: m.shadow_mismatches.get(),
        shadow_skipped: m.shadow_skipped.get(),
    }
}

impl Proxy {
    /// Where this proxy stands in the fence of `applied`: drained once no write is in flight and
    /// the mirror has nothing queued, running or dirty. The caller passes the same snapshot it
    /// reports the generation of, so an ack always names the generation it drained.
    pub fn fence_state(&self, applied: &super::Applied) -> FenceState {
        if !applied.routing.fence {
            return FenceState::Off;
        }
        if self.writes_in_flight.load(Ordering::SeqCst) == 0 && self.mirror.drained() {
            FenceState::Drained
        } else {
            FenceState::Holding
        }
    }

    /// The counters since `applied` took force, carried on from an earlier process of this
    /// proxy id that reported the same generation.
    pub fn counters(&self, applied: &super::Applied) -> Counters {
        let mine = totals(&self.metrics).since(&applied.baseline);
        match self.carried.get() {
            Some((generation, earlier)) if *generation == applied.generation => mine.plus(earlier),
            _ => mine,
        }
    }

    /// This proxy's report now; `qps` is measured by the caller.
    pub fn report(&self, qps: f64) -> ProxyReport {
        let applied = self.applied();
        let (depth, lag, dirty) = self.mirror.depth();
        let flag = self.flag.borrow();
        ProxyReport {
            id: self.id.clone(),
            generation: applied.generation,
            phase: applied.phase.clone(),
            fence: self.fence_state(&applied),
            written_at_ms: report::now_ms(),
            applied_at_ms: applied.applied_at_ms,
            counters: self.counters(&applied),
            mirror_queue_depth: depth as u64,
            mirror_lag_ms: lag.as_millis() as u64,
            dirty_keys: dirty as u64,
            qps,
            last_error: self.mirror.last_error(),
            flag_error: flag.failing.then(|| flag.last_error.clone()).flatten(),
            hot_keys: self.hot.top(HOT_KEYS),
            stale: self.stale(),
        }
    }
}

/// Writes the report every [`INTERVAL`] (faster while a fence drains), forever. A failed write is
/// logged and retried at the next tick: the CLI then sees the report age and counts the proxy
/// missing, which is the safe reading. The report goes under the field `succession` names (the
/// id, or an interim one while a predecessor of the same id still runs).
pub async fn run(proxy: Arc<Proxy>, router: Router, succession: Arc<Succession>) {
    restore(&proxy, &router).await;
    let mut last_requests = proxy.metrics.requests.get();
    let mut last_at = std::time::Instant::now();
    let mut applied = proxy.applied.clone();
    let mut beacon = super::stale::Check::default();
    loop {
        beacon.tick(&proxy, &router).await;
        let requests = proxy.metrics.requests.get();
        let qps = (requests - last_requests) as f64 / last_at.elapsed().as_secs_f64().max(0.001);
        (last_requests, last_at) = (requests, std::time::Instant::now());
        succession.tick().await;
        let report = ProxyReport {
            id: succession.field(),
            ..proxy.report(qps)
        };
        if let Err(e) = report::write(&router, &proxy.migration, &report).await {
            tracing::warn!("heartbeat to new failed: {e}");
        }
        let pause = if report.fence == FenceState::Holding {
            FENCE_INTERVAL
        } else {
            INTERVAL
        };
        // A new generation is reported at once: the CLI waits for acks.
        let _ = tokio::time::timeout(pause, applied.changed()).await;
    }
}

/// Before the first report: carries on the counters an earlier process of this proxy id
/// reported, and takes over the keys it left in its backlog (retried until new answers; until
/// then the proxy reports nothing, so it counts as missing, never as drained).
async fn restore(proxy: &Arc<Proxy>, router: &Router) {
    loop {
        match restore_once(proxy, router).await {
            Ok(0) => return,
            Ok(n) => {
                eprintln!(
                    "cachemig proxy {}: took over {n} key(s) from its backlog; syncing them",
                    proxy.id
                );
                return;
            }
            Err(e) => {
                tracing::warn!("restoring the report and backlog from new failed: {e}");
                tokio::time::sleep(INTERVAL).await;
            }
        }
    }
}

async fn restore_once(proxy: &Arc<Proxy>, router: &Router) -> redis::RedisResult<usize> {
    if let Some(earlier) = report::read_one(router, &proxy.migration, &proxy.id).await? {
        let _ = proxy.carried.set((earlier.generation, earlier.counters));
    }
    let keys = proxy.mirror.backlog().members().await?;
    let n = keys.len();
    if n > 0 {
        let dir = Direction::from_primary(proxy.applied().routing.write);
        proxy.mirror.recover(dir, keys);
    }
    Ok(n)
}

impl Exporter for Proxy {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn status(&self) -> serde_json::Value {
        let applied = self.applied();
        let report = self.report(0.0);
        let flag = self.flag.borrow();
        json!({
            "id": self.id,
            "migration": self.migration,
            "generation": applied.generation,
            "phase": applied.phase,
            "routing": applied.routing,
            "fence": report.fence,
            "stale": report.stale,
            "held_writes": self.metrics.held_writes.get(),
            "counters_since_generation": report.counters,
            "counters_total": totals(&self.metrics),
            "mirror": {
                "queue_depth": report.mirror_queue_depth,
                "drained": self.mirror.drained(),
                "lag_ms": report.mirror_lag_ms,
                "dirty_keys": report.dirty_keys,
                "last_error": report.last_error,
            },
            "flag_file": {
                "errors": flag.errors,
                "failing": flag.failing,
                "last_error": flag.last_error,
            },
            "servers": self.compat.status(),
            "connections": self.metrics.connections.get(),
            "hot_keys": report.hot_keys,
        })
    }
}
