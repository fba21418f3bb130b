//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, with Redis's semantics
//! (design §10).
//!
//! Between `MULTI` and `EXEC` the proxy queues the client's commands itself and answers `QUEUED`;
//! a command it must refuse is refused at once and flags the transaction, so `EXEC` answers
//! `EXECABORT` and nothing runs. At `EXEC` the whole transaction goes to the write primary of the
//! routing in force as one `MULTI … EXEC` in a single batch of one connection (Redis runs it
//! atomically), and afterwards every key a queued write touched is key-synced by the phase's
//! mirror rules. Because everything is sent at `EXEC`, a transaction never spans a phase switch,
//! and the batch holding it counts as in flight for the fence like any write.
//!
//! `WATCH` is state of the server connection, so a watching client gets a backend connection of
//! its own (to the node serving the watched keys) that carries its `WATCH` and, later, its
//! transaction. If the write primary changes between `WATCH` and `EXEC`, `EXEC` answers the null
//! reply of a failed watch: the client's retry loop runs again, on the new primary.

use std::sync::Arc;

use bytes::Bytes;

use super::Applied;
use super::Proxy;
use super::backend::Unit;
use super::call::Call;
use super::hooks::{self, NOT_MIRRORED};
use super::local::Session;
use super::node::NodeConn;
use super::resp::{Proto, Reply, encode_request};
use crate::phase::Side;

/// How often a transaction refused by a cluster's redirection (nothing ran) is sent again.
const ATTEMPTS: u32 = 4;

/// A transaction being queued.
#[derive(Default)]
pub struct Multi {
    calls: Vec<Call>,
    /// A queued command was refused: `EXEC` answers `EXECABORT`.
    aborted: bool,
    /// Whether the keys migrate, once a keyed command was queued (all must agree).
    migrates: Option<bool>,
    /// The slot of the first key queued.
    slot: Option<u16>,
}

/// Keys watched on a connection of the client's own.
pub struct Watch {
    conn: NodeConn,
    side: Side,
    migrates: bool,
    slot: Option<u16>,
}

/// A transaction command's work, done in order with the batch's other requests.
pub enum TxStep {
    /// Send `WATCH` on the client's own connection.
    Watch(NodeConn, Bytes),
    /// Run a transaction.
    Exec(Exec),
}

impl TxStep {
    /// Whether the step writes (and must respect the fence).
    pub fn writes(&self) -> bool {
        match self {
            TxStep::Watch(..) => false,
            TxStep::Exec(exec) => exec
                .calls
                .iter()
                .any(|c| c.spec.class == super::command::Class::Write),
        }
    }
}

/// A transaction ready to run.
pub struct Exec {
    calls: Vec<Call>,
    migrates: bool,
    slot: Option<u16>,
    watch: Option<Watch>,
}

