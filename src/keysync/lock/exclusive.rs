//! Connections of a sync's own to the destination, for the `WATCH` fallback.

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, RedisResult};

/// Opens a connection of the sync's own to the destination node serving a key: `WATCH` state
/// cannot live on a shared connection, nor on one that reconnects by itself (a `MULTI … EXEC`
/// sent after a silent reconnect would run unwatched). Only used when the destination refuses
/// scripts.
pub trait Exclusive: Send + Sync {
    /// A connection nobody else uses to the node that serves `key` (a fresh one, or one given
    /// back by [`Exclusive::recycle`]).
    fn open<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>>;

    /// Takes back a connection `open(key)` gave, with no `WATCH` pending, for another sync.
    fn recycle(&self, _key: &[u8], _conn: MultiplexedConnection) {}
}

/// Idle connections of [`Exclusive`] implementations, per node.
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<MultiplexedConnection>>>,
}

impl Pool {
    /// Most idle connections kept per node.
    const KEEP: usize = 8;

    /// An idle connection to `node`, if any.
    pub fn take(&self, node: &str) -> Option<MultiplexedConnection> {
        self.idle.lock().expect("pool").get_mut(node)?.pop()
    }

    /// Keeps `conn` to `node` for later (or drops it when enough are idle).
    pub fn give(&self, node: &str, conn: MultiplexedConnection) {
        let mut idle = self.idle.lock().expect("pool");
        let list = idle.entry(node.to_string()).or_default();
        if list.len() < Self::KEEP {
            list.push(conn);
        }
    }
}

/// For callers that cannot open connections of their own: a destination that refuses scripts
/// then fails the sync with a clear error.
pub struct NoExclusive;

impl Exclusive for NoExclusive {
    fn open<'a>(&'a self, _key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async {
            Err(RedisError::from((
                ErrorKind::Client,
                "the destination refuses scripts",
                "and this caller has no connection of its own for WATCH".to_string(),
            )))
        })
    }
}

/// A standalone destination: every key is on the node at `url`.
pub struct NodeExclusive {
    url: url::Url,
    password: Option<String>,
    pool: Pool,
}

impl NodeExclusive {
    /// The node at `url`, with `password` if any (overrides one in the URL).
    pub fn new(url: url::Url, password: Option<String>) -> NodeExclusive {
        NodeExclusive {
            url,
            password,
            pool: Pool::default(),
        }
    }
}

impl Exclusive for NodeExclusive {
    fn open<'a>(&'a self, _key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            if let Some(conn) = self.pool.take("") {
                return Ok(conn);
            }
            crate::endpoint::connect_node(&self.url, self.password.as_deref(), None)
                .await
                .map_err(|e| RedisError::from((ErrorKind::Io, "connecting for WATCH", e.to_string())))
        })
    }

    fn recycle(&self, _key: &[u8], conn: MultiplexedConnection) {
        self.pool.give("", conn);
    }
}
