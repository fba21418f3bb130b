//! The mirror: after a write is applied on the write side, its keys are key-synced to the other
//! side (design §4).
//!
//! Per key, syncs are ordered and coalesced: a key already waiting is not queued again (the sync
//! that runs later reads the later value), and a key written while its sync runs is synced once
//! more afterwards. The queue is bounded: in async mode a key that finds it full is marked dirty
//! and counted, never blocking the client; a repair loop feeds dirty keys back as room frees up.
//! A failed sync also marks the key dirty. Sync-mode waiters are woken only by a sync that started
//! after their write.
//!
//! Every key that may owe a sync is also held in the persisted backlog ([`super::backlog`]) from
//! before its write is sent until its sync landed, so a proxy killed at any instant leaves the
//! list behind; the repair loop removes keys from it once they are idle.
//!
//! Across the fleet, syncs of one key are serialized by the key's lease on the destination
//! ([`crate::keysync::lock`]): a key that two proxies write all the time converges, and a sync
//! that finds another proxy's round under way is satisfied by it instead of failing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::backend::Backend;
use super::backlog::Backlog;
use super::keyconn::{BackendExclusive, SlotConn};
use super::metrics::Metrics;
use crate::keysync::{self, KeySync};
use prepared::PreparedLease;

/// Concurrent key-syncs per proxy.
pub const WORKERS: usize = 32;
/// Most dirty keys remembered; beyond this they are only counted, the mirror never reports itself
/// drained again (so the fence cannot be acked) and `verify --repair` must run.
pub const DIRTY_LIMIT: usize = 1_000_000;
/// How long a key whose sync failed waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often dirty keys are fed back into the queue.
const REPAIR_EVERY: Duration = Duration::from_millis(500);

mod prepared;

/// Which way a key is copied (the value indexes per-origin state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// old → new (phases 2–5).
    OldToNew = 0,
    /// new → old (the reverse mirror of write-stop).
    NewToOld = 1,
}

impl Direction {
    /// From the write primary `side` to the other side: the way any owed sync is made, whatever
    /// way the write that left it was mirrored (copying from the primary is always safe).
    pub fn from_primary(side: crate::phase::Side) -> Direction {
        match side {
            crate::phase::Side::Old => Direction::OldToNew,
            crate::phase::Side::New => Direction::NewToOld,
        }
    }
}

type Job = (Direction, Bytes);

/// Per-key bookkeeping while a key is queued or being synced.
#[derive(Default)]
struct Entry {
    queued: bool,
    running: bool,
    /// Written again while its sync ran: sync once more afterwards.
    again: bool,
    /// Waiting for the sync that is queued (or, while `running`, the one that runs now).
    waiters: Vec<oneshot::Sender<bool>>,
    /// Waiting for the sync after the running one.
    next_waiters: Vec<oneshot::Sender<bool>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Job, Instant)>,
    entries: HashMap<Job, Entry>,
    dirty: HashSet<Job>,
    /// When each dirty key may be tried again, in that order (a key whose sync failed waits
    /// [`RETRY_AFTER`], so an unreachable side is not hammered); `u64` breaks ties.
    due: BTreeMap<(Instant, u64), Job>,
    seq: u64,
    running: usize,
    /// Dirty keys not remembered (beyond [`DIRTY_LIMIT`]): this proxy can no longer tell what it
    /// owes, so it never reports the mirror drained again; `verify --repair` must run.
    forgotten: u64,
    /// Leases taken ahead of a sync-mode write's sync.
    prepared: HashMap<Job, PreparedLease>,
    /// The number of the next prepared lease.
    next_id: u64,
}

/// The mirror of one proxy.
pub struct Mirror {
    state: Mutex<State>,
    work: Notify,
    capacity: usize,
    old: Arc<Backend>,
    new: Arc<Backend>,
    metrics: Arc<Metrics>,
    last_error: Mutex<Option<String>>,
    /// Per direction: scripts on both sides, the lease, tokens.
    keysync: [KeySync; 2],
    /// Connections of a sync's own to old, and new, for a destination that refuses scripts.
    exclusive: [BackendExclusive; 2],
    /// The persisted list of keys that may owe a sync.
    backlog: Arc<Backlog>,
    /// Per origin (old, new): a `SCRIPT LOAD` of the seed script is under way.
    seed_loading: [AtomicBool; 2],
}

