//! One side of the comparison (source or target) as verify reads it.
//!
//! A cluster side reads through a [`Router`]: keys are pipelined per master, and redirections,
//! failovers and back-off are handled there. Repairs write through the redis crate's cluster
//! connection, which follows redirections for single commands (key-sync and the chunked big-key
//! copy need a connection, not a router). A standalone side is one multiplexed connection,
//! with transient errors retried with back-off.

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisResult, ToRedisArgs, Value};
use url::Url;

use crate::cluster::{Router, node_url, transient, with_retries};
use crate::endpoint::Endpoint;
use crate::inspect::NodeSetReport;
use crate::keysync::lock::Pool;
use crate::keysync::{Exclusive, KeySync, Synced};

/// A connected side.
pub(super) struct Side {
    /// "source" or "target".
    pub role: &'static str,
    endpoint: Endpoint,
    /// The standalone node's URL, or the first seed (node URLs are derived from it).
    base: Url,
    link: Link,
    /// Idle connections of key-syncs' own (WATCH, when this side refuses scripts).
    pool: Pool,
}

/// How a side is reached.
enum Link {
    /// One node holding every key.
    Standalone(MultiplexedConnection),
    /// Reads through the router, writes through the cluster connection.
    Cluster {
        router: Router,
        writes: ClusterConnection,
    },
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
            let router = Router::connect(endpoint).await?;
            let writes = endpoint.connect_cluster().await?;
            return Ok(Side {
                role: endpoint.role,
                endpoint: endpoint.clone(),
                base: first,
                link: Link::Cluster { router, writes },
                pool: Pool::default(),
            });
        }
        let mut last_err = None;
        for url in &endpoint.urls {
            match endpoint.connect_node(url).await {
                Ok(conn) => {
                    return Ok(Side {
                        role: endpoint.role,
                        endpoint: endpoint.clone(),
                        base: url.clone(),
                        link: Link::Standalone(conn),
                        pool: Pool::default(),
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
        let url = match self.link {
            Link::Standalone(_) => self.base.clone(),
            Link::Cluster { .. } => node_url(&self.base, addr)?,
        };
        Ok(self.endpoint.connect_node(&url).await?)
    }

    /// The connection of the node serving `key` (the only node when standalone; any master
    /// when the slot is unassigned, where the command will fail and be reported).
    pub async fn node_conn(&self, key: &[u8]) -> MultiplexedConnection {
        match &self.link {
            Link::Standalone(conn) => conn.clone(),
            Link::Cluster { router, .. } => match router.master_for(key).await {
                Some(conn) => conn,
                None => router.masters().await.swap_remove(0).1,
            },
        }
    }

    /// A connection that writes to this side (following redirections on a cluster).
    pub fn writer(&self) -> Writer {
        match &self.link {
            Link::Standalone(conn) => Writer::Node(conn.clone()),
            Link::Cluster { writes, .. } => Writer::Cluster(writes.clone()),
        }
    }

    /// Whether this side is one standalone node.
    pub fn is_standalone(&self) -> bool {
        matches!(self.link, Link::Standalone(_))
    }

    /// Standalone only: whether every one of `keys` exists, with one multi-key `EXISTS` (which
    /// counts each argument). `false` also when the check failed: the caller then asks per key.
    pub async fn all_exist<K: AsRef<[u8]>>(&self, keys: &[K]) -> bool {
        let mut exists = redis::cmd("EXISTS");
        for key in keys {
            exists.arg(key.as_ref());
        }
        let no_key: &[u8] = b"";
        let reply = self.send(&[no_key], vec![exists]).await.pop();
        matches!(reply, Some(Ok(Value::Int(n))) if n as u64 == keys.len() as u64)
    }

    /// For every key, sends the `N` commands `build` makes for it (all about that key) and
    /// returns its replies in order. A command's own error (say WRONGTYPE) stays in place as a
    /// `Value::ServerError` (read replies with [`take`]); `Err` means the key could not be read
    /// at all (a transient error that outlasted the retries).
    pub async fn per_key<K: AsRef<[u8]>, const N: usize>(
        &self,
        keys: &[K],
        build: impl Fn(&[u8]) -> [Cmd; N],
    ) -> Vec<RedisResult<Vec<Value>>> {
        let mut routed: Vec<&[u8]> = Vec::with_capacity(keys.len() * N);
        let mut commands: Vec<Cmd> = Vec::with_capacity(keys.len() * N);
        for key in keys {
            routed.extend(std::iter::repeat_n(key.as_ref(), N));
            commands.extend(build(key.as_ref()));
        }
        let mut replies = self.send(&routed, commands).await.into_iter();
        // A plain loop rather than collecting into a `Result`: this runs for every key read,
        // and the generic collect costs several times more (no size hint through the shunt).
        keys.iter()
            .map(|_| {
                let mut values = Vec::with_capacity(N);
                let mut error = None;
                for reply in replies.by_ref().take(N) {
                    match in_place(reply) {
                        Ok(value) => values.push(value),
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                error.map_or(Ok(values), Err)
            })
            .collect()
    }

    /// Runs one command about `key` (retried like [`Side::per_key`]'s).
    pub async fn query_key(&self, key: &[u8], cmd: &Cmd) -> RedisResult<Value> {
        self.send(&[key], vec![cmd.clone()])
            .await
            .pop()
            .expect("one reply per command")
    }

    /// Sends `commands[i]` (about `keys[i]`): through the router on a cluster, as one pipeline
    /// on a standalone node. One reply per command, in order.
    async fn send(&self, keys: &[&[u8]], commands: Vec<Cmd>) -> Vec<RedisResult<Value>> {
        match &self.link {
            Link::Cluster { router, .. } => router.send(keys, commands).await,
            Link::Standalone(conn) => pipeline(conn, commands).await,
        }
    }
}

impl Writer {
    /// Copies `key` from `origin` to this side in chunks (a key above `big_key_bytes`).
    pub async fn copy_big(
        &mut self,
        origin: &mut MultiplexedConnection,
        key: &[u8],
    ) -> RedisResult<crate::backfill::bigkey::BigCopy> {
        match self {
            Writer::Cluster(c) => crate::backfill::bigkey::copy(origin, c, key, true).await,
            Writer::Node(c) => crate::backfill::bigkey::copy(origin, c, key, true).await,
        }
    }

    /// Key-syncs `key` from `origin` to this side (`RESTORE … REPLACE` or `DEL`) under the key's
    /// lease on this side, as the proxies' mirrors do ([`crate::keysync::lock`]); `exclusive`
    /// opens connections of the sync's own to this side when it refuses scripts.
    pub async fn sync_from(
        &mut self,
        origin: &mut MultiplexedConnection,
        key: &[u8],
        exclusive: &dyn Exclusive,
        keysync: &KeySync,
    ) -> RedisResult<Synced> {
        match self {
            Writer::Cluster(c) => crate::keysync::sync_key(&*origin, c, exclusive, key, keysync).await,
            Writer::Node(c) => crate::keysync::sync_key(&*origin, c, exclusive, key, keysync).await,
        }
    }
}

/// A connection of a key-sync's own to the node of this side that serves a key (for `WATCH`,
/// when the side refuses the lock scripts).
impl Exclusive for Side {
    fn open<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            let url = self.node_of(key).await?;
            if let Some(conn) = self.pool.take(url.as_str()) {
                return Ok(conn);
            }
            self.endpoint
                .connect_node(&url)
                .await
                .map_err(|e| watch_error(e.to_string()))
        })
    }

    fn recycle(&self, key: &[u8], conn: MultiplexedConnection) {
        // The slot map is only read, so this finds the node `open` used unless it changed.
        if let Link::Cluster { router, .. } = &self.link
            && let Some(addr) = router.master_addr_now(key)
            && let Ok(url) = node_url(&self.base, &addr)
        {
            self.pool.give(url.as_str(), conn);
        } else if let Link::Standalone(_) = &self.link {
            self.pool.give(self.base.as_str(), conn);
        }
    }
}

impl Side {
    /// The URL of the node that serves `key`.
    async fn node_of(&self, key: &[u8]) -> RedisResult<Url> {
        match &self.link {
            Link::Standalone(_) => Ok(self.base.clone()),
            Link::Cluster { router, .. } => {
                let addr = router
                    .master_addr_for(key)
                    .await
                    .ok_or_else(|| watch_error("the key's slot has no master".into()))?;
                node_url(&self.base, &addr).map_err(|e| watch_error(format!("{e:#}")))
            }
        }
    }
}

fn watch_error(text: String) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "connecting for WATCH", text))
}

