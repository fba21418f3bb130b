//! The `WATCH` fallback of a [`Session`], for a destination that refuses scripts: read the lock
//! and the record under `WATCH`, decide here ([`super::decide_look`], [`super::decide_commit`],
//! the scripts' rules), then `MULTI … EXEC` on a connection of the sync's own, retried when
//! either changed in between.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use super::session::{Session, Write};
use super::{Acquire, Baseline, Commit, GC, Waits, decide_commit, decide_look};

impl<D: ConnectionLike + Send> Session<'_, D> {
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

    /// [`Session::acquire`] by `WATCH`.
    pub(super) async fn watch_acquire(
        &mut self,
        token: &[u8],
        base: Option<&Baseline>,
    ) -> RedisResult<Acquire> {
        let (lock, waits) = (self.lock.clone(), self.waits.clone());
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

    /// [`Session::commit_write`] by `WATCH`.
    pub(super) async fn watch_commit(&mut self, token: &[u8], write: Write<'_>) -> RedisResult<Commit> {
        let (lock, waits, key) = (self.lock.clone(), self.waits.clone(), self.key);
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

    /// [`Session::renew`] by `WATCH`.
    pub(super) async fn watch_renew(&mut self, token: &[u8]) -> RedisResult<bool> {
        let lock = self.lock.clone();
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

/// The commands of `write` on `key`, for a `MULTI … EXEC` commit.
fn write_commands(key: &[u8], write: &Write<'_>) -> Vec<Cmd> {
    match write {
        Write::Release => Vec::new(),
        Write::Snapshot(s) => vec![crate::keysync::write_command(key, s, true)],
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
