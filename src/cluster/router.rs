//! Pipelining per master, with redirections and failovers handled here.
//!
//! The redis crate's async cluster pipeline cannot mix slots, and its per-command path costs a
//! channel round trip per key; the backfill needs tens of thousands of keys per second. So keys
//! are grouped by the master that owns their slot and each group is one pipeline on that
//! master's multiplexed connection. Replies that say "not here" or "not now" are handled the way
//! a cluster client must: MOVED → refresh the slot map and resend; ASK → `ASKING` then the command
//! on the named node; TRYAGAIN, CLUSTERDOWN, I/O errors (a master died) → back off, refresh the
//! map from any node that still answers, resend. Other errors are final for that key only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::{Mutex, RwLock};

use super::retry::{ATTEMPTS, backoff, transient};
use super::{SLOTS, key_slot, node_url};
use crate::endpoint::Endpoint;

/// Which master owns each slot, and a connection to each master.
struct SlotMap {
    /// Slot → index into `nodes`. `u16` keeps the table at 64 KiB: it is read once per command,
    /// and a larger one falls out of the CPU caches between batches.
    owner: Vec<Option<u16>>,
    nodes: Vec<(String, MultiplexedConnection)>,
    loaded_at: Instant,
}

/// Routes commands to the masters of one cluster.
pub struct Router {
    endpoint: Endpoint,
    map: RwLock<Arc<SlotMap>>,
    refreshing: Mutex<()>,
}

impl Router {
    /// Connects through the endpoint's seeds and loads the slot map.
    pub async fn connect(endpoint: &Endpoint) -> Result<Router> {
        let map = load(endpoint, &[]).await?;
        Ok(Router {
            endpoint: endpoint.clone(),
            map: RwLock::new(Arc::new(map)),
            refreshing: Mutex::new(()),
        })
    }

    /// Every master: address and connection (e.g. to SCAN each of them).
    pub async fn masters(&self) -> Vec<(String, MultiplexedConnection)> {
        self.map.read().await.nodes.clone()
    }

    /// The connection to the master that serves `key`'s slot in the current map, if any: for
    /// commands that must go to one node as they are (a MULTI/EXEC read, a chunked copy).
    pub async fn master_for(&self, key: &[u8]) -> Option<MultiplexedConnection> {
        let map = self.map.read().await;
        map.owner[key_slot(key) as usize].map(|node| map.nodes[usize::from(node)].1.clone())
    }

    /// The address of the master that serves `key`'s slot in the current map, if any (to open a
    /// connection of one's own to it).
    pub async fn master_addr_for(&self, key: &[u8]) -> Option<String> {
        let map = self.map.read().await;
        map.owner[key_slot(key) as usize].map(|node| map.nodes[usize::from(node)].0.clone())
    }

    /// [`Router::master_addr_for`] without waiting: `None` also while the map is being replaced.
    pub fn master_addr_now(&self, key: &[u8]) -> Option<String> {
        let map = self.map.try_read().ok()?;
        map.owner[key_slot(key) as usize].map(|node| map.nodes[usize::from(node)].0.clone())
    }

    /// Reloads the slot map, unless another task did so since `seen`.
    async fn refresh(&self, seen: Instant) {
        let _one_at_a_time = self.refreshing.lock().await;
        let current = self.map.read().await.clone();
        if current.loaded_at > seen {
            return;
        }
        match load(&self.endpoint, &current.nodes).await {
            Ok(map) => *self.map.write().await = Arc::new(map),
            Err(e) => tracing::warn!("slot map refresh failed: {e:#}"),
        }
    }

    /// Sends one command for `key`.
    pub async fn query(&self, key: &[u8], cmd: Cmd) -> RedisResult<Value> {
        self.send(&[key], vec![cmd])
            .await
            .pop()
            .expect("one reply per command")
    }

