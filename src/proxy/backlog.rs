//! The persisted mirror backlog (design §4, "Crash-safe backlog"): the keys this proxy may owe a
//! key-sync, kept in a set of its own in the new cluster, so that a proxy killed at any instant
//! leaves behind a list of every key it may not have mirrored.
//!
//! A key is *held* before the write that needs its sync is sent to the primary (write-ahead, see
//! [`Backlog::hold`]) and stays held while that write is in flight, while its sync is queued,
//! running or failed (dirty), and for a short linger after the last sync that covered it landed;
//! only then is it removed ([`Backlog::sweep`]). A key already held costs nothing: a hot key is
//! added once, not once per write. Adds and removals of every connection are batched into one
//! pipeline per wake-up of a single flusher, so they reach the set in the order they were decided
//! (a removal and a later re-add of the same key cannot swap).
//!
//! The set always lives in the new cluster, whichever way the mirror runs: before write-stop new
//! is the mirror's destination (where the keysync leases and the heartbeat live too), and in
//! write-stop new is the write primary, so the backlog is written to the very cluster the write
//! needs anyway; old may be gone by then.

pub mod drain;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::backend::Backend;
use super::keyconn::SlotConn;
use super::metrics::Metrics;
use crate::keys::{RESERVED_PREFIX, slot_tag};

/// How long a key stays held after the last sync that covered it: a key written again within it
/// costs no round trip to new.
const LINGER: Duration = Duration::from_secs(1);
/// Pause after a flush that failed (new unreachable), before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// Most members sent in one SADD or SREM.
const CHUNK: usize = 1_000;

/// The set holding `id`'s backlog for `migration`, under the reserved prefix (never copied,
/// verified or shown to clients) and in a slot of its own per proxy (its hashtag), so the
/// backlogs of many proxies spread over the cluster.
pub fn set_key(migration: &str, id: &str) -> String {
    named("backlog", migration, id)
}

/// Where the CLI moves a dead proxy's backlog while it drains it ([`drain`]), so a proxy
/// restarted meanwhile with the same id writes a set of its own.
pub fn draining_key(migration: &str, id: &str) -> String {
    named("backlog-draining", migration, id)
}

fn named(what: &str, migration: &str, id: &str) -> String {
    let tag = slot_tag(format!("{migration}:{id}").as_bytes());
    format!(
        "{}{{{}}}:{what}:{migration}:{id}",
        String::from_utf8_lossy(RESERVED_PREFIX),
        String::from_utf8_lossy(&tag)
    )
}

/// A held key.
struct Held {
    /// Writes in flight that need the key held (see [`Hold`]).
    pins: usize,
    /// The flush that adds it; `None` once the set holds it.
    flush: Option<u64>,
    /// Since when it was found idle by [`Backlog::sweep`].
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    held: HashMap<Bytes, Held>,
    adds: Vec<Bytes>,
    removes: Vec<Bytes>,
    /// The number of the next flush (flushes are numbered from 1).
    next: u64,
}

/// One proxy's persisted backlog.
pub struct Backlog {
    key: String,
    new: Arc<Backend>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
    /// The number of the last flush that landed.
    landed: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
}

/// Keys pinned in the backlog for a write in flight: dropped once the write's mirror took over
/// (queued, or synced). [`Hold::persisted`] waits until the set holds them.
pub struct Hold {
    backlog: Option<Arc<Backlog>>,
    keys: Vec<Bytes>,
    flush: Option<u64>,
}

