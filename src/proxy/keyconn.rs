//! The key-sync primitive ([`crate::keysync`]) over the proxy's own backend connections.
//!
//! The mirror makes the same `sync_key` calls as the backfill and the catch-up, so there is one
//! implementation of "make K on the destination equal to K on the origin now". This adapter lets
//! it run on the proxy's multiplexed connections: a key-sync's requests are batched with client
//! traffic instead of opening connections of their own. Only a destination that refuses the
//! lock scripts makes a sync open a connection of its own ([`BackendExclusive`]), for `WATCH`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::backend::{Backend, Unit};
use super::resp::{Proto, Reply};
use crate::keysync::Exclusive;
use crate::keysync::lock::Pool;

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
/// `MULTI … EXEC` (the proxy's own node connections reconnect transparently). Connections given
/// back are kept per node; which node serves a slot is remembered for a second.
pub struct BackendExclusive {
    backend: Arc<Backend>,
    pool: Pool,
    owners: Mutex<HashMap<u16, (String, Instant)>>,
}

/// How long a slot's owner is trusted without asking the backend again.
const OWNER_TTL: Duration = Duration::from_secs(1);

impl BackendExclusive {
    /// For syncs whose destination is `backend`.
    pub fn new(backend: Arc<Backend>) -> BackendExclusive {
        BackendExclusive {
            backend,
            pool: Pool::default(),
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// The address of the node that serves `slot`.
    async fn owner(&self, slot: u16) -> String {
        if let Some((addr, at)) = self.owners.lock().expect("owners").get(&slot)
            && at.elapsed() < OWNER_TTL
        {
            return addr.clone();
        }
        // Where the slot lives now; the node connection itself is not used.
        let addr = self
            .backend
            .dedicated(Some(slot), Proto::Resp2)
            .await
            .addr()
            .to_string();
        self.owners
            .lock()
            .expect("owners")
            .insert(slot, (addr.clone(), Instant::now()));
        addr
    }
}

impl Exclusive for BackendExclusive {
    fn open<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            let addr = self.owner(crate::cluster::key_slot(key)).await;
            if let Some(conn) = self.pool.take(&addr) {
                return Ok(conn);
            }
            let (_, login) = self.backend.subscriber().await;
            let io =
                |e: String| RedisError::from((ErrorKind::Io, "connecting for WATCH", format!("{addr}: {e}")));
            let scheme = if login.tls.is_some() { "rediss" } else { "redis" };
            let mut url =
                url::Url::parse(&format!("{scheme}://{addr}/{}", login.db)).map_err(|e| io(e.to_string()))?;
            if let Some(user) = &login.user {
                url.set_username(user).map_err(|_| io("bad user name".into()))?;
            }
            let tls = login.tls.as_ref().map(|t| t.settings());
            crate::endpoint::connect_node(&url, login.password.as_deref(), tls)
                .await
                .map_err(|e| io(e.to_string()))
        })
    }

    fn recycle(&self, key: &[u8], conn: MultiplexedConnection) {
        let slot = crate::cluster::key_slot(key);
        let owners = self.owners.lock().expect("owners");
        if let Some((addr, _)) = owners.get(&slot) {
            self.pool.give(addr, conn);
        }
    }
}
