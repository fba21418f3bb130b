//! What happens around a forwarded request: the mirror of a write and the shadow of a read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use super::Proxy;
use super::backlog::Hold;
use super::call::Call;
use super::mirror::Direction;
use super::resp::{Proto, Reply};
use super::shadow::Shadow;
use crate::flags::FlagRouting;
use crate::keysync::{self, seed::Seed};
use crate::phase::{MirrorMode, Side};

/// A boxed wait for a sync mirror: `true` when the reply may be sent as it is.
pub type SyncWait = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Mirrors a write's keys (design §4): queued in async mode; in sync mode the returned future
/// completes when every key is synced. A sync that fails is counted and its key marked dirty;
/// the client still gets the primary's reply (a retried INCR would apply twice), except from
/// shadow-read on, where new serves reads here or at a neighbour: there the sync is retried once
/// and only then an error is returned ([`new_side_serves_reads`]).
///
/// `seed` is the reply to the read [`seed_request`] sent behind the write: handed to the sync,
/// which commits it without a read of its own when its lease was taken before the write left.
pub fn mirror(
    proxy: &Arc<Proxy>,
    routing: &FlagRouting,
    side: Side,
    call: &Call,
    seed: Option<Seed>,
) -> Option<SyncWait> {
    let dir = direction(proxy, routing, side, call)?;
    let keys: Vec<Bytes> = call.keys().cloned().collect();
    if let (Some(seed), [key]) = (seed, &keys[..]) {
        match seed {
            Seed::Read { id, snapshot } => proxy.mirror.seed(dir, key, id, snapshot),
            Seed::NoScript => proxy.mirror.load_seed(dir, key),
            Seed::Big | Seed::Failed => {}
        }
    }
    if routing.mirror == MirrorMode::Async {
        for key in keys {
            proxy.mirror.enqueue(dir, key);
        }
        return None;
    }
    let proxy = proxy.clone();
    let retry = new_side_serves_reads(routing, side);
    Some(Box::pin(async move {
        let syncs = keys.into_iter().map(|key| sync_one(&proxy, dir, key, retry));
        join_all(syncs).await.into_iter().all(|ok| ok)
    }))
}

/// Whether a failed sync of a write on `side` must be retried and, failing again, answered with
/// an error: when the other side serves reads here (read-cutover), and also in shadow-read,
/// whose neighbour one step ahead (read-cutover) reads new while a rollout of the flag file is
/// under way. An OK there after a failed sync would be an acknowledged write that a neighbour
/// proxy does not show (docs/guarantees.md, adjacent phases 4 ↔ 5).
fn new_side_serves_reads(routing: &FlagRouting, side: Side) -> bool {
    routing.read == side.other() || routing.shadow_read.is_some()
}

/// Holds, in the persisted backlog, the keys of those `writes` that will be mirrored under
/// `routing` (write-ahead: call before sending them, await [`Hold::persisted`], and keep the
/// hold until [`mirror`] was called for them). A proxy killed after the write reached the
/// primary then leaves the key in its backlog, whatever the mirror mode.
pub fn hold<'a>(
    proxy: &Arc<Proxy>,
    routing: &FlagRouting,
    side: Side,
    writes: impl IntoIterator<Item = &'a Call>,
) -> Hold {
    let keys: Vec<Bytes> = writes
        .into_iter()
        .filter(|call| direction(proxy, routing, side, call).is_some())
        .flat_map(|call| call.keys().cloned())
        .collect();
    proxy.mirror.backlog().hold(keys)
}

/// The least a write waits for the backlog to hold its keys (more when the sync timeout is
/// longer): a hiccup of new should not send writes on unpersisted.
const PERSIST_WAIT: Duration = Duration::from_secs(1);

/// [`hold`] and wait until the backlog holds the keys (up to [`PERSIST_WAIT`] or the sync
/// timeout). Past that the write goes on: an add that fails is counted as a mirror error and
/// retried, one merely slow lands later; only a proxy killed before it lands loses the key.
///
/// While it waits for new anyway, it also waits for the leases [`seed_request`] took for these
/// writes, so they are taken before the writes leave and the seeds behind them are read inside
/// the tenure; a lease not taken by the time the writes leave cannot vouch for its seed
/// ([`super::mirror::Mirror::taint_untaken`]).
pub async fn hold_persisted<'a>(
    proxy: &Arc<Proxy>,
    routing: &FlagRouting,
    side: Side,
    writes: impl IntoIterator<Item = &'a Call>,
) -> Hold {
    let writes: Vec<&Call> = writes.into_iter().collect();
    let seeded: Vec<(Direction, Bytes)> = writes
        .iter()
        .filter(|call| routing.mirror == MirrorMode::Sync && call.keys.len() == 1)
        .filter_map(|call| Some((direction(proxy, routing, side, call)?, call.first_key()?.clone())))
        .collect();
    let hold = hold(proxy, routing, side, writes);
    let limit = proxy.sync_timeout.max(PERSIST_WAIT);
    if hold.pending() {
        // The leases went to new with the backlog's add, so they are usually in with it; past
        // the add they are given at most the sync timeout (a slow node of the key's slot may
        // delay the write by that much, as its sync would have).
        let persist = hold.persisted(limit);
        let leases = join_all(proxy.mirror.leases_of(&seeded));
        tokio::pin!(persist, leases);
        let persisted = tokio::select! {
            persisted = &mut persist => {
                let _ = tokio::time::timeout(proxy.sync_timeout, &mut leases).await;
                persisted
            }
            _ = &mut leases => persist.await,
        };
        if !persisted {
            tracing::warn!("the mirror backlog did not hold a write's keys in time; the write goes on");
        }
    }
    proxy.mirror.taint_untaken(&seeded);
    hold
}

