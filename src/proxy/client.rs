//! One client connection.
//!
//! Requests are read in batches (whatever a pipelining client has sent). Each batch is routed
//! with one snapshot of the routing, so a flag change applies at a request boundary. Consecutive
//! requests for the same side form a *segment*, sent as one pipeline per node; a change of side
//! ends the segment, so a read that follows a write on the other side sees that write (and its
//! sync mirror). Replies go back in request order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::call::Call;
use super::command::{self, Class};
use super::local::{self, Session};
use super::mirror::Direction;
use super::resp::{MAX_BULK, Reply, Request, next_request};
use super::shadow::Shadow;
use super::{Applied, Proxy};
use crate::flags::FlagRouting;
use crate::keys::RESERVED_PREFIX;
use crate::phase::{MirrorMode, Side};

/// Most requests handled as one batch (the rest of a long pipeline waits for the next round).
const MAX_BATCH: usize = 512;
/// How long a write may be held by the fence before it is refused, unapplied. The CLI releases
/// the fence within `max_write_pause` (5 s by default); this only bounds a fence left behind by
/// a CLI that died mid-switch.
pub const FENCE_HOLD_LIMIT: Duration = Duration::from_secs(30);

/// Serves one client until it disconnects, sends QUIT, or breaks the protocol.
pub async fn serve(proxy: Arc<Proxy>, stream: TcpStream, id: u64) {
    proxy.metrics.connections.inc();
    if let Err(e) = run(&proxy, stream, id).await {
        tracing::debug!("client {id}: {e}");
    }
    proxy.metrics.connections.dec();
}

