//! The key-sync primitive (design §4): make key K on the destination equal to K on the origin
//! *now*. Every copy — backfill, catch-up, repair, proxy mirror, reverse mirror — is this one
//! operation, because it is state-based (correct for INCR, LPUSH, EXPIRE, DEL, … alike) and
//! idempotent (retries and duplicates are harmless).
//!
//! Reading: PTTL and DUMP in one atomic call, so value and TTL belong to the same instant.
//! Writing: `RESTORE K ttl payload [REPLACE]`, or `DEL K` when the origin has no such key.
//!
//! Ordering across processes (two proxies, a proxy and the catch-up): [`sync_key`] runs under a
//! short per-key lease on the destination ([`lock`]): the origin is read while holding it and the
//! write lands only if the lease is still held, so landed states follow the origin's order — a
//! late, stale RESTORE cannot land after a fresh one, and a key that never goes quiet converges
//! without re-checks. The backfill writes without the lease (`RESTORE` without `REPLACE`: a
//! BUSYKEY reply means "the destination is newer").

use std::time::Duration;

use redis::aio::ConnectionLike;

mod big;
pub mod lock;
mod round;
pub mod seed;
mod snapshot;
mod write;

pub use lock::{Acquire, Baseline, Commit, Exclusive, LEASE, NoExclusive, NodeExclusive, lock_key, wait_key};
pub use round::{sync_key, sync_key_holding, sync_key_seeded};
pub use snapshot::{
    EXPIRY_TOLERANCE, ReadWindow, ScriptSupport, Snapshot, decode_snapshot, read_many, snapshot_evalsha,
    snapshot_pipeline,
};
pub use write::{Applied, interpret_write, is_busykey, write, write_command};

use round::holding;
use snapshot::refuses_scripts;
pub(crate) use snapshot::run_script;

/// How long a sync may wait for a lease held by others before it gives up. Healthy holders land
/// or lose within a few round trips (or [`LEASE`] when frozen), and a waiter is covered within two
/// rounds of whoever holds the key; this only bounds a destination that keeps answering "busy".
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How long a round may read the origin, renewing its lease, before it gives up.
pub const READ_LIMIT: Duration = Duration::from_secs(30);

/// What one run shares between its key-syncs in one direction: whether the origin runs the
/// snapshot script and the destination the lock scripts, the lease, and the token source.
#[derive(Debug)]
pub struct KeySync {
    /// Whether the origin runs the snapshot script (else MULTI/EXEC).
    pub origin_scripts: ScriptSupport,
    /// Whether the destination runs the lock scripts (else WATCH/MULTI).
    pub dest_scripts: ScriptSupport,
    lease: Duration,
    tokens: lock::Tokens,
    /// Keys whose `MEMORY USAGE` on the origin is above this are copied in chunks, not with
    /// DUMP/RESTORE (the mirror sets it; see [`big`]).
    big_key_bytes: Option<u64>,
}

impl Default for KeySync {
    fn default() -> Self {
        KeySync::with_lease(LEASE)
    }
}

impl KeySync {
    /// With a lease of `lease` (tests shorten it; everyone else uses [`LEASE`]).
    pub fn with_lease(lease: Duration) -> KeySync {
        KeySync {
            origin_scripts: ScriptSupport::default(),
            dest_scripts: ScriptSupport::default(),
            lease,
            tokens: lock::Tokens::new(),
            big_key_bytes: None,
        }
    }

    /// Copies keys above `limit` bytes (`MEMORY USAGE` on the origin) in chunks, under the lease,
    /// instead of with one DUMP/RESTORE that would stall both servers and every client sharing
    /// the connection ([`big`]).
    pub fn with_big_keys(mut self, limit: u64) -> KeySync {
        self.big_key_bytes = Some(limit);
        self
    }

    /// A fresh lease token, unique across the fleet.
    pub fn token(&self) -> Vec<u8> {
        self.tokens.next()
    }

    /// The lease a round takes.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The size above which keys are copied in chunks, if they are.
    pub fn big_key_bytes(&self) -> Option<u64> {
        self.big_key_bytes
    }
}

/// The state a sync wrote, as read from the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// The snapshot as read (the write shortened its TTL by the time since the read).
    pub snapshot: Snapshot,
    /// When it was read.
    pub read: ReadWindow,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Restored, deleted, or covered by another sync.
    pub applied: Applied,
    /// What this sync wrote (`None` when covered).
    pub landed: Option<Landed>,
}

/// Takes `key`'s lease on `dest` once (`SET … NX PX`), without waiting: the token when it is
/// ours (hand it to [`sync_key_holding`] or [`release_lease`]), `None` when someone else holds
/// it, or on any error.
pub async fn acquire_lease<D: ConnectionLike + Send>(
    dest: &mut D,
    key: &[u8],
    ks: &KeySync,
) -> Option<Vec<u8>> {
    let token = ks.token();
    let mut session = lock::Session::new(dest, &NoExclusive, &ks.dest_scripts, ks.lease, key);
    match session.try_take(&token).await {
        Ok(true) => Some(token),
        _ => None,
    }
}

/// Gives up a lease taken with [`acquire_lease`] and never used, writing nothing.
pub async fn release_lease<D: ConnectionLike + Send>(
    dest: &mut D,
    exclusive: &dyn Exclusive,
    key: &[u8],
    ks: &KeySync,
    token: &[u8],
) {
    let mut session = lock::Session::new(dest, exclusive, &ks.dest_scripts, ks.lease, key);
    let _ = session.commit(token, None).await;
}
