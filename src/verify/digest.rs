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
//! The digests are computed here from element values; reading them (whole, or in chunks for
//! a big value) is [`super::chunked`]'s.

use redis::{Cmd, RedisResult, Value};
use sha2::{Digest as _, Sha256};

use super::side::command;

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

    /// Adds the elements of an SMEMBERS/SSCAN reply (`width` 1) or an HGETALL/HSCAN one
    /// (`width` 2: field, value).
    pub fn add_items(&mut self, items: &[Vec<u8>], width: usize) {
        for element in items.chunks(width) {
            self.add(&element.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }

    /// Elements added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The canonical form of a value of type `kind` with the elements added.
    pub fn finish(&self, kind: &str) -> Canonical {
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
    /// An accumulator with no element yet.
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

    /// Adds the elements of an LRANGE reply (`width` 1) or a ZRANGE … WITHSCORES one (`width`
    /// 2: member, score, the score compared as a double).
    pub fn add_items(&mut self, items: &[Vec<u8>], width: usize) {
        for element in items.chunks(width) {
            match element {
                [member, score] => self.add(&[member, &canonical_score(score)]),
                other => self.add(&other.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            }
        }
    }

    /// Adds the entries of an XRANGE reply: each entry's ID, then its field/value pairs.
    pub fn add_entries(&mut self, entries: &[(String, Vec<Vec<u8>>)]) {
        for (id, fields) in entries {
            let mut parts: Vec<&[u8]> = vec![id.as_bytes()];
            parts.extend(fields.iter().map(Vec::as_slice));
            self.add(&parts);
        }
    }

    /// The canonical form of a value of type `kind` with the elements added.
    pub fn finish(self, kind: &str) -> Canonical {
        let body = self.h.finalize();
        Canonical::Value {
            kind: kind.into(),
            count: self.count,
            digest: Some(finish(kind, self.count, &body)),
        }
    }
}

/// The canonical form of a string of `count` bytes whose SHA-256 is `body`.
pub(super) fn string_value(count: u64, body: &[u8]) -> Canonical {
    Canonical::Value {
        kind: "string".into(),
        count,
        digest: Some(finish("string", count, body)),
    }
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

/// The command that reads a whole small value of type `kind` in one reply (the pipelined path
/// for keys at most `big_key_bytes`). Only for the types [`has_whole_value`] accepts.
pub(super) fn whole_value_command(kind: &str, key: &[u8]) -> Cmd {
    match kind {
        "string" => command("GET", key),
        "list" => command("LRANGE", (key, 0, -1)),
        "hash" => command("HGETALL", key),
        "set" => command("SMEMBERS", key),
        "zset" => command("ZRANGE", (key, 0, -1, "WITHSCORES")),
        "stream" => command("XRANGE", (key, "-", "+")),
        other => unreachable!("no whole-value read for type {other}"),
    }
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
            Some(bytes) => string_value(bytes.len() as u64, &Sha256::digest(&bytes)),
        },
        "stream" => {
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::from_redis_value(reply)?;
            let mut acc = Ordered::new();
            acc.add_entries(&entries);
            acc.finish(kind)
        }
        _ => {
            let items: Vec<Vec<u8>> = redis::from_redis_value(reply)?;
            if items.is_empty() {
                // An empty list, hash, set or zset does not exist.
                return Ok(Canonical::Absent);
            }
            let width = if matches!(kind, "hash" | "zset") { 2 } else { 1 };
            if matches!(kind, "hash" | "set") {
                let mut acc = Unordered::default();
                acc.add_items(&items, width);
                acc.finish(kind)
            } else {
                let mut acc = Ordered::new();
                acc.add_items(&items, width);
                acc.finish(kind)
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
    fn scores_compare_as_doubles() {
        assert_eq!(canonical_score(b"3.14"), canonical_score(b"3.1400000000000001"));
        assert_eq!(canonical_score(b"inf"), canonical_score(b"inf"));
        assert_ne!(canonical_score(b"inf"), canonical_score(b"-inf"));
        assert_eq!(canonical_score(b"-0"), canonical_score(b"0"));
    }

    #[test]
    fn payload_types() {
        assert_eq!(payload_type(&[0, 1]), "string");
        assert_eq!(payload_type(&[16]), "hash");
        assert_eq!(payload_type(&[]), "unknown");
    }
}
