//! One side of the comparison (source or target) as verify reads it.
//!
//! Per-key reads are pipelined per node: keys are grouped by the master that owns their slot
//! (from `CLUSTER SLOTS`) and each group goes out as one pipeline on that node's multiplexed
//! connection. The redis crate's cluster connection cannot pipeline across slots, so it is only
//! the fallback: a key whose reply is a redirection (MOVED/ASK), a TRYAGAIN/CLUSTERDOWN or an I/O
//! error is read again on its own through the cluster connection, which follows redirections,
//! with back-off; a MOVED also refreshes the slot map. A standalone side is one node owning
//! every key.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};
use url::Url;

use crate::endpoint::Endpoint;
use crate::inspect::NodeSetReport;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;
/// A slot no master serves (cluster down, or mid-failover).
const NO_NODE: u16 = u16::MAX;
/// The slot map is refreshed at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// Attempts for a read that fails with a transient error (about 25 s in all).
const ATTEMPTS: u32 = 10;

/// A master and our connection to it.
#[derive(Clone)]
struct Node {
    addr: String,
    conn: MultiplexedConnection,
}

/// Which node serves which slot.
#[derive(Clone)]
struct Routing {
    /// Slot → index into `nodes`; empty on a standalone side (everything on `nodes[0]`).
    slots: Arc<Vec<u16>>,
    nodes: Vec<Node>,
}

/// A connected side.
pub(super) struct Side {
    /// "source" or "target".
    pub role: &'static str,
    endpoint: Endpoint,
    /// The URL discovered nodes' URLs are derived from (scheme, user, TLS options).
    base: Url,
    /// The cluster connection (the fallback that follows redirections); `None` when standalone.
    cluster: Option<ClusterConnection>,
    routing: RwLock<Routing>,
    last_refresh: tokio::sync::Mutex<Instant>,
}

/// A connection that writes to this side: the cluster connection, or the one node.
pub(super) enum Writer {
    /// Follows MOVED/ASK.
    Cluster(ClusterConnection),
    /// A standalone node.
    Node(MultiplexedConnection),
}

