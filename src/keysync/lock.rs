//! The per-key sync lock: key-syncs of one key are serialized across the whole fleet (every proxy,
//! the catch-up, `verify --repair`) by a short lease on the **destination**, in the key's slot,
//! so a key that never goes quiet still converges (issue 9, item 8).
//!
//! A sync *round* takes the lease, reads the origin while holding it, and writes the destination
//! only if it still holds the lease, releasing it in the same atomic step:
//!
//! ```text
//! acquire  (destination)  lease free or expired → ours
//! read     (origin)       PTTL + DUMP, atomically
//! commit   (destination)  if the lease is still ours: RESTORE … REPLACE (or DEL), release
//!                         else: lost, nothing written
//! ```
//!
//! Why it converges and never goes back: two rounds that both land hold the lease one after the
//! other (a round lands only while it holds it, and a lease is taken only when free or expired),
//! and each reads the origin inside its own tenure. So the landed snapshots are in the order of
//! their reads: a later landing always carries a later origin state, and no stale RESTORE can
//! land after a fresh one — whatever the delays, a holder frozen past its lease included (its
//! commit finds the lease gone and writes nothing). No re-check is needed, so no key can "keep
//! changing" past a limit.
//!
//! **Waiting without starving, and combining.** A sync that finds the lease held need not take
//! it: its writes were applied on the origin before it started, so *any* round that takes the
//! lease after it looked reads them. The lock hash counts landings (`n`) and remembers the last
//! lander (`l`); a waiter notes `(epoch, n, holder)` when it first finds the lease busy and is
//! *covered* — done, without a round of its own — once a landing follows from a round that
//! started after that look: `n ≥ n₀ + 2`, or `n = n₀ + 1` by another lander than the holder it
//! saw. Two proxies hammering one key therefore share rounds instead of queueing behind each
//! other, and a waiter is served within two rounds of whoever holds the key.
//!
//! The hash (`h` holder, `u` lease end, `n` landings, `l` last lander, `e` epoch, `w` last
//! waiter) lives only while a key is contended: a release with no recent waiter deletes it, and
//! it expires [`GC`] after its last use. A waiter that finds a new epoch (the hash was deleted
//! and made again) starts its count over. Times are the destination's own `TIME`: no two clocks
//! are compared.
//!
//! **Destinations that refuse scripts** (an ACL without `@scripting`, `EVALSHA` renamed away) get
//! the same protocol as `WATCH` transactions on a connection of the sync's own ([`Exclusive`]):
//! read the hash and `TIME`, decide here ([`decide_acquire`], [`decide_commit`], the same rules
//! as the scripts), then `MULTI … EXEC`, retried when the hash changed in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use super::{ScriptSupport, Snapshot, refuses_scripts};

/// Prefix of every lock key (inside the reserved `__cachemig:` namespace, so never copied,
/// verified or served).
pub const LOCK_PREFIX: &[u8] = b"__cachemig:lock:";

/// How long a round holds the lease unless it renews it: what a frozen or killed holder costs
/// the other syncs of that one key. A healthy round takes a few round trips; a slow origin read
/// renews the lease every third of it.
pub const LEASE: Duration = Duration::from_millis(250);

/// A lock hash unused this long disappears.
pub const GC: Duration = Duration::from_secs(10);

/// A release keeps the hash (and its landing count) when a waiter looked this recently;
/// otherwise it deletes it.
pub const WAIT_WINDOW: Duration = Duration::from_secs(1);

/// The lock key of `key`: `__cachemig:lock:{tag}` when the key is its own tag, else
/// `__cachemig:lock:{tag}:<key>`; always in `key`'s cluster slot.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    let tag = crate::keys::slot_tag(key);
    let mut lock = Vec::with_capacity(LOCK_PREFIX.len() + tag.len() + key.len() + 3);
    lock.extend_from_slice(LOCK_PREFIX);
    lock.push(b'{');
    lock.extend_from_slice(&tag);
    lock.push(b'}');
    if tag != key {
        lock.push(b':');
        lock.extend_from_slice(key);
    }
    lock
}

/// What a sync saw when it found the lease held: the epoch of the hash, the landings so far and
/// the holder. Any landing beyond it by a round that started later covers the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// The token of the round that created the hash.
    pub epoch: Vec<u8>,
    /// Landings counted in that hash.
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
    /// The lease was no longer ours: nothing written. What we saw, if the hash exists.
    Lost(Option<Baseline>),
}

