//! Routing one batch of a client's requests.
//!
//! The batch is routed with one snapshot of the applied generation, so a flag change applies at
//! a request boundary. Consecutive requests for the same side form a *segment*, sent as one
//! pipeline per node; a change of side ends the segment, so a read that follows a write on the
//! other side sees that write (and its sync mirror). Replies go back in request order.
//!
//! The fence (design §4): a batch holding a write counts as *in flight* from before its routing
//! snapshot until its keys are mirrored or queued, and a proxy acks a fence only with nothing in
//! flight and an empty mirror. So no write taken under the old routing can land after the ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::blocking;
use super::call::Call;
use super::command::{self, Class};
use super::functions;
use super::keyspace;
use super::local::{self, Session};
use super::pubsub;
use super::resp::{Reply, Request};
use super::tx::{self, TxStep};
use super::wait;
use super::{Applied, Proxy};
use crate::keys::RESERVED_PREFIX;
use crate::phase::Side;

mod segment;

use segment::{Segment, flush};

/// How long the writes of one batch may be held by the fence before they are refused, unapplied.
/// The CLI releases a fence within `max_write_pause` (5 s by default); this only bounds a fence
/// left behind by a CLI that died mid-switch.
pub const FENCE_HOLD_LIMIT: Duration = Duration::from_secs(30);
/// The answer to a write the fence held for [`FENCE_HOLD_LIMIT`].
const HELD_TOO_LONG: &str =
    "TRYAGAIN cachemig: write held by the primary-switch fence for 30s and not applied; retry";
/// How much of a command's name and arguments an "unknown command" error echoes (as Redis).
const ECHOED_ARGS: usize = 128;

/// Counts a batch with writes as in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What to do with one request.
enum Step {
    /// Answered without a backend.
    Reply(Reply),
    /// Forwarded; `true` for a write.
    Forward(Call, bool),
    /// A transaction's work ([`tx`]), done alone, after what precedes it was sent.
    Tx(TxStep),
    /// A blocking command ([`blocking`]), on the client's own connection; `true` for a write.
    Blocking(Call, bool),
    /// A keyspace command ([`keyspace`]), answered from every master of a side.
    Keyspace(Vec<Bytes>),
    /// A subscription change ([`pubsub`]).
    PubSub(Vec<Bytes>),
    /// A function-library command ([`functions`]).
    Function(Vec<Bytes>),
    /// WAIT ([`wait`]), on connections of its own to the nodes the client wrote.
    Wait(Vec<Bytes>),
    /// FLUSHDB/FLUSHALL, where the plan allows them ([`keyspace::flush`]).
    Flush(Vec<Bytes>),
}

impl Step {
    fn writes(&self) -> bool {
        match self {
            Step::Reply(_) | Step::Keyspace(_) | Step::PubSub(_) | Step::Wait(_) => false,
            // A library change is not a key write: nothing to mirror or fence.
            Step::Function(_) => false,
            Step::Forward(_, write) | Step::Blocking(_, write) => *write,
            Step::Tx(step) => step.writes(),
            // Deletes keys on both sides: fenced and counted in flight like any write.
            Step::Flush(_) => true,
        }
    }
}

/// Vectors longer than this are dropped after a batch rather than kept for the next one: a long
/// pipeline should not leave its buffers to an idle connection.
const KEEP_ITEMS: usize = 64;

/// The buffers [`handle`] works in, kept by a client connection from batch to batch, so a
/// request does not allocate a fresh vector for each stage of its way through the proxy.
/// Every vector is empty between batches; only its room is kept.
#[derive(Default)]
pub struct Scratch {
    /// Each request's step, in order.
    steps: Vec<Step>,
    /// `CLIENT REPLY OFF|SKIP`: whether each request's reply is withheld from the client.
    muted: Vec<bool>,
    /// Each request's reply, as it becomes known.
    replies: Vec<Option<Reply>>,
    segment: Segment,
}

/// Empties `v`, and gives back its room if it grew past [`KEEP_ITEMS`].
pub fn trim<T>(v: &mut Vec<T>) {
    v.clear();
    if v.capacity() > KEEP_ITEMS {
        *v = Vec::new();
    }
}

impl Scratch {
    /// Empties every buffer (see [`trim`]).
    fn reset(&mut self) {
        trim(&mut self.steps);
        trim(&mut self.muted);
        trim(&mut self.replies);
        trim(&mut self.segment.items);
        trim(&mut self.segment.units);
        trim(&mut self.segment.shapes);
        self.segment.side = None;
    }
}

