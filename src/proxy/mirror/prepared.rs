//! Leases prepared ahead of a sync-mode write's sync, and the seeds read behind such writes
//! (see [`crate::keysync::seed`] and `hooks::seed_request`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{Direction, Job, Mirror};
use crate::keysync::{self, ReadWindow, Snapshot};
use crate::proxy::keyconn::SlotConn;

/// A key's lease taken on the destination while the write that needs its sync was on its way to
/// the origin: `Some((token, when its reply was in))`, or `None` when someone else held it.
pub(super) type Prepared = Shared<BoxFuture<'static, Option<(Vec<u8>, Instant)>>>;

/// A prepared lease and what may come with it.
pub(super) struct PreparedLease {
    lease: Prepared,
    /// When it was prepared.
    at: Instant,
    /// Its number: only a seed read for this number may be committed under it.
    id: u64,
    /// A write carrying its seed may have been sent before the lease was taken: the seed may
    /// predate the tenure and must not be committed.
    tainted: bool,
    /// The seed read behind the write ([`keysync::seed`]), and when its reply was in.
    seed: Option<(Snapshot, Instant)>,
}

/// A prepared lease that no sync took within this long is released by the repair loop (its
/// write was not mirrored after all, say because the client went away).
pub(super) const PREPARED_FOR: Duration = Duration::from_millis(100);

impl Mirror {
    /// Takes `key`'s lease on the destination now, while the write whose sync will need it is
    /// sent to the origin, so that sync skips a round trip: it reads the origin as soon as the
    /// write is answered. Only when no sync of the key is queued, running or prepared (those
    /// hold or take the lease themselves). A lease no sync takes within [`PREPARED_FOR`] is
    /// released. Returns the lease's number, for its seed ([`Mirror::seed_command`]).
    pub fn prepare(self: &Arc<Self>, dir: Direction, key: Bytes) -> Option<u64> {
        let job = (dir, key);
        let mut st = self.state.lock().expect("mirror state");
        if st.entries.contains_key(&job) || st.prepared.contains_key(&job) {
            return None;
        }
        let me = self.clone();
        let key = job.1.clone();
        let lease: Prepared = async move {
            let mut to = SlotConn::for_key(me.dest(dir).clone(), &key);
            let token = keysync::acquire_lease(&mut to, &key, &me.keysync[dir as usize]).await;
            token.map(|token| (token, Instant::now()))
        }
        .boxed()
        .shared();
        let id = st.next_id;
        st.next_id += 1;
        let prepared = PreparedLease {
            lease: lease.clone(),
            at: Instant::now(),
            id,
            tainted: false,
            seed: None,
        };
        st.prepared.insert(job, prepared);
        drop(st);
        // Sent now, not when the sync first waits for it.
        tokio::spawn(lease.map(|_| ()));
        Some(id)
    }

    /// The seed read ([`keysync::seed`]) to send behind the write that prepared lease `id` of
    /// `key`, as wire bytes; `None` when the origin refuses scripts.
    pub fn seed_command(&self, dir: Direction, key: &[u8], id: u64) -> Option<Bytes> {
        let ks = &self.keysync[dir as usize];
        if ks.origin_scripts.refused() {
            return None;
        }
        let limit = ks.big_key_bytes().unwrap_or(u64::MAX);
        let cmd = keysync::seed::seed_command(key, limit, id);
        Some(Bytes::from(cmd.get_packed_command()))
    }

    /// The prepared leases of `jobs`, to wait for.
    pub fn leases_of(&self, jobs: &[(Direction, Bytes)]) -> Vec<impl Future<Output = ()> + use<>> {
        let st = self.state.lock().expect("mirror state");
        jobs.iter()
            .filter_map(|job| st.prepared.get(job).map(|p| p.lease.clone().map(|_| ())))
            .collect()
    }

    /// Called before the writes of `jobs` are sent: a prepared lease not taken by now cannot
    /// vouch for a seed read behind them (the read could come before the lease).
    pub fn taint_untaken(&self, jobs: &[(Direction, Bytes)]) {
        let mut st = self.state.lock().expect("mirror state");
        for job in jobs {
            if let Some(p) = st.prepared.get_mut(job)
                && p.lease.peek().is_none()
            {
                p.tainted = true;
            }
        }
    }

    /// Hands the seed read for prepared lease `id` of `key` to the sync that will take that
    /// lease; ignored when the lease is gone or another one was prepared since.
    pub fn seed(&self, dir: Direction, key: &Bytes, id: u64, snapshot: Snapshot) {
        let mut st = self.state.lock().expect("mirror state");
        if let Some(p) = st.prepared.get_mut(&(dir, key.clone()))
            && p.id == id
        {
            p.seed = Some((snapshot, Instant::now()));
        }
    }

    /// Loads the seed script on the origin node that serves `key`, which answered NOSCRIPT
    /// (one load at a time per origin).
    pub fn load_seed(self: &Arc<Self>, dir: Direction, key: &[u8]) {
        let (origin, flag) = match dir {
            Direction::OldToNew => (&self.old, 0),
            Direction::NewToOld => (&self.new, 1),
        };
        if self.seed_loading[flag].swap(true, Ordering::AcqRel) {
            return;
        }
        let mut conn = SlotConn::for_key(origin.clone(), key);
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = keysync::seed::load_command().query_async::<()>(&mut conn).await {
                tracing::debug!("loading the seed script: {e}");
            }
            me.seed_loading[flag].store(false, Ordering::Release);
        });
    }

    /// Releases the prepared leases no sync took within [`PREPARED_FOR`].
    pub(super) fn sweep_prepared(self: &Arc<Self>) {
        let stale: Vec<(Job, Prepared)> = {
            let mut st = self.state.lock().expect("mirror state");
            let old: Vec<Job> = st
                .prepared
                .iter()
                .filter(|(_, p)| p.at.elapsed() > PREPARED_FOR)
                .map(|(job, _)| job.clone())
                .collect();
            old.into_iter()
                .filter_map(|job| st.prepared.remove(&job).map(|p| (job, p.lease)))
                .collect()
        };
        for ((dir, key), lease) in stale {
            // Still in flight: it will run out on its own.
            let Some(Some((token, _))) = lease.peek().cloned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let mut to = SlotConn::for_key(me.dest(dir).clone(), &key);
                let exclusive = &me.exclusive[1 - dir as usize];
                keysync::release_lease(&mut to, exclusive, &key, &me.keysync[dir as usize], &token).await;
            });
        }
    }

    /// Takes the lease prepared for `job`, if any: its token once taken, with the seed to
    /// commit under it when the seed was read inside its tenure.
    pub(super) async fn take_prepared(&self, job: &Job) -> (Option<Vec<u8>>, Option<(Snapshot, ReadWindow)>) {
        let prepared = {
            let mut st = self.state.lock().expect("mirror state");
            st.prepared.remove(job)
        };
        match prepared {
            Some(p) => match p.lease.await {
                Some((token, taken)) => {
                    // The write, and the seed behind it, went out after the lease was taken
                    // (unless tainted): the seed was read inside the tenure.
                    let seed = p.seed.filter(|_| !p.tainted).map(|(snapshot, received)| {
                        let read = ReadWindow {
                            sent: taken,
                            received,
                        };
                        (snapshot, read)
                    });
                    (Some(token), seed)
                }
                None => (None, None),
            },
            None => (None, None),
        }
    }
}
