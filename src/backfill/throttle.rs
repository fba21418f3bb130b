//! Gentleness towards the source: a keys-per-second cap and an adaptive back-off driven by a
//! side PING probe (design §2 `max_keys_per_sec`, `max_source_latency_ms`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::MultiplexedConnection;

/// Shared by every batch of one backfill.
#[derive(Debug)]
pub struct Throttle {
    max_keys_per_sec: u64,
    max_latency: Duration,
    /// When the next key may start, for the rate cap.
    next_slot: Mutex<Instant>,
    /// Latest probe round trip, microseconds.
    latency_us: AtomicU64,
    /// Times a batch waited, for the summary.
    waits: AtomicU64,
    /// Consecutive batches that found the source slow.
    slow_streak: AtomicU64,
}

impl Throttle {
    /// A throttle with the plan's limits (`max_keys_per_sec` 0 = no cap).
    pub fn new(max_keys_per_sec: u64, max_source_latency_ms: u64) -> Throttle {
        Throttle {
            max_keys_per_sec,
            max_latency: Duration::from_millis(max_source_latency_ms),
            next_slot: Mutex::new(Instant::now()),
            latency_us: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            slow_streak: AtomicU64::new(0),
        }
    }

    /// PINGs the source every 100 ms on its own connection and records the round trip, until the
    /// returned task is aborted.
    pub fn spawn_probe(
        self: &std::sync::Arc<Self>,
        mut conn: MultiplexedConnection,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let start = std::time::Instant::now();
                let ok = redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok();
                let took = if ok {
                    start.elapsed()
                } else {
                    Duration::from_secs(1)
                };
                me.latency_us.store(took.as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// The latest probe round trip.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// How many times batches waited.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Why the backfill is being held back right now, if it is.
    pub fn reason(&self) -> Option<String> {
        let latency = self.latency();
        (latency > self.max_latency).then(|| {
            format!(
                "source PING {:.1} ms > max_source_latency_ms {}",
                latency.as_secs_f64() * 1000.0,
                self.max_latency.as_millis()
            )
        })
    }

    /// Waits before `keys` more keys are copied: a pause while the source answers slowly (20 ms
    /// doubling to 1 s over consecutive slow batches, so a source that is always slow — say a
    /// remote one with a high round trip — still makes progress), then the rate cap.
    pub async fn admit(&self, keys: u64) {
        if keys == 0 {
            return;
        }
        if self.latency() > self.max_latency {
            let streak = self.slow_streak.fetch_add(1, Ordering::Relaxed).min(6);
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20 << streak)).await;
        } else {
            self.slow_streak.store(0, Ordering::Relaxed);
        }
        if self.max_keys_per_sec == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(keys as f64 / self.max_keys_per_sec as f64);
        let start = {
            let mut next = self.next_slot.lock().expect("throttle lock");
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + cost;
            start
        };
        if start > Instant::now() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(start).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_cap_spaces_batches() {
        let t = Throttle::new(1000, 1000);
        let start = tokio::time::Instant::now();
        t.admit(500).await;
        t.admit(500).await;
        t.admit(500).await;
        // 1500 keys at 1000/s: the third batch may start only after 1 s.
        assert!(
            start.elapsed() >= Duration::from_millis(999),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(t.waits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_source_slows_batches_down_but_never_stops_them() {
        let t = Throttle::new(0, 5);
        t.latency_us.store(50_000, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            t.admit(100).await;
        }
        // 20+40+...+1280 ms, then capped at 1280 ms: bounded, and every batch went through.
        assert_eq!(t.waits(), 10);
        assert!(start.elapsed() >= Duration::from_millis(20 + 40 + 80 + 160 + 320 + 640 + 1280 * 4));
        t.admit(0).await;
        assert_eq!(t.waits(), 10, "an empty batch never waits");
    }

    #[test]
    fn reason_names_the_latency() {
        let t = Throttle::new(0, 5);
        assert!(t.reason().is_none());
        t.latency_us.store(7_200, Ordering::Relaxed);
        assert_eq!(
            t.reason().unwrap(),
            "source PING 7.2 ms > max_source_latency_ms 5"
        );
    }
}