    /// Sends `commands[i]` (each touching only `keys[i]`'s slot) and returns one reply per
    /// command, in order. Per-key errors stay per key; the batch never fails as a whole.
    pub async fn send(&self, keys: &[&[u8]], mut commands: Vec<Cmd>) -> Vec<RedisResult<Value>> {
        let mut replies: Vec<Option<RedisResult<Value>>> = (0..commands.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..commands.len()).collect();
        for attempt in 1..=ATTEMPTS {
            let map = self.map.read().await.clone();
            let mut retry = Vec::new();
            let mut moved = false;
            for (i, reply) in self.round(&map, keys, &mut commands, &pending).await {
                match reply {
                    Err(e) if e.code() == Some("ASK") => replies[i] = Some(self.ask(&e, &commands[i]).await),
                    Err(e) if transient(&e) && attempt < ATTEMPTS => {
                        moved |= e.code() == Some("MOVED");
                        retry.push(i);
                        replies[i] = Some(Err(e));
                    }
                    other => replies[i] = Some(other),
                }
            }
            if retry.is_empty() {
                break;
            }
            // A MOVED is a routine slot migration: refresh and resend at once. Anything else
            // (failover, election, loading) needs time.
            if !moved {
                tokio::time::sleep(backoff(attempt)).await;
            }
            self.refresh(map.loaded_at).await;
            pending = retry;
        }
        replies
            .into_iter()
            .map(|r| r.expect("every command got a reply"))
            .collect()
    }

    /// One pipeline per master for the `pending` commands; keys of unowned slots get CLUSTERDOWN.
    /// The commands are moved into the pipelines, not copied (a copy per command is a measurable
    /// share of a bulk run); those whose reply is an error are put back, as they may be resent.
    async fn round(
        &self,
        map: &SlotMap,
        keys: &[&[u8]],
        commands: &mut [Cmd],
        pending: &[usize],
    ) -> Vec<(usize, RedisResult<Value>)> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); map.nodes.len()];
        let mut out = Vec::new();
        for &i in pending {
            match map.owner[key_slot(keys[i]) as usize] {
                Some(node) => groups[usize::from(node)].push(i),
                None => out.push((i, Err(cluster_down()))),
            }
        }
        let sends = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(node, members)| {
                let mut conn = map.nodes[node].1.clone();
                let mut pipe = redis::pipe();
                for &i in &members {
                    pipe.add_command(std::mem::take(&mut commands[i]));
                }
                async move {
                    let result: RedisResult<Vec<RedisResult<Value>>> =
                        pipe.ignore_errors().query_async(&mut conn).await;
                    (members, pipe, result)
                }
            });
        for (members, pipe, result) in futures::future::join_all(sends).await {
            let sent = members.into_iter().zip(pipe.cmd_iter());
            match result {
                Ok(values) => {
                    for ((i, cmd), value) in sent.zip(values) {
                        if value.is_err() {
                            commands[i] = cmd.clone();
                        }
                        out.push((i, value));
                    }
                }
                // The whole pipeline failed (connection lost): every member may be retried.
                Err(e) => {
                    for (i, cmd) in sent {
                        commands[i] = cmd.clone();
                        out.push((i, Err(e.clone())));
                    }
                }
            }
        }
        out
    }

    /// Follows an ASK redirection once: `ASKING` then the command, on the named node.
    async fn ask(&self, e: &RedisError, cmd: &Cmd) -> RedisResult<Value> {
        let Some((addr, _)) = e.redirect_node() else {
            return Err(e.clone());
        };
        let url = node_url(&self.endpoint.urls[0], addr).map_err(|_| e.clone())?;
        let mut conn = self.endpoint.connect_node(&url).await.map_err(|_| e.clone())?;
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").ignore().add_command(cmd.clone());
        let mut values: Vec<Value> = pipe.query_async(&mut conn).await?;
        values.pop().ok_or_else(|| e.clone())
    }
}

fn cluster_down() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no master serves this slot (CLUSTERDOWN)",
    ))
}

