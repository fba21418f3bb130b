//! Talking to a Redis Cluster in bulk: key slots, retry policy, and a [`Router`] that pipelines
//! commands per master and handles MOVED, ASK, TRYAGAIN, CLUSTERDOWN and failovers itself
//! (design §6). Backfill, verify and repair all write through it.

mod retry;
mod router;
mod slot;

pub use retry::{ATTEMPTS, backoff, transient, with_retries};
pub use router::{Router, parse_slots};
pub use slot::{SLOTS, key_slot};

use anyhow::Context;
use url::Url;

/// One `SCAN cursor MATCH pattern COUNT count` on `conn`, retried on transient errors; returns
/// the next cursor and the keys.
pub async fn scan_step(
    conn: &redis::aio::MultiplexedConnection,
    cursor: u64,
    pattern: &str,
    count: u32,
) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
    with_retries(|| {
        let (scan, mut conn) = (&scan, conn.clone());
        async move { scan.query_async(&mut conn).await }
    })
    .await
}

/// The URL of a discovered node `host:port`: `base` (scheme, user, database) with host and port
/// replaced, so a password from the environment applies to every node alike.
pub fn node_url(base: &Url, addr: &str) -> anyhow::Result<Url> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("node address {addr} has no port"))?;
    let mut url = base.clone();
    url.set_host(Some(host.trim_matches(['[', ']'])))
        .with_context(|| format!("bad node host in {addr}"))?;
    url.set_port(Some(
        port.parse().with_context(|| format!("bad node port in {addr}"))?,
    ))
    .map_err(|_| anyhow::anyhow!("cannot set the port of {base}"))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_keep_scheme_user_and_database() {
        let base = Url::parse("rediss://app@10.0.0.1:6379/0").unwrap();
        assert_eq!(
            node_url(&base, "10.0.0.2:7001").unwrap().as_str(),
            "rediss://app@10.0.0.2:7001/0"
        );
        assert!(node_url(&base, "nohost").is_err());
    }
}
