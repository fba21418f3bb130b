//! The per-key sync lock: key-syncs of one key are serialized across the whole fleet (every proxy,
//! the catch-up, `verify --repair`) by a short lease on the **destination**, in the key's slot,
//! so a key that never goes quiet still converges (issue 9, item 8).
//!
//! A sync *round* takes the lease, reads the origin while holding it, and writes the destination
//! only if it still holds the lease, releasing it in the same atomic step:
//!
//! ```text
//! acquire  (destination)  SET lock token NX PX lease
//! read     (origin)       PTTL + DUMP, atomically
//! commit   (destination)  if GET lock = token: RESTORE … REPLACE (or DEL), DEL lock
//!                         else: lost, nothing written
//! ```
//!
//! Why it converges and never goes back: two rounds that both land hold the lease one after the
//! other (a round lands only while it holds it, and a lease is taken only when free — an
//! expired one is gone), and each reads the origin inside its own tenure. So the landed
//! snapshots are in the order of their reads: a later landing always carries a later origin
//! state, and no stale RESTORE can land after a fresh one — whatever the delays, a holder frozen
//! past its lease included (its commit finds the lease gone and writes nothing). No re-check is
//! needed, so no key can "keep changing" past a limit.
//!
//! **Waiting without starving, and combining.** A sync that finds the lease held need not take
//! it: its writes were applied on the origin before it started, so *any* round that takes the
//! lease after it looked reads them. Waiters keep a *contention record* next to the lock (a hash
//! `__cachemig:wait:…`: `n` landings, `l` last lander, `e` epoch), which commits update while it
//! exists. A waiter notes `(epoch, n, holder)` when it first finds the lease busy and is
//! *covered* — done, without a round of its own — once a landing follows from a round that
//! started after that look: `n ≥ n₀ + 2`, or `n = n₀ + 1` by another lander than the holder it
//! saw. Two proxies hammering one key therefore share rounds instead of queueing behind each
//! other, and a waiter is served within two rounds of whoever holds the key.
//!
//! The uncontended path is one plain `SET … NX PX` and one short script. The lock expires with
//! its lease; the record exists only while a key is contended and expires [`GC`] after the last
//! waiter looked (a waiter that finds a new epoch starts its count over). Expiry is the
//! destination's own: no two clocks are compared.
//!
//! **Destinations that refuse scripts** (an ACL without `@scripting`, `EVALSHA` renamed away) get
//! the same protocol as `WATCH` transactions on a connection of the sync's own ([`Exclusive`]):
//! read lock and record, decide here ([`decide_look`], [`decide_commit`], the same rules as the
//! scripts), then `MULTI … EXEC`, retried when either changed in between.

mod exclusive;
mod rules;
mod scripts;
mod session;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use exclusive::{Exclusive, NoExclusive, NodeExclusive, Pool};
pub use rules::{Look, Waits, decide_commit, decide_look};
pub use session::Session;

/// Prefix of every lock key (inside the reserved `__cachemig:` namespace, so never copied,
/// verified or served).
pub const LOCK_PREFIX: &[u8] = b"__cachemig:lock:";

/// Prefix of every contention record.
pub const WAIT_PREFIX: &[u8] = b"__cachemig:wait:";

/// How long a round holds the lease unless it renews it: what a frozen or killed holder costs
/// the other syncs of that one key. A healthy round takes a few round trips; a slow origin read
/// renews the lease every third of it.
pub const LEASE: Duration = Duration::from_millis(250);

/// A contention record no waiter looked at for this long disappears.
pub const GC: Duration = Duration::from_secs(10);

/// `prefix{tag}` or `prefix{tag}:<key>`, in `key`'s slot.
fn own_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let tag = crate::keys::slot_tag(key);
    let mut out = Vec::with_capacity(prefix.len() + tag.len() + key.len() + 3);
    out.extend_from_slice(prefix);
    out.push(b'{');
    out.extend_from_slice(&tag);
    out.push(b'}');
    if tag != key {
        out.push(b':');
        out.extend_from_slice(key);
    }
    out
}

/// The lock key of `key`: `__cachemig:lock:{tag}` when the key is its own tag, else
/// `__cachemig:lock:{tag}:<key>`; always in `key`'s cluster slot.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    own_key(LOCK_PREFIX, key)
}

/// The contention record of `key` (`__cachemig:wait:…`, like [`lock_key`]).
pub fn wait_key(key: &[u8]) -> Vec<u8> {
    own_key(WAIT_PREFIX, key)
}

/// What a sync saw when it found the lease held: the epoch of the contention record, the
/// landings it counted and the holder. Any landing beyond it by a round that started later
/// covers the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// The token of the sync that created the record.
    pub epoch: Vec<u8>,
    /// Landings counted in that record.
    pub landed: i64,
    /// The holder then (empty: nobody).
    pub holder: Vec<u8>,
}

/// The answer to an attempt to take the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours.
    Acquired,
    /// A round that started after the baseline landed: nothing left to do.
    Covered,
    /// Someone else holds it; this is what we saw.
    Busy(Baseline),
}

/// The answer to a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Written and released.
    Landed,
    /// The lease was no longer ours: nothing written. What we saw, if a record exists.
    Lost(Option<Baseline>),
}

/// Unique lease tokens: process id, a random number, a counter.
#[derive(Debug)]
pub(super) struct Tokens {
    prefix: String,
    next: AtomicU64,
}

impl Tokens {
    pub(super) fn new() -> Tokens {
        Tokens {
            prefix: format!("{:x}.{:x}", std::process::id(), rand::random::<u64>()),
            next: AtomicU64::new(0),
        }
    }

    pub(super) fn next(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n:x}", self.prefix).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_slot(a: &[u8], b: &[u8]) -> bool {
        crate::cluster::key_slot(a) == crate::cluster::key_slot(b)
    }

    #[test]
    fn lock_keys_share_the_slot_of_their_key_and_are_reserved() {
        for key in [
            &b"token:1"[..],
            b"a{bc}d",
            b"{}{x}",
            b"}",
            b"",
            b"\x00\xff{\x01}\x02",
        ] {
            for own in [lock_key(key), wait_key(key)] {
                assert!(own.starts_with(crate::keys::RESERVED_PREFIX));
                assert!(same_slot(key, &own), "{:?}", String::from_utf8_lossy(key));
            }
        }
        assert_eq!(lock_key(b"k"), b"__cachemig:lock:{k}".to_vec());
        assert_eq!(wait_key(b"k"), b"__cachemig:wait:{k}".to_vec());
        assert_eq!(lock_key(b"a{b}"), b"__cachemig:lock:{b}:a{b}".to_vec());
        assert_ne!(lock_key(b"x{k}"), lock_key(b"k"));
    }

    #[test]
    fn tokens_are_unique() {
        let t = Tokens::new();
        assert_ne!(t.next(), t.next());
        assert_ne!(Tokens::new().next(), Tokens::new().next());
    }
}
