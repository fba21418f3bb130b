//! The lock scripts (`LOOK`, `COMMIT`, `RENEW`) and the decoding of their replies.

use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::{Acquire, Baseline, Commit};

/// `KEYS[1]` lock, `KEYS[2]` record; `ARGV`: token, lease ms, gc ms, baseline epoch, landings,
/// holder ("" when none). Replies `{1}` acquired, `{2}` covered, `{0, epoch, landings, holder}`
/// busy.
const LOOK_LUA: &str = r#"
local h = redis.call('GET', KEYS[1])
local c = redis.call('HMGET', KEYS[2], 'n', 'l', 'e')
local n, l, e = tonumber(c[1]) or 0, c[2] or '', c[3]
if e and e == ARGV[4] then
  local b = tonumber(ARGV[5])
  if n >= b + 2 or (n == b + 1 and l ~= ARGV[6]) then return {2} end
end
if not h then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
if not e then
  e, n = ARGV[1], 0
  redis.call('HSET', KEYS[2], 'n', 0, 'e', e)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {0, e, n, h}
"#;

/// `KEYS[1]` lock, `KEYS[2]` record, `KEYS[3]` the key, `KEYS[4]` (mode `m` only) the temporary
/// key of a chunked copy; `ARGV`: token, mode (`r` RESTORE, `d` DEL, `m` RENAME the temporary
/// key onto the key, `x` release only), ttl ms, payload. Replies `{1}` landed (or released),
/// `{0}` lost without a record, `{0, epoch, landings, holder}` lost; a RESTORE or RENAME error
/// is returned as the error, after releasing without a landing.
const COMMIT_LUA: &str = r#"
local h = redis.call('GET', KEYS[1])
if h ~= ARGV[1] then
  local c = redis.call('HMGET', KEYS[2], 'n', 'e')
  if not c[2] then return {0} end
  return {0, c[2], tonumber(c[1]) or 0, h or ''}
end
if ARGV[2] == 'd' then
  redis.call('DEL', KEYS[3])
elseif ARGV[2] == 'r' then
  local r = redis.pcall('RESTORE', KEYS[3], ARGV[3], ARGV[4], 'REPLACE')
  if type(r) == 'table' and r.err then
    redis.call('DEL', KEYS[1])
    return r
  end
elseif ARGV[2] == 'm' then
  local r = redis.pcall('RENAME', KEYS[4], KEYS[3])
  if type(r) == 'table' and r.err then
    redis.call('DEL', KEYS[1])
    return r
  end
  if tonumber(ARGV[3]) > 0 then
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  else
    redis.call('PERSIST', KEYS[3])
  end
end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= 'x' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('HSET', KEYS[2], 'l', ARGV[1])
end
return {1}
"#;

/// `KEYS[1]` lock; `ARGV`: token, lease ms. Replies 1 renewed, 0 lost.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// A script with its SHA-1 computed once.
pub(super) struct Lua {
    pub(super) body: &'static str,
    pub(super) sha: String,
}

impl Lua {
    fn new(body: &'static str) -> Lua {
        let sha = redis::Script::new(body).get_hash().to_string();
        Lua { body, sha }
    }
}

pub(super) static LOOK: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(LOOK_LUA));
pub(super) static COMMIT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(COMMIT_LUA));
pub(super) static RENEW: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(RENEW_LUA));

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        _ => Vec::new(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => String::from_utf8(bytes(other))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    }
}

fn malformed(what: &str, v: &Value) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "key-sync lock script",
        format!("{what}: unexpected reply {v:?}"),
    ))
}

fn baseline(items: &[Value]) -> Option<Baseline> {
    (items.len() >= 4).then(|| Baseline {
        epoch: bytes(&items[1]),
        landed: int(&items[2]),
        holder: bytes(&items[3]),
    })
}

pub(super) fn decode_acquire(v: Value) -> RedisResult<Acquire> {
    let Value::Array(items) = &v else {
        return Err(malformed("acquire", &v));
    };
    match items.first().map(int) {
        Some(1) => Ok(Acquire::Acquired),
        Some(2) => Ok(Acquire::Covered),
        Some(0) => baseline(items)
            .map(Acquire::Busy)
            .ok_or_else(|| malformed("acquire", &v)),
        _ => Err(malformed("acquire", &v)),
    }
}

pub(super) fn decode_commit(v: Value) -> RedisResult<Commit> {
    let Value::Array(items) = &v else {
        return Err(malformed("commit", &v));
    };
    match items.first().map(int) {
        Some(1) => Ok(Commit::Landed),
        Some(0) => Ok(Commit::Lost(baseline(items))),
        _ => Err(malformed("commit", &v)),
    }
}
