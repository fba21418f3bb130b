//! The common case of a sync-mode write, done without the generic key-sync's per-request
//! overhead: the lease taken ahead of the write and the commit of its seed travel through the
//! [`Courier`](super::courier::Courier), batched per node, framed once and answered as wire bytes
//! (the redis crate's reply parser, which allocates a value tree per reply, only runs when the
//! reply is not the expected one). Anything unusual — a lease lost, a script unknown, an error —
//! goes on through [`keysync`]'s generic rounds, so the rules stay in one place.

use std::time::Instant;

use bytes::Bytes;

use redis::RedisResult;

use super::{Direction, Mirror};
use crate::keysync::{self, ReadWindow, Snapshot, lock};
use crate::proxy::keyconn::SlotConn;

/// What the batched commit of a seed came to.
pub(super) enum Seeded {
    /// Landed: the sync is done.
    Landed,
    /// The lease was no longer ours: the sync must run a round of its own.
    Lost,
    /// Not known to have landed (an error reply): commit through the generic path, with the
    /// same lease and seed.
    Retry,
    /// An unreadable reply.
    Failed(redis::RedisError),
}

impl Mirror {
    /// Syncs `key`, whose lease `token` is held and whose `seed` was read inside its tenure:
    /// the seed's commit through the courier, and the generic rounds for anything else.
    pub(super) async fn sync_seeded(
        &self,
        dir: Direction,
        key: &Bytes,
        token: Vec<u8>,
        seed: (Snapshot, ReadWindow),
    ) -> RedisResult<()> {
        let ks = &self.keysync[dir as usize];
        let fast = match ks.dest_scripts.refused() {
            true => Seeded::Retry,
            false => self.commit_seeded(dir, key, &token, seed.clone()).await,
        };
        let (origin, dest) = match dir {
            Direction::OldToNew => (&self.old, &self.new),
            Direction::NewToOld => (&self.new, &self.old),
        };
        let from = SlotConn::for_key(origin.clone(), key);
        let mut to = SlotConn::for_key(dest.clone(), key);
        let exclusive = &self.exclusive[1 - dir as usize];
        let synced = match fast {
            Seeded::Landed => return Ok(()),
            Seeded::Failed(e) => return Err(e),
            // A sync that starts now reads the origin after the write: it is as good as the
            // lost one, and takes (or waits for) the lease like any other.
            Seeded::Lost => keysync::sync_key_holding(&from, &mut to, exclusive, key, ks, None).await,
            Seeded::Retry => keysync::sync_key_seeded(&from, &mut to, exclusive, key, ks, token, seed).await,
        };
        synced.map(drop)
    }

    /// Takes `key`'s lease on the destination of `dir` with `SET lock token NX PX`, batched with
    /// the other leases and commits to its node: the token and when the reply was in, or `None`
    /// when someone else holds it (or on any error).
    pub(super) async fn take_lease(&self, dir: Direction, key: Bytes) -> Option<(Vec<u8>, Instant)> {
        let ks = &self.keysync[dir as usize];
        let token = ks.token();
        let raw = lock::take_command(&key, &token, ks.lease()).get_packed_command();
        let reply = self.couriers[dir as usize]
            .call(Bytes::from(raw), crate::cluster::key_slot(&key))
            .await;
        (reply.raw == lock::TAKEN_REPLY).then(|| (token, Instant::now()))
    }

    /// Commits `seed` (read inside the tenure of the lease `token`) on the destination of `dir`,
    /// batched with the other commits and leases to its node.
    pub(super) async fn commit_seeded(
        &self,
        dir: Direction,
        key: &Bytes,
        token: &[u8],
        (snapshot, read): (Snapshot, ReadWindow),
    ) -> Seeded {
        // Aged as the generic round does: the copy never outlives the origin.
        let aged = snapshot.aged(read.sent.elapsed());
        let raw = lock::commit_command(key, token, &aged).get_packed_command();
        let reply = self.couriers[dir as usize]
            .call(Bytes::from(raw), crate::cluster::key_slot(key))
            .await;
        if reply.raw == lock::LANDED_REPLY {
            return Seeded::Landed;
        }
        if reply.is_error() {
            // NOSCRIPT, a refusal of scripts, a connection lost with the commit in flight (it
            // may have run: a repeated commit then finds the lease gone), or the RESTORE refused
            // (the script released the lease): the generic round handles each as it always has.
            return Seeded::Retry;
        }
        match redis::parse_redis_value(&reply.raw).and_then(lock::decode_commit) {
            Ok(keysync::Commit::Landed) => Seeded::Landed,
            Ok(keysync::Commit::Lost(_)) => Seeded::Lost,
            Err(e) => Seeded::Failed(e),
        }
    }
}