/// Routes and answers one batch, taking the requests out of `batch`; appends one reply per
/// request to `out`, in order (fewer after a QUIT, and none for the requests `CLIENT REPLY`
/// mutes). `scratch` is the connection's working room (see [`Scratch`]).
pub async fn handle(
    proxy: &Arc<Proxy>,
    session: &mut Session,
    batch: &mut Vec<Request>,
    scratch: &mut Scratch,
    out: &mut Vec<Reply>,
) {
    scratch.reset();
    let Scratch {
        steps,
        muted,
        replies,
        segment,
    } = scratch;
    // Classifying needs no routing, so it comes first: each command is looked up once, and the
    // batch knows whether it writes before it takes its routing snapshot. Requests after a QUIT
    // are dropped with the drain.
    for request in batch.drain(..) {
        steps.push(classify(proxy, session, request).await);
        muted.push(session.replies.muted());
        if session.quit {
            break; // nothing after QUIT is answered
        }
    }
    let proto = session.proto;
    let has_write = steps.iter().any(Step::writes);
    let mut in_flight = has_write.then(|| InFlight::new(&proxy.writes_in_flight));
    let stale = if has_write { proxy.stale() } else { None };
    let mut applied = proxy.applied();
    let deadline = Instant::now() + FENCE_HOLD_LIMIT;
    let mut refuse_writes = false;
    replies.resize(steps.len(), None);
    for (i, step) in steps.drain(..).enumerate() {
        let write = step.writes();
        if let Step::Reply(reply) = step {
            replies[i] = Some(reply);
            continue;
        }
        if write && !refuse_writes && applied.routing.fence {
            flush(proxy, &applied, segment, replies, proto).await;
            match unfenced(proxy, &mut in_flight, deadline).await {
                Some(now) => applied = now,
                None => refuse_writes = true,
            }
        }
        if write && let Some(why) = &stale {
            // Behind the generation beacon: this proxy's routing may no longer be the fleet's.
            replies[i] = Some(Reply::error(super::stale::refusal(why)));
            continue;
        }
        if write && refuse_writes {
            // Later writes of the batch are refused too: none may overtake a refused one.
            replies[i] = Some(Reply::error(HELD_TOO_LONG));
            continue;
        }
        let call = match step {
            Step::Forward(call, _) => call,
            Step::Tx(step) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(tx::run(proxy, &applied, proto, step).await);
                continue;
            }
            Step::PubSub(args) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(pubsub::command(proxy, session, &args).await);
                continue;
            }
            Step::Keyspace(args) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(keyspace::answer(proxy, &applied, &args, proto).await);
                continue;
            }
            Step::Function(args) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(functions::answer(proxy, &applied, &args, proto).await);
                continue;
            }
            Step::Flush(args) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(keyspace::flush(proxy, &args).await);
                continue;
            }
            Step::Wait(args) => {
                flush(proxy, &applied, segment, replies, proto).await;
                replies[i] = Some(wait::answer(proxy, &applied, &session.written, &args).await);
                continue;
            }
            Step::Blocking(call, write) => {
                flush(proxy, &applied, segment, replies, proto).await;
                let reply = run_blocking(proxy, session, &mut applied, &mut in_flight, &call, write).await;
                replies[i] = Some(reply);
                continue;
            }
            Step::Reply(_) => unreachable!("answered above"),
        };
        let side = side_for(&applied, &call, write);
        if segment.side != Some(side) {
            flush(proxy, &applied, segment, replies, proto).await;
            segment.side = Some(side);
        }
        segment.items.push((i, call, write));
    }
    flush(proxy, &applied, segment, replies, proto).await;
    drop(in_flight);
    let answered = replies.drain(..).zip(muted.drain(..)).filter(|(_, muted)| !muted);
    out.extend(answered.map(|(r, _)| {
        r.unwrap_or_else(|| Reply::error("ERR cachemig: internal error: request left unanswered"))
    }));
    scratch.reset(); // an idle connection keeps no Call, and no room past KEEP_ITEMS
}

