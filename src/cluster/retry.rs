//! Which errors are worth retrying, and the back-off.

use std::future::Future;
use std::time::Duration;

use redis::{RedisError, RedisResult};

/// Attempts before an error is final: back-off 50 ms doubling to 12.8 s, about 25 s in all,
/// long enough to ride out a replica promotion.
pub const ATTEMPTS: u32 = 10;

/// Whether `e` may go away by itself: I/O, a dropped connection, a timeout, or the cluster
/// moving or electing (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN, READONLY).
pub fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "READONLY")
        )
}

/// The pause before attempt `attempt` (1-based) is retried.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.saturating_sub(1).min(8))
}

/// Runs `op`, retrying transient errors with [`backoff`] up to [`ATTEMPTS`] times.
pub async fn with_retries<T, F, Fut>(mut op: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(9), Duration::from_millis(12_800));
        assert_eq!(backoff(20), Duration::from_millis(12_800));
    }
}
