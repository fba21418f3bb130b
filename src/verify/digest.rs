//! Value comparison: the DUMP fast path and the type-aware canonical digest.
//!
//! Fast path: two DUMP payloads whose bodies (everything but the trailing 2-byte RDB version and
//! 8-byte CRC64) are byte-identical hold the same value. Payloads can differ while the values
//! are equal (a hash or set built in another order, another encoding, another RDB version), so
//! a mismatch is settled by the canonical digest, which depends only on the value:
//!
//! - string: the bytes (read with GETRANGE in chunks);
//! - list: the elements in order (LRANGE in chunks);
//! - hash: the set of (field, value) pairs, order-independent (HSCAN);
//! - set: the set of members, order-independent (SSCAN);
//! - zset: the (member, score) pairs in rank order (ZRANGE … WITHSCORES in chunks; scores
//!   compared as doubles, so "3.14" and "3.1400000000000001" are the same score);
//! - stream: the entries (ID, field/value pairs) in order (XRANGE in chunks).
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

use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Value, cmd};
use sha2::{Digest as _, Sha256};

use super::side::Side;

/// Target bytes per chunked read.
pub(super) const CHUNK_BYTES: u64 = 1024 * 1024;
/// Most elements asked for in one chunked read.
const MAX_CHUNK_ITEMS: u64 = 1000;
/// Scans of an order-independent value before giving up on a consistent read.
const SCAN_ATTEMPTS: usize = 3;
/// Bytes at the end of a DUMP payload that are not the value: RDB version (2) + CRC64 (8).
const DUMP_TRAILER: usize = 10;

/// Whether two DUMP payloads certainly hold the same value: their bodies are identical (the
/// RDB version and checksum may differ).
pub(super) fn same_payload(a: &[u8], b: &[u8]) -> bool {
    a.len() >= DUMP_TRAILER
        && b.len() >= DUMP_TRAILER
        && a[..a.len() - DUMP_TRAILER] == b[..b.len() - DUMP_TRAILER]
}

/// A value reduced to what comparison needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Canonical {
    /// The key does not exist (any more).
    Absent,
    /// The key exists.
    Value {
        /// `TYPE`: string, list, hash, set, zset, stream, or a module type's name.
        kind: String,
        /// Bytes (string) or elements (other types).
        count: u64,
        /// 128-bit digest; `None` for types without a canonical form (modules).
        digest: Option<[u8; 16]>,
    },
}

impl Canonical {
    /// "hash with 3 fields", for reports.
    pub fn describe(&self) -> String {
        match self {
            Canonical::Absent => "absent".into(),
            Canonical::Value { kind, count, .. } => {
                let unit = match kind.as_str() {
                    "string" => "bytes",
                    "hash" => "fields",
                    "set" | "zset" => "members",
                    "stream" => "entries",
                    "list" => "elements",
                    _ => return kind.clone(),
                };
                format!("{kind} of {count} {unit}")
            }
        }
    }
}

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
    super::side::take(side.query_key(key, c).await?)
}

/// Elements per chunked read so that one read is about [`CHUNK_BYTES`].
fn per_chunk(size: u64, len: u64) -> u64 {
    if len == 0 || size == 0 {
        return MAX_CHUNK_ITEMS;
    }
    let average = (size / len).max(1);
    (CHUNK_BYTES / average).clamp(1, MAX_CHUNK_ITEMS)
}

/// Appends a length-prefixed part, so ("ab","c") and ("a","bc") hash differently.
fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The 128-bit hash of one element (its parts length-prefixed).
fn element_hash(parts: &[&[u8]]) -> u128 {
    let mut h = Sha256::new();
    for p in parts {
        part(&mut h, p);
    }
    let out = h.finalize();
    u128::from_le_bytes(out[..16].try_into().expect("16 bytes"))
}

/// The final digest: type, count and the body (an ordered hash or an element-hash sum).
fn finish(kind: &str, count: u64, body: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    part(&mut h, kind.as_bytes());
    h.update(count.to_le_bytes());
    part(&mut h, body);
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// An order-independent accumulator: the sum of element hashes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unordered {
    sum: u128,
    count: u64,
}

impl Unordered {
    /// Adds one element.
    pub fn add(&mut self, parts: &[&[u8]]) {
        self.sum = self.sum.wrapping_add(element_hash(parts));
        self.count += 1;
    }

    fn finish(&self, kind: &str) -> Canonical {
        Canonical::Value {
            kind: kind.into(),
            count: self.count,
            digest: Some(finish(kind, self.count, &self.sum.to_le_bytes())),
        }
    }
}

/// An order-dependent accumulator.
pub(super) struct Ordered {
    h: Sha256,
    count: u64,
}

