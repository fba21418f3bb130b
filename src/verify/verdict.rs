//! What one look at a key found, and the rules that decide it from the replies of both sides:
//! existence, TTL within the tolerance, and equal canonical forms.

use redis::{Cmd, RedisResult, Value};

use super::digest::Canonical;
use super::side::{command, take};
use super::{INLINE_STRING, Kind, TTL_TOLERANCE_MS};

/// What one check found about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Equal (or, target→source, present on the source).
    Same,
    /// The key this pass starts from no longer exists: nothing to compare.
    Gone,
    /// A difference.
    Differs {
        kind: Kind,
        details: String,
        /// `MEMORY USAGE` on the source, when known (big keys are repaired in chunks).
        source_size: Option<u64>,
    },
}

impl Verdict {
    pub(super) fn differs(kind: Kind, details: impl Into<String>, source_size: Option<u64>) -> Verdict {
        Verdict::Differs {
            kind,
            details: details.into(),
            source_size,
        }
    }
}

/// A key's existence, TTL and size on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meta {
    Absent,
    Present { ttl_ms: Option<u64>, size: u64 },
}

impl Meta {
    /// From the replies to `PTTL k`, `MEMORY USAGE k` and `GETRANGE k 0 …` (see [`meta_cmds`]);
    /// also returns the string's first bytes when the key is a string.
    pub(super) fn decode(replies: RedisResult<Vec<Value>>) -> RedisResult<(Meta, Option<Vec<u8>>)> {
        let replies = replies?;
        let [pttl, size, prefix] = <[Value; 3]>::try_from(replies).map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "expected PTTL, MEMORY USAGE and GETRANGE",
            ))
        })?;
        let pttl: i64 = take(pttl)?;
        let size: Option<u64> = take(size)?;
        // WRONGTYPE (not a string) is expected here.
        let prefix: Option<Vec<u8>> = take(prefix).ok();
        let meta = match (pttl, size) {
            (_, None) => Meta::Absent,
            (-1, Some(size)) => Meta::Present { ttl_ms: None, size },
            (t, Some(size)) if t >= 0 => Meta::Present {
                ttl_ms: Some(t as u64),
                size,
            },
            _ => Meta::Absent,
        };
        Ok((meta, prefix))
    }

    pub(super) fn size(self) -> Option<u64> {
        match self {
            Meta::Absent => None,
            Meta::Present { size, .. } => Some(size),
        }
    }

    pub(super) fn ttl(self) -> Option<u64> {
        match self {
            Meta::Absent => None,
            Meta::Present { ttl_ms, .. } => ttl_ms,
        }
    }
}

/// The TTL difference between two present keys, if beyond the tolerance: no expiry versus an
/// expiry always is; otherwise `|src − dst| > max(1000 ms, 1% of the larger)`.
pub fn ttl_difference(source: Option<u64>, target: Option<u64>) -> Option<String> {
    match (source, target) {
        (None, None) => None,
        (Some(s), None) => Some(format!("source expires in {s} ms, target never expires")),
        (None, Some(t)) => Some(format!("source never expires, target expires in {t} ms")),
        (Some(s), Some(t)) => {
            let tolerance = TTL_TOLERANCE_MS.max(s.max(t) / 100);
            (s.abs_diff(t) > tolerance)
                .then(|| format!("source ttl {s} ms, target ttl {t} ms (tolerance {tolerance} ms)"))
        }
    }
}

/// The first round of the source → target comparison, per key: TTL, size, and the first
/// bytes of the value when it is a string (WRONGTYPE otherwise, which costs next to nothing).
pub(super) fn meta_cmds(k: &[u8]) -> [Cmd; 3] {
    [
        command("PTTL", k),
        command("MEMORY", ("USAGE", k)),
        command("GETRANGE", (k, 0, INLINE_STRING - 1)),
    ]
}

/// The first reply of a key's replies, converted.
pub(super) fn first<T: redis::FromRedisValue>(replies: Vec<Value>) -> RedisResult<T> {
    take(replies.into_iter().next().unwrap_or_default())
}

/// The verdict on two present keys with equal values: a TTL difference or none.
pub(super) fn ttl_verdict(source: Meta, target: Meta) -> Verdict {
    match ttl_difference(source.ttl(), target.ttl()) {
        Some(details) => Verdict::differs(Kind::Ttl, details, source.size()),
        None => Verdict::Same,
    }
}