async fn run(proxy: &Arc<Proxy>, stream: TcpStream, id: u64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut session = Session {
        authed: proxy.password.is_none(),
        id,
        ..Session::default()
    };
    loop {
        let mut batch = Vec::new();
        let mut fatal = None;
        while batch.len() < MAX_BATCH {
            match next_request(&mut inbuf, MAX_BULK) {
                Ok(Some(request)) => batch.push(request),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() && fatal.is_none() {
            if rd.read_buf(&mut inbuf).await? == 0 {
                return Ok(());
            }
            continue;
        }
        let started = Instant::now();
        let replies = handle(proxy, &mut session, batch).await;
        account(proxy, &replies, started.elapsed());
        for reply in &replies {
            out.extend_from_slice(&reply.raw);
        }
        if let Some(e) = fatal {
            // The stream cannot be resynchronised: answer, then close (the proxy goes on).
            proxy.metrics.errors.inc();
            out.extend_from_slice(&Reply::error(format!("ERR cachemig: {e}; closing the connection")).raw);
            wr.write_all(&out).await?;
            return Ok(());
        }
        wr.write_all(&out).await?;
        out.clear();
        if session.quit {
            return Ok(());
        }
    }
}

fn account(proxy: &Proxy, replies: &[Reply], took: Duration) {
    let m = &proxy.metrics;
    m.requests.inc_by(replies.len() as u64);
    let errors = replies.iter().filter(|r| r.is_error()).count();
    if errors > 0 {
        m.errors.inc_by(errors as u64);
    }
    let secs = took.as_secs_f64();
    for _ in replies {
        m.latency.observe(secs);
    }
}

/// What to do with one request.
enum Step {
    /// Answered without a backend.
    Reply(Reply),
    /// Forwarded; `true` for a write.
    Forward(Call, bool),
}

/// Requests for one side, in order, waiting to be sent together.
#[derive(Default)]
struct Segment {
    side: Option<Side>,
    items: Vec<(usize, Call, bool)>,
}

/// Routes and answers one batch; one reply per request, in order (fewer after a QUIT).
async fn handle(proxy: &Arc<Proxy>, session: &mut Session, batch: Vec<Request>) -> Vec<Reply> {
    let mut applied = proxy.applied();
    let mut replies: Vec<Option<Reply>> = vec![None; batch.len()];
    let mut segment = Segment::default();
    let mut answered = batch.len();
    for (i, request) in batch.into_iter().enumerate() {
        match classify(proxy, session, request) {
            Step::Reply(reply) => replies[i] = Some(reply),
            Step::Forward(call, write) => {
                if write && applied.routing.fence {
                    flush(proxy, &applied, &mut segment, &mut replies).await;
                    match hold(proxy).await {
                        Some(now) => applied = now,
                        None => {
                            replies[i] = Some(Reply::error(format!(
                                "TRYAGAIN cachemig: write held by the primary-switch fence for {}s and not applied; retry",
                                FENCE_HOLD_LIMIT.as_secs()
                            )));
                            continue;
                        }
                    }
                }
                let side = side_for(proxy, &applied.routing, &call, write);
                if segment.side != Some(side) {
                    flush(proxy, &applied, &mut segment, &mut replies).await;
                    segment.side = Some(side);
                }
                segment.items.push((i, call, write));
            }
        }
        if session.quit {
            answered = i + 1;
            break;
        }
    }
    flush(proxy, &applied, &mut segment, &mut replies).await;
    replies
        .into_iter()
        .take(answered)
        .map(|r| r.unwrap_or_else(|| Reply::error("ERR cachemig: internal error: request left unanswered")))
        .collect()
}

/// Looks the request up and answers what needs no backend.
fn classify(proxy: &Proxy, session: &mut Session, request: Request) -> Step {
    let Request { args, raw } = request;
    let Some(spec) = command::lookup(&args[0]) else {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        proxy.metrics.rejected.inc();
        return Step::Reply(Reply::error(format!(
            "ERR cachemig: {name} is unknown to the proxy; it is not forwarded"
        )));
    };
    if !session.authed && !matches!(spec.name, "AUTH" | "HELLO" | "QUIT") {
        return Step::Reply(Reply::error("NOAUTH Authentication required."));
    }
    if !spec.arity_ok(args.len()) {
        return Step::Reply(Reply::error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        )));
    }
    match spec.class {
        Class::Local => Step::Reply(local::answer(proxy, session, &args)),
        Class::Reject(why) => {
            proxy.metrics.rejected.inc();
            Step::Reply(Reply::error(format!("ERR cachemig: {} {why}", spec.name)))
        }
        Class::Read | Class::Write => {
            let keys = spec.key_indices(args.len(), &args);
            if keys.iter().any(|&k| args[k].starts_with(RESERVED_PREFIX)) {
                return Step::Reply(Reply::error(
                    "ERR cachemig: keys under __cachemig: are reserved for the migration's own bookkeeping",
                ));
            }
            if let Some(&first) = keys.first() {
                proxy.hot.record(&args[first]);
            }
            let write = spec.class == Class::Write;
            Step::Forward(
                Call {
                    args,
                    raw,
                    spec,
                    keys,
                },
                write,
            )
        }
    }
}

/// The side a call goes to. Keys outside the plan's `[keys]` never migrate: they stay on old.
fn side_for(proxy: &Proxy, routing: &FlagRouting, call: &Call, write: bool) -> Side {
    if call.first_key().is_some_and(|k| !proxy.filter.matches(k)) {
        return Side::Old;
    }
    if write { routing.write } else { routing.read }
}

/// Waits for the fence to lift; the new routing, or `None` after [`FENCE_HOLD_LIMIT`].
async fn hold(proxy: &Proxy) -> Option<Arc<Applied>> {
    let mut rx = proxy.applied.clone();
    proxy.metrics.held_writes.inc();
    let lifted = tokio::time::timeout(FENCE_HOLD_LIMIT, rx.wait_for(|a| !a.routing.fence)).await;
    proxy.metrics.held_writes.dec();
    match lifted {
        Ok(Ok(applied)) => Some(applied.clone()),
        _ => None,
    }
}

