//! One subscriber connection to one node: it holds a client's subscriptions there, re-subscribes
//! after a reconnect, and hands every message it receives to the client's connection. A shard
//! channel the node refuses (`MOVED`) or drops (its slot moved away) is handed back as lost.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::proxy::dial::BackendStream;
use crate::proxy::node::{Login, backoff};
use crate::proxy::resp::{Proto, Reply, encode_request};

/// How long a SUBSCRIBE waits for a side to confirm before the client is answered anyway (a side
/// that is down must not stop pub/sub on the other).
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);

/// A channel or a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SUBSCRIBE.
    Channel,
    /// PSUBSCRIBE.
    Pattern,
    /// SSUBSCRIBE: a shard channel, on the node owning its slot.
    Shard,
}

impl Kind {
    fn subscribe(self) -> &'static str {
        match self {
            Kind::Channel => "SUBSCRIBE",
            Kind::Pattern => "PSUBSCRIBE",
            Kind::Shard => "SSUBSCRIBE",
        }
    }

    fn unsubscribe(self) -> &'static str {
        match self {
            Kind::Channel => "UNSUBSCRIBE",
            Kind::Pattern => "PUNSUBSCRIBE",
            Kind::Shard => "SUNSUBSCRIBE",
        }
    }
}

/// A message for the client: `message channel payload` or `pmessage pattern channel payload`,
/// each part as the server sent it.
#[derive(Debug, Clone)]
pub struct Message {
    /// `message` or `pmessage`, then the rest.
    pub parts: Vec<Reply>,
}

impl Message {
    /// The message as the client's protocol frames it.
    pub fn to_reply(&self, proto: Proto) -> Reply {
        Reply::push(proto, self.parts.iter().cloned())
    }
}

/// Told when a subscription is confirmed.
pub type Confirm = oneshot::Sender<()>;

/// Where a feed hands a shard channel it lost (refused with `MOVED`, or dropped by the server
/// because its slot moved), with the confirmation still owed for it.
pub type Lost = mpsc::UnboundedSender<(Bytes, Option<Confirm>)>;

enum Op {
    Subscribe(Kind, Bytes, Option<Confirm>),
    Unsubscribe(Kind, Bytes),
}

/// A handle to the subscriber connection of one side; dropping it closes the connection.
pub struct Feed {
    ops: mpsc::UnboundedSender<Op>,
}

impl Feed {
    /// Starts the connection to `addr`; messages go to `out`, lost shard channels to `lost`.
    pub fn start(
        addr: String,
        login: Login,
        out: mpsc::UnboundedSender<Message>,
        lost: Option<Lost>,
    ) -> Feed {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(addr, login, rx, Sinks { out, lost }));
        Feed { ops: tx }
    }

    /// Subscribes, and waits until the side confirmed (or [`CONFIRM_WITHIN`] passed).
    pub async fn subscribe(&self, kind: Kind, names: &[Bytes]) {
        let mut waits = Vec::new();
        for name in names {
            let (tx, rx) = oneshot::channel();
            self.subscribe_then(kind, name.clone(), Some(tx));
            waits.push(rx);
        }
        confirmed_within(waits).await;
    }

    /// Subscribes without waiting; `done` is told when the node confirms.
    pub fn subscribe_then(&self, kind: Kind, name: Bytes, done: Option<Confirm>) {
        let _ = self.ops.send(Op::Subscribe(kind, name, done));
    }

    /// Unsubscribes (without waiting).
    pub fn unsubscribe(&self, kind: Kind, names: &[Bytes]) {
        for name in names {
            let _ = self.ops.send(Op::Unsubscribe(kind, name.clone()));
        }
    }
}

/// Waits for every confirmation, or until [`CONFIRM_WITHIN`] passed (a side that is down must
/// not stop pub/sub on the other).
pub async fn confirmed_within(waits: Vec<oneshot::Receiver<()>>) {
    let _ = tokio::time::timeout(CONFIRM_WITHIN, futures::future::join_all(waits)).await;
}

/// Where a feed's output goes.
struct Sinks {
    out: mpsc::UnboundedSender<Message>,
    lost: Option<Lost>,
}

/// Subscriptions, and those waiting for a confirmation.
#[derive(Default)]
struct State {
    subs: BTreeSet<(Kind, Bytes)>,
    waiting: Vec<((Kind, Bytes), Confirm)>,
    /// Every SSUBSCRIBE sent on this connection and not answered yet, in order: the server
    /// answers each with a confirmation or an error (`MOVED`), in the order they were sent.
    shard_pending: VecDeque<(Bytes, Option<Confirm>)>,
}

impl State {
    /// Applies `op`; the request to send, if connected.
    fn apply(&mut self, op: Op) -> Bytes {
        match op {
            Op::Subscribe(Kind::Shard, name, done) => {
                self.shard_pending.push_back((name.clone(), done));
                self.subs.insert((Kind::Shard, name.clone()));
                encode_request(&[b"SSUBSCRIBE".as_slice(), &name])
            }
            Op::Subscribe(kind, name, done) => {
                let request = encode_request(&[kind.subscribe().as_bytes(), &name]);
                if let Some(done) = done {
                    self.waiting.push(((kind, name.clone()), done));
                }
                self.subs.insert((kind, name));
                request
            }
            Op::Unsubscribe(kind, name) => {
                let request = encode_request(&[kind.unsubscribe().as_bytes(), &name]);
                self.subs.remove(&(kind, name));
                request
            }
        }
    }