impl Ordered {
    pub fn new() -> Self {
        Ordered {
            h: Sha256::new(),
            count: 0,
        }
    }

    /// Adds one element.
    pub fn add(&mut self, parts: &[&[u8]]) {
        self.h.update((parts.len() as u64).to_le_bytes());
        for p in parts {
            part(&mut self.h, p);
        }
        self.count += 1;
    }

    fn finish(self, kind: &str) -> Canonical {
        let body = self.h.finalize();
        Canonical::Value {
            kind: kind.into(),
            count: self.count,
            digest: Some(finish(kind, self.count, &body)),
        }
    }
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
    let body = h.finalize();
    Ok(Canonical::Value {
        kind: "string".into(),
        count: start,
        digest: Some(finish("string", start, &body)),
    })
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
        for element in items.chunks(width) {
            match element {
                [member, score] => acc.add(&[member, &canonical_score(score)]),
                other => acc.add(&other.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            }
        }
        if (items.len() as u64) < n * width as u64 {
            break;
        }
        start += n;
    }
    Ok(acc.finish(kind))
}

/// A score as the bits of the double it denotes (so formatting differences between server
/// versions do not matter); unparsable text is kept as is.
fn canonical_score(score: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        Some(f) => (f + 0.0).to_bits().to_le_bytes().to_vec(),
        None => score.to_vec(),
    }
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
            for element in items.chunks(width) {
                acc.add(&element.iter().map(Vec::as_slice).collect::<Vec<_>>());
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let after: u64 = get(side, key, cmd(len_cmd).arg(key)).await?;
        if before == 0 && after == 0 && acc.count == 0 {
            // Gone while we read it (an empty hash/set does not exist).
            return Ok(Canonical::Absent);
        }
        if acc.count == before && before == after {
            return Ok(acc.finish(kind));
        }
        last = (acc.count, after);
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
        for (id, fields) in &entries {
            let mut parts: Vec<&[u8]> = vec![id.as_bytes()];
            parts.extend(fields.iter().map(Vec::as_slice));
            acc.add(&parts);
        }
        match entries.last() {
            Some((id, _)) if entries.len() as u64 == n => match next_stream_id(id) {
                Some(next) => start = next,
                None => break,
            },
            _ => break,
        }
    }
    Ok(acc.finish("stream"))
}

/// The smallest stream ID after `id` ("ms-seq"), for an inclusive XRANGE start that works on
/// every server version; `None` after the largest possible ID.
pub(super) fn next_stream_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    match seq.checked_add(1) {
        Some(seq) => Some(format!("{ms}-{seq}")),
        None => ms.checked_add(1).map(|ms| format!("{ms}-0")),
    }
}

/// The command that reads a whole small value of type `kind` in one reply (the pipelined path
/// for keys at most `big_key_bytes`); `None` for types without a canonical form.
pub(super) fn whole_value_command(kind: &str, pipe: &mut redis::Pipeline, key: &[u8]) {
    match kind {
        "string" => pipe.cmd("GET").arg(key),
        "list" => pipe.cmd("LRANGE").arg(key).arg(0).arg(-1),
        "hash" => pipe.cmd("HGETALL").arg(key),
        "set" => pipe.cmd("SMEMBERS").arg(key),
        "zset" => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
        "stream" => pipe.cmd("XRANGE").arg(key).arg("-").arg("+"),
        other => unreachable!("no whole-value read for type {other}"),
    };
}

/// Whether [`whole_value_command`] knows `kind`.
pub(super) fn has_whole_value(kind: &str) -> bool {
    matches!(kind, "string" | "list" | "hash" | "set" | "zset" | "stream")
}