/// The verdict on the canonical forms read from both sides (or the errors that stopped them).
pub(super) fn canonical_pair_verdict(
    a: RedisResult<Canonical>,
    b: RedisResult<Canonical>,
    ms: Meta,
    md: Meta,
) -> Verdict {
    match (a, b) {
        (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
        (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
        (Ok(Canonical::Absent), _) => Verdict::Gone,
        (Ok(_), Ok(Canonical::Absent)) => Verdict::differs(Kind::Missing, "not in target", ms.size()),
        (Ok(a), Ok(b)) => canonical_verdict(&a, &b, ms, md),
    }
}

/// The verdict on two canonical forms of present keys.
pub(super) fn canonical_verdict(a: &Canonical, b: &Canonical, ms: Meta, md: Meta) -> Verdict {
    let (
        Canonical::Value {
            kind: ka, digest: da, ..
        },
        Canonical::Value {
            kind: kb, digest: db, ..
        },
    ) = (a, b)
    else {
        return Verdict::Gone;
    };
    if ka != kb {
        return Verdict::differs(Kind::Type, format!("source {ka}, target {kb}"), ms.size());
    }
    match (da, db) {
        (Some(x), Some(y)) if x == y => ttl_verdict(ms, md),
        (Some(_), Some(_)) => Verdict::differs(
            Kind::Value,
            format!(
                "source {}, target {}: contents differ",
                a.describe(),
                b.describe()
            ),
            ms.size(),
        ),
        _ => Verdict::differs(
            Kind::Value,
            format!("{ka}: DUMP payloads differ and the type has no canonical form"),
            ms.size(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_tolerance() {
        assert_eq!(ttl_difference(None, None), None);
        assert!(
            ttl_difference(Some(5_000), None)
                .unwrap()
                .contains("never expires")
        );
        assert!(ttl_difference(None, Some(5_000)).is_some());
        assert_eq!(ttl_difference(Some(5_000), Some(4_100)), None, "within 1000 ms");
        assert!(ttl_difference(Some(5_000), Some(3_900)).is_some());
        assert_eq!(
            ttl_difference(Some(1_000_000), Some(991_000)),
            None,
            "within 1% of a long TTL"
        );
        assert!(ttl_difference(Some(1_000_000), Some(980_000)).is_some());
    }

    #[test]
    fn meta_decodes_pttl_memory_usage_and_prefix() {
        let wrongtype = || redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let ok = |p: i64, m: Value, prefix: Value| Meta::decode(Ok(vec![Value::Int(p), m, prefix])).unwrap();
        let empty = || Value::BulkString(Vec::new());
        assert_eq!(ok(-2, Value::Nil, empty()).0, Meta::Absent);
        assert_eq!(
            ok(-1, Value::Int(56), Value::BulkString(b"abc".to_vec())),
            (
                Meta::Present {
                    ttl_ms: None,
                    size: 56
                },
                Some(b"abc".to_vec())
            )
        );
        assert_eq!(
            ok(1500, Value::Int(56), wrongtype()),
            (
                Meta::Present {
                    ttl_ms: Some(1500),
                    size: 56
                },
                None
            ),
            "not a string"
        );
        assert_eq!(
            ok(-2, Value::Int(56), empty()).0,
            Meta::Absent,
            "expired between the replies"
        );
        assert!(Meta::decode(Ok(vec![Value::Int(1)])).is_err());
        assert!(Meta::decode(Ok(vec![wrongtype(), Value::Int(1), empty()])).is_err());
    }

    #[test]
    fn canonical_verdicts() {
        let present = Meta::Present {
            ttl_ms: None,
            size: 10,
        };
        let v = |kind: &str, d: u8| Canonical::Value {
            kind: kind.into(),
            count: 1,
            digest: Some([d; 16]),
        };
        assert_eq!(
            canonical_verdict(&v("hash", 1), &v("hash", 1), present, present),
            Verdict::Same
        );
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("set", 1), present, present),
            Verdict::Differs { kind: Kind::Type, .. }
        ));
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("hash", 2), present, present),
            Verdict::Differs {
                kind: Kind::Value,
                ..
            }
        ));
        let expiring = Meta::Present {
            ttl_ms: Some(60_000),
            size: 10,
        };
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("hash", 1), present, expiring),
            Verdict::Differs { kind: Kind::Ttl, .. }
        ));
    }
}
