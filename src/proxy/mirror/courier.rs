//! The courier: the mirror's per-key requests to the destination (the leases taken ahead of
//! sync-mode writes, the commits of seeded syncs), batched per node and per wake-up (issue 10,
//! "sync mirror's cost").
//!
//! Why: on the loopback the sync mirror is CPU-bound, and a good part of the proxy's CPU went to
//! sending each key's lease and commit on its own — a request through the cluster router (slot
//! map, grouping, a future per node), a job and a channel per node connection, and the redis
//! crate's reply parser, for a reply that is almost always `+OK` or `*1 :1`. Requests queued for
//! a node while the proxy's tasks run are sent as one batch when the courier's task runs next
//! (no timer, no wait for the previous batch: nothing is held back), and their replies are
//! compared as wire bytes. A batch goes to one node only, so a slow or failed master delays only
//! the keys it serves.
//!
//! Every request is sent once, in order per node, and its reply handed back as the node's wire
//! bytes; redirections are followed by [`Backend::send`] as for any other unit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::proxy::backend::{Backend, Unit};
use crate::proxy::node::IN_DOUBT;
use crate::proxy::resp::Reply;

/// One request and where its reply goes.
struct Errand {
    raw: Bytes,
    slot: u16,
    reply: oneshot::Sender<Reply>,
}

/// The requests queued for one node, and whether a task to send them is scheduled.
#[derive(Default)]
struct Lane {
    queue: Vec<Errand>,
    scheduled: bool,
}

/// Batches the mirror's requests to one side, per node (see the module docs).
pub(super) struct Courier {
    backend: Arc<Backend>,
    lanes: Mutex<HashMap<String, Lane>>,
}

impl Courier {
    /// A courier for requests to `backend`.
    pub(super) fn new(backend: Arc<Backend>) -> Arc<Courier> {
        Arc::new(Courier {
            backend,
            lanes: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `raw` (one encoded request for a key in `slot`) with the next batch of its node and
    /// returns the reply.
    pub(super) async fn call(self: &Arc<Self>, raw: Bytes, slot: u16) -> Reply {
        let node = self.backend.owner(Some(slot)).await;
        let (tx, rx) = oneshot::channel();
        let idle = {
            let mut lanes = self.lanes.lock().expect("courier lanes");
            if !lanes.contains_key(&node) {
                lanes.insert(node.clone(), Lane::default());
            }
            let lane = lanes.get_mut(&node).expect("inserted above");
            lane.queue.push(Errand { raw, slot, reply: tx });
            !std::mem::replace(&mut lane.scheduled, true)
        };
        if idle {
            // It runs after this task yields, so what other tasks queue meanwhile goes along.
            tokio::spawn(self.clone().drive(node));
        }
        rx.await.unwrap_or_else(|_| {
            Reply::error(format!(
                "{IN_DOUBT} the mirror's batch to {} was dropped",
                self.backend.label()
            ))
        })
    }

    /// Sends what is queued for `node` as one batch and hands out the replies.
    async fn drive(self: Arc<Self>, node: String) {
        let batch = {
            let mut lanes = self.lanes.lock().expect("courier lanes");
            let Some(lane) = lanes.get_mut(&node) else {
                return;
            };
            lane.scheduled = false;
            std::mem::take(&mut lane.queue)
        };
        if batch.is_empty() {
            return;
        }
        let units = batch
            .iter()
            .map(|errand| Unit::one(errand.raw.clone(), Some(errand.slot)))
            .collect();
        let replies = self.backend.send(units).await;
        for (errand, reply) in batch.into_iter().zip(replies) {
            let _ = errand.reply.send(reply);
        }
    }
}
