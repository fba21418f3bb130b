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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use super::{ScriptSupport, Snapshot, refuses_scripts};

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

/// A contention record as read for a `WATCH` transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waits {
    /// `n`: landings since the record was made.
    pub landed: i64,
    /// `l`: the last lander's token.
    pub last: Vec<u8>,
    /// `e`: the epoch (the creator's token).
    pub epoch: Vec<u8>,
}

/// What a look at a busy or free lease does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// Acquired, covered or busy.
    pub outcome: Acquire,
    /// Busy and no record yet: make one (epoch = this token, no landings).
    pub create_record: bool,
}

/// The look rule (also the script's), for the `WATCH` path: `holder` is the lock's value,
/// `waits` the record, `base` what this sync saw when it last found the lease busy.
pub fn decide_look(
    holder: Option<&[u8]>,
    waits: Option<&Waits>,
    token: &[u8],
    base: Option<&Baseline>,
) -> Look {
    if let (Some(w), Some(b)) = (waits, base)
        && w.epoch == b.epoch
        && (w.landed >= b.landed + 2 || (w.landed == b.landed + 1 && w.last != b.holder))
    {
        return Look {
            outcome: Acquire::Covered,
            create_record: false,
        };
    }
    let Some(holder) = holder else {
        return Look {
            outcome: Acquire::Acquired,
            create_record: false,
        };
    };
    let (epoch, landed) = match waits {
        Some(w) => (w.epoch.clone(), w.landed),
        None => (token.to_vec(), 0),
    };
    Look {
        outcome: Acquire::Busy(Baseline {
            epoch,
            landed,
            holder: holder.to_vec(),
        }),
        create_record: waits.is_none(),
    }
}

/// The commit rule, for the `WATCH` path: `Err(what we saw)` when the lease is not `token`'s;
/// `Ok(count)` when it lands, `count` telling whether a record exists to count the landing in.
pub fn decide_commit(
    holder: Option<&[u8]>,
    waits: Option<&Waits>,
    token: &[u8],
) -> Result<bool, Option<Baseline>> {
    if holder == Some(token) {
        return Ok(waits.is_some());
    }
    Err(waits.map(|w| Baseline {
        epoch: w.epoch.clone(),
        landed: w.landed,
        holder: holder.unwrap_or_default().to_vec(),
    }))
}

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
struct Lua {
    body: &'static str,
    sha: String,
}

impl Lua {
    fn new(body: &'static str) -> Lua {
        let sha = redis::Script::new(body).get_hash().to_string();
        Lua { body, sha }
    }
}

static LOOK: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(LOOK_LUA));
static COMMIT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(COMMIT_LUA));
static RENEW: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(RENEW_LUA));

/// Opens a connection of the sync's own to the destination node serving a key: `WATCH` state
/// cannot live on a shared connection, nor on one that reconnects by itself (a `MULTI … EXEC`
/// sent after a silent reconnect would run unwatched). Only used when the destination refuses
/// scripts.
pub trait Exclusive: Send + Sync {
    /// A connection nobody else uses to the node that serves `key` (a fresh one, or one given
    /// back by [`Exclusive::recycle`]).
    fn open<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>>;

    /// Takes back a connection `open(key)` gave, with no `WATCH` pending, for another sync.
    fn recycle(&self, _key: &[u8], _conn: MultiplexedConnection) {}
}

/// Idle connections of [`Exclusive`] implementations, per node.
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<MultiplexedConnection>>>,
}

impl Pool {
    /// Most idle connections kept per node.
    const KEEP: usize = 8;

    /// An idle connection to `node`, if any.
    pub fn take(&self, node: &str) -> Option<MultiplexedConnection> {
        self.idle.lock().expect("pool").get_mut(node)?.pop()
    }

    /// Keeps `conn` to `node` for later (or drops it when enough are idle).
    pub fn give(&self, node: &str, conn: MultiplexedConnection) {
        let mut idle = self.idle.lock().expect("pool");
        let list = idle.entry(node.to_string()).or_default();
        if list.len() < Self::KEEP {
            list.push(conn);
        }
    }
}

/// For callers that cannot open connections of their own: a destination that refuses scripts
/// then fails the sync with a clear error.
pub struct NoExclusive;

impl Exclusive for NoExclusive {
    fn open<'a>(&'a self, _key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async {
            Err(RedisError::from((
                ErrorKind::Client,
                "the destination refuses scripts",
                "and this caller has no connection of its own for WATCH".to_string(),
            )))
        })
    }
}