/// Waits for sync mirrors: `(index, ok)` for each, in any order.
pub async fn settle(syncs: Vec<(usize, SyncWait)>) -> Vec<(usize, bool)> {
    join_all(syncs.into_iter().map(|(i, s)| async move { (i, s.await) })).await
}

/// What the client gets for a write applied on old that could not be mirrored to new while new
/// serves reads.
pub const NOT_MIRRORED: &str = "ERR cachemig: the write was applied on old but could not be mirrored to new, which serves reads; the key is marked for repair. Do not retry a non-idempotent command blindly";

/// Which way `call`'s keys are mirrored under `routing`, if at all.
fn direction(proxy: &Proxy, routing: &FlagRouting, side: Side, call: &Call) -> Option<Direction> {
    if !call.migrates || routing.mirror == MirrorMode::Off || side != routing.write {
        return None;
    }
    match side {
        Side::Old => Some(Direction::OldToNew),
        Side::New if proxy.reverse_mirror => Some(Direction::NewToOld),
        Side::New => None,
    }
}

/// Called for a single-key write just before it is sent (and before [`hold_persisted`]): for a
/// write that will be sync-mirrored, takes the key's lease on the destination now
/// ([`super::mirror::Mirror::prepare`]), and returns the seed read to send right behind the
/// write, on its connection ([`keysync::seed`]).
///
/// A seed is only asked for when the key is not in the backlog yet: the write then waits for
/// new anyway, and [`hold_persisted`] waits for the lease in the same round trip, so the seed is
/// read inside the tenure and the sync is one commit — write + seed, commit: two round trips.
/// For a key already held the write leaves at once, before the lease can be taken; its sync
/// reads for itself under the lease (write ‖ acquire, read, commit).
pub fn seed_request(proxy: &Arc<Proxy>, routing: &FlagRouting, side: Side, call: &Call) -> Option<Bytes> {
    let dir = direction(proxy, routing, side, call)?;
    if routing.mirror != MirrorMode::Sync || call.keys.len() != 1 {
        return None;
    }
    let key = call.first_key()?;
    let id = proxy.mirror.prepare(dir, key.clone())?;
    if proxy.mirror.backlog().is_persisted(key) {
        return None;
    }
    proxy.mirror.seed_command(dir, key, id)
}

/// The seed from its reply.
pub fn seed_from(reply: &Reply) -> Option<Seed> {
    let value = redis::parse_redis_value(&reply.raw).ok()?;
    Some(keysync::seed::decode_seed(value))
}

/// One key's sync mirror; `false` only when the client must get an error (see [`mirror`]).
async fn sync_one(proxy: &Proxy, dir: Direction, key: Bytes, retry: bool) -> bool {
    if proxy.mirror.sync(dir, key.clone(), proxy.sync_timeout).await {
        return true;
    }
    proxy.metrics.sync_mirror_failures.inc();
    !retry || proxy.mirror.sync(dir, key, proxy.sync_timeout).await
}

/// Starts a shadow read of `call` when the routing asks for one and the sample says so.
/// Comparisons are made in RESP2; a RESP3 client's reply is read again for them.
pub fn shadow(
    proxy: &Arc<Proxy>,
    routing: &FlagRouting,
    side: Side,
    call: &Call,
    reply: &Reply,
    proto: Proto,
) {
    let Some(settings) = routing.shadow_read else {
        return;
    };
    if side != routing.read || !call.migrates {
        return;
    }
    if Shadow::sampled(call, settings.sample_rate) {
        proxy.shadow.spawn(
            call.clone(),
            (proto == Proto::Resp2).then(|| reply.clone()),
            proxy.backend(side),
            proxy.backend(side.other()),
            Duration::from_millis(settings.timeout_ms),
        );
    }
}
