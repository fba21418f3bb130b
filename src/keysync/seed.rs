//! The seed: a snapshot read sent to the origin right behind a sync-mode write, on the write's
//! own connection, so the sync needs no read of its own (issue 10, "sync mirror at the
//! round-trip floor").
//!
//! Only a read made *inside the round's tenure* may be committed ([`super::lock`]): the mirror
//! uses a seed only when the key's lease was taken — its reply received — before the write was
//! sent, which the seed, behind the write, follows. Every seed carries the number of the lease
//! it belongs to, echoed back by the script, so a seed can never be paired with another lease.
//! Like the mirror's own read it diverts big keys: above the limit it returns the size, not a
//! `DUMP`.

use redis::{RedisResult, Value};

use super::Snapshot;

/// `ARGV[2]` (the lease's number), then `PTTL` and `DUMP` of `KEYS[1]`, unless its `MEMORY
/// USAGE` is above `ARGV[1]`: then `PTTL`, nil and the size.
const SEED_LUA: &str = "local n = redis.call('MEMORY', 'USAGE', KEYS[1]) \
if n and n > tonumber(ARGV[1]) then return {ARGV[2], redis.call('PTTL', KEYS[1]), false, n} end \
return {ARGV[2], redis.call('PTTL', KEYS[1]), redis.call('DUMP', KEYS[1])}";

/// [`SEED_LUA`] with its SHA-1 computed once.
static SEED: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SEED_LUA));

/// What a seed's reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// The snapshot, read for the lease numbered `id`.
    Read {
        /// The lease's number.
        id: u64,
        /// The key's value and TTL just after the write.
        snapshot: Snapshot,
    },
    /// The key is above the big-key limit: the sync copies it in chunks.
    Big,
    /// The origin does not have the script yet ([`load_command`] loads it).
    NoScript,
    /// Any other error: the sync reads for itself.
    Failed,
}

/// The `EVALSHA` that reads `key`'s seed for the lease numbered `id`, diverting keys above
/// `limit` bytes.
pub fn seed_command(key: &[u8], limit: u64, id: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SEED.get_hash()).arg(1).arg(key).arg(limit).arg(id);
    cmd
}

/// `SCRIPT LOAD` of the seed script.
pub fn load_command() -> redis::Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(SEED_LUA);
    cmd
}

/// Decodes the reply to [`seed_command`].
pub fn decode_seed(value: Value) -> Seed {
    match value.extract_error() {
        Ok(value) => decode_items(value).unwrap_or(Seed::Failed),
        Err(e) if e.code() == Some("NOSCRIPT") => Seed::NoScript,
        Err(_) => Seed::Failed,
    }
}

fn decode_items(value: Value) -> RedisResult<Seed> {
    let (id, pttl, dump, size): (String, i64, Option<Vec<u8>>, Option<u64>) = match value {
        Value::Array(items) if items.len() == 4 => redis::from_redis_value(Value::Array(items))?,
        Value::Array(mut items) if items.len() == 3 => {
            items.push(Value::Nil);
            redis::from_redis_value(Value::Array(items))?
        }
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "seed",
                format!("unexpected reply {other:?}"),
            )));
        }
    };
    if size.is_some() {
        return Ok(Seed::Big);
    }
    let id = id.parse().map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "seed",
            "lease number".to_string(),
        ))
    })?;
    Ok(Seed::Read {
        id,
        snapshot: Snapshot::from_replies(pttl, dump),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_its_lease_and_diverts_big_keys() {
        let read = Value::Array(vec![
            Value::BulkString(b"42".to_vec()),
            Value::Int(1500),
            Value::BulkString(b"payload".to_vec()),
        ]);
        assert_eq!(
            decode_seed(read),
            Seed::Read {
                id: 42,
                snapshot: Snapshot::Present {
                    ttl_ms: Some(1500),
                    payload: b"payload".to_vec()
                }
            }
        );
        let gone = Value::Array(vec![Value::BulkString(b"7".to_vec()), Value::Int(-2), Value::Nil]);
        assert_eq!(
            decode_seed(gone),
            Seed::Read {
                id: 7,
                snapshot: Snapshot::Absent
            }
        );
        let big = Value::Array(vec![
            Value::BulkString(b"7".to_vec()),
            Value::Int(-1),
            Value::Nil,
            Value::Int(300_000_000),
        ]);
        assert_eq!(decode_seed(big), Seed::Big);
        let noscript = redis::parse_redis_value(b"-NOSCRIPT No matching script.\r\n").unwrap();
        assert_eq!(decode_seed(noscript), Seed::NoScript);
        let other = redis::parse_redis_value(b"-ERR boom\r\n").unwrap();
        assert_eq!(decode_seed(other), Seed::Failed);
        assert_eq!(decode_seed(Value::Int(3)), Seed::Failed);
    }
}