/// Runs a blocking command until it completes under the routing in force: a routing change while
/// it is blocked cancels it, and it runs again once any fence is lifted.
async fn run_blocking<'a>(
    proxy: &'a Arc<Proxy>,
    session: &mut Session,
    applied: &mut Arc<Applied>,
    in_flight: &mut Option<InFlight<'a>>,
    call: &Call,
    write: bool,
) -> Reply {
    loop {
        let side = side_for(applied, call, write);
        match blocking::run(proxy, session, applied, call, write, side).await {
            blocking::Outcome::Done(reply) => return reply,
            blocking::Outcome::Cancelled => {
                match unfenced(proxy, in_flight, Instant::now() + FENCE_HOLD_LIMIT).await {
                    Some(now) => *applied = now,
                    None => return Reply::error(HELD_TOO_LONG),
                }
            }
        }
    }
}

/// Waits until the applied routing has no fence, not counting as in flight meanwhile; the routing
/// then in force (snapshotted after the batch counts as in flight again), or `None` at `deadline`.
async fn unfenced<'a>(
    proxy: &'a Proxy,
    in_flight: &mut Option<InFlight<'a>>,
    deadline: Instant,
) -> Option<Arc<Applied>> {
    loop {
        let applied = proxy.applied();
        if !applied.routing.fence {
            return Some(applied);
        }
        *in_flight = None;
        proxy.metrics.held_writes.inc();
        let mut rx = proxy.applied.clone();
        let lifted = tokio::time::timeout_at(deadline, rx.wait_for(|a| !a.routing.fence)).await;
        proxy.metrics.held_writes.dec();
        *in_flight = Some(InFlight::new(&proxy.writes_in_flight));
        if !matches!(lifted, Ok(Ok(_))) {
            return None;
        }
    }
}

/// Looks the request up and answers what needs no backend; inside `MULTI`, queues it.
async fn classify(proxy: &Proxy, session: &mut Session, request: Request) -> Step {
    let Request { args, raw } = request;
    let Some(spec) = command::lookup(&args[0]) else {
        proxy.metrics.rejected.inc();
        return queued_or(proxy, session, Err(unknown_command(&args)));
    };
    if !session.authed && !matches!(spec.name, "AUTH" | "HELLO" | "QUIT") {
        return Step::Reply(Reply::error("NOAUTH Authentication required."));
    }
    if !spec.arity_ok(args.len()) {
        let refusal = Reply::error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        ));
        return queued_or(proxy, session, Err(refusal));
    }
    // A command one side's version lacks (docs/proxy.md, "Commands one side lacks").
    if let Some(why) = proxy.version_refusal(spec.name) {
        proxy.metrics.rejected.inc();
        return queued_or(proxy, session, Err(Reply::error(why)));
    }
    if pubsub::subscriber_mode(session) && !pubsub::allowed_in_subscriber_mode(spec.name) {
        return Step::Reply(Reply::error(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name.to_ascii_lowercase()
        )));
    }
    proxy.scripts.learn_from(spec, &args);
    match spec.class {
        Class::Transaction => {
            let watched = resolve(proxy, spec, args, raw);
            match tx::command(proxy, session, spec.name, watched).await {
                tx::Outcome::Reply(reply) => Step::Reply(reply),
                tx::Outcome::Step(step) => Step::Tx(step),
            }
        }
        // QUIT and RESET act at once even inside MULTI, as in Redis.
        Class::Local if session.multi.is_none() || matches!(spec.name, "QUIT" | "RESET") => {
            Step::Reply(local::answer(proxy, session, &args))
        }
        // The server answers these the same way inside a transaction.
        Class::Local if matches!(spec.name, "PING" | "ECHO") => {
            queued_or(proxy, session, resolve(proxy, spec, args, raw))
        }
        Class::Local => {
            let refusal = Reply::error(format!(
                "ERR cachemig: {} cannot be queued in a transaction through the proxy",
                spec.name
            ));
            queued_or(proxy, session, Err(refusal))
        }
        Class::PubSub if session.multi.is_none() => Step::PubSub(args),
        Class::Function if session.multi.is_none() => Step::Function(args),
        Class::Wait if session.multi.is_none() => Step::Wait(args),
        Class::Flush if !proxy.allow_flush => {
            proxy.metrics.rejected.inc();
            let refusal = Reply::error(format!(
                "ERR cachemig: {} would bypass the migration's key mirroring; set [proxies] allow_flush = true in the plan to apply it to both sides",
                spec.name
            ));
            queued_or(proxy, session, Err(refusal))
        }
        Class::Flush if session.multi.is_none() => Step::Flush(args),
        Class::PubSub | Class::Function | Class::Wait | Class::Flush => {
            let refusal = Reply::error(format!("ERR cachemig: {} inside a transaction", spec.name));
            queued_or(proxy, session, Err(refusal))
        }
        Class::Keyspace if session.multi.is_none() => Step::Keyspace(args),
        Class::Keyspace => queued_or(proxy, session, resolve(proxy, spec, args, raw)),
        Class::Reject(why) => {
            proxy.metrics.rejected.inc();
            let refusal = Reply::error(format!("ERR cachemig: {} {why}", spec.name));
            queued_or(proxy, session, Err(refusal))
        }
        Class::Read | Class::Write => {
            let resolved = resolve(proxy, spec, args, raw);
            if let Ok(call) = &resolved
                && spec.class == Class::Write
            {
                session.written.record(call);
            }
            if session.multi.is_some() {
                return queued_or(proxy, session, resolved);
            }
            let write = spec.class == Class::Write;
            let resolved = resolved.map(|mut call| {
                call.on_primary = session.watch.is_some();
                call
            });
            match resolved {
                Ok(call) if spec.blocks_with(&call.args) => Step::Blocking(call, write),
                Ok(call) => Step::Forward(call, write),
                Err(refusal) => Step::Reply(refusal),
            }
        }
    }
}