/// `commands` as one pipeline on a standalone node, retried with back-off while the whole
/// pipeline fails with a transient error; a command whose own reply is transient (LOADING,
/// say) is then retried alone. One reply per command, in order.
async fn pipeline(conn: &MultiplexedConnection, commands: Vec<Cmd>) -> Vec<RedisResult<Value>> {
    let count = commands.len();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for cmd in commands {
        pipe.add_command(cmd);
    }
    let sent = with_retries(|| {
        let (mut conn, pipe) = (conn.clone(), &pipe);
        async move { pipe.query_async::<Vec<RedisResult<Value>>>(&mut conn).await }
    })
    .await;
    let mut replies = match sent {
        Ok(replies) if replies.len() == count => replies,
        Ok(replies) => {
            let e = RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "pipeline reply of the wrong length",
                format!("{} replies for {count} commands", replies.len()),
            ));
            return vec![Err(e); count];
        }
        Err(e) => return vec![Err(e); count],
    };
    let retries = pipe
        .cmd_iter()
        .enumerate()
        .filter(|(i, _)| replies[*i].as_ref().is_err_and(transient));
    let retried = futures::future::join_all(retries.map(|(i, cmd)| async move {
        let reply = with_retries(|| {
            let mut conn = conn.clone();
            async move { cmd.query_async::<Value>(&mut conn).await }
        })
        .await;
        (i, reply)
    }))
    .await;
    for (i, reply) in retried {
        replies[i] = reply;
    }
    replies
}