/// A standalone destination: every key is on the node at `url`.
pub struct NodeExclusive {
    url: url::Url,
    password: Option<String>,
    pool: Pool,
}

impl NodeExclusive {
    /// The node at `url`, with `password` if any (overrides one in the URL).
    pub fn new(url: url::Url, password: Option<String>) -> NodeExclusive {
        NodeExclusive {
            url,
            password,
            pool: Pool::default(),
        }
    }
}

impl Exclusive for NodeExclusive {
    fn open<'a>(&'a self, _key: &'a [u8]) -> BoxFuture<'a, RedisResult<MultiplexedConnection>> {
        Box::pin(async move {
            if let Some(conn) = self.pool.take("") {
                return Ok(conn);
            }
            crate::endpoint::connect_node(&self.url, self.password.as_deref(), None)
                .await
                .map_err(|e| RedisError::from((ErrorKind::Io, "connecting for WATCH", e.to_string())))
        })
    }

    fn recycle(&self, _key: &[u8], conn: MultiplexedConnection) {
        self.pool.give("", conn);
    }
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

/// One sync's conversation with the destination about one key's lock: scripts on the shared
/// connection, or `WATCH` transactions on a connection of its own once scripts are refused.
pub struct Session<'a, D> {
    dest: &'a mut D,
    exclusive: &'a dyn Exclusive,
    scripts: &'a ScriptSupport,
    lease: Duration,
    lock: Vec<u8>,
    waits: Vec<u8>,
    key: &'a [u8],
    watch: Option<MultiplexedConnection>,
    /// No `WATCH` is pending on `watch` (it may be given back).
    clean: bool,
}

impl<D> Drop for Session<'_, D> {
    fn drop(&mut self) {
        if let Some(conn) = self.watch.take().filter(|_| self.clean) {
            self.exclusive.recycle(self.key, conn);
        }
    }
}

impl<'a, D: ConnectionLike + Send> Session<'a, D> {
    /// About `key`'s lock on `dest`, taking leases of `lease`; `scripts` says (and learns)
    /// whether `dest` runs the lock scripts, `exclusive` opens connections for `WATCH` when not.
    pub fn new(
        dest: &'a mut D,
        exclusive: &'a dyn Exclusive,
        scripts: &'a ScriptSupport,
        lease: Duration,
        key: &'a [u8],
    ) -> Self {
        Session {
            dest,
            exclusive,
            scripts,
            lease,
            lock: lock_key(key),
            waits: wait_key(key),
            key,
            watch: None,
            clean: true,
        }
    }

    /// A handle of its own on the destination (for the chunks of a big key's copy, which run
    /// while this session renews the lease).
    pub fn dest_handle(&self) -> D
    where
        D: Clone,
    {
        D::clone(self.dest)
    }

    /// Whether this session talks `WATCH` (the destination refused scripts).
    fn watching(&self) -> bool {
        self.watch.is_some() || self.scripts.refused()
    }