/// Sends a segment and runs the mirror and shadow hooks on its replies.
async fn flush(proxy: &Arc<Proxy>, applied: &Applied, segment: &mut Segment, replies: &mut [Option<Reply>]) {
    let Some(side) = segment.side else {
        return;
    };
    if segment.items.is_empty() {
        return;
    }
    let writes = segment.items.iter().any(|(_, _, w)| *w);
    if writes {
        proxy.writes_in_flight.fetch_add(1, Ordering::SeqCst);
    }
    let backend = proxy.backend(side);
    let mut units = Vec::new();
    let mut shapes = Vec::new();
    for (_, call, _) in &segment.items {
        let (mut u, shape) = call.units(backend.is_cluster());
        shapes.push((shape, u.len()));
        units.append(&mut u);
    }
    let mut results = backend.send(units).await.into_iter();
    let mut syncs = Vec::new();
    for ((i, call, write), (shape, n)) in segment.items.drain(..).zip(shapes) {
        let reply = call.merge(&shape, results.by_ref().take(n).collect());
        if side == Side::New {
            proxy.metrics.new_requests.inc();
            if reply.is_error() {
                proxy.metrics.new_errors.inc();
            }
        }
        if write && !reply.is_error() {
            if let Some(sync) = mirror(proxy, &applied.routing, side, &call) {
                syncs.push((i, sync));
            }
        } else if !write {
            shadow(proxy, &applied.routing, side, &call, &reply);
        }
        replies[i] = Some(reply);
    }
    for (i, ok) in join_all(syncs.into_iter().map(|(i, s)| async move { (i, s.await) })).await {
        if !ok {
            replies[i] = Some(Reply::error(
                "ERR cachemig: the write was applied on old but could not be mirrored to new, which serves reads; the key is marked for repair. Do not retry a non-idempotent command blindly",
            ));
        }
    }
    if writes {
        proxy.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A boxed wait for a sync mirror: `true` when the reply may be sent as it is.
type SyncWait = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Mirrors a write's keys (design §4): queued in async mode; in sync mode the returned future
/// completes when every key is synced. A sync that fails is counted and its key marked dirty;
/// the client still gets the primary's reply (a retried INCR would apply twice), except after
/// read-cutover, where new serves reads: there the sync is retried once and only then an error
/// is returned.
fn mirror(proxy: &Arc<Proxy>, routing: &FlagRouting, side: Side, call: &Call) -> Option<SyncWait> {
    if routing.mirror == MirrorMode::Off || side != routing.write {
        return None;
    }
    let dir = match side {
        Side::Old => Direction::OldToNew,
        Side::New if proxy.reverse_mirror => Direction::NewToOld,
        Side::New => return None,
    };
    let keys: Vec<_> = call.keys().filter(|k| proxy.filter.matches(k)).cloned().collect();
    if routing.mirror == MirrorMode::Async {
        for key in keys {
            proxy.mirror.enqueue(dir, key);
        }
        return None;
    }
    let proxy = proxy.clone();
    let retry = routing.read == side.other();
    Some(Box::pin(async move {
        let syncs = keys.into_iter().map(|key| sync_one(&proxy, dir, key, retry));
        join_all(syncs).await.into_iter().all(|ok| ok)
    }))
}

/// One key's sync mirror; `false` only when the client must get an error (see [`mirror`]).
async fn sync_one(proxy: &Proxy, dir: Direction, key: bytes::Bytes, retry: bool) -> bool {
    if proxy.mirror.sync(dir, key.clone(), proxy.sync_timeout).await {
        return true;
    }
    proxy.metrics.sync_mirror_failures.inc();
    !retry || proxy.mirror.sync(dir, key, proxy.sync_timeout).await
}

/// Starts a shadow read of `call` when the routing asks for one and the sample says so.
fn shadow(proxy: &Arc<Proxy>, routing: &FlagRouting, side: Side, call: &Call, reply: &Reply) {
    let Some(settings) = routing.shadow_read else {
        return;
    };
    if side != routing.read || !call.first_key().is_some_and(|k| proxy.filter.matches(k)) {
        return;
    }
    if Shadow::sampled(call, settings.sample_rate) {
        proxy.shadow.spawn(
            call.clone(),
            reply.clone(),
            proxy.backend(side),
            proxy.backend(side.other()),
            Duration::from_millis(settings.timeout_ms),
        );
    }
}
