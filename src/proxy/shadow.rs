//! Shadow reads (phase 4): a sample of reads is also sent to the side not read from, detached
//! from the client, and the two replies are compared.
//!
//! A shadow read never delays or fails the client: it runs in its own task, with its own timeout
//! and a cap on how many run at once (beyond it the sample is skipped and counted). Replies are
//! normalised before comparing (order-insensitive where the command's reply order means nothing,
//! TTLs within a tolerance); commands with random replies are never shadowed. A mismatch is
//! re-checked once, both sides read again, before it counts: a write racing the sample would
//! otherwise look like divergence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::Semaphore;

use super::backend::Backend;
use super::call::Call;
use super::metrics::Metrics;
use super::resp::{Proto, Reply};

/// Shadow reads running at once, at most.
pub const CONCURRENCY: usize = 64;
/// Pause before a mismatch is re-checked.
const RECHECK_AFTER: Duration = Duration::from_millis(20);
/// Mismatching keys logged per proxy, at most (the count is exact; the log is a sample).
const LOGGED_MISMATCHES: u64 = 100;

/// The shadow-read engine of one proxy.
pub struct Shadow {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    logged: AtomicU64,
}

impl Shadow {
    /// A shadow engine counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Shadow> {
        Arc::new(Shadow {
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            metrics,
            logged: AtomicU64::new(0),
        })
    }

    /// Whether this read is sampled: never for random replies or keyless reads.
    pub fn sampled(call: &Call, rate: f64) -> bool {
        !call.spec.random && !call.keys.is_empty() && rate > 0.0 && rand::random::<f64>() < rate
    }

    /// Compares `primary` (what the client got from `read`) with the same call on `shadow`, in
    /// the background. Comparisons are made in RESP2: a RESP3 client's reply is `None` and the
    /// read side is read again for the comparison.
    pub fn spawn(
        self: &Arc<Self>,
        call: Call,
        primary: Option<Reply>,
        read: Arc<Backend>,
        shadow: Arc<Backend>,
        timeout: Duration,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.shadow_skipped.inc();
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let verdict = tokio::time::timeout(timeout, me.compare(&call, primary, &read, &shadow)).await;
            match verdict {
                Ok(Some(true)) => {
                    me.metrics.shadow_samples.inc();
                }
                Ok(Some(false)) => {
                    me.metrics.shadow_samples.inc();
                    me.metrics.shadow_mismatches.inc();
                    me.log(&call);
                }
                Ok(None) | Err(_) => {
                    me.metrics.shadow_skipped.inc();
                }
            }
        });
    }

    /// `Some(equal)`, or `None` when the shadow side could not be reached (not a mismatch; it is
    /// counted as skipped).
    async fn compare(
        &self,
        call: &Call,
        primary: Option<Reply>,
        read: &Backend,
        shadow: &Backend,
    ) -> Option<bool> {
        let primary = match primary {
            Some(reply) => reply,
            None => send(call, read).await,
        };
        let other = send(call, shadow).await;
        if proxy_error(&primary) {
            return None;
        }
        if proxy_error(&other) {
            return None; // the proxy could not reach new: not a comparison
        }
        if equivalent(call, &primary.frame(), &other.frame()) {
            return Some(true);
        }
        tokio::time::sleep(RECHECK_AFTER).await;
        let (again, other) = futures::join!(send(call, read), send(call, shadow));
        if [&again, &other].iter().any(|r| proxy_error(r)) {
            return None;
        }
        Some(equivalent(call, &again.frame(), &other.frame()))
    }

    fn log(&self, call: &Call) {
        if self.logged.fetch_add(1, Ordering::Relaxed) < LOGGED_MISMATCHES {
            let key = call.first_key().map(|k| String::from_utf8_lossy(k).into_owned());
            tracing::warn!(
                "shadow read mismatch: {} {} (after re-check)",
                String::from_utf8_lossy(&call.args[0]),
                key.unwrap_or_default()
            );
        }
    }
}

/// An error the proxy made up (a backend unreachable), as opposed to a reply from Redis.
fn proxy_error(reply: &Reply) -> bool {
    reply.error_text().is_some_and(|e| e.contains("cachemig:"))
}

async fn send(call: &Call, backend: &Backend) -> Reply {
    let (units, shape) = call.units(backend.is_cluster());
    call.merge(&shape, &mut backend.send(units).await.into_iter(), Proto::Resp2)
}

/// Whether two replies to `call` mean the same.
pub fn equivalent(call: &Call, a: &BytesFrame, b: &BytesFrame) -> bool {
    if call.spec.ttl {
        return match (a, b) {
            (BytesFrame::Integer(x), BytesFrame::Integer(y)) => ttl_close(&call.args[0], *x, *y),
            _ => a == b,
        };
    }
    if call.spec.unordered {
        return normalised(call, a) == normalised(call, b);
    }
    match (a, b) {
        // Error texts may differ between versions; the kind (first word) must agree.
        (BytesFrame::Error(x), BytesFrame::Error(y)) => x.split(' ').next() == y.split(' ').next(),
        _ => a == b,
    }
}

/// TTL replies agree within a tolerance: the mirror restores relative TTLs, so the sides' expiry
/// instants differ by the copy's latency. `TTL`/`PTTL`: max(1 s, 1 %); `EXPIRETIME`/
/// `PEXPIRETIME` (absolute instants): 1 s. Negative values (-1 no expiry, -2 missing) must agree.
fn ttl_close(name: &[u8], x: i64, y: i64) -> bool {
    if x < 0 || y < 0 {
        return x == y;
    }
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let unit = if is(b"PTTL") || is(b"PEXPIRETIME") {
        1000
    } else {
        1
    };
    let tolerance = if is(b"EXPIRETIME") || is(b"PEXPIRETIME") {
        unit
    } else {
        (x.max(y) / 100).max(unit)
    };
    (x - y).abs() <= tolerance
}

/// Elements sorted (pairs sorted as pairs for hash-like replies).
fn normalised(call: &Call, frame: &BytesFrame) -> Vec<Vec<u8>> {
    let BytesFrame::Array(items) = frame else {
        return vec![format!("{frame:?}").into_bytes()];
    };
    let paired = call.args[0].eq_ignore_ascii_case(b"HGETALL");
    let encoded: Vec<Vec<u8>> = items.iter().map(|f| format!("{f:?}").into_bytes()).collect();
    let mut out: Vec<Vec<u8>> = if paired {
        encoded.chunks(2).map(|c| c.concat()).collect()
    } else {
        encoded
    };
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_tolerance() {
        assert!(ttl_close(b"TTL", 100, 99));
        assert!(!ttl_close(b"TTL", 100, 97));
        assert!(ttl_close(b"pttl", 100_000, 99_100));
        assert!(!ttl_close(b"PTTL", 100_000, 98_000));
        assert!(!ttl_close(b"TTL", -1, 5));
        assert!(ttl_close(b"PEXPIRETIME", 1_700_000_000_000, 1_700_000_000_400));
        assert!(ttl_close(b"EXPIRETIME", 1_700_000_000, 1_700_000_001));
    }
}
