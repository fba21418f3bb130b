//! A client's shard channels (`SSUBSCRIBE`) on one side. A shard channel lives on the node that
//! owns its slot (a standalone side has one node), so the client gets one subscriber connection
//! per node it needs. A channel a node refuses with `MOVED`, or drops when its slot moves away,
//! is placed again on the owner after the slot map is reloaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::feed::{Confirm, Feed, Kind, Message, confirmed_within};
use crate::proxy::backend::Backend;

/// How long to wait before placing a channel again on the node that just refused it (the slot
/// map had not changed yet).
const REPLACE_PAUSE: Duration = Duration::from_millis(100);

enum Op {
    Subscribe(Bytes, Confirm),
    Unsubscribe(Bytes),
}

/// A handle to the shard channels of one side; dropping it closes their connections.
pub struct Shards {
    ops: mpsc::UnboundedSender<Op>,
}

impl Shards {
    /// Starts holding shard channels on `backend`; messages go to `out`.
    pub fn start(backend: Arc<Backend>, out: mpsc::UnboundedSender<Message>) -> Shards {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(backend, rx, out));
        Shards { ops: tx }
    }

    /// Subscribes, and waits until the owners confirmed (or the confirmation time passed).
    pub async fn subscribe(&self, names: &[Bytes]) {
        let mut waits = Vec::new();
        for name in names {
            let (tx, rx) = oneshot::channel();
            let _ = self.ops.send(Op::Subscribe(name.clone(), tx));
            waits.push(rx);
        }
        confirmed_within(waits).await;
    }

    /// Unsubscribes (without waiting).
    pub fn unsubscribe(&self, names: &[Bytes]) {
        for name in names {
            let _ = self.ops.send(Op::Unsubscribe(name.clone()));
        }
    }
}

/// The connections of one side, by node address, and where each channel is held.
struct Placement {
    backend: Arc<Backend>,
    out: mpsc::UnboundedSender<Message>,
    lost: super::feed::Lost,
    feeds: HashMap<String, Feed>,
    homes: HashMap<Bytes, String>,
}

impl Placement {
    /// Subscribes `name` on the node owning its slot.
    async fn place(&mut self, name: Bytes, done: Option<Confirm>) {
        let slot = self.backend.is_cluster().then(|| crate::cluster::key_slot(&name));
        let (addr, login) = self.backend.subscriber_for(slot).await;
        let (out, lost) = (&self.out, &self.lost);
        self.feeds
            .entry(addr.clone())
            .or_insert_with(|| Feed::start(addr.clone(), login, out.clone(), Some(lost.clone())))
            .subscribe_then(Kind::Shard, name.clone(), done);
        self.homes.insert(name, addr);
    }

    fn remove(&mut self, name: &Bytes) {
        let Some(addr) = self.homes.remove(name) else {
            return;
        };
        if let Some(feed) = self.feeds.get(&addr) {
            feed.unsubscribe(Kind::Shard, std::slice::from_ref(name));
        }
        if !self.homes.values().any(|a| *a == addr) {
            self.feeds.remove(&addr); // its last channel: the connection closes
        }
    }

    /// A channel its node gave back: placed again on the owner the reloaded map names.
    async fn replace(&mut self, name: Bytes, done: Option<Confirm>) {
        let Some(was) = self.homes.get(&name).cloned() else {
            return; // unsubscribed meanwhile
        };
        self.backend.refresh_map().await;
        let slot = crate::cluster::key_slot(&name);
        let now = self
            .backend
            .owner(Some(slot).filter(|_| self.backend.is_cluster()))
            .await;
        if now == was {
            tokio::time::sleep(REPLACE_PAUSE).await;
        }
        self.place(name, done).await;
        if !self.homes.values().any(|a| *a == was) {
            self.feeds.remove(&was);
        }
    }
}

async fn run(
    backend: Arc<Backend>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    out: mpsc::UnboundedSender<Message>,
) {
    let (lost, mut lost_rx) = mpsc::unbounded_channel();
    let mut placement = Placement {
        backend,
        out,
        lost,
        feeds: HashMap::new(),
        homes: HashMap::new(),
    };
    loop {
        tokio::select! {
            op = ops.recv() => match op {
                None => return, // the client is gone: dropping the feeds closes them
                Some(Op::Subscribe(name, done)) => {
                    placement.place(name, Some(done)).await;
                }
                Some(Op::Unsubscribe(name)) => placement.remove(&name),
            },
            Some((name, done)) = lost_rx.recv() => placement.replace(name, done).await,
        }
    }
}
