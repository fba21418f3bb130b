//! A segment of a batch: consecutive requests for one side, sent as one pipeline per node, then
//! their writes mirrored and their reads shadowed (see the parent module).

use std::sync::Arc;

use crate::phase::Side;
use crate::proxy::backend::Unit;
use crate::proxy::call::{Call, Shape};
use crate::proxy::hooks::{NOT_MIRRORED, hold_persisted, mirror, seed_from, seed_request, settle, shadow};
use crate::proxy::resp::{Proto, Reply};
use crate::proxy::{Applied, Proxy};

/// Requests for one side, in order, waiting to be sent together.
#[derive(Default)]
pub(super) struct Segment {
    /// The side they go to (`None` before the first).
    pub(super) side: Option<Side>,
    /// Each request's index in the batch, its call, and whether it writes.
    pub(super) items: Vec<(usize, Call, bool)>,
    /// What `items` send, and how their units map back to replies (reused by every flush).
    pub(super) units: Vec<Unit>,
    pub(super) shapes: Vec<(Shape, bool)>,
}

/// Sends a segment, then mirrors its writes and starts its shadow reads.
pub(super) async fn flush(
    proxy: &Arc<Proxy>,
    applied: &Applied,
    segment: &mut Segment,
    replies: &mut [Option<Reply>],
    proto: Proto,
) {
    let Some(side) = segment.side else {
        return;
    };
    if segment.items.is_empty() {
        return;
    }
    let backend = proxy.backend(side);
    let Segment {
        items, units, shapes, ..
    } = segment;
    for (_, call, write) in items.iter() {
        let first = units.len();
        let shape = call.units_into(backend.is_cluster(), units);
        let seed = (*write && units.len() == first + 1)
            .then(|| seed_request(proxy, &applied.routing, side, call))
            .flatten();
        let seeded = seed.is_some();
        if let (Some(read), Some(unit)) = (seed, units.last_mut()) {
            unit.then = Some(read);
            unit.count += 1;
        }
        shapes.push((shape, seeded));
    }
    // Kept until the writes' mirrors took over (end of this function).
    let writes = items.iter().filter(|(_, _, w)| *w).map(|(_, c, _)| c);
    let _held = hold_persisted(proxy, &applied.routing, side, writes).await;
    let mut results = backend.send_from(units, proto).await.into_iter();
    let mut syncs = Vec::new();
    let mut reads = Vec::new();
    for ((i, call, write), (shape, seeded)) in items.drain(..).zip(shapes.drain(..)) {
        let reply = call.merge(&shape, &mut results, proto);
        // A seeded call is one unit: its second reply is the seed.
        let seed = if seeded {
            results.next().as_ref().and_then(seed_from)
        } else {
            None
        };
        let reply = proxy.scripts.retry_noscript(&backend, proto, &call, reply).await;
        if side == Side::New {
            proxy.metrics.new_requests.inc();
            if reply.is_error() {
                proxy.metrics.new_errors.inc();
            }
        }
        // Even a write answered with an error may have changed the primary (a lost connection,
        // one failed slot of a split DEL): key-sync is idempotent, so mirror it anyway.
        if write {
            if let Some(sync) = mirror(proxy, &applied.routing, side, &call, seed) {
                syncs.push((i, sync));
            }
        } else if applied.routing.shadow_read.is_some() {
            reads.push((i, call));
        }
        replies[i] = Some(reply);
    }
    // Most segments mirror nothing: no future to build and poll then.
    let settled = if syncs.is_empty() {
        Vec::new()
    } else {
        settle(syncs).await
    };
    for (i, ok) in settled {
        // A write that failed on old keeps its own error: it may not have been applied at all.
        if !ok && !replies[i].as_ref().is_some_and(Reply::is_error) {
            replies[i] = Some(Reply::error(NOT_MIRRORED));
        }
    }
    // After the syncs: a read pipelined behind a write must not be compared before its mirror.
    for (i, call) in reads {
        if let Some(reply) = &replies[i] {
            shadow(proxy, &applied.routing, side, &call, reply, proto);
        }
    }
}
