//! The routing in force: the flag file's applied generation, followed as the watcher reloads it.
//!
//! Connections take one snapshot ([`Applied`]) per batch of requests, so a new generation takes
//! effect at a request boundary, atomically: no request is routed half by one generation and half
//! by the next, and no connection is dropped.

use std::sync::Arc;

use tokio::sync::watch;

use super::heartbeat::totals;
use super::metrics::Metrics;
use crate::flags::{FlagRouting, WatchState};
use crate::report::{Counters, now_ms};

/// One applied generation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Flag-file generation (0: no flag file yet).
    pub generation: u64,
    /// Its phase.
    pub phase: String,
    /// Its routing.
    pub routing: FlagRouting,
    /// When this proxy applied it (ms since the Unix epoch).
    pub applied_at_ms: u64,
    /// The proxy's counters at that moment: reports count from here (see [`Counters`]).
    pub baseline: Counters,
}

impl Applied {
    fn from_state(state: &WatchState, metrics: &Metrics) -> Applied {
        let (generation, phase, routing) = match &state.applied {
            Some(flag) => (flag.generation, flag.phase.clone(), flag.routing),
            None => (0, "planned".to_string(), FlagRouting::planned()),
        };
        Applied {
            generation,
            phase,
            routing,
            applied_at_ms: now_ms(),
            baseline: totals(metrics),
        }
    }
}

/// Follows the watcher: publishes a new [`Applied`] whenever the applied generation changes, and
/// counts flag-file errors (the last good routing stays in force while they last).
pub fn follow(
    mut flags: watch::Receiver<WatchState>,
    metrics: Arc<Metrics>,
) -> watch::Receiver<Arc<Applied>> {
    let first = Applied::from_state(&flags.borrow_and_update(), &metrics);
    metrics.applied_generation.set(first.generation as i64);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut errors_seen = flags.borrow().errors;
        while flags.changed().await.is_ok() {
            let state = flags.borrow_and_update().clone();
            if state.errors > errors_seen {
                metrics.flag_errors.inc_by(state.errors - errors_seen);
                tracing::warn!(
                    "flag file: {} (keeping the last good routing)",
                    state.last_error.as_deref().unwrap_or("error")
                );
            }
            errors_seen = state.errors;
            if state.generation() != tx.borrow().generation {
                let applied = Applied::from_state(&state, &metrics);
                tracing::info!(
                    "applied generation {} ({}): read {}, write {}, mirror {}, fence {}",
                    applied.generation,
                    applied.phase,
                    applied.routing.read,
                    applied.routing.write,
                    applied.routing.mirror,
                    applied.routing.fence
                );
                metrics.applied_generation.set(applied.generation as i64);
                metrics.fence_held.set(i64::from(applied.routing.fence));
                if tx.send(Arc::new(applied)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}
