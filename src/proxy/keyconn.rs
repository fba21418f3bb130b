//! The key-sync primitive ([`crate::keysync`]) over the proxy's own backend connections.
//!
//! The mirror makes the same `sync_key` calls as the backfill and the catch-up, so there is one
//! implementation of "make K on the destination equal to K on the origin now". This adapter lets
//! it run on the proxy's multiplexed connections: a key-sync's requests are batched with client
//! traffic instead of opening connections of their own.

use std::sync::Arc;

use bytes::Bytes;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::backend::{Backend, Unit};
use super::resp::Reply;

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
