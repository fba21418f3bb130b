//! The request-latency histogram, updated on the hot path without a lock.
//!
//! `prometheus-client`'s `Histogram` keeps its buckets behind a mutex that every observation
//! takes; the proxy observes once per reply, so that is a lock per request. Here each bucket,
//! and the sum, is an atomic counter: an observation is two relaxed `fetch_add`s, a batch of
//! replies with one latency is still two (see [`Latency::observe_many`]), and a scrape reads the
//! counters one by one. The count is the sum of the buckets, so the exposition is always
//! self-consistent (a scrape racing an observation may miss it in `_sum` but never shows a
//! bucket above `_count`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram of durations with fixed upper bounds (plus `+Inf`); cheap to clone (the clones
/// share their counters, as the registry's copy must).
#[derive(Debug, Clone)]
pub struct Latency(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Finite upper bounds in seconds, ascending, as exported (`le` labels).
    bounds: Vec<f64>,
    /// The same bounds in nanoseconds, for comparing a `Duration` without floating point.
    bounds_ns: Vec<u64>,
    /// Observations per bucket (not cumulative); one more than `bounds`: the last is `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Latency {
    /// A histogram with these upper bounds in seconds (non-finite ones are dropped; `+Inf` is
    /// always there).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Latency {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        // Truncated: a bound of 100 µs is exactly 100,000 ns, whatever its float rounding.
        let bounds_ns = bounds.iter().map(|b| (b * 1e9) as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Latency(Arc::new(Inner {
            bounds,
            bounds_ns,
            counts,
            sum_ns: AtomicU64::new(0),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        self.observe_many(took, 1);
    }

    /// Records `n` observations of the same duration (the replies of one batch, which share
    /// their arrival and their answer): two atomic additions, whatever `n`.
    pub fn observe_many(&self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = self.0.bounds_ns.partition_point(|&bound| bound < ns);
        self.0.counts[i].fetch_add(n, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// `(sum in seconds, count, [(upper bound, observations in that bucket)])`, `+Inf` last.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let upper = self
            .0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = upper
            .zip(&self.0.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Latency::new([0.001, 0.0001, f64::INFINITY]);
        h.observe(Duration::from_micros(100)); // on a bound: that bucket
        h.observe_many(Duration::from_micros(101), 3);
        h.observe(Duration::from_secs(2));
        h.observe_many(Duration::from_secs(1), 0);
        let (sum, count, buckets) = h.clone().snapshot();
        assert_eq!(count, 5);
        assert_eq!(buckets, vec![(0.0001, 1), (0.001, 3), (f64::INFINITY, 1)]);
        assert!((sum - 2.000403).abs() < 1e-9, "{sum}");
    }
}