/// One command's reply as [`Side::per_key`] gives it: a command error in place as a
/// `Value::ServerError`, a transient error (or a client-side one) as `Err`.
fn in_place(reply: RedisResult<Value>) -> RedisResult<Value> {
    match reply {
        Err(e) if !transient(&e) => redis::ServerError::try_from(e).map(Value::ServerError),
        other => other,
    }
}

/// A command: `name` and its arguments (a tuple for several).
pub(super) fn command(name: &str, args: impl ToRedisArgs) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(args);
    cmd
}

/// Converts one reply, turning a `Value::ServerError` into an `Err`.
pub(super) fn take<T: redis::FromRedisValue>(v: Value) -> RedisResult<T> {
    match v {
        Value::ServerError(e) => Err(RedisError::from(e)),
        v => Ok(redis::from_redis_value(v)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_stay_in_place() {
        let wrongtype = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let Value::ServerError(e) = wrongtype else {
            panic!("a server error")
        };
        assert!(matches!(
            in_place(Err(RedisError::from(e))),
            Ok(Value::ServerError(_))
        ));
        let moved = redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:6381\r\n").unwrap();
        let Value::ServerError(e) = moved else {
            panic!("a server error")
        };
        assert!(
            in_place(Err(RedisError::from(e))).is_err(),
            "transient: the key is unread"
        );
        assert_eq!(in_place(Ok(Value::Int(1))).unwrap(), Value::Int(1));
        let cmd = command("GETRANGE", (&b"k"[..], 0, 9));
        assert_eq!(cmd.args_iter().count(), 4);
    }
}