impl Side {
    /// Connects to `endpoint` as `report` (from `inspect`) describes it.
    pub async fn connect(endpoint: &Endpoint, report: &NodeSetReport) -> Result<Side> {
        let first = endpoint.urls.first().context("no URL in the plan")?.clone();
        if report.cluster_enabled {
            let mut cluster = endpoint.connect_cluster().await?;
            let routing = load_routing(endpoint, &first, &mut cluster).await?;
            return Ok(Side {
                role: endpoint.role,
                endpoint: endpoint.clone(),
                base: first,
                cluster: Some(cluster),
                routing: RwLock::new(routing),
                last_refresh: tokio::sync::Mutex::new(Instant::now()),
            });
        }
        let mut last_err = None;
        for url in &endpoint.urls {
            match endpoint.connect_node(url).await {
                Ok(conn) => {
                    let node = Node {
                        addr: addr_of(url),
                        conn,
                    };
                    return Ok(Side {
                        role: endpoint.role,
                        endpoint: endpoint.clone(),
                        base: url.clone(),
                        cluster: None,
                        routing: RwLock::new(Routing {
                            slots: Arc::new(Vec::new()),
                            nodes: vec![node],
                        }),
                        last_refresh: tokio::sync::Mutex::new(Instant::now()),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("no URL in the plan")))
    }

    /// A new connection to the master at `addr` (for SCAN), keeping the standalone URL's
    /// database when this side is not a cluster.
    pub async fn connect_scan(&self, addr: &str) -> Result<MultiplexedConnection> {
        let url = if self.cluster.is_none() {
            self.base.clone()
        } else {
            node_url(&self.base, addr)?
        };
        Ok(self.endpoint.connect_node(&url).await?)
    }

    fn routing(&self) -> Routing {
        self.routing.read().expect("routing lock").clone()
    }

    /// The index of the node serving `key`, if any.
    fn node_index(routing: &Routing, key: &[u8]) -> Option<usize> {
        if routing.slots.is_empty() {
            return Some(0);
        }
        match routing.slots[usize::from(key_slot(key))] {
            NO_NODE => None,
            i => Some(usize::from(i)),
        }
    }

    /// The connection of the node serving `key` (the only node when standalone; any node when
    /// the slot is unassigned, where the command will fail and be reported).
    pub fn node_conn(&self, key: &[u8]) -> MultiplexedConnection {
        let routing = self.routing();
        let i = Self::node_index(&routing, key).unwrap_or(0);
        routing.nodes[i].conn.clone()
    }

    /// A connection that writes to this side (following redirections on a cluster).
    pub fn writer(&self, key: &[u8]) -> Writer {
        match &self.cluster {
            Some(c) => Writer::Cluster(c.clone()),
            None => Writer::Node(self.node_conn(key)),
        }
    }

    /// Whether this side is one standalone node.
    pub fn is_standalone(&self) -> bool {
        self.cluster.is_none()
    }

    /// Standalone only: whether every one of `keys` exists, with one multi-key `EXISTS` (which
    /// counts each argument). `false` also when the check failed: the caller then asks per key.
    pub async fn all_exist<K: AsRef<[u8]>>(&self, keys: &[K]) -> bool {
        let mut exists = redis::cmd("EXISTS");
        for key in keys {
            exists.arg(key.as_ref());
        }
        let reply = with_retries(|| {
            let (mut conn, exists) = (self.node_conn(b""), &exists);
            async move { exists.query_async::<u64>(&mut conn).await }
        })
        .await;
        matches!(reply, Ok(n) if n == keys.len() as u64)
    }

    /// For every key, runs the `per_key` commands `build` appends to a pipeline, on the node
    /// that owns the key; returns each key's replies in order. A command's own error (say
    /// WRONGTYPE) stays in place as a `Value::ServerError` (read replies with [`take`]); a
    /// redirection or transient error is retried through the fallback, and `Err` means the key
    /// could not be read at all.
    pub async fn per_key<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        per_key: usize,
        build: impl Fn(&mut Pipeline, &[u8]),
    ) -> Vec<RedisResult<Vec<Value>>> {
        let routing = self.routing();
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); routing.nodes.len()];
        let mut retry: Vec<usize> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match Self::node_index(&routing, key.as_ref()) {
                Some(n) => groups[n].push(i),
                None => retry.push(i),
            }
        }
        let queries = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(n, group)| {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for &i in group {
                    build(&mut pipe, keys[i].as_ref());
                }
                let mut conn = routing.nodes[n].conn.clone();
                async move { (group, pipe.query_async::<Vec<Value>>(&mut conn).await) }
            });
        let mut results: Vec<Option<RedisResult<Vec<Value>>>> = (0..keys.len()).map(|_| None).collect();
        let mut moved = false;
        for (group, reply) in join_all(queries).await {
            match reply {
                Ok(values) if values.len() == group.len() * per_key => {
                    let mut values = values.into_iter();
                    for &i in group {
                        let replies: Vec<Value> = values.by_ref().take(per_key).collect();
                        match first_transient(&replies) {
                            None => results[i] = Some(Ok(replies)),
                            Some(e) => {
                                moved |= matches!(e.code(), Some("MOVED" | "ASK"));
                                retry.push(i);
                            }
                        }
                    }
                }
                Ok(values) => {
                    let e = RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "pipeline reply of the wrong length",
                        format!("{} replies for {} commands", values.len(), group.len() * per_key),
                    ));
                    for &i in group {
                        results[i] = Some(Err(e.clone()));
                    }
                }
                Err(e) if transient(&e) => retry.extend(group.iter().copied()),
                Err(e) => {
                    for &i in group {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        if moved || (!retry.is_empty() && self.cluster.is_some()) {
            self.refresh().await;
        }
        let build = &build;
        let retried = join_all(retry.iter().map(|&i| async move {
            let key = keys[i].as_ref();
            let reply = self
                .with_fallback(key, move || {
                    let mut pipe = redis::pipe();
                    build(&mut pipe, key);
                    pipe
                })
                .await;
            (i, reply)
        }))
        .await;
        for (i, reply) in retried {
            results[i] = Some(reply);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RedisError::from((redis::ErrorKind::Client, "no reply")))))
            .collect()
    }

    /// Runs one command about `key` on the node that owns it, falling back to the cluster
    /// connection (with back-off) on a redirection or a transient error.
    pub async fn query_key(&self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        let mut conn = self.node_conn(key);
        match cmd.query_async::<Value>(&mut conn).await {
            Err(e) if transient(&e) => {
                if self.cluster.is_some() {
                    self.refresh().await;
                }
                let mut replies = self
                    .with_fallback(key, || {
                        let mut pipe = redis::pipe();
                        pipe.add_command(cmd.clone());
                        pipe
                    })
                    .await?;
                take(replies.pop().unwrap_or(Value::Nil))
            }
            other => other,
        }
    }

    /// Runs the commands `make` builds (all about `key`) one by one through the cluster
    /// connection (which follows MOVED/ASK for single commands), or the standalone node,
    /// retrying transient errors with exponential back-off. Command errors stay in place.
    async fn with_fallback(&self, key: &[u8], make: impl Fn() -> Pipeline) -> RedisResult<Vec<Value>> {
        let pipe = make();
        with_retries(|| {
            let pipe = &pipe;
            let mut target = match &self.cluster {
                Some(c) => Writer::Cluster(c.clone()),
                None => Writer::Node(self.node_conn(key)),
            };
            async move {
                let mut replies = Vec::new();
                for cmd in pipe.cmd_iter() {
                    let reply = match &mut target {
                        Writer::Cluster(c) => cmd.query_async::<Value>(c).await,
                        Writer::Node(c) => cmd.query_async::<Value>(c).await,
                    };
                    replies.push(match reply {
                        Ok(v) => v,
                        Err(e) if transient(&e) => return Err(e),
                        Err(e) => Value::ServerError(redis::ServerError::try_from(e)?),
                    });
                }
                Ok(replies)
            }
        })
        .await
    }

    /// Reloads the slot map (and reconnects to every master), at most every [`REFRESH_EVERY`].
    async fn refresh(&self) {
        let Some(cluster) = &self.cluster else { return };
        let mut last = self.last_refresh.lock().await;
        if last.elapsed() < REFRESH_EVERY {
            return;
        }
        let mut cluster = cluster.clone();
        match load_routing(&self.endpoint, &self.base, &mut cluster).await {
            Ok(routing) => *self.routing.write().expect("routing lock") = routing,
            Err(e) => tracing::warn!(side = self.role, "could not refresh the slot map: {e:#}"),
        }
        *last = Instant::now();
    }
}

