//! The key-sync primitive ([`crate::keysync`]) over the proxy's own backend connections.
//!
//! The mirror makes the same `sync_key` calls as the backfill and the catch-up, so there is one
//! implementation of "make K on the destination equal to K on the origin now". This adapter lets
//! it run on the proxy's multiplexed connections: a key-sync's requests are batched with client
//! traffic instead of opening connections of their own. Only a destination that refuses the
//! lock scripts makes a sync open a connection of its own ([`BackendExclusive`]), for `WATCH`.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::backend::{Backend, Unit};
use super::resp::{Proto, Reply};
use crate::keysync::Exclusive;

/// A connection-like handle that sends everything to the node serving `slot` on `backend`.
#[derive(Clone)]
pub struct SlotConn {
    backend: Arc<Backend>,
    slot: Option<u16>,
}

impl SlotConn {
    /// Commands for keys in `key`'s slot.
    pub fn for_key(backend: Arc<Backend>, key: &[u8]) -> SlotConn {
        SlotConn {
            backend,
            slot: Some(crate::cluster::key_slot(key)),
        }
    }
}

/// A reply as the `redis` crate's value (error replies become `Value::ServerError`).
fn value(reply: &Reply) -> redis::RedisResult<Value> {
    redis::parse_redis_value(&reply.raw)
}

impl ConnectionLike for SlotConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = self
                .backend
                .request(Bytes::from(cmd.get_packed_command()), self.slot)
                .await;
            value(&reply)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let unit = Unit {
                raw: Bytes::from(pipeline.get_packed_pipeline()),
                then: None,
                count: offset + count,
                slot: self.slot,
            };
            let replies = self.backend.send(vec![unit]).await;
            replies.iter().skip(offset).map(value).collect()
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Opens a connection of a sync's own to the node of `backend` that serves a key, logged in as
/// the proxy's connections are (user, password, database), through the `redis` crate: a
/// connection that never reconnects by itself, so `WATCH` cannot silently vanish under a
/// `MULTI … EXEC` (the proxy's own node connections reconnect transparently).
pub struct BackendExclusive {
    backend: Arc<Backend>,
}

impl BackendExclusive {
    /// For syncs whose destination is `backend`.
    pub fn new(backend: Arc<Backend>) -> BackendExclusive {
        BackendExclusive { backend }
    }
}

impl Exclusive for BackendExclusive {
    fn open<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            let slot = crate::cluster::key_slot(key);
            // Where the slot lives now; the node connection itself is not used.
            let addr = self
                .backend
                .dedicated(Some(slot), Proto::Resp2)
                .await
                .addr()
                .to_string();
            let (_, login) = self.backend.subscriber().await;
            let io = |what: &str, e: String| {
                RedisError::from((ErrorKind::Io, "connecting for WATCH", format!("{what}: {e}")))
            };
            let mut url = url::Url::parse(&format!("redis://{addr}/{}", login.db))
                .map_err(|e| io(&addr, e.to_string()))?;
            if let Some(user) = &login.user {
                url.set_username(user)
                    .map_err(|_| io(&addr, "bad user name".into()))?;
            }
            crate::endpoint::connect_node(&url, login.password.as_deref())
                .await
                .map_err(|e| io(&addr, e.to_string()))
        })
    }
}