/// Loads the slot map from the first node that answers `CLUSTER SLOTS`: known masters first,
/// then the plan's seeds. Connections to masters already known are reused.
async fn load(endpoint: &Endpoint, known: &[(String, MultiplexedConnection)]) -> Result<SlotMap> {
    let mut last_error = None;
    let mut reply = None;
    for (addr, conn) in known {
        match redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut conn.clone())
            .await
        {
            Ok(v) => {
                reply = Some(v);
                break;
            }
            Err(e) => last_error = Some(anyhow::anyhow!("{addr}: {e}")),
        }
    }
    if reply.is_none() {
        for url in &endpoint.urls {
            let attempt = async {
                let mut conn = endpoint.connect_node(url).await?;
                anyhow::Ok(
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut conn)
                        .await?,
                )
            };
            match attempt.await {
                Ok(v) => {
                    reply = Some(v);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
    }
    let reply = reply.ok_or_else(|| last_error.unwrap_or_else(|| anyhow::anyhow!("no seed given")))?;
    let seed_host = endpoint
        .urls
        .first()
        .and_then(|u| u.host_str())
        .unwrap_or("127.0.0.1");
    let ranges =
        parse_slots(reply, seed_host).with_context(|| format!("CLUSTER SLOTS of the {}", endpoint.role))?;
    let reuse: HashMap<&str, &MultiplexedConnection> = known.iter().map(|(a, c)| (a.as_str(), c)).collect();
    let mut owner = vec![None; SLOTS];
    let mut nodes: Vec<(String, MultiplexedConnection)> = Vec::new();
    for (start, end, addr) in ranges {
        let index = match nodes.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                let conn = match reuse.get(addr.as_str()) {
                    Some(c) => (*c).clone(),
                    None => {
                        endpoint
                            .connect_node(&node_url(&endpoint.urls[0], &addr)?)
                            .await?
                    }
                };
                nodes.push((addr, conn));
                nodes.len() - 1
            }
        };
        for slot in start..=end {
            owner[slot as usize] = Some(index as u16);
        }
    }
    anyhow::ensure!(
        !nodes.is_empty(),
        "the {} reports no master serving any slot",
        endpoint.role
    );
    Ok(SlotMap {
        owner,
        nodes,
        loaded_at: Instant::now(),
    })
}

/// `CLUSTER SLOTS` → (first slot, last slot, master `host:port`). A master whose endpoint the
/// answering node does not know ("" or "?") is taken to be on `seed_host`; an IPv6 host is
/// bracketed, so the address splits at its last colon.
pub fn parse_slots(reply: Value, seed_host: &str) -> Result<Vec<(u16, u16, String)>> {
    let mut out = Vec::new();
    for range in redis::from_redis_value::<Vec<Vec<Value>>>(reply)? {
        let [start, end, master, ..] = range.as_slice() else {
            continue;
        };
        let start: u16 = redis::from_redis_value(start.clone())?;
        let end: u16 = redis::from_redis_value(end.clone())?;
        let node: Vec<Value> = redis::from_redis_value(master.clone())?;
        let [host, port, ..] = node.as_slice() else {
            continue;
        };
        let host: String = redis::from_redis_value(host.clone())?;
        let port: u16 = redis::from_redis_value(port.clone())?;
        let host = if matches!(host.as_str(), "" | "?") {
            seed_host
        } else {
            host.as_str()
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        if usize::from(end) < SLOTS && start <= end {
            out.push((start, end, format!("{host}:{port}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        let master = Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
        ]);
        Value::Array(vec![Value::Int(start), Value::Int(end), master])
    }

    #[test]
    fn unknown_and_ipv6_hosts_give_usable_addresses() {
        let reply = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "", 7001),
            range(10923, 16383, "::1", 7002),
        ]);
        let expected = vec![
            (0, 5460, "10.0.0.1:7000".to_string()),
            (5461, 10922, "seed:7001".to_string()),
            (10923, 16383, "[::1]:7002".to_string()),
        ];
        assert_eq!(parse_slots(reply, "seed").unwrap(), expected);
    }
}