    /// Runs `lua` on the shared connection: `Ok(None)` when the destination refuses scripts
    /// (noted for the whole run), so the caller uses `WATCH`.
    async fn script(&mut self, lua: &Lua, keys: &[&[u8]], args: &[&[u8]]) -> RedisResult<Option<Value>> {
        if self.watching() {
            return Ok(None);
        }
        let build = |name: &str, script: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(script).arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(*a);
            }
            cmd
        };
        let reply = match build("EVALSHA", &lua.sha).query_async::<Value>(self.dest).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                build("EVAL", lua.body).query_async::<Value>(self.dest).await
            }
            other => other,
        };
        match reply {
            Ok(v) => Ok(Some(v)),
            Err(e) if refuses_scripts(&e) => {
                tracing::warn!("the destination refuses the key-sync lock scripts ({e}); using WATCH/MULTI");
                self.scripts.refuse();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn conn(&mut self) -> RedisResult<&mut MultiplexedConnection> {
        if self.watch.is_none() {
            self.watch = Some(self.exclusive.open(self.key).await?);
        }
        Ok(self.watch.as_mut().expect("just opened"))
    }

    /// `WATCH` the lock and the record and read them (the connection is not clean until EXEC
    /// or UNWATCH).
    async fn watch_read(&mut self) -> RedisResult<(Option<Vec<u8>>, Option<Waits>)> {
        let (lock, waits) = (self.lock.clone(), self.waits.clone());
        self.clean = false;
        let conn = self.conn().await?;
        redis::cmd("WATCH")
            .arg(&lock)
            .arg(&waits)
            .query_async::<()>(&mut *conn)
            .await?;
        let (holder, fields): (Option<Vec<u8>>, Vec<Option<Vec<u8>>>) = redis::pipe()
            .cmd("GET")
            .arg(&lock)
            .cmd("HMGET")
            .arg(&waits)
            .arg(&["n", "l", "e"])
            .query_async(conn)
            .await?;
        let field = |i: usize| fields.get(i).cloned().flatten();
        let record = field(2).map(|epoch| Waits {
            landed: field(0)
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            last: field(1).unwrap_or_default(),
            epoch,
        });
        Ok((holder, record))
    }

    /// `UNWATCH`.
    async fn unwatch(&mut self) -> RedisResult<()> {
        redis::cmd("UNWATCH")
            .query_async::<()>(self.conn().await?)
            .await?;
        self.clean = true;
        Ok(())
    }

    /// `MULTI`, `cmds`, `EXEC` (see [`exec_on`]).
    async fn exec(&mut self, cmds: Vec<Cmd>) -> RedisResult<Option<Vec<Value>>> {
        let replies = exec_on(self.conn().await?, cmds).await?;
        self.clean = true;
        Ok(replies)
    }

    /// `SET lock token NX PX lease`: whether the lease is now `token`'s. A plain command, so it
    /// works whether or not the destination runs scripts.
    pub async fn try_take(&mut self, token: &[u8]) -> RedisResult<bool> {
        let mut set = redis::cmd("SET");
        set.arg(&self.lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(self.lease.as_millis() as u64);
        let reply: Option<String> = set.query_async(self.dest).await?;
        Ok(reply.is_some())
    }

    /// Tries to take the lease with `token`; `base` is what this sync saw when it last found
    /// the lease busy. Without a baseline, a plain `SET … NX` first.
    pub async fn acquire(&mut self, token: &[u8], base: Option<&Baseline>) -> RedisResult<Acquire> {
        if base.is_none() && self.try_take(token).await? {
            return Ok(Acquire::Acquired);
        }
        let lease = self.lease.as_millis().to_string();
        let gc = GC.as_millis().to_string();
        let (e, n, h) = match base {
            Some(b) => (
                b.epoch.clone(),
                b.landed.to_string().into_bytes(),
                b.holder.clone(),
            ),
            None => (Vec::new(), b"0".to_vec(), Vec::new()),
        };
        let (lock, waits) = (self.lock.clone(), self.waits.clone());
        let args: [&[u8]; 6] = [token, lease.as_bytes(), gc.as_bytes(), &e, &n, &h];
        if let Some(v) = self.script(&LOOK, &[&lock, &waits], &args).await? {
            return decode_acquire(v);
        }
        loop {
            let (holder, record) = self.watch_read().await?;
            let look = decide_look(holder.as_deref(), record.as_ref(), token, base);
            let cmds = match &look.outcome {
                Acquire::Covered => {
                    self.unwatch().await?;
                    return Ok(look.outcome);
                }
                Acquire::Acquired => {
                    let mut set = redis::cmd("SET");
                    set.arg(&lock)
                        .arg(token)
                        .arg("PX")
                        .arg(self.lease.as_millis() as u64);
                    vec![set]
                }
                Acquire::Busy(_) => {
                    let mut cmds = Vec::new();
                    if look.create_record {
                        let mut hset = redis::cmd("HSET");
                        hset.arg(&waits).arg("n").arg(0).arg("e").arg(token);
                        cmds.push(hset);
                    }
                    cmds.push(pexpire(&waits, GC));
                    cmds
                }
            };
            if self.exec(cmds).await?.is_some() {
                return Ok(look.outcome);
            }
        }
    }

    /// Writes `snapshot` if the lease is still `token`'s, releasing it; `None` only releases.
    pub async fn commit(&mut self, token: &[u8], snapshot: Option<&Snapshot>) -> RedisResult<Commit> {
        let write = match snapshot {
            None => Write::Release,
            Some(s) => Write::Snapshot(s),
        };
        self.commit_write(token, write).await
    }

    /// Renames `temp` (a chunked copy of the key, in its slot) onto the key with `ttl_ms` (0: no
    /// expiry) if the lease is still `token`'s, releasing it. When lost, `temp` is left to the
    /// caller.
    pub async fn commit_move(&mut self, token: &[u8], temp: &[u8], ttl_ms: u64) -> RedisResult<Commit> {
        self.commit_write(token, Write::Move { temp, ttl_ms }).await
    }

    async fn commit_write(&mut self, token: &[u8], write: Write<'_>) -> RedisResult<Commit> {
        let (mode, ttl, payload): (&[u8], u64, &[u8]) = match &write {
            Write::Release => (b"x", 0, b""),
            Write::Snapshot(Snapshot::Absent) => (b"d", 0, b""),
            Write::Snapshot(Snapshot::Present { ttl_ms, payload }) => (b"r", ttl_ms.unwrap_or(0), payload),
            Write::Move { ttl_ms, .. } => (b"m", *ttl_ms, b""),
        };
        let ttl = ttl.to_string().into_bytes();
        let (lock, waits, key) = (self.lock.clone(), self.waits.clone(), self.key);
        let args: [&[u8]; 4] = [token, mode, &ttl, payload];
        let keys: Vec<&[u8]> = match &write {
            Write::Move { temp, .. } => vec![&lock, &waits, key, temp],
            _ => vec![&lock, &waits, key],
        };
        if let Some(v) = self.script(&COMMIT, &keys, &args).await? {
            return decode_commit(v);
        }
        let writes = !matches!(write, Write::Release);
        loop {
            let (holder, record) = self.watch_read().await?;
            let count = match decide_commit(holder.as_deref(), record.as_ref(), token) {
                Err(seen) => {
                    self.unwatch().await?;
                    return Ok(Commit::Lost(seen));
                }
                Ok(count) => count && writes,
            };
            let mut cmds = write_commands(key, &write);
            let mut del = redis::cmd("DEL");
            del.arg(&lock);
            cmds.push(del);
            if count {
                let mut incr = redis::cmd("HINCRBY");
                incr.arg(&waits).arg("n").arg(1);
                let mut last = redis::cmd("HSET");
                last.arg(&waits).arg("l").arg(token);
                cmds.extend([incr, last]);
            }
            let Some(replies) = self.exec(cmds).await? else {
                continue; // the lock or the record changed between the read and EXEC: look again
            };
            // A RESTORE or RENAME refused inside the transaction (a payload this server cannot
            // read) did not write the key, although the record now counts a landing.
            if let Some(Value::ServerError(e)) = replies.first().filter(|_| writes) {
                return Err(RedisError::from(e.clone()));
            }
            return Ok(Commit::Landed);
        }
    }

    /// Extends the lease if it is still `token`'s; `false` when it was lost.
    pub async fn renew(&mut self, token: &[u8]) -> RedisResult<bool> {
        let lease = self.lease.as_millis().to_string();
        let lock = self.lock.clone();
        if let Some(v) = self.script(&RENEW, &[&lock], &[token, lease.as_bytes()]).await? {
            return Ok(redis::from_redis_value::<i64>(v)? == 1);
        }
        loop {
            let (holder, _) = self.watch_read().await?;
            if holder.as_deref() != Some(token) {
                self.unwatch().await?;
                return Ok(false);
            }
            if self.exec(vec![pexpire(&lock, self.lease)]).await?.is_some() {
                return Ok(true);
            }
        }
    }
}

/// What a commit writes on the key while the lease is still ours.
enum Write<'s> {
    /// Nothing: only release the lease.
    Release,
    /// The snapshot: `RESTORE … REPLACE`, or `DEL` when absent.
    Snapshot(&'s Snapshot),
    /// A chunked copy: `RENAME` the temporary key onto the key, then its TTL.
    Move {
        /// The temporary key, in the key's slot.
        temp: &'s [u8],
        /// The TTL to set (0: none).
        ttl_ms: u64,
    },
}

/// The commands of `write` on `key`, for a `MULTI … EXEC` commit.
fn write_commands(key: &[u8], write: &Write<'_>) -> Vec<Cmd> {
    match write {
        Write::Release => Vec::new(),
        Write::Snapshot(s) => vec![super::write_command(key, s, true)],
        Write::Move { temp, ttl_ms } => {
            let mut rename = redis::cmd("RENAME");
            rename.arg(*temp).arg(key);
            let expiry = if *ttl_ms > 0 {
                pexpire(key, Duration::from_millis(*ttl_ms))
            } else {
                let mut persist = redis::cmd("PERSIST");
                persist.arg(key);
                persist
            };
            vec![rename, expiry]
        }
    }
}

fn pexpire(key: &[u8], after: Duration) -> Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(after.as_millis() as u64);
    cmd
}

/// `MULTI`, `cmds`, `EXEC`: `None` when a watched key changed (nothing ran), else each reply
/// (errors in place).
async fn exec_on(conn: &mut MultiplexedConnection, cmds: Vec<Cmd>) -> RedisResult<Option<Vec<Value>>> {
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors();
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    match pipe.query_async::<Value>(conn).await? {
        Value::Nil => Ok(None),
        Value::Array(replies) => Ok(Some(replies)),
        other => Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "EXEC",
            format!("unexpected reply {other:?}"),
        ))),
    }
}

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

