//! Pub/sub through the proxy (design §10): `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`, their
//! unsubscribes, in RESP2 (subscriber mode) and RESP3 (push frames on a normal connection).
//!
//! A subscribing client is subscribed on **both** sides, old and new, for as long as it is
//! subscribed; `PUBLISH` goes to one side (the read side of the phase). So a message published
//! through any proxy reaches every subscriber on any proxy in every phase, whichever generation
//! each proxy has applied: no message is lost at a switch, and since each message is published
//! once, none is delivered twice. The proxy confirms subscriptions itself (once, with its own
//! count) after both sides confirmed, so a client that publishes after its confirmation is heard.
//!
//! Shard channels (`SSUBSCRIBE`, published with `SPUBLISH`) work the same way, except that on a
//! cluster side each lives on the node owning its slot ([`shard`]), where `SPUBLISH` goes too.

mod feed;
mod mailbox;
mod shard;

use std::collections::BTreeSet;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use feed::Message;
use feed::{Feed, Kind};
pub use mailbox::Mailbox;
use shard::Shards;

use super::Proxy;
use super::local::Session;
use super::resp::{Proto, Reply};

/// A client's subscriptions.
pub struct PubSub {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard_channels: BTreeSet<Bytes>,
    /// One subscriber connection per side (channels and patterns).
    feeds: Vec<Feed>,
    /// Shard channels, per side.
    shards: Vec<Shards>,
}

impl PubSub {
    /// How many channels, patterns and shard channels the client is subscribed to.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// The count a confirmation of `kind` carries: Redis counts shard channels apart.
    fn count_of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard_channels.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }

    /// Subscribes `names` on both sides and waits for their confirmations.
    async fn subscribe(&self, kind: Kind, names: &[Bytes]) {
        if kind == Kind::Shard {
            futures::future::join_all(self.shards.iter().map(|s| s.subscribe(names))).await;
        } else {
            futures::future::join_all(self.feeds.iter().map(|f| f.subscribe(kind, names))).await;
        }
    }

    fn unsubscribe(&self, kind: Kind, name: &Bytes) {
        let names = std::slice::from_ref(name);
        if kind == Kind::Shard {
            self.shards.iter().for_each(|s| s.unsubscribe(names));
        } else {
            self.feeds.iter().for_each(|f| f.unsubscribe(kind, names));
        }
    }
}

/// Whether a RESP2 client in subscriber mode may send `name` (what Redis allows there).
pub fn allowed_in_subscriber_mode(name: &str) -> bool {
    matches!(
        name,
        "SUBSCRIBE"
            | "PSUBSCRIBE"
            | "SSUBSCRIBE"
            | "UNSUBSCRIBE"
            | "PUNSUBSCRIBE"
            | "SUNSUBSCRIBE"
            | "PING"
            | "QUIT"
            | "RESET"
    )
}

/// Whether the session is a RESP2 connection in subscriber mode.
pub fn subscriber_mode(session: &Session) -> bool {
    session.proto == Proto::Resp2 && session.pubsub.as_ref().is_some_and(|p| p.count() > 0)
}

/// Answers a (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE: one confirmation per channel or pattern.
pub async fn command(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Reply {
    let name = args[0].to_ascii_uppercase();
    let (kind, subscribe) = match name.as_slice() {
        b"SUBSCRIBE" => (Kind::Channel, true),
        b"PSUBSCRIBE" => (Kind::Pattern, true),
        b"SSUBSCRIBE" => (Kind::Shard, true),
        b"UNSUBSCRIBE" => (Kind::Channel, false),
        b"SUNSUBSCRIBE" => (Kind::Shard, false),
        _ => (Kind::Pattern, false),
    };
    let word = String::from_utf8_lossy(&name).to_ascii_lowercase();
    if subscribe {
        if session.pubsub.is_none() {
            let messages = session.mailbox.sender();
            session.pubsub = Some(start(proxy, messages).await);
        }
        let pubsub = session.pubsub.as_mut().expect("started above");
        let mut fresh = Vec::new();
        let mut confirmations = Vec::new();
        for n in &args[1..] {
            if pubsub.set(kind).insert(n.clone()) {
                fresh.push(n.clone());
            }
            confirmations.push(confirmation(session.proto, &word, Some(n), pubsub.count_of(kind)));
        }
        pubsub.subscribe(kind, &fresh).await;
        return concat(confirmations);
    }
    let Some(pubsub) = session.pubsub.as_mut() else {
        return confirmation(session.proto, &word, None, 0);
    };
    let names: Vec<Bytes> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        pubsub.set(kind).iter().cloned().collect()
    };
    if names.is_empty() {
        return confirmation(session.proto, &word, None, pubsub.count_of(kind));
    }
    let mut confirmations = Vec::new();
    for n in &names {
        if pubsub.set(kind).remove(n) {
            pubsub.unsubscribe(kind, n);
        }
        confirmations.push(confirmation(session.proto, &word, Some(n), pubsub.count_of(kind)));
    }
    if pubsub.count() == 0 {
        session.pubsub = None; // closes the subscriber connections
    }
    concat(confirmations)
}

/// Opens the client's subscriber connections, one per side (shard channels: one per node of a
/// side they need, opened on first use).
async fn start(proxy: &Proxy, messages: mpsc::UnboundedSender<Message>) -> PubSub {
    let mut feeds = Vec::new();
    let mut shards = Vec::new();
    for backend in [&proxy.old, &proxy.new] {
        let (addr, login) = backend.subscriber().await;
        feeds.push(Feed::start(addr, login, messages.clone(), None));
        shards.push(Shards::start(backend.clone(), messages.clone()));
    }
    PubSub {
        channels: BTreeSet::new(),
        patterns: BTreeSet::new(),
        shard_channels: BTreeSet::new(),
        feeds,
        shards,
    }
}

fn confirmation(proto: Proto, word: &str, name: Option<&Bytes>, count: usize) -> Reply {
    let name = name.map_or_else(|| Reply::null(proto), |n| Reply::bulk(n.clone()));
    Reply::push(
        proto,
        [
            Reply::bulk(Bytes::copy_from_slice(word.as_bytes())),
            name,
            Reply::integer(count as i64),
        ],
    )
}

/// Several frames sent as one reply (a SUBSCRIBE of n channels answers n times).
fn concat(replies: Vec<Reply>) -> Reply {
    Reply {
        raw: Bytes::from(
            replies
                .into_iter()
                .map(|r| r.raw.to_vec())
                .collect::<Vec<_>>()
                .concat(),
        ),
    }
}
