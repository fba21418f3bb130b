//! Hot keys: a bounded top-K of the most requested keys per fixed window (Space-Saving).
//!
//! Space-Saving keeps `capacity` counters. A request for a tracked key bumps its counter; a request
//! for an untracked key, once every counter is taken, evicts the key with the smallest count `m`
//! and takes over its counter as `m + 1` with an over-count bound of `m`. Any key requested more
//! than `N / capacity` times in a window of `N` requests is therefore always tracked, and every
//! reported count lies within `[true, true + error]`.
//!
//! The counters sit in a binary min-heap (slot indices, so a sift never rehashes a key) and a
//! hash map finds a key's slot: a tracked key costs one lookup and an `O(log k)` sift, no
//! allocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::report::HotKey;

/// Longer keys are tracked by this many leading bytes, so a client cannot make the table grow by
/// sending huge keys.
const MAX_TRACKED_KEY: usize = 512;

/// Reported keys are cut to this many bytes (report contract, [`HotKey::key`]).
const MAX_REPORTED_KEY: usize = 200;

/// One Space-Saving counter.
struct Slot {
    /// The tracked key, shared with the index map so it is stored once.
    key: Arc<[u8]>,
    /// Estimated requests (never below the true count).
    count: u64,
    /// Largest possible over-count of `count`.
    error: u64,
}

/// The counters of one window.
#[derive(Default)]
struct Table {
    /// Counters by slot id; slots are never moved, only reused on eviction.
    slots: Vec<Slot>,
    /// Min-heap of slot ids ordered by count.
    heap: Vec<usize>,
    /// Position of each slot id in `heap`.
    pos: Vec<usize>,
    /// Slot id of each tracked key.
    index: HashMap<Arc<[u8]>, usize>,
}

impl Table {
    /// Forgets every key but keeps the allocations for the next window.
    fn clear(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.pos.clear();
        self.index.clear();
    }

    /// Counts one request for `key` with at most `capacity` counters.
    fn record(&mut self, key: &[u8], capacity: usize) {
        if let Some(&slot) = self.index.get(key) {
            self.slots[slot].count += 1;
            self.sift_down(self.pos[slot]);
        } else if self.slots.len() < capacity {
            self.insert(key);
        } else {
            self.replace_min(key);
        }
    }

    /// Tracks a new key in a free counter.
    fn insert(&mut self, key: &[u8]) {
        let key: Arc<[u8]> = Arc::from(key);
        let slot = self.slots.len();
        self.slots.push(Slot {
            key: key.clone(),
            count: 1,
            error: 0,
        });
        self.index.insert(key, slot);
        self.heap.push(slot);
        self.pos.push(slot);
        self.sift_up(slot);
    }

    /// Evicts the least counted key in favour of `key`, which inherits its count as over-count.
    fn replace_min(&mut self, key: &[u8]) {
        let slot = self.heap[0];
        let key: Arc<[u8]> = Arc::from(key);
        let old = std::mem::replace(&mut self.slots[slot].key, key.clone());
        self.index.remove(&old);
        self.index.insert(key, slot);
        let entry = &mut self.slots[slot];
        entry.error = entry.count;
        entry.count += 1;
        self.sift_down(0);
    }

    /// Count of the slot at heap position `at`.
    fn count_at(&self, at: usize) -> u64 {
        self.slots[self.heap[at]].count
    }

    /// Swaps two heap positions and keeps `pos` in step.
    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a]] = a;
        self.pos[self.heap[b]] = b;
    }

    /// Moves the entry at `at` towards the root while it is smaller than its parent.
    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.count_at(parent) <= self.count_at(at) {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    /// Moves the entry at `at` towards the leaves while a child is smaller.
    fn sift_down(&mut self, mut at: usize) {
        loop {
            let left = 2 * at + 1;
            let right = left + 1;
            let mut smallest = at;
            if left < self.heap.len() && self.count_at(left) < self.count_at(smallest) {
                smallest = left;
            }
            if right < self.heap.len() && self.count_at(right) < self.count_at(smallest) {
                smallest = right;
            }
            if smallest == at {
                break;
            }
            self.swap(at, smallest);
            at = smallest;
        }
    }

    /// The `n` largest counters, hottest first; ties by smaller error, then by key, so reports
    /// are stable.
    fn top(&self, n: usize) -> Vec<HotKey> {
        let mut slots: Vec<&Slot> = self.slots.iter().collect();
        slots.sort_by(|a, b| (b.count, a.error, &a.key).cmp(&(a.count, b.error, &b.key)));
        slots.into_iter().take(n).map(to_hot_key).collect()
    }
}

/// A counter as the report shows it.
fn to_hot_key(slot: &Slot) -> HotKey {
    let mut key = String::from_utf8_lossy(&slot.key).into_owned();
    let mut end = key.len().min(MAX_REPORTED_KEY);
    // Lossy decoding may have produced multi-byte characters; cut on a character boundary.
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    HotKey {
        key,
        count: slot.count,
        error: slot.error,
    }
}