/// The lock hash as read for a `WATCH` transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockState {
    /// `h`: the holder's token, empty when free.
    pub holder: Vec<u8>,
    /// `u`: when the lease ends (destination ms).
    pub until: i64,
    /// `n`: landings in this epoch.
    pub landed: i64,
    /// `l`: the last lander's token.
    pub last: Vec<u8>,
    /// `e`: the epoch (the creator's token).
    pub epoch: Vec<u8>,
    /// `w`: when a waiter last looked (destination ms); 0 (absent) when none ever did.
    pub waited: i64,
}

/// Hash fields to set (name, value).
pub type Fields = Vec<(&'static str, Vec<u8>)>;

/// Whether a sync that noted `base` is covered by the hash `state` (same rule as the script).
fn covered(state: &LockState, base: &Baseline) -> bool {
    state.epoch == base.epoch
        && (state.landed >= base.landed + 2 || (state.landed == base.landed + 1 && state.last != base.holder))
}

/// The acquire rule, for the `WATCH` path: the outcome and the fields to write (`None`: write
/// nothing). `state` is `None` when the hash does not exist (then it is created, `e` = `token`).
pub fn decide_acquire(
    state: Option<&LockState>,
    now_ms: i64,
    token: &[u8],
    lease: Duration,
    base: Option<&Baseline>,
) -> (Acquire, Option<Fields>) {
    let until = (now_ms + lease.as_millis() as i64).to_string().into_bytes();
    let Some(state) = state else {
        // `n`, `l` and `w` are absent until a waiter or a landing sets them (0, "", never).
        let fields = vec![("h", token.to_vec()), ("u", until), ("e", token.to_vec())];
        return (Acquire::Acquired, Some(fields));
    };
    if base.is_some_and(|b| covered(state, b)) {
        return (Acquire::Covered, None);
    }
    if state.holder.is_empty() || state.until < now_ms {
        return (Acquire::Acquired, Some(vec![("h", token.to_vec()), ("u", until)]));
    }
    let seen = Baseline {
        epoch: state.epoch.clone(),
        landed: state.landed,
        holder: state.holder.clone(),
    };
    (
        Acquire::Busy(seen),
        Some(vec![("w", now_ms.to_string().into_bytes())]),
    )
}

/// What a commit does to the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashUpdate {
    /// Delete it (nobody waited recently).
    Delete,
    /// Set these fields.
    Set(Fields),
}

/// The commit rule, for the `WATCH` path: `Err(lost)` when the lease is not `token`'s; else how
/// the hash changes after the key was written (released, one more landing by `token`).
pub fn decide_commit(
    state: Option<&LockState>,
    now_ms: i64,
    token: &[u8],
) -> Result<HashUpdate, Option<Baseline>> {
    let Some(state) = state.filter(|s| s.holder == token) else {
        return Err(state.map(|s| Baseline {
            epoch: s.epoch.clone(),
            landed: s.landed,
            holder: s.holder.clone(),
        }));
    };
    if state.waited == 0 || now_ms - state.waited > WAIT_WINDOW.as_millis() as i64 {
        return Ok(HashUpdate::Delete);
    }
    Ok(HashUpdate::Set(vec![
        ("h", Vec::new()),
        ("n", (state.landed + 1).to_string().into_bytes()),
        ("l", token.to_vec()),
    ]))
}

/// `now()`: the destination's `TIME` in milliseconds, in Lua (read only when needed).
const NOW_LUA: &str = "local function now()\n\
  local t = redis.call('TIME')\n\
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n\
end\n";

/// `KEYS[1]` lock; `ARGV`: token, lease ms, gc ms, baseline epoch, landings, holder ("" = none).
/// Replies `{1}` acquired, `{2}` covered, `{0, epoch, landings, holder}` busy.
const ACQUIRE_BODY: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'h', 'u', 'n', 'l', 'e')
local h, u, n, l, e = s[1], tonumber(s[2]) or 0, tonumber(s[3]) or 0, s[4] or '', s[5]
local lease, gc = tonumber(ARGV[2]), tonumber(ARGV[3])
local ms = now()
if not e then
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 'u', ms + lease, 'e', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], gc)
  return {1}
end
if e == ARGV[4] then
  local b = tonumber(ARGV[5])
  if n >= b + 2 or (n == b + 1 and l ~= ARGV[6]) then return {2} end
end
if (not h) or h == '' or u < ms then
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 'u', ms + lease)
  redis.call('PEXPIRE', KEYS[1], gc)
  return {1}
