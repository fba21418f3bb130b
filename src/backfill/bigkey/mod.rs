//! Copying keys larger than `big_key_bytes` in chunks, by type.
//!
//! DUMP and RESTORE run on the servers' main threads, so a 100 MB key would stall both sides
//! (design §6). A big key is therefore read and written piecewise, with commands that each touch
//! a bounded part of the value:
//!
//! | type   | read from the source            | write on the target          |
//! |--------|---------------------------------|------------------------------|
//! | string | `GETRANGE` in 1 MiB windows     | `SETRANGE` at the same offset |
//! | hash   | `HSCAN … COUNT n`               | `HSET`                       |
//! | set    | `SSCAN … COUNT n`               | `SADD`                       |
//! | zset   | `ZSCAN … COUNT n`               | `ZADD` with the exact score strings ZSCAN returned |
//! | list   | `LRANGE` in index windows       | `RPUSH`                      |
//! | stream | `XRANGE … COUNT n` from explicit IDs | `XADD key ID …`         |
//!
//! # Never a half-copied key
//! The chunks go into a temporary key `__cachemig:tmp:{tag}:<nonce>` that hashes to the same
//! cluster slot as the real key ([`temp_key`]), so it can be renamed onto it. The reserved prefix
//! `__cachemig:` is never copied, verified or served by cachemig. While the copy runs, the
//! temporary key carries a safety TTL of one hour, refreshed with every chunk, so a crash leaves
//! no permanent garbage. When all chunks are in, the source's `PTTL` is read (last, so the TTL is
//! as fresh as possible): −2 or 0 means the key vanished meanwhile (the temporary key is deleted,
//! [`BigCopy::Vanished`]). Otherwise one Lua script on the target, atomically, `RENAME`s the
//! temporary key onto the key (`replace`) or `RENAMENX`es it (not `replace`: 0 means the target
//! already had the key, the temporary key is deleted, [`BigCopy::KeptExisting`]), then sets the
//! final TTL (`PEXPIRE`) or removes the safety one (`PERSIST`). Clients therefore see either no
//! key, the old key, or the complete copy with its real TTL.
//!
//! With `replace` off, a target that already has the key is detected before anything is read,
//! so an existing 200 MB key costs one `EXISTS`, not a copy.
//!
//! # Memory
//! A chunk holds at most [`MAX_COUNT`] elements, and the element count adapts so that a chunk is
//! about [`CHUNK_BYTES`]. Reading the next chunk overlaps writing the current one, so about two
//! chunks (and their encoded commands) are in memory at a time, whatever the key's size. A single
//! element larger than that (one huge hash value or list element) is still read whole: Redis has
//! no ranged read for those.
//!
//! # Consistency
//! The copy is **not** a snapshot. A key modified on the source while its chunks are copied may
//! be copied inconsistently (an element added behind the SCAN cursor, a list shifted by an
//! `LPUSH` between two windows, a TTL changed). That is accepted here: the phase-2 catch-up
//! verify compares every key and repairs the differences. Duplicates returned by the SCAN family
//! are harmless (HSET, SADD and ZADD are idempotent); lists and streams are checked against the
//! number of elements written, so a write applied twice by a retry is an error, not a silent
//! duplicate.
//!
//! # Streams
//! Entries keep their IDs. The stream's `last-generated-id`, `entries-added` and
//! `max-deleted-entry-id` are restored with `XSETID`, and consumer groups are copied with their
//! `last-delivered-id` and `entries-read` (`XGROUP CREATE … ENTRIESREAD`), their consumers
//! (`XGROUP CREATECONSUMER`) and their pending entries lists (`XCLAIM … IDLE … RETRYCOUNT … FORCE
//! JUSTID`, keeping the owner, idle time and delivery count). Not copied: consumers' seen/active
//! times, and pending entries whose message was already deleted from the stream (`XCLAIM` ignores
//! them).
//!
//! Errors are returned as they are; the caller dead-letters the key. The temporary key is deleted
//! on the way out (best effort; its safety TTL covers the rest).

mod chunks;
mod stream;

pub use stream::next_id as next_stream_id;

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult};

use crate::cluster::{ATTEMPTS, backoff, transient, with_retries};
use chunks::{Chunk, Kind, Position};