/// Everything behind the lock.
struct State {
    /// The window being counted.
    current: Table,
    /// The last finished window.
    previous: Table,
    /// Whether any window has finished (until then `top` reports the current one).
    has_previous: bool,
    /// When the current window began.
    started: Instant,
}

impl State {
    /// Starts a new window if the current one has passed. After an idle gap of more than one
    /// window, the last finished window saw no requests, so it reports nothing.
    fn roll(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < window {
            return;
        }
        let windows = elapsed.as_nanos() / window.as_nanos();
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        if windows > 1 {
            self.previous.clear();
        }
        self.has_previous = true;
        // Windows stay aligned to the first start, so they do not drift with request timing.
        let into_window = (elapsed.as_nanos() % window.as_nanos()) as u64;
        self.started = now - Duration::from_nanos(into_window);
    }
}

/// Thread-safe Space-Saving top-K over fixed windows.
pub struct HotKeys {
    /// Counters per window; never more than this many keys are tracked.
    capacity: usize,
    /// Length of a window.
    window: Duration,
    /// The tables; one short critical section per counted request.
    state: Mutex<State>,
    /// Count one request in this many (1: every request); reported counts are scaled back up.
    sample_every: u64,
    /// Requests seen, for sampling.
    seen: std::sync::atomic::AtomicU64,
}