/// What Redis answers to a command it does not know (clients that fall back on "unknown command",
/// such as older HELLO-probing ones, recognise it).
fn unknown_command(args: &[Bytes]) -> Reply {
    let text = |b: &[u8], most: usize| String::from_utf8_lossy(&b[..b.len().min(most)]).into_owned();
    let mut shown = String::new();
    for arg in &args[1..] {
        if shown.len() >= ECHOED_ARGS {
            break;
        }
        shown += &format!("'{}' ", text(arg, ECHOED_ARGS - shown.len()));
    }
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        text(&args[0], ECHOED_ARGS)
    ))
}

/// Inside `MULTI`: queued (or refused, flagging the transaction). Outside: the refusal as it is.
fn queued_or(proxy: &Proxy, session: &mut Session, resolved: Result<Call, Reply>) -> Step {
    match (session.multi.is_some(), resolved) {
        (true, resolved) => Step::Reply(tx::enqueue(proxy, session, resolved)),
        (false, Err(refusal)) => Step::Reply(refusal),
        (false, Ok(_)) => Step::Reply(Reply::error(
            "ERR cachemig: internal error: nothing to queue into",
        )),
    }
}

/// A request as a call: its keys found, and refused when they are reserved or mix keys that
/// migrate with keys that do not.
fn resolve(proxy: &Proxy, spec: &'static command::Spec, args: Vec<Bytes>, raw: Bytes) -> Result<Call, Reply> {
    let keys = spec.key_indices(args.len(), &args);
    if spec.name == "SPUBLISH" {
        // A shard channel is not data: it routes by its slot, to the read side whatever the
        // plan's [keys] say, as PUBLISH does.
        return Ok(Call {
            on_primary: false,
            migrates: true,
            args,
            raw,
            spec,
            keys,
        });
    }
    if keys.iter().any(|&k| args[k].starts_with(RESERVED_PREFIX)) {
        return Err(Reply::error(
            "ERR cachemig: keys under __cachemig: are reserved for the migration's own bookkeeping",
        ));
    }
    let migrating = keys.iter().filter(|&&k| proxy.filter.matches(&args[k])).count();
    if migrating != 0 && migrating != keys.len() {
        return Err(Reply::error(format!(
            "ERR cachemig: {} mixes keys that migrate (the plan's [keys]) with keys that do not; send them in separate commands",
            spec.name
        )));
    }
    if let Some(&first) = keys.first() {
        proxy.hot.record(&args[first]);
    }
    Ok(Call {
        on_primary: false,
        migrates: keys.is_empty() || migrating > 0,
        args,
        raw,
        spec,
        keys,
    })
}

/// The side a call goes to. Keys outside the plan's `[keys]` never migrate: they stay on old.
fn side_for(applied: &Applied, call: &Call, write: bool) -> Side {
    match (call.migrates, write) {
        (false, _) => Side::Old,
        (true, true) => applied.routing.write,
        (true, false) if call.on_primary => applied.routing.write,
        (true, false) => applied.routing.read,
    }
}
