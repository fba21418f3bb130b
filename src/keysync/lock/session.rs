//! [`Session`]: one sync's conversation with the destination about one key's lock, by the lock
//! scripts on the shared connection; the `WATCH` fallback is in [`super::watch`].

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{RedisResult, Value};

use super::scripts::{COMMIT, LOOK, Lua, RENEW, decode_acquire, decode_commit};
use super::{Acquire, Baseline, Commit, Exclusive, GC, lock_key, wait_key};
use crate::keysync::{ScriptSupport, Snapshot, refuses_scripts};

/// One sync's conversation with the destination about one key's lock: scripts on the shared
/// connection, or `WATCH` transactions on a connection of its own once scripts are refused.
pub struct Session<'a, D> {
    pub(super) dest: &'a mut D,
    pub(super) exclusive: &'a dyn Exclusive,
    pub(super) scripts: &'a ScriptSupport,
    pub(super) lease: Duration,
    pub(super) lock: Vec<u8>,
    pub(super) waits: Vec<u8>,
    pub(super) key: &'a [u8],
    pub(super) watch: Option<MultiplexedConnection>,
    /// No `WATCH` is pending on `watch` (it may be given back).
    pub(super) clean: bool,
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
        self.watch_acquire(token, base).await
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
        self.watch_commit(token, write).await
    }

    /// Extends the lease if it is still `token`'s; `false` when it was lost.
    pub async fn renew(&mut self, token: &[u8]) -> RedisResult<bool> {
        let lease = self.lease.as_millis().to_string();
        let lock = self.lock.clone();
        if let Some(v) = self.script(&RENEW, &[&lock], &[token, lease.as_bytes()]).await? {
            return Ok(redis::from_redis_value::<i64>(v)? == 1);
        }
        self.watch_renew(token).await
    }
}

/// What a commit writes on the key while the lease is still ours.
pub(super) enum Write<'s> {
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