impl Backlog {
    /// The backlog kept in `key` on `new`; call [`Backlog::start`].
    pub fn new(key: String, new: Arc<Backend>, metrics: Arc<Metrics>) -> Arc<Backlog> {
        Arc::new(Backlog {
            key,
            new,
            metrics,
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            wake: Notify::new(),
            landed: watch::Sender::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Starts the flusher.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(self.clone().flusher());
    }

    /// The set's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Pins `keys` for a write about to be sent; those not yet in the set are added by the next
    /// flush. Await [`Hold::persisted`] before sending the write.
    pub fn hold(self: &Arc<Self>, keys: Vec<Bytes>) -> Hold {
        if keys.is_empty() {
            return Hold::none();
        }
        let mut guard = self.state.lock().expect("backlog state");
        let st = &mut *guard;
        let next = st.next;
        let mut flush = None;
        for key in &keys {
            let held = st.held.entry(key.clone()).or_insert_with(|| {
                st.adds.push(key.clone());
                Held {
                    pins: 0,
                    flush: Some(next),
                    idle_since: None,
                }
            });
            held.pins += 1;
            held.idle_since = None;
            flush = flush.max(held.flush);
        }
        drop(guard);
        if flush == Some(next) {
            self.wake.notify_one();
        }
        Hold {
            backlog: Some(self.clone()),
            keys,
            flush,
        }
    }

    /// Whether the set already holds `key` (a write of it need not wait for new).
    pub fn is_persisted(&self, key: &[u8]) -> bool {
        let st = self.state.lock().expect("backlog state");
        st.held.get(key).is_some_and(|held| held.flush.is_none())
    }

    /// Holds `keys` found in the set at start (a previous life of this proxy id): no add needed.
    pub fn adopt(&self, keys: &[Bytes]) {
        let mut st = self.state.lock().expect("backlog state");
        for key in keys {
            st.held.entry(key.clone()).or_insert(Held {
                pins: 0,
                flush: None,
                idle_since: None,
            });
        }
    }

    /// Removes held keys that have been idle (no write in flight, `idle` says no sync is
    /// queued, running or owed) for [`LINGER`]. Called with the mirror's state locked, so no
    /// write can be mirrored between the look and the removal.
    pub fn sweep(&self, idle: impl Fn(&Bytes) -> bool) {
        let now = Instant::now();
        let mut st = self.state.lock().expect("backlog state");
        let mut gone = Vec::new();
        for (key, held) in st.held.iter_mut() {
            if held.pins > 0 || held.flush.is_some() || !idle(key) {
                held.idle_since = None;
                continue;
            }
            match held.idle_since {
                None => held.idle_since = Some(now),
                Some(since) if now - since >= LINGER => gone.push(key.clone()),
                Some(_) => {}
            }
        }
        if gone.is_empty() {
            return;
        }
        for key in &gone {
            st.held.remove(key);
        }
        st.removes.extend(gone);
        drop(st);
        self.wake.notify_one();
    }

    /// Keys held now (in the set, or on their way to it).
    pub fn len(&self) -> usize {
        self.state.lock().expect("backlog state").held.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every decided add and removal reached the set.
    pub fn settled(&self) -> bool {
        let st = self.state.lock().expect("backlog state");
        st.adds.is_empty() && st.removes.is_empty() && *self.landed.borrow() + 1 >= st.next
    }

    /// The last failure to write the set, if the set is behind.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("backlog error").clone()
    }

    fn unpin(&self, keys: &[Bytes]) {
        let mut st = self.state.lock().expect("backlog state");
        for key in keys {
            if let Some(held) = st.held.get_mut(key) {
                held.pins = held.pins.saturating_sub(1);
            }
        }
    }

    /// Writes what was decided since the last wake-up, one pipeline per wake-up, in order.
    async fn flusher(self: Arc<Self>) {
        loop {
            let (number, adds, removes) = {
                let mut st = self.state.lock().expect("backlog state");
                let number = st.next;
                st.next += 1;
                (
                    number,
                    std::mem::take(&mut st.adds),
                    std::mem::take(&mut st.removes),
                )
            };
            if adds.is_empty() && removes.is_empty() {
                self.landed.send_replace(number);
                self.wake.notified().await;
                continue;
            }
            match self.write(&adds, &removes).await {
                Ok(()) => {
                    self.landed(&adds);
                    self.landed.send_replace(number);
                    *self.last_error.lock().expect("backlog error") = None;
                }
                Err(e) => {
                    self.failed(adds, removes, &e);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// One pipeline: removals first, then adds (a key removed and added again stays).
    async fn write(&self, adds: &[Bytes], removes: &[Bytes]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (verb, keys) in [("SREM", removes), ("SADD", adds)] {
            for chunk in keys.chunks(CHUNK) {
                pipe.cmd(verb)
                    .arg(&self.key)
                    .arg(chunk.iter().map(|k| &k[..]).collect::<Vec<_>>());
            }
        }
        let mut conn = SlotConn::for_key(self.new.clone(), self.key.as_bytes());
        pipe.query_async::<()>(&mut conn).await
    }

    fn landed(&self, adds: &[Bytes]) {
        let mut st = self.state.lock().expect("backlog state");
        for key in adds {
            if let Some(held) = st.held.get_mut(key) {
                held.flush = None;
            }
        }
    }

    /// A flush that failed goes again, merged into the next one: the keys it added keep their
    /// writes waiting (each up to its own timeout), and the failure counts as a mirror error.
    fn failed(&self, adds: Vec<Bytes>, removes: Vec<Bytes>, e: &redis::RedisError) {
        self.metrics.mirror_errors.inc();
        let text = format!("mirror backlog {}: {e}", self.key);
        tracing::warn!("{text}");
        *self.last_error.lock().expect("backlog error") = Some(text);
        let mut st = self.state.lock().expect("backlog state");
        let next = st.next;
        for key in &adds {
            if let Some(held) = st.held.get_mut(key) {
                held.flush = Some(next);
            }
        }
        let mut later = std::mem::replace(&mut st.removes, removes);
        st.removes.append(&mut later);
        let mut later = std::mem::replace(&mut st.adds, adds);
        st.adds.append(&mut later);
    }

    /// Reads every member of the set (SSCAN, so a big backlog does not block new).
    pub async fn members(&self) -> redis::RedisResult<Vec<Bytes>> {
        members(&self.new, &self.key).await
    }
}

/// Every member of the set `key` on `new`.
pub async fn members(new: &Arc<Backend>, key: &str) -> redis::RedisResult<Vec<Bytes>> {
    let mut conn = SlotConn::for_key(new.clone(), key.as_bytes());
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(&mut conn)
            .await?;
        out.extend(batch.into_iter().map(Bytes::from));
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

impl Hold {
    /// A hold of nothing.
    pub fn none() -> Hold {
        Hold {
            backlog: None,
            keys: Vec::new(),
            flush: None,
        }
    }

    /// Whether [`Hold::persisted`] waits for a flush: a key of it was not in the set yet.
    pub fn pending(&self) -> bool {
        self.flush.is_some()
    }

    /// Waits until the set holds every key of this hold, at most `timeout`. `false` on timeout
    /// (new unreachable): the write then goes on unpersisted, already counted as a mirror error.
    pub async fn persisted(&self, timeout: Duration) -> bool {
        let (Some(backlog), Some(flush)) = (&self.backlog, self.flush) else {
            return true;
        };
        let mut landed = backlog.landed.subscribe();
        let wait = landed.wait_for(|&done| done >= flush);
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(backlog) = &self.backlog {
            backlog.unpin(&self.keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_backlog_is_reserved_and_in_a_slot_of_its_own() {
        let key = set_key("tokens", "host:7000");
        assert_eq!(key, "__cachemig:{tokens:host:7000}:backlog:tokens:host:7000");
        assert!(key.as_bytes().starts_with(RESERVED_PREFIX));
        let other = set_key("tokens", "host:7001");
        assert_ne!(key, other);
        let draining = draining_key("tokens", "host:7000");
        assert_eq!(
            crate::cluster::key_slot(draining.as_bytes()),
            crate::cluster::key_slot(key.as_bytes())
        );
        // An id with braces still names a set of its own, in one slot with its draining set.
        let odd = set_key("m", "a{x}");
        assert_ne!(odd, set_key("m", "b{x}"));
        assert_eq!(
            crate::cluster::key_slot(odd.as_bytes()),
            crate::cluster::key_slot(draining_key("m", "a{x}").as_bytes())
        );
    }
}
