//! Prometheus metrics of the proxy, exported as OpenMetrics text on `/metrics`.
//!
//! Every handle is an atomic shared with the registry, so the hot path updates a metric without
//! a lock and `encode` reads the same values (the latency histogram too: [`Latency`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

mod latency;

pub use latency::Latency;

/// Request latency buckets: 50 µs doubling 16 times, up to about 1.6 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(50e-6, 2.0, 16)
}

/// Every metric the proxy exports. Fields are cheap atomic handles used on the hot path.
pub struct Metrics {
    /// cachemig_proxy_requests_total
    pub requests: Counter,
    /// cachemig_proxy_errors_total (error replies sent to clients)
    pub errors: Counter,
    /// cachemig_proxy_rejected_total (commands the proxy refuses)
    pub rejected: Counter,
    /// cachemig_proxy_new_requests_total (requests served by the new cluster)
    pub new_requests: Counter,
    /// cachemig_proxy_new_errors_total
    pub new_errors: Counter,
    /// cachemig_proxy_request_duration_seconds histogram; buckets exponential from 50 µs to ~1.6 s
    /// (x2, 16 buckets)
    pub latency: Latency,
    /// cachemig_proxy_client_connections gauge
    pub connections: Gauge,
    /// cachemig_proxy_mirror_queue_depth gauge
    pub mirror_queue_depth: Gauge,
    /// cachemig_proxy_mirror_lag_seconds gauge (f64)
    pub mirror_lag_seconds: Gauge<f64, AtomicU64>,
    /// cachemig_proxy_mirror_synced_total
    pub mirror_ok: Counter,
    /// cachemig_proxy_mirror_errors_total
    pub mirror_errors: Counter,
    /// cachemig_proxy_mirror_overflow_total
    pub mirror_overflow: Counter,
    /// cachemig_proxy_sync_mirror_failures_total
    pub sync_mirror_failures: Counter,
    /// cachemig_proxy_dirty_keys gauge
    pub dirty_keys: Gauge,
    /// cachemig_proxy_shadow_samples_total
    pub shadow_samples: Counter,
    /// cachemig_proxy_shadow_mismatches_total
    pub shadow_mismatches: Counter,
    /// cachemig_proxy_shadow_skipped_total
    pub shadow_skipped: Counter,
    /// cachemig_proxy_applied_generation gauge
    pub applied_generation: Gauge,
    /// cachemig_proxy_fence_held gauge (1 while the fence holds writes)
    pub fence_held: Gauge,
    /// cachemig_proxy_held_writes gauge (writes waiting behind the fence)
    pub held_writes: Gauge,
    /// cachemig_proxy_stale gauge (1 while the proxy refuses writes as stale)
    pub stale: Gauge,
    /// cachemig_proxy_flag_errors_total (flag-file reads that failed; last good routing kept)
    pub flag_errors: Counter,
    /// cachemig_proxy_backend_errors_total (I/O and connection errors to old/new)
    pub backend_errors: Counter,
    /// Holds clones of every handle above for encoding.
    registry: Registry,
}

impl Metrics {
    /// Registers every metric, plus `cachemig_proxy_info{proxy="<id>",migration="<name>"} 1` so
    /// dashboards can tell proxies and migrations apart without a label on every series.
    pub fn new(proxy_id: &str, migration: &str) -> Metrics {
        let mut registry = Registry::default();
        let info = Info::new(vec![
            ("proxy".to_owned(), proxy_id.to_owned()),
            ("migration".to_owned(), migration.to_owned()),
        ]);
        // The info metric's name is the bare prefix; the encoder appends `_info`.
        registry.register("cachemig_proxy", "Identity of this proxy", info);
        let metrics = Metrics::unregistered();
        metrics.register_all(registry.sub_registry_with_prefix("cachemig_proxy"));
        Metrics { registry, ..metrics }
    }

    /// Fresh handles, not yet registered.
    fn unregistered() -> Metrics {
        Metrics {
            requests: Counter::default(),
            errors: Counter::default(),
            rejected: Counter::default(),
            new_requests: Counter::default(),
            new_errors: Counter::default(),
            latency: Latency::new(latency_buckets()),
            connections: Gauge::default(),
            mirror_queue_depth: Gauge::default(),
            mirror_lag_seconds: Gauge::default(),
            mirror_ok: Counter::default(),
            mirror_errors: Counter::default(),
            mirror_overflow: Counter::default(),
            sync_mirror_failures: Counter::default(),
            dirty_keys: Gauge::default(),
            shadow_samples: Counter::default(),
            shadow_mismatches: Counter::default(),
            shadow_skipped: Counter::default(),
            applied_generation: Gauge::default(),
            fence_held: Gauge::default(),
            held_writes: Gauge::default(),
            stale: Gauge::default(),
            flag_errors: Counter::default(),
            backend_errors: Counter::default(),
            registry: Registry::default(),
        }
    }

    /// Registers a clone of every handle under the `cachemig_proxy_` prefix.
    fn register_all(&self, r: &mut Registry) {
        self.register_traffic(r);
        self.register_mirror(r);
        self.register_shadow(r);
        self.register_control(r);
    }