/// Largest number of elements in one chunk.
pub const MAX_COUNT: usize = 1000;
/// The size a chunk aims at; strings are read in windows of exactly this size.
pub const CHUNK_BYTES: u64 = 1024 * 1024;
/// Prefix of every temporary key (inside the reserved `__cachemig:` namespace).
pub const TEMP_PREFIX: &[u8] = b"__cachemig:tmp:";
/// The safety TTL of a temporary key while it is being filled, refreshed with every chunk.
const SAFETY_TTL_MS: u64 = 60 * 60 * 1000;

/// A connection a chunked copy reads from or writes to: the new cluster's (backfill, repairs
/// from old), a standalone node's or an old cluster's (repairs from new while it is the write
/// primary), or a proxy's shared connections (the mirror).
pub trait Target: ConnectionLike + Clone + Send + Sync {}

impl<T: ConnectionLike + Clone + Send + Sync> Target for T {}

/// What a chunked copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BigCopy {
    /// Copied; `bytes` of values moved.
    Copied {
        /// Bytes moved.
        bytes: u64,
    },
    /// The target already had the key and `replace` was off.
    KeptExisting,
    /// The key was gone from the source.
    Vanished,
}

/// Copies `key` from `source` to `target` in chunks (see the module documentation).
///
/// With `replace` off, an existing target key is left alone ([`BigCopy::KeptExisting`]); a key
/// missing from the source at the start or gone by the end is [`BigCopy::Vanished`] (and nothing
/// is written). Any error is returned; no temporary key is left behind on purpose.
pub async fn copy(
    source: &mut impl Target,
    target: &mut impl Target,
    key: &[u8],
    replace: bool,
) -> RedisResult<BigCopy> {
    if !replace {
        let exists: bool = query(target, redis::cmd("EXISTS").arg(key)).await?;
        if exists {
            return Ok(BigCopy::KeptExisting);
        }
    }
    let temp = temp_key(key, &nonce());
    let result = match fill(source, target, key, &temp).await {
        Ok(Filled::Vanished) => Ok(BigCopy::Vanished),
        Ok(Filled::Ready { bytes, ttl_ms }) => match publish(target, &temp, key, replace, ttl_ms).await {
            Ok(true) => Ok(BigCopy::Copied { bytes }),
            Ok(false) => Ok(BigCopy::KeptExisting),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if !matches!(result, Ok(BigCopy::Copied { .. })) {
        drop_temp(target, &temp).await;
    }
    result
}

/// What [`fill`] left in the temporary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// The whole value, ready to be renamed onto the key with `ttl_ms` (0 = no expiry).
    Ready {
        /// Bytes moved.
        bytes: u64,
        /// The source's `PTTL` read after the last chunk (0 = none).
        ttl_ms: u64,
    },
    /// The key was missing from the source at the start, or gone by the end.
    Vanished,
}

/// A fresh temporary key for a chunked copy of `key` (see [`temp_key`]).
pub fn new_temp_key(key: &[u8]) -> Vec<u8> {
    temp_key(key, &nonce())
}

/// Deletes a temporary key left by a copy that did not publish it (best effort: its safety TTL
/// covers the rest).
pub async fn drop_temp(target: &mut impl Target, temp: &[u8]) {
    let _ = redis::cmd("DEL").arg(temp).query_async::<i64>(&mut *target).await;
}

/// Fills `temp` on `target` with the value of `key` on `source`, chunk by chunk, and reads the
/// source's TTL last; publishing it under `key` is the caller's ([`copy`] renames it; a
/// key-sync renames it only while it holds the key's lease).
pub async fn fill(
    source: &mut impl Target,
    target: &mut impl Target,
    key: &[u8],
    temp: &[u8],
) -> RedisResult<Filled> {
    let type_name: String = query(source, redis::cmd("TYPE").arg(key)).await?;
    if type_name == "none" {
        return Ok(Filled::Vanished);
    }
    let Some(kind) = Kind::parse(&type_name) else {
        return Err(RedisError::from((
            ErrorKind::Client,
            "cannot copy this type in chunks",
            format!("type {type_name:?}; raise big_key_bytes so it is copied with DUMP/RESTORE"),
        )));
    };
    let mut count = MAX_COUNT;
    let mut bytes = 0u64;
    let mut written = 0u64;
    let mut pending = chunks::read(source, key, kind, &Position::start(kind), count).await?;
    loop {
        let Chunk {
            data,
            bytes: chunk_bytes,
            next,
        } = pending;
        bytes += chunk_bytes;
        count = chunks::adapt_count(count, data.len(), chunk_bytes);
        let n = data.len() as u64;
        match next {
            None => {
                chunks::write(target, temp, &data, written).await?;
                written += n;
                break;
            }
            Some(position) => {
                // Write this chunk while the next one is read.
                let (w, r) = tokio::join!(
                    chunks::write(target, temp, &data, written),
                    chunks::read(source, key, kind, &position, count)
                );
                w?;
                written += n;
                pending = r?;
            }
        }
    }

    if kind == Kind::Stream {
        stream::copy_meta(source, target, key, temp, written > 0).await?;
    } else if kind == Kind::String && written == 0 {
        // An empty string still exists (the finalize step decides whether it vanished).
        chunks::write(
            target,
            temp,
            &chunks::Data::Str {
                offset: 0,
                value: Vec::new(),
            },
            0,
        )
        .await?;
    }
    chunks::check_length(target, temp, kind, written).await?;

    let pttl: i64 = query(source, redis::cmd("PTTL").arg(key)).await?;
    if pttl == 0 || pttl <= -2 {
        return Ok(Filled::Vanished);
    }
    Ok(Filled::Ready {
        bytes,
        ttl_ms: pttl.max(0) as u64,
    })
}

/// Atomically renames `temp` onto `key` (RENAMENX unless `replace`) and sets the final TTL
/// (`ttl_ms` 0 = none). Returns whether the key was written.
const PUBLISH: &str = r"
if ARGV[1] == '1' then
  redis.call('RENAME', KEYS[1], KEYS[2])
elseif redis.call('RENAMENX', KEYS[1], KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[2])
end
return 1
";

async fn publish(
    target: &mut impl Target,
    temp: &[u8],
    key: &[u8],
    replace: bool,
    ttl_ms: u64,
) -> RedisResult<bool> {
    let mut attempt = 1;
    loop {
        let reply = redis::cmd("EVAL")
            .arg(PUBLISH)
            .arg(2)
            .arg(temp)
            .arg(key)
            .arg(if replace { "1" } else { "0" })
            .arg(ttl_ms)
            .query_async::<bool>(&mut *target)
            .await;
        match reply {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                // The script is atomic: if the temporary key is still there it did not run.
                let pending: bool = query(target, redis::cmd("EXISTS").arg(temp)).await?;
                if !pending {
                    // It ran but the reply was lost; with `replace` off it may have kept an
                    // existing key instead, which only changes a counter.
                    return Ok(true);
                }
            }
            other => return other,
        }
    }
}

