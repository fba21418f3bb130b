//! The one-trip read of a batch (issue 10): one `EVALSHA` per key that sizes the key and, when it
//! is small, returns its `PTTL` and `DUMP` in the same atomic call. A larger key comes back as its
//! size only, so its payload never travels in this pipeline; the caller reads it later under the
//! byte budget, or in chunks when it is above `big_key_bytes`.
//!
//! Before, each batch was one pipeline of `MEMORY USAGE` and then one of snapshot reads: two
//! round trips to the source, where one suffices for the keys a cache mostly holds. The memory
//! bound stays exact: a pipeline of at most [`PIPELINE_KEYS`] keys brings at most
//! [`INLINE_BYTES`] of payload per key, checked on the payload's real length in the script, not
//! only on `MEMORY USAGE` (an estimate for large collections).

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use crate::keysync::{self, ScriptSupport, Snapshot};

/// Largest payload one key may bring back in the one-trip read.
pub const INLINE_BYTES: u64 = 4 * 1024;

/// Keys per one-trip pipeline: at most `PIPELINE_KEYS * INLINE_BYTES` = 4 MiB of payload, which
/// the caller reserves from the byte budget before sending. The default `scan_count` (1000) is
/// one pipeline.
pub const PIPELINE_KEYS: usize = 1024;

/// `KEYS[1]`'s size when its `MEMORY USAGE`, or its `DUMP` payload, is above `ARGV[1]` bytes;
/// else `{PTTL, DUMP}` read together. `MEMORY USAGE` comes first so that a big key is never
/// serialized at all; the payload check makes the bound hard where the usage is a sampled
/// estimate. A missing key has no usage and reads as `{-2, nil}`.
const SIZED_LUA: &str = "local limit = tonumber(ARGV[1]) \
local n = redis.call('MEMORY', 'USAGE', KEYS[1]) \
if n and n > limit then return n end \
local t = redis.call('PTTL', KEYS[1]) \
local d = redis.call('DUMP', KEYS[1]) \
if d and #d > limit then return #d end \
return {t, d}";

/// [`SIZED_LUA`] with its SHA-1 computed once.
static SIZED: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SIZED_LUA));

/// What the one-trip read found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A small key's snapshot (or its absence), read atomically.
    Inline(Snapshot),
    /// A key above [`INLINE_BYTES`]: its `MEMORY USAGE` (or payload length), nothing read.
    Sized(u64),
}

/// Reads `keys` (at most [`PIPELINE_KEYS`]) in one pipeline of [`SIZED_LUA`] calls; `None` when
/// the source refuses scripts (the caller then sizes with `MEMORY USAGE` and reads with
/// MULTI/EXEC, as before).
pub async fn read_batch(
    source: &MultiplexedConnection,
    keys: &[Vec<u8>],
    scripts: &ScriptSupport,
) -> RedisResult<Option<Vec<Read>>> {
    let calls = keys
        .iter()
        .map(|key| {
            let mut call = redis::cmd("EVALSHA");
            call.arg(SIZED.get_hash())
                .arg(1)
                .arg(key.as_slice())
                .arg(INLINE_BYTES);
            call
        })
        .collect();
    let Some(replies) = keysync::run_script(source, SIZED_LUA, calls, scripts).await? else {
        return Ok(None);
    };
    replies
        .into_iter()
        .map(decode)
        .collect::<RedisResult<_>>()
        .map(Some)
}

/// Decodes one [`SIZED_LUA`] reply: an integer is a size, an array a snapshot.
fn decode(value: Value) -> RedisResult<Read> {
    match value.extract_error()? {
        Value::Int(size) => Ok(Read::Sized(size.max(0) as u64)),
        other => keysync::decode_snapshot(other).map(Read::Inline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_reply_is_a_size_and_an_array_a_snapshot() {
        assert_eq!(decode(Value::Int(9_000)).unwrap(), Read::Sized(9_000));
        let small = Value::Array(vec![Value::Int(1500), Value::BulkString(b"payload".to_vec())]);
        assert_eq!(
            decode(small).unwrap(),
            Read::Inline(Snapshot::Present {
                ttl_ms: Some(1500),
                payload: b"payload".to_vec()
            })
        );
        let gone = Value::Array(vec![Value::Int(-2), Value::Nil]);
        assert_eq!(decode(gone).unwrap(), Read::Inline(Snapshot::Absent));
    }

    #[test]
    fn a_pipeline_of_inline_reads_fits_the_sub_batch_bound() {
        assert_eq!(PIPELINE_KEYS as u64 * INLINE_BYTES, 4 * 1024 * 1024);
    }
}
