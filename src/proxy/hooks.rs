//! What happens around a forwarded request: the mirror of a write and the shadow of a read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use super::Proxy;
use super::call::Call;
use super::mirror::Direction;
use super::resp::Reply;
use super::shadow::Shadow;
use crate::flags::FlagRouting;
use crate::phase::{MirrorMode, Side};

/// A boxed wait for a sync mirror: `true` when the reply may be sent as it is.
pub type SyncWait = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// Mirrors a write's keys (design §4): queued in async mode; in sync mode the returned future
/// completes when every key is synced. A sync that fails is counted and its key marked dirty;
/// the client still gets the primary's reply (a retried INCR would apply twice), except after
/// read-cutover, where new serves reads: there the sync is retried once and only then an error
/// is returned.
pub fn mirror(proxy: &Arc<Proxy>, routing: &FlagRouting, side: Side, call: &Call) -> Option<SyncWait> {
    if !call.migrates || routing.mirror == MirrorMode::Off || side != routing.write {
        return None;
    }
    let dir = match side {
        Side::Old => Direction::OldToNew,
        Side::New if proxy.reverse_mirror => Direction::NewToOld,
        Side::New => return None,
    };
    let keys: Vec<Bytes> = call.keys().cloned().collect();
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
async fn sync_one(proxy: &Proxy, dir: Direction, key: Bytes, retry: bool) -> bool {
    if proxy.mirror.sync(dir, key.clone(), proxy.sync_timeout).await {
        return true;
    }
    proxy.metrics.sync_mirror_failures.inc();
    !retry || proxy.mirror.sync(dir, key, proxy.sync_timeout).await
}

/// Starts a shadow read of `call` when the routing asks for one and the sample says so.
pub fn shadow(proxy: &Arc<Proxy>, routing: &FlagRouting, side: Side, call: &Call, reply: &Reply) {
    let Some(settings) = routing.shadow_read else {
        return;
    };
    if side != routing.read || !call.migrates {
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