fn decode_acquire(v: Value) -> RedisResult<Acquire> {
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

fn decode_commit(v: Value) -> RedisResult<Commit> {
    let Value::Array(items) = &v else {
        return Err(malformed("commit", &v));
    };
    match items.first().map(int) {
        Some(1) => Ok(Commit::Landed),
        Some(0) => Ok(Commit::Lost(baseline(items))),
        _ => Err(malformed("commit", &v)),
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

    fn waits(landed: i64, last: &str) -> Waits {
        Waits {
            landed,
            last: last.into(),
            epoch: b"E".to_vec(),
        }
    }

    fn base(landed: i64, holder: &str) -> Baseline {
        Baseline {
            epoch: b"E".to_vec(),
            landed,
            holder: holder.into(),
        }
    }

    fn outcome(holder: Option<&str>, w: Option<&Waits>, b: Option<&Baseline>) -> Acquire {
        decide_look(holder.map(str::as_bytes), w, b"t9", b).outcome
    }

    #[test]
    fn a_look_takes_a_free_lease_and_notes_a_held_one() {
        assert_eq!(outcome(None, None, None), Acquire::Acquired);
        assert_eq!(outcome(None, Some(&waits(3, "t0")), None), Acquire::Acquired);
        // Held, no record yet: one is made, with this sync's token as the epoch.
        let look = decide_look(Some(b"t0"), None, b"t9", None);
        assert!(look.create_record);
        assert_eq!(
            look.outcome,
            Acquire::Busy(Baseline {
                epoch: b"t9".to_vec(),
                landed: 0,
                holder: b"t0".to_vec()
            })
        );
        let look = decide_look(Some(b"t0"), Some(&waits(3, "x")), b"t9", None);
        assert!(!look.create_record);
        assert_eq!(look.outcome, Acquire::Busy(base(3, "t0")));
    }

    #[test]
    fn a_waiter_is_covered_only_by_a_round_that_started_after_it_looked() {
        // It saw t0 holding after 3 landings.
        let seen = base(3, "t0");
        // t0 landed (4th): t0 may have read before the waiter's write. Not covered; free → take.
        assert_eq!(
            outcome(None, Some(&waits(4, "t0")), Some(&seen)),
            Acquire::Acquired
        );
        // t0 lost its lease and t1, which took it later, landed: covered.
        assert_eq!(
            outcome(None, Some(&waits(4, "t1")), Some(&seen)),
            Acquire::Covered
        );
        // Two landings since: the second started after t0's tenure, so after the look.
        assert_eq!(
            outcome(Some("t2"), Some(&waits(5, "t1")), Some(&seen)),
            Acquire::Covered
        );
        // A new epoch (the record expired and was made again) says nothing about the old count.
        let mut other = waits(9, "t4");
        other.epoch = b"F".to_vec();
        assert!(matches!(
            outcome(Some("t5"), Some(&other), Some(&seen)),
            Acquire::Busy(b) if b.epoch == b"F"
        ));
    }

    #[test]
    fn commit_lands_only_for_the_holder_and_counts_when_someone_waits() {
        assert_eq!(decide_commit(Some(b"t1"), None, b"t1"), Ok(false));
        assert_eq!(decide_commit(Some(b"t1"), Some(&waits(3, "t0")), b"t1"), Ok(true));
        assert_eq!(
            decide_commit(Some(b"t2"), Some(&waits(3, "t0")), b"t1"),
            Err(Some(base(3, "t2")))
        );
        assert_eq!(
            decide_commit(None, Some(&waits(3, "t0")), b"t1"),
            Err(Some(base(3, "")))
        );
        assert_eq!(decide_commit(None, None, b"t1"), Err(None));
    }

    #[test]
    fn tokens_are_unique() {
        let t = Tokens::new();
        assert_ne!(t.next(), t.next());
        assert_ne!(Tokens::new().next(), Tokens::new().next());
    }
}