    /// Client-facing requests, errors and latency.
    fn register_traffic(&self, r: &mut Registry) {
        r.register("requests", "Client requests answered", self.requests.clone());
        r.register("errors", "Error replies sent to clients", self.errors.clone());
        r.register("rejected", "Commands the proxy refuses", self.rejected.clone());
        r.register(
            "new_requests",
            "Requests served by the new cluster",
            self.new_requests.clone(),
        );
        r.register(
            "new_errors",
            "Requests the new cluster answered with an error",
            self.new_errors.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its reply",
            Unit::Seconds,
            self.latency.clone(),
        );
        r.register(
            "client_connections",
            "Open client connections",
            self.connections.clone(),
        );
        r.register(
            "backend_errors",
            "I/O and connection errors to old or new",
            self.backend_errors.clone(),
        );
    }

    /// The write mirror from old to new.
    fn register_mirror(&self, r: &mut Registry) {
        r.register(
            "mirror_queue_depth",
            "Keys waiting in the mirror queue",
            self.mirror_queue_depth.clone(),
        );
        r.register_with_unit(
            "mirror_lag",
            "Age of the oldest key waiting in the mirror queue",
            Unit::Seconds,
            self.mirror_lag_seconds.clone(),
        );
        r.register(
            "mirror_synced",
            "Key-syncs of the mirror that succeeded",
            self.mirror_ok.clone(),
        );
        r.register(
            "mirror_errors",
            "Key-syncs of the mirror that failed",
            self.mirror_errors.clone(),
        );
        r.register(
            "mirror_overflow",
            "Keys that found the mirror queue full",
            self.mirror_overflow.clone(),
        );
        r.register(
            "sync_mirror_failures",
            "Sync mirrors that did not complete before the reply",
            self.sync_mirror_failures.clone(),
        );
        r.register(
            "dirty_keys",
            "Keys marked dirty and not yet repaired",
            self.dirty_keys.clone(),
        );
    }

    /// Shadow reads compared against new.
    fn register_shadow(&self, r: &mut Registry) {
        r.register(
            "shadow_samples",
            "Shadow reads compared",
            self.shadow_samples.clone(),
        );
        r.register(
            "shadow_mismatches",
            "Shadow reads that differed",
            self.shadow_mismatches.clone(),
        );
        r.register(
            "shadow_skipped",
            "Shadow reads abandoned",
            self.shadow_skipped.clone(),
        );
    }

    /// Flag file and fence.
    fn register_control(&self, r: &mut Registry) {
        r.register(
            "applied_generation",
            "Flag-file generation the proxy routes by",
            self.applied_generation.clone(),
        );
        r.register(
            "fence_held",
            "1 while the fence holds writes",
            self.fence_held.clone(),
        );
        r.register(
            "held_writes",
            "Writes waiting behind the fence",
            self.held_writes.clone(),
        );
        r.register(
            "stale",
            "1 while the proxy refuses writes: its flag file is behind the generation beacon",
            self.stale.clone(),
        );
        r.register(
            "flag_errors",
            "Flag-file reads that failed (last good routing kept)",
            self.flag_errors.clone(),
        );
    }

    /// The OpenMetrics text exposition of everything, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail, and every registered metric encodes.
        encode(&mut text, &self.registry).expect("encoding metrics into a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample line of `name` (exact series name followed by a space).
    fn sample<'a>(text: &'a str, name: &str) -> &'a str {
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    #[test]
    fn encodes_every_metric() {
        let text = Metrics::new("p1", "tokens").encode();
        let names = [
            "requests_total",
            "errors_total",
            "rejected_total",
            "new_requests_total",
            "new_errors_total",
            "request_duration_seconds_count",
            "client_connections",
            "mirror_queue_depth",
            "mirror_lag_seconds",
            "mirror_synced_total",
            "mirror_errors_total",
            "mirror_overflow_total",
            "sync_mirror_failures_total",
            "dirty_keys",
            "shadow_samples_total",
            "shadow_mismatches_total",
            "shadow_skipped_total",
            "applied_generation",
            "fence_held",
            "held_writes",
            "flag_errors_total",
            "backend_errors_total",
        ];
        for name in names {
            sample(&text, &format!("cachemig_proxy_{name}"));
        }
        assert!(
            text.contains("cachemig_proxy_info{proxy=\"p1\",migration=\"tokens\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn reflects_updates() {
        let m = Metrics::new("p1", "tokens");
        m.requests.inc();
        m.requests.inc_by(4);
        m.connections.set(3);
        m.mirror_lag_seconds.set(0.25);
        m.applied_generation.set(7);
        m.latency.observe(std::time::Duration::from_micros(100));
        m.latency.observe(std::time::Duration::from_secs(5));
        let text = m.encode();
        assert_eq!(sample(&text, "cachemig_proxy_requests_total"), "5");
        assert_eq!(sample(&text, "cachemig_proxy_client_connections"), "3");
        assert_eq!(sample(&text, "cachemig_proxy_mirror_lag_seconds"), "0.25");
        assert_eq!(sample(&text, "cachemig_proxy_applied_generation"), "7");
        assert_eq!(
            sample(&text, "cachemig_proxy_request_duration_seconds_count"),
            "2"
        );
        assert_eq!(
            sample(
                &text,
                "cachemig_proxy_request_duration_seconds_bucket{le=\"0.0001\"}"
            ),
            "1"
        );
        assert_eq!(
            sample(
                &text,
                "cachemig_proxy_request_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            "2"
        );
        assert!(text.contains("le=\"1.6384\""), "{text}");
    }
}