impl Mirror {
    /// A mirror between `old` and `new` with a queue of `capacity` keys, persisting what it owes
    /// in `backlog`; keys above `big_key_bytes` are copied in chunks. Call [`Mirror::start`].
    pub fn new(
        capacity: usize,
        old: Arc<Backend>,
        new: Arc<Backend>,
        metrics: Arc<Metrics>,
        big_key_bytes: u64,
        backlog: Arc<Backlog>,
    ) -> Arc<Mirror> {
        Arc::new(Mirror {
            backlog,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            capacity: capacity.max(1),
            metrics,
            last_error: Mutex::new(None),
            keysync: [0, 1].map(|_| KeySync::default().with_big_keys(big_key_bytes)),
            exclusive: [
                BackendExclusive::new(old.clone()),
                BackendExclusive::new(new.clone()),
            ],
            old,
            new,
            seed_loading: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    /// Starts the workers, the repair loop and the backlog's flusher.
    pub fn start(self: &Arc<Self>) {
        self.backlog.start();
        for _ in 0..WORKERS {
            tokio::spawn(self.clone().worker());
        }
        tokio::spawn(self.clone().repair_loop());
    }

    /// The persisted backlog.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Takes over keys found in the persisted backlog (left by an earlier process of this proxy
    /// id, or by a dead one the CLI drains): held, and dirty so the repair loop syncs them.
    pub fn recover(&self, dir: Direction, keys: Vec<Bytes>) {
        self.backlog.adopt(&keys);
        let mut st = self.state.lock().expect("mirror state");
        for key in keys {
            mark_dirty(&mut st, (dir, key), Duration::ZERO);
        }
        self.gauges(&st);
    }

    /// Queues `key` for an async sync. Never waits; a full queue marks the key dirty.
    pub fn enqueue(&self, dir: Direction, key: Bytes) {
        let mut st = self.state.lock().expect("mirror state");
        let job = (dir, key);
        if let Some(entry) = st.entries.get_mut(&job) {
            if entry.running && !entry.queued {
                entry.again = true;
            }
            return;
        }
        if st.queue.len() >= self.capacity {
            self.metrics.mirror_overflow.inc();
            mark_dirty(&mut st, job, Duration::ZERO);
            self.gauges(&st);
            return;
        }
        push(&mut st, job, Entry::default());
        self.gauges(&st);
        drop(st);
        self.work.notify_one();
    }

    fn dest(&self, dir: Direction) -> &Arc<Backend> {
        match dir {
            Direction::OldToNew => &self.new,
            Direction::NewToOld => &self.old,
        }
    }

    /// Syncs `key` and waits up to `timeout` for a sync that started after this call. `true`
    /// when it completed; `false` on failure or timeout (the key is then dirty or still queued).
    pub async fn sync(&self, dir: Direction, key: Bytes, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.state.lock().expect("mirror state");
            let job = (dir, key);
            match st.entries.get_mut(&job) {
                Some(entry) if entry.running && !entry.queued => {
                    entry.again = true;
                    entry.next_waiters.push(tx);
                }
                Some(entry) => entry.waiters.push(tx),
                None => {
                    // Sync writes are bounded by the clients waiting on them: no capacity check.
                    let entry = Entry {
                        waiters: vec![tx],
                        ..Entry::default()
                    };
                    push(&mut st, job, entry);
                    self.gauges(&st);
                }
            }
        }
        self.work.notify_one();
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(true)))
    }

    /// Whether nothing is queued, running or dirty: what the fence waits for.
    pub fn drained(&self) -> bool {
        let st = self.state.lock().expect("mirror state");
        st.queue.is_empty() && st.running == 0 && st.dirty.is_empty() && st.forgotten == 0
    }

    /// Queue depth, age of the oldest queued key, and dirty keys.
    pub fn depth(&self) -> (usize, Duration, usize) {
        let st = self.state.lock().expect("mirror state");
        let lag = st.queue.front().map(|(_, t)| t.elapsed()).unwrap_or_default();
        (st.queue.len(), lag, st.dirty.len())
    }

    /// The last sync error, if any (a forgotten dirty key first: it needs an operator).
    pub fn last_error(&self) -> Option<String> {
        let forgotten = self.state.lock().expect("mirror state").forgotten;
        if forgotten > 0 {
            return Some(format!(
                "{forgotten} dirty key(s) beyond the limit of {DIRTY_LIMIT} were not remembered; run `cachemig verify PLAN --repair` (it copies from the write primary of the phase in force)"
            ));
        }
        self.last_error.lock().expect("mirror error").clone()
    }