    fn confirmed(&mut self, kind: Kind, name: &[u8]) {
        self.waiting
            .retain(|((k, n), _)| !(*k == kind && n.as_ref() == name));
    }

    /// The oldest unanswered SSUBSCRIBE of `name` (any, when `None`), taken off the queue.
    fn shard_answered(&mut self, name: Option<&[u8]>) -> Option<(Bytes, Option<Confirm>)> {
        let at = match name {
            Some(name) => self.shard_pending.iter().position(|(n, _)| n.as_ref() == name)?,
            None => 0,
        };
        self.shard_pending.remove(at)
    }

    /// Forgets what the connection owed (it broke: everything is sent again on the next one).
    fn disconnected(&mut self) {
        self.waiting.clear();
        self.shard_pending.clear();
    }
}

async fn run(addr: String, login: Login, mut ops: mpsc::UnboundedReceiver<Op>, out: Sinks) {
    let mut state = State::default();
    let mut attempt = 0;
    loop {
        let connected =
            tokio::time::timeout(CONFIRM_WITHIN, crate::proxy::dial::connect(&addr, &login)).await;
        match connected {
            Ok(Ok(stream)) => {
                attempt = 0;
                if serve(stream, &mut state, &mut ops, &out).await.is_none() {
                    return; // the client is gone
                }
            }
            _ => {
                attempt += 1;
                tracing::warn!("subscriber connection to {addr} failed; retrying");
                // While down, subscriptions are recorded (and made on reconnect), not awaited.
                let deadline = tokio::time::Instant::now() + backoff(attempt);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        op = ops.recv() => match op {
                            Some(op) => { state.apply(op); state.disconnected(); }
                            None => return,
                        },
                    }
                }
            }
        }
    }
}

/// Serves one connection until it breaks (`Some`) or the client is gone (`None`).
async fn serve(
    stream: BackendStream,
    state: &mut State,
    ops: &mut mpsc::UnboundedReceiver<Op>,
    out: &Sinks,
) -> Option<()> {
    let (mut rd, mut wr) = stream.into_split();
    state.shard_pending.clear();
    let mut again = Vec::new();
    for (kind, name) in &state.subs {
        if *kind == Kind::Shard {
            state.shard_pending.push_back((name.clone(), None));
        }
        again.push(encode_request(&[kind.subscribe().as_bytes(), name]));
    }
    // Flushed: TLS may hold the last record until asked (a no-op on TCP).
    if wr.write_all(&again.concat()).await.is_err() || wr.flush().await.is_err() {
        return Some(());
    }
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            op = ops.recv() => {
                let request = state.apply(op?);
                if wr.write_all(&request).await.is_err() || wr.flush().await.is_err() {
                    return Some(());
                }
            }
            read = rd.read_buf(&mut inbuf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return Some(());
                }
                while let Ok(Some(frame)) = Reply::decode_as(&mut inbuf, Proto::Resp3) {
                    if !dispatch(frame, state, out) {
                        return None;
                    }
                }
            }
        }
    }
}

/// Handles one frame from the server; `false` when the client is gone.
fn dispatch(frame: Reply, state: &mut State, out: &Sinks) -> bool {
    if frame.is_error() {
        // Only an SSUBSCRIBE is refused here (MOVED: its slot lives elsewhere).
        if let Some((name, done)) = state.shard_answered(None) {
            state.subs.remove(&(Kind::Shard, name.clone()));
            lose(out, name, done);
        }
        return true;
    }
    let Some(parts) = frame.is_push().then(|| frame.elements(Proto::Resp3)).flatten() else {
        return true;
    };
    let word = |i: usize| parts.get(i).map(|p| bulk_text(&p.raw)).unwrap_or_default();
    match word(0).as_slice() {
        b"message" | b"pmessage" | b"smessage" => out.out.send(Message { parts }).is_ok(),
        b"ssubscribe" => {
            if let Some((_, Some(done))) = state.shard_answered(Some(&word(1))) {
                let _ = done.send(());
            }
            true
        }
        // Not asked for (the subscription is still held): the server dropped the channel
        // because its slot moved to another node.
        b"sunsubscribe" => {
            let name = Bytes::from(word(1));
            if state.subs.remove(&(Kind::Shard, name.clone())) {
                lose(out, name, None);
            }
            true
        }
        b"subscribe" => {
            state.confirmed(Kind::Channel, &word(1));
            true
        }
        b"psubscribe" => {
            state.confirmed(Kind::Pattern, &word(1));
            true
        }
        _ => true,
    }
}

/// Hands a lost shard channel back to be placed again.
fn lose(out: &Sinks, name: Bytes, done: Option<Confirm>) {
    if let Some(lost) = &out.lost {
        let _ = lost.send((name, done));
    }
}

/// The content of a bulk string frame (`$n\r\n...\r\n`).
fn bulk_text(raw: &[u8]) -> Vec<u8> {
    let Some(start) = raw.windows(2).position(|w| w == b"\r\n") else {
        return Vec::new();
    };
    raw.get(start + 2..raw.len().saturating_sub(2))
        .unwrap_or_default()
        .to_vec()
}