end
redis.call('HSET', KEYS[1], 'w', ms)
redis.call('PEXPIRE', KEYS[1], gc)
return {0, e, n, h}
"#;

/// `KEYS[1]` lock, `KEYS[2]` the key; `ARGV`: token, mode (`r` RESTORE, `d` DEL, `x` release
/// only), ttl ms, payload, wait window ms, gc ms. Replies `{1}` landed (or released), `{0}` lost
/// without a hash, `{0, epoch, landings, holder}` lost; a RESTORE error is returned as the
/// error, after releasing without a landing.
const COMMIT_BODY: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'h', 'n', 'w', 'e')
if s[1] ~= ARGV[1] then
  if not s[4] then return {0} end
  return {0, s[4], tonumber(s[2]) or 0, s[1] or ''}
end
if ARGV[2] == 'x' then
  redis.call('HSET', KEYS[1], 'h', '')
  return {1}
end
if ARGV[2] == 'd' then
  redis.call('DEL', KEYS[2])
else
  local r = redis.pcall('RESTORE', KEYS[2], ARGV[3], ARGV[4], 'REPLACE')
  if type(r) == 'table' and r.err then
    redis.call('HSET', KEYS[1], 'h', '')
    return r
  end
end
if not s[3] or now() - tonumber(s[3]) > tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'h', '', 'n', (tonumber(s[2]) or 0) + 1, 'l', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return {1}
"#;

/// `KEYS[1]` lock; `ARGV`: token, lease ms, gc ms. Replies 1 renewed, 0 lost.
const RENEW_BODY: &str = r#"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'u', now() + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"#;

/// A script with its SHA-1 computed once.
struct Lua {
    body: String,
    sha: String,
}

impl Lua {
    fn new(body: &str) -> Lua {
        // Redis before 5 refuses writes after `TIME` without effects replication; 7 ignores it.
        let body =
            format!("if redis.replicate_commands then redis.replicate_commands() end\n{NOW_LUA}{body}");
        let sha = redis::Script::new(&body).get_hash().to_string();
        Lua { body, sha }
    }
}