    fn gauges(&self, st: &State) {
        self.metrics.mirror_queue_depth.set(st.queue.len() as i64);
        self.metrics.dirty_keys.set(st.dirty.len() as i64);
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let Some((job, waiters)) = self.take() else {
                self.work.notified().await;
                continue;
            };
            let ok = self.sync_once(&job).await;
            self.finish(job, waiters, ok);
        }
    }

    /// The next queued key, marked running, with the waiters its sync satisfies.
    fn take(&self) -> Option<(Job, Vec<oneshot::Sender<bool>>)> {
        let mut st = self.state.lock().expect("mirror state");
        if st.queue.is_empty() && !st.due.is_empty() {
            self.refill(&mut st);
        }
        let (job, _queued_at) = st.queue.pop_front()?;
        st.running += 1;
        let entry = st.entries.get_mut(&job).expect("queued keys have an entry");
        entry.queued = false;
        entry.running = true;
        let waiters = std::mem::take(&mut entry.waiters);
        self.metrics
            .mirror_lag_seconds
            .set(st.queue.front().map_or(0.0, |(_, t)| t.elapsed().as_secs_f64()));
        self.gauges(&st);
        Some((job, waiters))
    }

    fn finish(&self, job: Job, waiters: Vec<oneshot::Sender<bool>>, ok: bool) {
        for w in waiters {
            let _ = w.send(ok);
        }
        let mut st = self.state.lock().expect("mirror state");
        st.running -= 1;
        let entry = st.entries.get_mut(&job).expect("running keys have an entry");
        entry.running = false;
        if entry.again {
            entry.again = false;
            entry.queued = true;
            entry.waiters = std::mem::take(&mut entry.next_waiters);
            st.queue.push_back((job, Instant::now()));
            drop(st);
            self.work.notify_one();
            return;
        }
        st.entries.remove(&job);
        if !ok {
            mark_dirty(&mut st, job, RETRY_AFTER);
        }
        self.gauges(&st);
    }

    /// Key-syncs one key under its lease on the destination; a sync covered by another
    /// proxy's round counts as done.
    async fn sync_once(&self, (dir, key): &Job) -> bool {
        let (origin, dest) = match dir {
            Direction::OldToNew => (&self.old, &self.new),
            Direction::NewToOld => (&self.new, &self.old),
        };
        let from = SlotConn::for_key(origin.clone(), key);
        let mut to = SlotConn::for_key(dest.clone(), key);
        let exclusive = &self.exclusive[1 - *dir as usize];
        let keysync = &self.keysync[*dir as usize];
        let (held, seed) = self.take_prepared(&(*dir, key.clone())).await;
        let synced = match (held, seed) {
            (Some(token), Some(seed)) => {
                keysync::sync_key_seeded(&from, &mut to, exclusive, key, keysync, token, seed).await
            }
            (held, _) => keysync::sync_key_holding(&from, &mut to, exclusive, key, keysync, held).await,
        };
        match synced {
            Ok(_) => {
                self.metrics.mirror_ok.inc();
                true
            }
            Err(e) => {
                self.metrics.mirror_errors.inc();
                let text = format!("mirror {}: {e}", String::from_utf8_lossy(key));
                tracing::warn!("{text}");
                *self.last_error.lock().expect("mirror error") = Some(text);
                false
            }
        }
    }

    /// Feeds dirty keys back into the queue while it has room (a backstop: workers also refill
    /// from the dirty set whenever they empty the queue).
    async fn repair_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REPAIR_EVERY).await;
            self.sweep_prepared();
            let mut st = self.state.lock().expect("mirror state");
            self.refill(&mut st);
            // Under the state lock: no write's mirror can start between the look and the removal.
            self.backlog.sweep(|key| idle(&st, key));
            drop(st);
            self.work.notify_waiters();
        }
    }

    /// Moves dirty keys that are due into the queue, up to its capacity.
    fn refill(&self, st: &mut State) {
        let now = Instant::now();
        let mut room = self.capacity.saturating_sub(st.queue.len());
        while room > 0 {
            let Some(entry) = st.due.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            if st.dirty.remove(&job) && !st.entries.contains_key(&job) {
                push(st, job, Entry::default());
                room -= 1;
            }
        }
        self.gauges(st);
    }
}

/// Whether nothing is owed for `key`: no sync queued, running or dirty, in either direction, and
/// no dirty key forgotten (which could be any key).
fn idle(st: &State, key: &Bytes) -> bool {
    st.forgotten == 0
        && [Direction::OldToNew, Direction::NewToOld].into_iter().all(|dir| {
            let job = (dir, key.clone());
            !st.entries.contains_key(&job) && !st.dirty.contains(&job)
        })
}

fn push(st: &mut State, job: Job, mut entry: Entry) {
    entry.queued = true;
    st.queue.push_back((job.clone(), Instant::now()));
    st.entries.insert(job, entry);
}

fn mark_dirty(st: &mut State, job: Job, retry_after: Duration) {
    if st.dirty.contains(&job) {
        return;
    }
    if st.dirty.len() < DIRTY_LIMIT {
        st.dirty.insert(job.clone());
        st.due.insert((Instant::now() + retry_after, st.seq), job);
        st.seq += 1;
    } else {
        st.forgotten += 1;
    }
}
