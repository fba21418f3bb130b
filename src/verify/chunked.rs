//! Reading a value in chunks to compute its canonical digest (see [`super::digest`]), for
//! values too big to read whole.
//!
//! Memory stays bounded whatever the value's size: every read is a chunk of about
//! [`CHUNK_BYTES`] (the element count per call is derived from `MEMORY USAGE` / length), and
//! only a running hash is kept. For the order-independent types each element is hashed to 128
//! bits and the hashes are *added* (mod 2^128), which does not depend on order and needs no
//! memory. A sum is not robust to the duplicates HSCAN/SSCAN may return while the table is
//! rehashing, so the element count is checked against HLEN/SCARD read before and after: on a
//! mismatch the scan is repeated (a few times), and a key that never reads consistently is
//! reported as an error rather than guessed at. (Keeping a sorted, deduplicated set of element
//! hashes instead would cost 16 bytes per element — 32 MB for a 2-million-field hash.)

use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, cmd};
use sha2::{Digest as _, Sha256};

use super::digest::{Canonical, Ordered, Unordered, string_value};
use super::side::{Side, take};

/// Target bytes per chunked read.
const CHUNK_BYTES: u64 = 1024 * 1024;
/// Most elements asked for in one chunked read.
const MAX_CHUNK_ITEMS: u64 = 1000;
/// Scans of an order-independent value before giving up on a consistent read.
const SCAN_ATTEMPTS: usize = 3;

/// Reads `key` on `side` and computes its canonical form; `size` is its `MEMORY USAGE` there
/// (used to size the chunks).
pub(super) async fn canonical(side: &Side, key: &[u8], size: u64) -> RedisResult<Canonical> {
    let kind: String = get(side, key, cmd("TYPE").arg(key)).await?;
    match kind.as_str() {
        "none" => Ok(Canonical::Absent),
        "string" => string(side, key).await,
        "list" => {
            ordered(side, key, "list", "LLEN", size, 1, |c, start, n| {
                c.arg(start).arg(start + n - 1);
            })
            .await
        }
        "zset" => {
            ordered(side, key, "zset", "ZCARD", size, 2, |c, start, n| {
                c.arg(start).arg(start + n - 1).arg("WITHSCORES");
            })
            .await
        }
        "hash" => unordered(side, key, "hash", "HSCAN", "HLEN", size, 2).await,
        "set" => unordered(side, key, "set", "SSCAN", "SCARD", size, 1).await,
        "stream" => stream(side, key, size).await,
        _ => Ok(Canonical::Value {
            kind,
            count: 0,
            digest: None,
        }),
    }
}

async fn get<T: FromRedisValue>(side: &Side, key: &[u8], c: &Cmd) -> RedisResult<T> {
    take(side.query_key(key, c).await?)
}

/// Elements per chunked read so that one read is about [`CHUNK_BYTES`].
fn per_chunk(size: u64, len: u64) -> u64 {
    if len == 0 || size == 0 {
        return MAX_CHUNK_ITEMS;
    }
    let average = (size / len).max(1);
    (CHUNK_BYTES / average).clamp(1, MAX_CHUNK_ITEMS)
}

async fn string(side: &Side, key: &[u8]) -> RedisResult<Canonical> {
    let mut h = Sha256::new();
    let mut start = 0u64;
    loop {
        let chunk: Vec<u8> = get(
            side,
            key,
            cmd("GETRANGE").arg(key).arg(start).arg(start + CHUNK_BYTES - 1),
        )
        .await?;
        h.update(&chunk);
        start += chunk.len() as u64;
        if (chunk.len() as u64) < CHUNK_BYTES {
            break;
        }
    }
    Ok(string_value(start, &h.finalize()))
}