static ACQUIRE: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(ACQUIRE_BODY));
static COMMIT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(COMMIT_BODY));
static RENEW: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(RENEW_BODY));

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
            crate::endpoint::connect_node(&self.url, self.password.as_deref())
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
            key,
            watch: None,
            clean: true,
        }
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
                build("EVAL", &lua.body).query_async::<Value>(self.dest).await
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

    /// `WATCH` the lock and read it (the connection is not clean until EXEC or UNWATCH).
    async fn watch_read(&mut self) -> RedisResult<(Option<LockState>, i64)> {
        let lock = self.lock.clone();
        self.clean = false;
        watch_read_on(self.conn().await?, &lock).await
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

    /// Tries to take the lease with `token`; `base` is what this sync saw when it last found
    /// the lease busy.
    pub async fn acquire(&mut self, token: &[u8], base: Option<&Baseline>) -> RedisResult<Acquire> {
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
        let lock = self.lock.clone();
        let args: [&[u8]; 6] = [token, lease.as_bytes(), gc.as_bytes(), &e, &n, &h];
        if let Some(v) = self.script(&ACQUIRE, &[&lock], &args).await? {
            return decode_acquire(v);
        }
        let lease = self.lease;
        loop {
            let (state, now) = self.watch_read().await?;
            let (outcome, fields) = decide_acquire(state.as_ref(), now, token, lease, base);
            let Some(fields) = fields else {
                self.unwatch().await?;
                return Ok(outcome);
            };
            let mut cmds = vec![hset(&lock, &fields)];
            cmds.push(pexpire(&lock, GC));
            if self.exec(cmds).await?.is_some() {
                return Ok(outcome);
            }
        }
    }

    /// Writes `snapshot` if the lease is still `token`'s, releasing it; `None` only releases.
    pub async fn commit(&mut self, token: &[u8], snapshot: Option<&Snapshot>) -> RedisResult<Commit> {
        let (mode, ttl, payload): (&[u8], Vec<u8>, &[u8]) = match snapshot {
            None => (b"x", b"0".to_vec(), b""),
            Some(Snapshot::Absent) => (b"d", b"0".to_vec(), b""),
            Some(Snapshot::Present { ttl_ms, payload }) => (
                b"r",
                ttl_ms.unwrap_or(0).to_string().into_bytes(),
                payload.as_slice(),
            ),
        };
        let window = WAIT_WINDOW.as_millis().to_string();
        let gc = GC.as_millis().to_string();
        let (lock, key) = (self.lock.clone(), self.key);
        let args: [&[u8]; 6] = [token, mode, &ttl, payload, window.as_bytes(), gc.as_bytes()];
        if let Some(v) = self.script(&COMMIT, &[&lock, key], &args).await? {
            return decode_commit(v);
        }
        loop {
            let (state, now) = self.watch_read().await?;
            let update = match decide_commit(state.as_ref(), now, token) {
                Err(seen) => {
                    self.unwatch().await?;
                    return Ok(Commit::Lost(seen));
                }
                Ok(update) => update,
            };
            let mut cmds = Vec::new();
            let release_only = snapshot.is_none();
            match snapshot {
                None => {}
                Some(Snapshot::Absent) => {
                    let mut del = redis::cmd("DEL");
                    del.arg(key);
                    cmds.push(del);
                }
                Some(s) => cmds.push(super::write_command(key, s, true)),
            }
            match update {
                _ if release_only => cmds.push(hset(&lock, &[("h", Vec::new())])),
                HashUpdate::Delete => {
                    let mut del = redis::cmd("DEL");
                    del.arg(&lock);
                    cmds.push(del);
                }
                HashUpdate::Set(fields) => {
                    cmds.push(hset(&lock, &fields));
                    cmds.push(pexpire(&lock, GC));
                }
            }
            let Some(replies) = self.exec(cmds).await? else {
                continue; // the hash changed between the read and EXEC: look again
            };
            // A RESTORE refused inside the transaction (a payload this server cannot read) did
            // not write the key although the hash now says it landed.
            if let Some(Value::ServerError(e)) = replies.first().filter(|_| !release_only) {
                return Err(RedisError::from(e.clone()));
            }
            return Ok(Commit::Landed);
        }
    }

    /// Extends the lease if it is still `token`'s; `false` when it was lost.
    pub async fn renew(&mut self, token: &[u8]) -> RedisResult<bool> {
        let lease = self.lease.as_millis().to_string();
        let gc = GC.as_millis().to_string();
        let lock = self.lock.clone();
        if let Some(v) = self
            .script(&RENEW, &[&lock], &[token, lease.as_bytes(), gc.as_bytes()])
            .await?
        {
            return Ok(redis::from_redis_value::<i64>(v)? == 1);
        }
        let lease = self.lease;
        loop {
            let (state, now) = self.watch_read().await?;
            if state.as_ref().is_none_or(|s| s.holder != token) {
                self.unwatch().await?;
                return Ok(false);
            }
            let until = (now + lease.as_millis() as i64).to_string().into_bytes();
            let cmds = vec![hset(&lock, &[("u", until)]), pexpire(&lock, GC)];
            if self.exec(cmds).await?.is_some() {
                return Ok(true);
            }
        }
    }
}

fn hset(lock: &[u8], fields: &[(&str, Vec<u8>)]) -> Cmd {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(lock);
    for (name, value) in fields {
        cmd.arg(*name).arg(value.as_slice());
    }
    cmd
}

fn pexpire(lock: &[u8], after: Duration) -> Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(lock).arg(after.as_millis() as u64);
    cmd
}