/// The temporary key for `key`: `__cachemig:tmp:{tag}:<nonce>`, in the same cluster slot (the
/// tag is [`crate::keys::slot_tag`]).
pub fn temp_key(key: &[u8], nonce: &str) -> Vec<u8> {
    let tag = crate::keys::slot_tag(key);
    let mut temp = Vec::with_capacity(TEMP_PREFIX.len() + tag.len() + nonce.len() + 3);
    temp.extend_from_slice(TEMP_PREFIX);
    temp.push(b'{');
    temp.extend_from_slice(&tag);
    temp.extend_from_slice(b"}:");
    temp.extend_from_slice(nonce.as_bytes());
    temp
}

/// A name unique to this copy: process id, clock and a per-process counter.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs an idempotent command on a clone of `conn`, retrying transient errors.
async fn query<T, C>(conn: &C, cmd: &redis::Cmd) -> RedisResult<T>
where
    T: redis::FromRedisValue,
    C: redis::aio::ConnectionLike + Clone,
{
    with_retries(|| {
        let mut conn = conn.clone();
        async move { cmd.query_async(&mut conn).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_slot(a: &[u8], b: &[u8]) -> bool {
        crate::cluster::key_slot(a) == crate::cluster::key_slot(b)
    }

    #[test]
    fn temp_keys_share_the_slot_of_their_key() {
        let keys: [&[u8]; 12] = [
            b"plain",
            b"user:{42}:profile",
            b"{a}{b}",
            b"{}x",
            b"x{}",
            b"a}b",
            b"}",
            b"{",
            b"a{b",
            b"",
            b"\x00\xff{\x01}\x02",
            b"ends with brace {",
        ];
        for key in keys {
            let temp = temp_key(key, "n0");
            assert!(temp.starts_with(TEMP_PREFIX));
            assert!(temp.starts_with(crate::keys::RESERVED_PREFIX));
            assert!(
                same_slot(key, &temp),
                "{:?} vs {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&temp)
            );
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
