//! Proxy reports (design §5): what every proxy writes into the new cluster once a second and what
//! the CLI's gates and `status` read.
//!
//! All reports of one migration live in one hash, `__cachemig:{<migration>}:proxies`, one field
//! per proxy id whose value is a [`ProxyReport`] as JSON. The `{<migration>}` hash tag keeps the
//! hash in one slot; the reserved prefix keeps it out of every copy, verify and client reply.

use serde::{Deserialize, Serialize};

use crate::keys::RESERVED_PREFIX;

/// The hash that holds every proxy's report for `migration`.
pub fn reports_key(migration: &str) -> String {
    format!(
        "{}{{{migration}}}:proxies",
        String::from_utf8_lossy(RESERVED_PREFIX)
    )
}

/// Where a proxy stands in the primary-switch fence (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FenceState {
    /// The applied generation has no fence.
    #[default]
    Off,
    /// The fence is in force; writes are held but writes or mirror work are still in flight.
    Holding,
    /// The fence is in force, new writes are held and the mirror queue is empty: this proxy
    /// acknowledges the fence generation.
    Drained,
}

/// Counters a proxy keeps since it applied its current generation: the gates judge a phase by
/// what happened while it was in force, not by history from earlier phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counters {
    /// Client requests answered.
    pub requests: u64,
    /// Client requests answered with an error that came from a backend or from the proxy.
    pub errors: u64,
    /// Requests served by the new cluster (reads after read-cutover, writes after write-stop).
    pub new_requests: u64,
    /// Of those, answered with an error by new (or new unreachable).
    pub new_errors: u64,
    /// Key-syncs of the mirror that succeeded.
    pub mirror_ok: u64,
    /// Key-syncs of the mirror that failed (the key is kept dirty and retried).
    pub mirror_errors: u64,
    /// Keys that found the mirror queue full and were marked dirty instead.
    pub mirror_overflow: u64,
    /// Sync mirrors that did not complete before the reply (timeout or error).
    pub sync_mirror_failures: u64,
    /// Shadow reads compared.
    pub shadow_samples: u64,
    /// Shadow reads that differed, and still differed when re-checked.
    pub shadow_mismatches: u64,
    /// Shadow reads abandoned (timeout, concurrency cap, or an error from new).
    pub shadow_skipped: u64,
}

impl Counters {
    /// Each field `self + other`: counts of an earlier process of the same proxy id at the same
    /// generation carried over by a restarted one.
    pub fn plus(&self, other: &Counters) -> Counters {
        Counters {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            new_requests: self.new_requests + other.new_requests,
            new_errors: self.new_errors + other.new_errors,
            mirror_ok: self.mirror_ok + other.mirror_ok,
            mirror_errors: self.mirror_errors + other.mirror_errors,
            mirror_overflow: self.mirror_overflow + other.mirror_overflow,
            sync_mirror_failures: self.sync_mirror_failures + other.sync_mirror_failures,
            shadow_samples: self.shadow_samples + other.shadow_samples,
            shadow_mismatches: self.shadow_mismatches + other.shadow_mismatches,
            shadow_skipped: self.shadow_skipped + other.shadow_skipped,
        }
    }

    /// What was counted since `base` (each field `self - base`, never below zero).
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            requests: self.requests.saturating_sub(base.requests),
            errors: self.errors.saturating_sub(base.errors),
            new_requests: self.new_requests.saturating_sub(base.new_requests),
            new_errors: self.new_errors.saturating_sub(base.new_errors),
            mirror_ok: self.mirror_ok.saturating_sub(base.mirror_ok),
            mirror_errors: self.mirror_errors.saturating_sub(base.mirror_errors),
            mirror_overflow: self.mirror_overflow.saturating_sub(base.mirror_overflow),
            sync_mirror_failures: self
                .sync_mirror_failures
                .saturating_sub(base.sync_mirror_failures),
            shadow_samples: self.shadow_samples.saturating_sub(base.shadow_samples),
            shadow_mismatches: self.shadow_mismatches.saturating_sub(base.shadow_mismatches),
            shadow_skipped: self.shadow_skipped.saturating_sub(base.shadow_skipped),
        }
    }
}

/// One of the hottest keys of the last window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    /// The key, as UTF-8 with invalid bytes replaced, truncated to 200 bytes.
    pub key: String,
    /// Requests that touched it in the window (Space-Saving estimate: never an under-count).
    pub count: u64,
    /// Largest possible over-count of `count`.
    pub error: u64,
}