/// `WATCH lock`, then the hash and the server's time.
async fn watch_read_on(
    conn: &mut MultiplexedConnection,
    lock: &[u8],
) -> RedisResult<(Option<LockState>, i64)> {
    redis::cmd("WATCH").arg(lock).query_async::<()>(conn).await?;
    let (fields, (secs, micros)): (Vec<Option<Vec<u8>>>, (i64, i64)) = redis::pipe()
        .cmd("HMGET")
        .arg(lock)
        .arg(&["h", "u", "n", "l", "e", "w"])
        .cmd("TIME")
        .query_async(conn)
        .await?;
    let now = secs * 1000 + micros / 1000;
    let text = |i: usize| fields.get(i).cloned().flatten();
    let number = |i: usize| {
        text(i)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |f| f as i64)
    };
    let state = text(4).map(|epoch| LockState {
        holder: text(0).unwrap_or_default(),
        until: number(1),
        landed: number(2),
        last: text(3).unwrap_or_default(),
        epoch,
        waited: number(5),
    });
    Ok((state, now))
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
            let lock = lock_key(key);
            assert!(lock.starts_with(crate::keys::RESERVED_PREFIX));
            assert!(same_slot(key, &lock), "{:?}", String::from_utf8_lossy(key));
        }
        assert_eq!(lock_key(b"k"), b"__cachemig:lock:{k}".to_vec());
        assert_eq!(lock_key(b"a{b}"), b"__cachemig:lock:{b}:a{b}".to_vec());
        assert_ne!(lock_key(b"x{k}"), lock_key(b"k"));
    }

    fn state(holder: &str, until: i64, landed: i64, last: &str) -> LockState {
        LockState {
            holder: holder.into(),
            until,
            landed,
            last: last.into(),
            epoch: b"E".to_vec(),
            waited: 0,
        }
    }

    fn base(landed: i64, holder: &str) -> Baseline {
        Baseline {
            epoch: b"E".to_vec(),
            landed,
            holder: holder.into(),
        }
    }

    const LEASE_MS: Duration = Duration::from_millis(100);

    #[test]
    fn acquire_takes_a_free_or_expired_lease_and_reports_a_held_one() {
        let (outcome, fields) = decide_acquire(None, 1000, b"t1", LEASE_MS, None);
        assert_eq!(outcome, Acquire::Acquired);
        let fields = fields.unwrap();
        assert!(fields.contains(&("e", b"t1".to_vec())) && fields.contains(&("u", b"1100".to_vec())));

        let free = state("", 0, 3, "t0");
        assert_eq!(
            decide_acquire(Some(&free), 1000, b"t1", LEASE_MS, None).0,
            Acquire::Acquired
        );
        let expired = state("t0", 999, 3, "");
        assert_eq!(
            decide_acquire(Some(&expired), 1000, b"t1", LEASE_MS, None).0,
            Acquire::Acquired
        );

        let held = state("t0", 1050, 3, "x");
        let (outcome, fields) = decide_acquire(Some(&held), 1000, b"t1", LEASE_MS, None);
        assert_eq!(outcome, Acquire::Busy(base(3, "t0")));
        assert_eq!(fields, Some(vec![("w", b"1000".to_vec())]), "notes the waiter");
    }

    #[test]
    fn a_waiter_is_covered_only_by_a_round_that_started_after_it_looked() {
        // It saw t0 holding after 3 landings.
        let seen = base(3, "t0");
        // t0 landed (4th): t0 may have read before the waiter's write. Not covered; free → take.
        let after_t0 = state("", 0, 4, "t0");
        let got = decide_acquire(Some(&after_t0), 1000, b"t9", LEASE_MS, Some(&seen)).0;
        assert_eq!(got, Acquire::Acquired);
        // t0 lost its lease and t1, which took it later, landed: covered.
        let t1_landed = state("", 0, 4, "t1");
        let got = decide_acquire(Some(&t1_landed), 1000, b"t9", LEASE_MS, Some(&seen)).0;
        assert_eq!(got, Acquire::Covered);
        // Two landings since: the second started after t0's tenure, so after the look.
        let two = state("t2", 2000, 5, "t1");
        let got = decide_acquire(Some(&two), 1000, b"t9", LEASE_MS, Some(&seen)).0;
        assert_eq!(got, Acquire::Covered);
        // A new epoch (the hash was deleted and made again) says nothing about the old count.
        let mut other = state("t5", 2000, 9, "t4");
        other.epoch = b"F".to_vec();
        let got = decide_acquire(Some(&other), 1000, b"t9", LEASE_MS, Some(&seen)).0;
        assert!(matches!(got, Acquire::Busy(b) if b.epoch == b"F"));
    }

    #[test]
    fn commit_lands_only_for_the_holder_and_keeps_the_hash_while_someone_waits() {
        let mut held = state("t1", 1100, 3, "t0");
        assert_eq!(decide_commit(Some(&held), 5000, b"t1"), Ok(HashUpdate::Delete));
        held.waited = 4500;
        assert_eq!(
            decide_commit(Some(&held), 5000, b"t1"),
            Ok(HashUpdate::Set(vec![
                ("h", Vec::new()),
                ("n", b"4".to_vec()),
                ("l", b"t1".to_vec())
            ]))
        );
        // An expired lease nobody took is still ours: nobody else can have landed.
        assert!(decide_commit(Some(&held), 9000, b"t1").is_ok());
        let taken = state("t2", 1100, 3, "t0");
        assert_eq!(decide_commit(Some(&taken), 1000, b"t1"), Err(Some(base(3, "t2"))));
        assert_eq!(decide_commit(None, 1000, b"t1"), Err(None));
    }

    #[test]
    fn tokens_are_unique() {
        let t = Tokens::new();
        assert_ne!(t.next(), t.next());
        assert_ne!(Tokens::new().next(), Tokens::new().next());
    }
}
