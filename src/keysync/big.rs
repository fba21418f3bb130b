//! Big keys in a key-sync (issue 9, "big keys in the mirror"): a key whose `MEMORY USAGE` on the
//! origin is above the limit is not read with DUMP — a 200 MB DUMP stalls the origin, and its
//! reply stalls every client sharing the connection, and a payload over 512 MB could never be
//! restored — but copied in chunks by type ([`crate::backfill::bigkey`]) into a temporary key in
//! its slot, *while the sync holds the key's lease* (renewed as the copy runs), then renamed onto
//! the key by the lease's commit: only if the lease is still ours, atomically with its release.
//!
//! So a big key keeps the ordering promise of [`super::lock`]: a round that lost its lease during
//! a long copy publishes nothing (its temporary key is dropped) and looks again. What it does not
//! keep is the snapshot: like the backfill's, a chunked copy of a key written *during* the copy
//! may mix states. Every such write queues another sync of the key, which runs after this round
//! and copies again, so the key converges once writes to it pause (and `verify` finds it if they
//! never do).
//!
//! The size check costs nothing extra on the way: one script reads `MEMORY USAGE`, and `PTTL` and
//! `DUMP` only when the key is small.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use super::lock::{Commit, Session};
use super::{Applied, KeySync, ScriptSupport, Snapshot, Synced, decode_snapshot, holding};
use crate::backfill::bigkey::{self, Filled};

/// How long one chunked copy may take before the sync gives up (a 512 MB key copies in seconds
/// on a loopback; this bounds a stuck one).
pub const COPY_LIMIT: Duration = Duration::from_secs(600);

/// `PTTL` and `DUMP` of `KEYS[1]`, unless its `MEMORY USAGE` is above `ARGV[1]`: then `PTTL`,
/// nil and the size. A missing key has no usage (`false`) and reads as absent.
const GUARDED_LUA: &str = "local n = redis.call('MEMORY', 'USAGE', KEYS[1]) \
if n and n > tonumber(ARGV[1]) then return {redis.call('PTTL', KEYS[1]), false, n} end \
return {redis.call('PTTL', KEYS[1]), redis.call('DUMP', KEYS[1])}";

/// [`GUARDED_LUA`] with its SHA-1 computed once.
static GUARDED: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GUARDED_LUA));

/// What a read that diverts big keys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A small key's snapshot (or its absence).
    Snapshot(Snapshot),
    /// A key above the limit, with its `MEMORY USAGE`: to be copied in chunks.
    Big(u64),
}

/// Reads `key`'s snapshot unless it is bigger than `limit` bytes: one script call, or, when the
/// origin refuses scripts, `MEMORY USAGE` and then MULTI/PTTL/DUMP/EXEC.
pub async fn read_guarded<C: ConnectionLike + Clone>(
    origin: &C,
    key: &[u8],
    scripts: &ScriptSupport,
    limit: u64,
) -> RedisResult<Read> {
    let mut call = redis::cmd("EVALSHA");
    call.arg(GUARDED.get_hash()).arg(1).arg(key).arg(limit);
    if let Some(mut replies) = super::run_script(origin, GUARDED_LUA, vec![call], scripts).await? {
        return decode(replies.pop().unwrap_or(Value::Nil));
    }
    let size: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query_async(&mut origin.clone())
        .await?;
    if let Some(size) = size.filter(|&s| s > limit) {
        return Ok(Read::Big(size));
    }
    let mut snapshots = super::read_many(origin, &[key.to_vec()], scripts).await?;
    Ok(Read::Snapshot(snapshots.pop().unwrap_or(Snapshot::Absent)))
}

/// Decodes [`GUARDED_LUA`]'s reply: `[pttl, dump]`, or `[pttl, nil, size]` for a big key.
fn decode(value: Value) -> RedisResult<Read> {
    let value = value.extract_error()?;
    if let Value::Array(items) = &value
        && items.len() == 3
    {
        let size: u64 = redis::from_redis_value(items[2].clone())?;
        return Ok(Read::Big(size));
    }
    decode_snapshot(value).map(Read::Snapshot)
}

/// Copies big `key` from `origin` in chunks into a temporary key on the destination while
/// holding the lease `token`, then publishes it by the lease's commit (see the module
/// documentation). `None` when the lease was lost: nothing was published, look again.
pub async fn copy_holding<O, D>(
    origin: &O,
    session: &mut Session<'_, D>,
    token: &[u8],
    key: &[u8],
    ks: &KeySync,
) -> RedisResult<Option<Synced>>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Clone + Send + Sync,
{
    let mut source = origin.clone();
    let mut target = session.dest_handle();
    let temp = bigkey::new_temp_key(key);
    let fill = bigkey::fill(&mut source, &mut target, key, &temp);
    let filled = holding(session, token, ks, COPY_LIMIT, "chunked copy too slow", fill).await;
    let filled_at = Instant::now();
    let (commit, applied) = match filled {
        Ok(Some(Filled::Ready { ttl_ms, .. })) => match aged(ttl_ms, filled_at.elapsed()) {
            Some(ttl_ms) => (session.commit_move(token, &temp, ttl_ms).await, Applied::Restored),
            None => (
                session.commit(token, Some(&Snapshot::Absent)).await,
                Applied::Deleted,
            ),
        },
        Ok(Some(Filled::Vanished)) => (
            session.commit(token, Some(&Snapshot::Absent)).await,
            Applied::Deleted,
        ),
        Ok(None) => (Ok(Commit::Lost(None)), Applied::Covered),
        Err(e) => (Err(e), Applied::Covered),
    };
    let landed = matches!(commit, Ok(Commit::Landed)) && applied == Applied::Restored;
    if !landed {
        bigkey::drop_temp(&mut target, &temp).await;
    }
    match commit? {
        Commit::Landed => Ok(Some(Synced {
            applied,
            landed: None,
        })),
        Commit::Lost(_) => Ok(None),
    }
}

/// The TTL to publish: `ttl_ms` as read (0 = none) shortened by `elapsed`; `None` when it ran
/// out meanwhile (the key is gone on the origin too).
fn aged(ttl_ms: u64, elapsed: Duration) -> Option<u64> {
    if ttl_ms == 0 {
        return Some(0);
    }
    ttl_ms
        .checked_sub(elapsed.as_millis() as u64)
        .filter(|&left| left > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_reply_with_a_size_is_a_big_key() {
        let big = Value::Array(vec![Value::Int(-1), Value::Nil, Value::Int(300_000_000)]);
        assert_eq!(decode(big).unwrap(), Read::Big(300_000_000));
        let small = Value::Array(vec![Value::Int(-1), Value::BulkString(b"payload".to_vec())]);
        assert!(matches!(
            decode(small).unwrap(),
            Read::Snapshot(Snapshot::Present { ttl_ms: None, .. })
        ));
        let gone = Value::Array(vec![Value::Int(-2), Value::Nil]);
        assert_eq!(decode(gone).unwrap(), Read::Snapshot(Snapshot::Absent));
    }

    #[test]
    fn the_published_ttl_is_aged_and_an_expired_one_deletes() {
        let ms = Duration::from_millis;
        assert_eq!(aged(0, ms(5_000)), Some(0), "no expiry stays none");
        assert_eq!(aged(10_000, ms(4_000)), Some(6_000));
        assert_eq!(aged(10_000, ms(10_000)), None);
        assert_eq!(aged(10_000, ms(12_000)), None);
    }
}