/// The canonical form of a reply to [`whole_value_command`]: the same digest the chunked
/// reads produce, since both feed the same elements to the same accumulator.
pub(super) fn canonical_from_whole(kind: &str, reply: Value) -> RedisResult<Canonical> {
    Ok(match kind {
        "string" => match redis::from_redis_value::<Option<Vec<u8>>>(reply)? {
            None => Canonical::Absent,
            Some(bytes) => {
                let body = Sha256::digest(&bytes);
                let count = bytes.len() as u64;
                Canonical::Value {
                    kind: kind.into(),
                    count,
                    digest: Some(finish(kind, count, &body)),
                }
            }
        },
        "stream" => {
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::from_redis_value(reply)?;
            let mut acc = Ordered::new();
            for (id, fields) in &entries {
                let mut parts: Vec<&[u8]> = vec![id.as_bytes()];
                parts.extend(fields.iter().map(Vec::as_slice));
                acc.add(&parts);
            }
            acc.finish(kind)
        }
        _ => {
            let items: Vec<Vec<u8>> = redis::from_redis_value(reply)?;
            if items.is_empty() {
                // An empty list, hash, set or zset does not exist.
                return Ok(Canonical::Absent);
            }
            match kind {
                "hash" => {
                    let mut acc = Unordered::default();
                    for pair in items.chunks(2) {
                        acc.add(&pair.iter().map(Vec::as_slice).collect::<Vec<_>>());
                    }
                    acc.finish(kind)
                }
                "set" => {
                    let mut acc = Unordered::default();
                    for member in &items {
                        acc.add(&[member]);
                    }
                    acc.finish(kind)
                }
                "zset" => {
                    let mut acc = Ordered::new();
                    for pair in items.chunks(2) {
                        match pair {
                            [member, score] => acc.add(&[member, &canonical_score(score)]),
                            other => acc.add(&other.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                        }
                    }
                    acc.finish(kind)
                }
                _ => {
                    let mut acc = Ordered::new();
                    for element in &items {
                        acc.add(&[element]);
                    }
                    acc.finish(kind)
                }
            }
        }
    })
}

/// The type a DUMP payload encodes, from its first byte (the RDB object type), for reports.
pub(super) fn payload_type(payload: &[u8]) -> &'static str {
    match payload.first() {
        Some(0) => "string",
        Some(1 | 10 | 14 | 18) => "list",
        Some(2 | 11 | 20) => "set",
        Some(3 | 5 | 12 | 17) => "zset",
        Some(4 | 9 | 13 | 16) => "hash",
        Some(15 | 19 | 21) => "stream",
        Some(6 | 7) => "module",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bodies_ignore_version_and_crc() {
        let mut a = b"\x00\x03abc".to_vec();
        let mut b = a.clone();
        a.extend_from_slice(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        b.extend_from_slice(&[11, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert!(same_payload(&a, &b));
        let mut c = b"\x00\x03abd".to_vec();
        c.extend_from_slice(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!same_payload(&a, &c));
        assert!(!same_payload(b"short", b"short"), "not a payload");
    }

    #[test]
    fn unordered_ignores_order_but_not_content() {
        let mut a = Unordered::default();
        a.add(&[b"f1", b"v1"]);
        a.add(&[b"f2", b"v2"]);
        let mut b = Unordered::default();
        b.add(&[b"f2", b"v2"]);
        b.add(&[b"f1", b"v1"]);
        assert_eq!(a.finish("hash"), b.finish("hash"));
        let mut c = Unordered::default();
        c.add(&[b"f1", b"v2"]);
        c.add(&[b"f2", b"v1"]);
        assert_ne!(
            a.finish("hash"),
            c.finish("hash"),
            "values swapped between fields"
        );
        let mut d = Unordered::default();
        d.add(&[b"f1v", b"1"]);
        d.add(&[b"f2", b"v2"]);
        assert_ne!(a.finish("hash"), d.finish("hash"), "parts are length-prefixed");
        assert_ne!(
            a.finish("hash"),
            a.finish("zset"),
            "the type is part of the digest"
        );
    }

    #[test]
    fn ordered_depends_on_order() {
        let mut a = Ordered::new();
        a.add(&[b"x"]);
        a.add(&[b"y"]);
        let mut b = Ordered::new();
        b.add(&[b"y"]);
        b.add(&[b"x"]);
        assert_ne!(a.finish("list"), b.finish("list"));
    }

    #[test]
    fn chunks_are_sized_by_average_element() {
        assert_eq!(per_chunk(0, 0), MAX_CHUNK_ITEMS);
        assert_eq!(per_chunk(100_000, 1_000), MAX_CHUNK_ITEMS, "100-byte elements");
        assert_eq!(per_chunk(200 << 20, 200), 1, "1 MiB elements: one at a time");
        assert_eq!(per_chunk(64 << 20, 1024), 16);
    }

    #[test]
    fn scores_compare_as_doubles() {
        assert_eq!(canonical_score(b"3.14"), canonical_score(b"3.1400000000000001"));
        assert_eq!(canonical_score(b"inf"), canonical_score(b"inf"));
        assert_ne!(canonical_score(b"inf"), canonical_score(b"-inf"));
        assert_eq!(canonical_score(b"-0"), canonical_score(b"0"));
    }

    #[test]
    fn stream_ids_advance() {
        assert_eq!(next_stream_id("5-0").as_deref(), Some("5-1"));
        assert_eq!(next_stream_id(&format!("5-{}", u64::MAX)).as_deref(), Some("6-0"));
        assert_eq!(next_stream_id(&format!("{0}-{0}", u64::MAX)), None);
    }

    #[test]
    fn payload_types() {
        assert_eq!(payload_type(&[0, 1]), "string");
        assert_eq!(payload_type(&[16]), "hash");
        assert_eq!(payload_type(&[]), "unknown");
    }
}