impl HotKeys {
    /// `capacity` counters (e.g. 64), windows of `window` length (e.g. 10 s). A capacity of 0 is
    /// taken as 1 and a zero window as 1 ns, so neither can break the counting.
    pub fn new(capacity: usize, window: Duration) -> HotKeys {
        HotKeys {
            capacity: capacity.max(1),
            window: window.max(Duration::from_nanos(1)),
            state: Mutex::new(State {
                current: Table::default(),
                previous: Table::default(),
                has_previous: false,
                started: Instant::now(),
            }),
            sample_every: 1,
            seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Like [`HotKeys::new`], but [`HotKeys::record`] counts only one request in `every` (the
    /// proxy's hot path then takes the lock that rarely); [`HotKeys::top`] scales counts and error
    /// bounds back up by `every`. A key hot enough to matter is still found: Space-Saving over a
    /// uniform sample keeps the heavy hitters.
    pub fn sampled(capacity: usize, window: Duration, every: u64) -> HotKeys {
        HotKeys {
            sample_every: every.max(1),
            ..HotKeys::new(capacity, window)
        }
    }

    /// Counts one request touching `key`. Called on the proxy's hot path: `O(log k)`, and no
    /// allocation when the key is already tracked. Rolls the window when it has passed (the
    /// finished window becomes what [`HotKeys::top`] reports).
    pub fn record(&self, key: &[u8]) {
        let seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if seen.is_multiple_of(self.sample_every) {
            self.record_at(key, Instant::now());
        }
    }

    /// Same as [`HotKeys::record`], with an explicit clock (for tests).
    pub fn record_at(&self, key: &[u8], now: Instant) {
        let key = &key[..key.len().min(MAX_TRACKED_KEY)];
        let mut state = self.lock();
        state.roll(now, self.window);
        state.current.record(key, self.capacity);
    }

    /// The `n` hottest keys of the last finished window (or of the current one if none has
    /// finished yet), hottest first; keys lossily UTF-8 and cut to 200 bytes, `error` the
    /// Space-Saving over-count bound.
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        let mut top = self.top_at(n, Instant::now());
        for hot in &mut top {
            hot.count *= self.sample_every;
            hot.error *= self.sample_every;
        }
        top
    }

    /// Same as [`HotKeys::top`], with an explicit clock.
    pub fn top_at(&self, n: usize, now: Instant) -> Vec<HotKey> {
        let mut state = self.lock();
        state.roll(now, self.window);
        if state.has_previous {
            state.previous.top(n)
        } else {
            state.current.top(n)
        }
    }

    /// The state; a panic while holding the lock cannot leave the counters inconsistent in a way
    /// that matters for a statistic, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// True per-key frequencies of a stream.
    fn frequencies(stream: &[Vec<u8>]) -> HashMap<Vec<u8>, u64> {
        let mut counts = HashMap::new();
        for key in stream {
            *counts.entry(key.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn counts_are_exact_while_keys_fit() {
        let hot = HotKeys::new(4, HOUR);
        let now = Instant::now();
        for (key, times) in [("a", 5), ("b", 3), ("c", 7), ("d", 1)] {
            for _ in 0..times {
                hot.record_at(key.as_bytes(), now);
            }
        }
        let top = hot.top_at(10, now);
        let got: Vec<(&str, u64, u64)> = top.iter().map(|h| (h.key.as_str(), h.count, h.error)).collect();
        assert_eq!(got, [("c", 7, 0), ("a", 5, 0), ("b", 3, 0), ("d", 1, 0)]);
        assert_eq!(hot.top_at(2, now).len(), 2);
    }

    #[test]
    fn long_keys_are_tracked_by_a_prefix_and_reported_cut() {
        let hot = HotKeys::new(2, HOUR);
        let now = Instant::now();
        let mut long = vec![b'x'; 600];
        hot.record_at(&long, now);
        long[550] = b'y';
        hot.record_at(&long, now);
        let top = hot.top_at(5, now);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].count, 2);
        assert_eq!(top[0].key, "x".repeat(200));
    }

    #[test]
    fn reported_keys_are_cut_on_a_character_boundary() {
        let hot = HotKeys::new(2, HOUR);
        let now = Instant::now();
        // 1 + 2 * 100 bytes: byte 200 falls inside the last 'é'.
        let key = format!("k{}", "é".repeat(100));
        hot.record_at(key.as_bytes(), now);
        hot.record_at(&[0xff, b'a'], now);
        let top = hot.top_at(5, now);
        assert!(top.iter().any(|h| h.key.len() == 199 && h.key.starts_with('k')));
        assert!(top.iter().any(|h| h.key == "\u{fffd}a"));
    }

    /// Deterministic Zipf(s = 1) stream over `distinct` keys, by inverse CDF on a 64-bit LCG.
    fn zipf_stream(distinct: usize, len: usize) -> Vec<Vec<u8>> {
        let mut cumulative = Vec::with_capacity(distinct);
        let mut total = 0.0;
        for rank in 1..=distinct {
            total += 1.0 / rank as f64;
            cumulative.push(total);
        }
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64 * total;
                let rank = cumulative.partition_point(|&c| c < u);
                format!("key:{rank}").into_bytes()
            })
            .collect()
    }

    #[test]
    fn finds_the_true_top_five_of_a_zipf_stream() {
        let stream = zipf_stream(10_000, 200_000);
        let truth = frequencies(&stream);
        let hot = HotKeys::new(64, HOUR);
        let now = Instant::now();
        for key in &stream {
            hot.record_at(key, now);
        }
        let mut true_top: Vec<(&Vec<u8>, &u64)> = truth.iter().collect();
        true_top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let expected: Vec<String> = true_top[..5]
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        let top = hot.top_at(5, now);
        let found: Vec<&str> = top.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(found, expected);
        for h in &top {
            let true_count = truth[h.key.as_bytes()];
            assert!(
                h.count >= true_count && true_count >= h.count - h.error,
                "{h:?} vs {true_count}"
            );
        }
    }

    #[test]
    fn windows_roll() {
        let window = Duration::from_secs(10);
        let hot = HotKeys::new(8, window);
        let t0 = Instant::now();
        for _ in 0..3 {
            hot.record_at(b"a", t0);
        }
        // No window has finished yet: the current one is reported.
        assert_eq!(hot.top_at(5, t0)[0].key, "a");
        let t1 = t0 + window + Duration::from_secs(1);
        hot.record_at(b"b", t1);
        let top = hot.top_at(5, t1);
        assert_eq!((top.len(), top[0].key.as_str(), top[0].count), (1, "a", 3));
        // The next roll reports the window that held only "b".
        let top = hot.top_at(5, t0 + 2 * window + Duration::from_secs(1));
        assert_eq!((top.len(), top[0].key.as_str(), top[0].count), (1, "b", 1));
        // After an idle window, the last finished window saw nothing.
        assert!(hot.top_at(5, t0 + 4 * window).is_empty());
    }

    #[test]
    fn sampling_scales_counts_back_up() {
        let hot = HotKeys::sampled(8, HOUR, 4);
        for _ in 0..400 {
            hot.record(b"hot");
            hot.record(b"cold");
            hot.record(b"hot");
        }
        let top = hot.top(1);
        assert_eq!(top[0].key, "hot");
        assert!((700..=900).contains(&top[0].count), "{top:?}");
    }

    #[test]
    fn never_tracks_more_than_capacity() {
        let hot = HotKeys::new(3, HOUR);
        let now = Instant::now();
        for i in 0..100u32 {
            hot.record_at(&i.to_be_bytes(), now);
        }
        let top = hot.top_at(100, now);
        assert_eq!(top.len(), 3);
        assert_eq!(top.iter().map(|h| h.count).sum::<u64>(), 100);
    }

    proptest! {
        #[test]
        fn frequent_keys_are_reported_within_bounds(
            capacity in 1usize..8,
            picks in proptest::collection::vec(0u8..20, 0..400),
        ) {
            let stream: Vec<Vec<u8>> = picks.iter().map(|p| format!("k{p}").into_bytes()).collect();
            let truth = frequencies(&stream);
            let hot = HotKeys::new(capacity, HOUR);
            let now = Instant::now();
            for key in &stream {
                hot.record_at(key, now);
            }
            let top = hot.top_at(capacity, now);
            prop_assert!(top.len() <= capacity);
            for h in &top {
                let true_count = truth.get(h.key.as_bytes()).copied().unwrap_or(0);
                prop_assert!(h.count >= true_count && true_count >= h.count - h.error);
            }
            let n = stream.len() as u64;
            for (key, &count) in &truth {
                if count * capacity as u64 > n {
                    let key = String::from_utf8_lossy(key);
                    prop_assert!(top.iter().any(|h| h.key == key), "{} ({}) missing", key, count);
                }
            }
        }
    }
}
