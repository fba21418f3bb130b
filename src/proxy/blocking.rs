//! Blocking commands (`BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`, `BZPOPMIN`, `BZPOPMAX`,
//! `BZMPOP`, `XREAD BLOCK`, `XREADGROUP BLOCK`), design §10.
//!
//! A blocked command would hold up every client sharing a connection, so each blocking client
//! gets a backend connection of its own (kept for its next blocking call), without the hung-node
//! timeout: it may wait as long as its client asked. When the call returns, the keys it touched
//! are key-synced like any write's.
//!
//! A phase switch while a client is blocked: the call is cancelled with `CLIENT UNBLOCK` (the
//! server then answers as on a timeout, having popped nothing) and run again under the routing in
//! force, so a worker's queue moves with the primary and the fence is not held up by an idle
//! worker. If the call took an element just before the unblock, its real reply wins: nothing is
//! lost and nothing is popped twice. A cancelled call starts its timeout again (a client may wait
//! up to one timeout longer across a switch).
//!
//! A proxy stopping for a restart ([`super::drain`]) releases a blocked call the same way but
//! answers the client with the timeout's reply (or with what the call took, if it took something
//! first); the client's next call lands on the successor.

use std::sync::Arc;

use super::backend::Backend;
use super::call::Call;
use super::hooks::{self, settle};
use super::local::Session;
use super::node::NodeConn;
use super::resp::{Proto, Reply, encode_request};
use super::{Applied, Proxy};
use crate::phase::Side;

/// A connection a client keeps for its blocking calls.
pub struct Pinned {
    side: Side,
    slot: Option<u16>,
    proto: Proto,
    conn: NodeConn,
    /// The server's `CLIENT ID` of the connection, for `CLIENT UNBLOCK`.
    id: Option<i64>,
}

/// How a blocking call ended.
pub enum Outcome {
    /// With this reply for the client.
    Done(Reply),
    /// Cancelled by a routing change before it took anything: run it again.
    Cancelled,
}

/// Runs `call` under `applied` on the client's own connection to the side that serves it.
pub async fn run(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    applied: &Applied,
    call: &Call,
    write: bool,
    side: Side,
) -> Outcome {
    let backend = proxy.backend(side);
    let slot = if backend.is_cluster() { call.slot() } else { None };
    let (conn, id) = {
        let p = pinned(session, &backend, side, slot).await;
        (p.conn.clone(), p.id)
    };
    let mut changes = proxy.applied.clone();
    let generation = applied.generation;
    // Kept until the mirror took over (end of this function).
    let _held = match write {
        true => hooks::hold_persisted(proxy, &applied.routing, side, [call]).await,
        false => super::backlog::Hold::none(),
    };
    let sent = conn.send(vec![call.raw.clone()]);
    tokio::pin!(sent);
    let switched = async {
        let _ = changes.wait_for(|a| a.generation != generation).await;
    };
    let mut draining = proxy.draining.subscribe();
    let stopping = async {
        let _ = draining.wait_for(|d| *d).await;
    };
    let (reply, cancelled) = tokio::select! {
        replies = &mut sent => (first(replies), false),
        () = switched => {
            unblock(&backend, id, slot).await;
            (first(sent.await), true)
        }
        () = stopping => (release(&backend, id, slot, sent.as_mut()).await, false),
    };
    if cancelled && is_null(&reply) {
        return Outcome::Cancelled;
    }
    if reply
        .error_text()
        .is_some_and(|e| e.starts_with("MOVED ") || e.starts_with("ASK "))
    {
        // The slot moved: a fresh connection to its new owner on the next attempt.
        session.blocking = None;
        backend.refresh_map().await;
        return Outcome::Cancelled;
    }
    if write && !is_null(&reply) && !reply.is_error() {
        // The reply carries what was taken: it goes to the client even if the mirror fails (the
        // key is then marked dirty and counted), since a retry could not take it again.
        let syncs = hooks::mirror(proxy, &applied.routing, side, call, None);
        settle(syncs.into_iter().map(|s| (0, s)).collect()).await;
    }
    Outcome::Done(reply)
}

/// The client's blocking connection to `side`'s node for `slot`, opened on first use.
async fn pinned<'a>(
    session: &'a mut Session,
    backend: &Backend,
    side: Side,
    slot: Option<u16>,
) -> &'a Pinned {
    let proto = session.proto;
    let reusable = session
        .blocking
        .as_ref()
        .is_some_and(|p| p.side == side && p.slot == slot && p.proto == proto);
    if !reusable {
        let conn = backend.dedicated(slot, proto).await;
        let id = first(conn.send(vec![encode_request(&["CLIENT", "ID"])]).await)
            .raw
            .strip_prefix(b":")
            .and_then(|r| std::str::from_utf8(r).ok())
            .and_then(|r| r.trim_end().parse().ok());
        session.blocking = Some(Pinned {
            side,
            slot,
            proto,
            conn,
            id,
        });
    }
    session.blocking.as_ref().expect("set above")
}

/// Wakes the blocked connection `id` as if its timeout had passed (nothing is taken).
async fn unblock(backend: &Backend, id: Option<i64>, slot: Option<u16>) {
    if let Some(id) = id {
        let raw = encode_request(&["CLIENT", "UNBLOCK", &id.to_string()]);
        backend.request(raw, slot).await;
    }
}

/// Unblocks the call until it answers: an unblock that reached the server before the call did is
/// a no-op, so it is sent again until the reply comes.
async fn release(
    backend: &Backend,
    id: Option<i64>,
    slot: Option<u16>,
    mut sent: std::pin::Pin<&mut impl Future<Output = Vec<Reply>>>,
) -> Reply {
    loop {
        unblock(backend, id, slot).await;
        if let Ok(replies) = tokio::time::timeout(RELEASE_RETRY, sent.as_mut()).await {
            return first(replies);
        }
    }
}

/// How often [`release`] repeats its unblock.
const RELEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

fn first(replies: Vec<Reply>) -> Reply {
    replies
        .into_iter()
        .next()
        .unwrap_or_else(|| Reply::error("ERR cachemig: no reply"))
}

/// A timeout's answer: a null in either protocol (`$-1`, `*-1`, `_`).
fn is_null(reply: &Reply) -> bool {
    matches!(&reply.raw[..], b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
}