/// A list or zset read by rank in chunks (`LRANGE`/`ZRANGE key start stop [WITHSCORES]`);
/// `width` replies per element.
async fn ordered(
    side: &Side,
    key: &[u8],
    kind: &str,
    len_cmd: &str,
    size: u64,
    width: usize,
    range: impl Fn(&mut Cmd, u64, u64),
) -> RedisResult<Canonical> {
    let len: u64 = get(side, key, cmd(len_cmd).arg(key)).await?;
    let n = per_chunk(size, len);
    let verb = if kind == "list" { "LRANGE" } else { "ZRANGE" };
    let mut acc = Ordered::new();
    let mut start = 0u64;
    loop {
        let mut c = cmd(verb);
        c.arg(key);
        range(&mut c, start, n);
        let items: Vec<Vec<u8>> = get(side, key, &c).await?;
        acc.add_items(&items, width);
        if (items.len() as u64) < n * width as u64 {
            break;
        }
        start += n;
    }
    Ok(acc.finish(kind))
}

/// A hash or set read with HSCAN/SSCAN; `width` replies per element.
async fn unordered(
    side: &Side,
    key: &[u8],
    kind: &str,
    scan_cmd: &str,
    len_cmd: &str,
    size: u64,
    width: usize,
) -> RedisResult<Canonical> {
    let mut last = (0, 0);
    for _ in 0..SCAN_ATTEMPTS {
        let before: u64 = get(side, key, cmd(len_cmd).arg(key)).await?;
        let n = per_chunk(size, before);
        let mut acc = Unordered::default();
        let mut cursor = 0u64;
        loop {
            let (next, items): (u64, Vec<Vec<u8>>) =
                get(side, key, cmd(scan_cmd).arg(key).arg(cursor).arg("COUNT").arg(n)).await?;
            acc.add_items(&items, width);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let after: u64 = get(side, key, cmd(len_cmd).arg(key)).await?;
        if before == 0 && after == 0 && acc.count() == 0 {
            // Gone while we read it (an empty hash/set does not exist).
            return Ok(Canonical::Absent);
        }
        if acc.count() == before && before == after {
            return Ok(acc.finish(kind));
        }
        last = (acc.count(), after);
    }
    Err(RedisError::from((
        ErrorKind::Client,
        "value kept changing while read in chunks",
        format!(
            "{scan_cmd} returned {} elements, {len_cmd} says {}",
            last.0, last.1
        ),
    )))
}

/// A stream read with `XRANGE key start + COUNT n`.
async fn stream(side: &Side, key: &[u8], size: u64) -> RedisResult<Canonical> {
    let len: u64 = get(side, key, cmd("XLEN").arg(key)).await?;
    let n = per_chunk(size, len);
    let mut acc = Ordered::new();
    let mut start = "-".to_string();
    loop {
        let entries: Vec<(String, Vec<Vec<u8>>)> = get(
            side,
            key,
            cmd("XRANGE").arg(key).arg(&start).arg("+").arg("COUNT").arg(n),
        )
        .await?;
        acc.add_entries(&entries);
        match entries.last() {
            Some((id, _)) if entries.len() as u64 == n => match crate::backfill::bigkey::next_stream_id(id) {
                Some(next) => start = next,
                None => break,
            },
            _ => break,
        }
    }
    Ok(acc.finish("stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_sized_by_average_element() {
        assert_eq!(per_chunk(0, 0), MAX_CHUNK_ITEMS);
        assert_eq!(per_chunk(100_000, 1_000), MAX_CHUNK_ITEMS, "100-byte elements");
        assert_eq!(per_chunk(200 << 20, 200), 1, "1 MiB elements: one at a time");
        assert_eq!(per_chunk(64 << 20, 1024), 16);
    }

    #[test]
    fn stream_ids_advance() {
        assert_eq!(
            crate::backfill::bigkey::next_stream_id("5-0").as_deref(),
            Some("5-1")
        );
        assert_eq!(
            crate::backfill::bigkey::next_stream_id(&format!("5-{}", u64::MAX)).as_deref(),
            Some("6-0")
        );
        assert_eq!(
            crate::backfill::bigkey::next_stream_id(&format!("{0}-{0}", u64::MAX)),
            None
        );
    }
}