/// One proxy's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyReport {
    /// The proxy id (`--id`, default `hostname:port`).
    pub id: String,
    /// The flag-file generation the proxy routes by (0: no flag file yet, phase `planned`).
    pub generation: u64,
    /// The phase of that generation.
    pub phase: String,
    /// Fence state for that generation.
    pub fence: FenceState,
    /// When the report was written, milliseconds since the Unix epoch (proxy clock).
    pub written_at_ms: u64,
    /// When the proxy applied `generation`, milliseconds since the Unix epoch.
    pub applied_at_ms: u64,
    /// Counters since `generation` was applied.
    pub counters: Counters,
    /// Keys waiting in the mirror queue.
    pub mirror_queue_depth: u64,
    /// Age of the oldest key waiting in the mirror queue, in milliseconds (0 when empty).
    pub mirror_lag_ms: u64,
    /// Keys marked dirty (overflow or failed mirror) and not yet repaired.
    pub dirty_keys: u64,
    /// Requests per second over the last report interval.
    pub qps: f64,
    /// The last error the proxy met (backend, mirror), if any; never contains a secret.
    pub last_error: Option<String>,
    /// Why the flag file could not be applied, while that lasts (the last good routing stays).
    pub flag_error: Option<String>,
    /// The hottest keys of the last window, hottest first.
    pub hot_keys: Vec<HotKey>,
    /// Why this proxy refuses writes as stale (behind the generation beacon), if it does.
    #[serde(default)]
    pub stale: Option<String>,
}

impl ProxyReport {
    /// Milliseconds between when the report was written and `now_ms`.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.written_at_ms)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The clock of the master that holds `migration`'s reports, in Unix milliseconds.
///
/// Liveness is judged on this one clock (design §11): a proxy stamps its report with it, and the
/// CLI measures the report's age with it, so a proxy host whose clock runs ahead or behind is
/// neither kept alive after it died nor counted missing while it reports.
pub async fn server_now_ms(router: &crate::cluster::Router, migration: &str) -> redis::RedisResult<u64> {
    let key = reports_key(migration);
    let (secs, micros): (u64, u64) =
        redis::FromRedisValue::from_redis_value(router.query(key.as_bytes(), redis::cmd("TIME")).await?)?;
    Ok(secs * 1000 + micros / 1000)
}

/// Reads every proxy report of `migration` from the new cluster, with the time on the clock of
/// the master holding them ([`server_now_ms`]). Fields that do not parse are returned as
/// `Err(field name, why)` so `status` can show them instead of dropping them.
pub async fn read_all(
    router: &crate::cluster::Router,
    migration: &str,
) -> redis::RedisResult<(u64, Vec<Result<ProxyReport, (String, String)>>)> {
    let now = server_now_ms(router, migration).await?;
    let key = reports_key(migration);
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(&key);
    let value = router.query(key.as_bytes(), cmd).await?;
    let fields: Vec<(String, String)> = redis::FromRedisValue::from_redis_value(value)?;
    let reports = fields
        .into_iter()
        .map(|(id, json)| serde_json::from_str(&json).map_err(|e| (id, e.to_string())))
        .collect();
    Ok((now, reports))
}

/// Reads the report `id` last wrote for `migration`, if any (a restarted proxy continues its
/// counters from it). A report that does not parse counts as none.
pub async fn read_one(
    router: &crate::cluster::Router,
    migration: &str,
    id: &str,
) -> redis::RedisResult<Option<ProxyReport>> {
    let key = reports_key(migration);
    let mut cmd = redis::cmd("HGET");
    cmd.arg(&key).arg(id);
    let json: Option<String> =
        redis::FromRedisValue::from_redis_value(router.query(key.as_bytes(), cmd).await?)?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// Writes `report` as this proxy's field, stamped with the clock of the master holding the
/// reports ([`server_now_ms`]), not the proxy host's; the hash expires a day after the last write
/// so a finished migration leaves nothing behind for long.
pub async fn write(
    router: &crate::cluster::Router,
    migration: &str,
    report: &ProxyReport,
) -> redis::RedisResult<()> {
    let key = reports_key(migration);
    let report = ProxyReport {
        written_at_ms: server_now_ms(router, migration).await?,
        ..report.clone()
    };
    let json = serde_json::to_string(&report)
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Client, "report encoding", e.to_string())))?;
    let mut hset = redis::cmd("HSET");
    hset.arg(&key).arg(&report.id).arg(json);
    router.query(key.as_bytes(), hset).await?;
    let mut expire = redis::cmd("EXPIRE");
    expire.arg(&key).arg(86_400);
    router.query(key.as_bytes(), expire).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_share_one_slot_under_the_reserved_prefix() {
        let key = reports_key("tokens");
        assert_eq!(key, "__cachemig:{tokens}:proxies");
        assert_eq!(
            crate::cluster::key_slot(key.as_bytes()),
            crate::cluster::key_slot(b"{tokens}")
        );
    }

    #[test]
    fn report_round_trips_through_json() {
        let report = ProxyReport {
            id: "p1".into(),
            generation: 3,
            phase: "sync-dual-write".into(),
            fence: FenceState::Drained,
            written_at_ms: 10,
            applied_at_ms: 5,
            counters: Counters {
                requests: 7,
                ..Counters::default()
            },
            mirror_queue_depth: 1,
            mirror_lag_ms: 2,
            dirty_keys: 0,
            qps: 1.5,
            last_error: None,
            flag_error: Some("bad".into()),
            hot_keys: vec![HotKey {
                key: "k".into(),
                count: 4,
                error: 0,
            }],
            stale: Some("behind".into()),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"fence\":\"drained\""));
        assert_eq!(serde_json::from_str::<ProxyReport>(&json).unwrap(), report);
        assert_eq!(report.age_ms(25), 15);
    }
}