/// What a transaction command (`Class::Transaction`) does to the session: a reply now, or a step.
pub enum Outcome {
    /// Answered at once.
    Reply(Reply),
    /// Work to do in order.
    Step(TxStep),
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Handles `MULTI`, `EXEC`, `DISCARD`, `WATCH` and `UNWATCH`. `watched` resolves a `WATCH`'s keys
/// into a call (or the refusal its keys deserve).
pub async fn command(
    proxy: &Proxy,
    session: &mut Session,
    name: &str,
    watched: Result<Call, Reply>,
) -> Outcome {
    let reply = |r| Outcome::Reply(r);
    match name {
        "MULTI" if session.multi.is_some() => reply(Reply::error("ERR MULTI calls can not be nested")),
        "MULTI" => {
            session.multi = Some(Multi::default());
            reply(Reply::ok())
        }
        "DISCARD" => match session.multi.take() {
            None => reply(Reply::error("ERR DISCARD without MULTI")),
            Some(_) => {
                session.watch = None;
                reply(Reply::ok())
            }
        },
        "EXEC" => match session.multi.take() {
            None => reply(Reply::error("ERR EXEC without MULTI")),
            Some(multi) if multi.aborted => {
                session.watch = None;
                reply(Reply::error(EXECABORT))
            }
            Some(multi) => {
                let watch = session.watch.take();
                Outcome::Step(TxStep::Exec(Exec {
                    migrates: multi
                        .migrates
                        .or(watch.as_ref().map(|w| w.migrates))
                        .unwrap_or(true),
                    slot: multi.slot.or(watch.as_ref().and_then(|w| w.slot)),
                    calls: multi.calls,
                    watch,
                }))
            }
        },
        // Inside MULTI, UNWATCH is queued like any command (see `enqueue`).
        "UNWATCH" => {
            session.watch = None;
            reply(Reply::ok())
        }
        "WATCH" if session.multi.is_some() => reply(Reply::error("ERR WATCH inside MULTI is not allowed")),
        "WATCH" => match watched {
            Err(refusal) => reply(refusal),
            Ok(call) => match watch(proxy, session, &call).await {
                Ok(conn) => Outcome::Step(TxStep::Watch(conn, call.raw)),
                Err(refusal) => reply(refusal),
            },
        },
        other => reply(Reply::error(format!(
            "ERR cachemig: {other} is not a transaction command"
        ))),
    }
}

/// The connection a `WATCH` goes on: the client's own, opened to the node serving its keys on
/// the side that is their write primary now.
async fn watch(proxy: &Proxy, session: &mut Session, call: &Call) -> Result<NodeConn, Reply> {
    let side = primary(&proxy.applied(), call.migrates);
    let backend = proxy.backend(side);
    let slot = if backend.is_cluster() { call.slot() } else { None };
    if backend.is_cluster() && call.keys().any(|k| Some(crate::cluster::key_slot(k)) != slot) {
        return Err(Reply::error(CROSSSLOT));
    }
    match &session.watch {
        Some(w) if w.side != side || w.migrates != call.migrates => Err(Reply::error(
            "ERR cachemig: WATCH of keys that migrate together with keys that do not; watch them in separate transactions",
        )),
        Some(w) if w.slot.is_some() && slot.is_some() && w.slot != slot => Err(Reply::error(CROSSSLOT)),
        Some(w) => Ok(w.conn.clone()),
        None => {
            let conn = backend.dedicated(slot, session.proto).await;
            session.watch = Some(Watch {
                conn: conn.clone(),
                side,
                migrates: call.migrates,
                slot,
            });
            Ok(conn)
        }
    }
}

/// Queues a command between `MULTI` and `EXEC`: `QUEUED`, or a refusal that flags the
/// transaction (`resolved` is the command resolved as it would be outside a transaction).
pub fn enqueue(proxy: &Proxy, session: &mut Session, resolved: Result<Call, Reply>) -> Reply {
    let applied = proxy.applied();
    let Some(multi) = session.multi.as_mut() else {
        return Reply::error("ERR cachemig: internal error: no transaction to queue into");
    };
    let checked = resolved.and_then(|call| {
        let call = proxy.scripts.as_eval(&call).unwrap_or(call);
        if !call.keys.is_empty() {
            if multi.migrates.is_some_and(|m| m != call.migrates) {
                return Err(Reply::error(
                    "ERR cachemig: this transaction mixes keys that migrate (the plan's [keys]) with keys that do not; they live on different servers during the migration",
                ));
            }
            let cluster = proxy.backend(primary(&applied, call.migrates)).is_cluster();
            let first = multi.slot.or(call.slot());
            if cluster && call.keys().any(|k| Some(crate::cluster::key_slot(k)) != first) {
                return Err(Reply::error(CROSSSLOT));
            }
            multi.migrates = Some(call.migrates);
            multi.slot = first;
        }
        Ok(call)
    });
    match checked {
        Ok(call) => {
            multi.calls.push(call);
            Reply::simple("QUEUED")
        }
        Err(refusal) => {
            multi.aborted = true;
            refusal
        }
    }
}

/// The write primary for keys that migrate (or not) under `applied`.
fn primary(applied: &Applied, migrates: bool) -> Side {
    if migrates {
        applied.routing.write
    } else {
        Side::Old
    }
}

/// Runs a step under the batch's routing `applied`.
pub async fn run(proxy: &Arc<Proxy>, applied: &Applied, proto: Proto, step: TxStep) -> Reply {
    match step {
        TxStep::Watch(conn, raw) => first(conn.send(vec![raw]).await),
        TxStep::Exec(exec) => run_exec(proxy, applied, proto, exec).await,
    }
}

fn first(replies: Vec<Reply>) -> Reply {
    replies
        .into_iter()
        .next()
        .unwrap_or_else(|| Reply::error("ERR cachemig: no reply"))
}

async fn run_exec(proxy: &Arc<Proxy>, applied: &Applied, proto: Proto, exec: Exec) -> Reply {
    let side = primary(applied, exec.migrates);
    let mut requests = Vec::with_capacity(exec.calls.len() + 2);
    requests.push(encode_request(&["MULTI"]));
    requests.extend(exec.calls.iter().map(|c| c.raw.clone()));
    requests.push(encode_request(&["EXEC"]));
    // Kept until the mirror took over (end of this function).
    let writes = exec
        .calls
        .iter()
        .filter(|c| c.spec.class == super::command::Class::Write);
    let _held = hooks::hold_persisted(proxy, &applied.routing, side, writes).await;
    let replies = match &exec.watch {
        // The primary moved since WATCH: the watched keys now live elsewhere, so the
        // transaction fails as if they had changed, and the client's loop retries.
        Some(w) if w.side != side => return Reply::null_array(proto),
        Some(w) => w.conn.send(requests).await,
        None => send_shared(proxy, side, proto, requests, exec.slot).await,
    };
    let queued_ok = replies.first().is_some_and(|r| !r.is_error());
    let Some(reply) = replies.last().cloned().filter(|_| queued_ok) else {
        return first(replies);
    };
    if reply.raw.first() != Some(&b'*') {
        return reply; // aborted (EXECABORT, or a failed WATCH): nothing ran
    }
    mirror(proxy, applied, side, &exec.calls, reply).await
}

/// Sends a transaction on the shared connections; a cluster's redirection makes the node refuse
/// it whole (EXECABORT, nothing ran), so it is sent again after the slot map is refreshed.
async fn send_shared(
    proxy: &Proxy,
    side: Side,
    proto: Proto,
    requests: Vec<Bytes>,
    slot: Option<u16>,
) -> Vec<Reply> {
    let backend = proxy.backend(side);
    let count = requests.len();
    let raw = Bytes::from(requests.concat());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let unit = Unit {
            raw: raw.clone(),
            then: None,
            count,
            slot,
        };
        let replies = backend.send_as(vec![unit], proto).await;
        let redirected = replies.iter().any(|r| {
            r.error_text().is_some_and(|e| {
                ["MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"]
                    .iter()
                    .any(|w| e.starts_with(w))
            })
        });
        if !redirected || attempt == ATTEMPTS {
            return replies;
        }
        tokio::time::sleep(crate::cluster::backoff(attempt)).await;
        backend.refresh_map().await;
    }
}

/// Key-syncs every key the transaction's writes touched; in sync mode waits for them.
async fn mirror(proxy: &Arc<Proxy>, applied: &Applied, side: Side, calls: &[Call], reply: Reply) -> Reply {
    let syncs = calls
        .iter()
        .filter(|c| c.spec.class == super::command::Class::Write)
        .filter_map(|c| hooks::mirror(proxy, &applied.routing, side, c, None))
        .enumerate()
        .collect();
    if hooks::settle(syncs).await.iter().all(|(_, ok)| *ok) {
        reply
    } else {
        Reply::error(NOT_MIRRORED)
    }
}