impl Writer {
    /// Key-syncs `key` from `origin` to this side (`RESTORE … REPLACE` or `DEL`, with
    /// write-then-recheck).
    pub async fn sync_from(
        &mut self,
        origin: &mut MultiplexedConnection,
        key: &[u8],
    ) -> RedisResult<crate::keysync::Applied> {
        let options = crate::keysync::SyncOptions {
            replace: true,
            recheck: true,
        };
        match self {
            Writer::Cluster(c) => crate::keysync::sync_key(origin, c, key, options).await,
            Writer::Node(c) => crate::keysync::sync_key(origin, c, key, options).await,
        }
    }
}

/// Reads `CLUSTER SLOTS` and connects to every master it names.
async fn load_routing(endpoint: &Endpoint, base: &Url, cluster: &mut ClusterConnection) -> Result<Routing> {
    let reply: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(cluster)
        .await
        .with_context(|| format!("CLUSTER SLOTS on the {}", endpoint.role))?;
    let mut slots = vec![NO_NODE; SLOTS];
    let mut nodes: Vec<Node> = Vec::new();
    for range in reply {
        let Value::Array(items) = range else { continue };
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (int(items.first()), int(items.get(1)), items.get(2))
        else {
            continue;
        };
        let (Some(host), Some(port)) = (text(master.first()), int(master.get(1))) else {
            continue;
        };
        let host = match host.as_str() {
            "" | "?" => base.host_str().unwrap_or("127.0.0.1").to_string(),
            h => h.to_string(),
        };
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let index = match nodes.iter().position(|n| n.addr == addr) {
            Some(i) => i,
            None => {
                let conn = endpoint.connect_node(&node_url(base, &addr)?).await?;
                nodes.push(Node { addr, conn });
                nodes.len() - 1
            }
        };
        let (start, end) = (
            start.clamp(0, SLOTS as i64 - 1) as usize,
            end.clamp(0, SLOTS as i64 - 1) as usize,
        );
        for slot in &mut slots[start..=end.max(start)] {
            *slot = index as u16;
        }
    }
    if nodes.is_empty() {
        bail!(
            "the {} cluster reports no master serving any slot (CLUSTER SLOTS is empty)",
            endpoint.role
        );
    }
    Ok(Routing {
        slots: Arc::new(slots),
        nodes,
    })
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `host:port` of a URL.
fn addr_of(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or("?"), url.port().unwrap_or(6379))
}

/// The URL of the node at `addr`: `base` with host and port replaced, database 0.
pub(super) fn node_url(base: &Url, addr: &str) -> Result<Url> {
    let (host, port) = addr.rsplit_once(':').context("node address without a port")?;
    let mut url = base.clone();
    url.set_host(Some(host.trim_matches(['[', ']'])))
        .context("bad node host")?;
    url.set_port(Some(port.parse().context("bad node port")?))
        .map_err(|_| anyhow::anyhow!("bad node port in {addr}"))?;
    url.set_path("");
    Ok(url)
}

/// The first redirection or transient error among one key's replies.
fn first_transient(replies: &[Value]) -> Option<RedisError> {
    replies.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(RedisError::from(e.clone())).filter(transient),
        _ => None,
    })
}

/// Converts one reply, turning a `Value::ServerError` into an `Err`.
pub(super) fn take<T: redis::FromRedisValue>(v: Value) -> RedisResult<T> {
    match v {
        Value::ServerError(e) => Err(RedisError::from(e)),
        v => Ok(redis::from_redis_value(v)?),
    }
}

/// Whether an error is worth retrying elsewhere or later: redirection, cluster reconfiguration,
/// I/O, connection loss.
pub(super) fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("TRYAGAIN" | "CLUSTERDOWN" | "MOVED" | "ASK" | "LOADING" | "MASTERDOWN")
        )
}

/// Runs `op`, retrying transient errors with exponential back-off (50 ms … 12.8 s).
pub(super) async fn with_retries<T, F, Fut>(mut op: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    let mut pause = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hashtag}` when the
/// braces enclose at least one byte, modulo 16384.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: whole key"
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn node_urls_keep_scheme_and_user() {
        let base = Url::parse("rediss://user@seed:7000/0").unwrap();
        let url = node_url(&base, "10.0.0.2:7001").unwrap();
        assert_eq!(url.as_str(), "rediss://user@10.0.0.2:7001");
    }
}
