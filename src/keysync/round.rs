//! The sync round under the key's lease (see [`super::lock`]): take the lease or wait to be
//! covered, read the origin while holding it, commit only if it is still held.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult};

use super::lock::{self, Acquire, Baseline, Commit, Exclusive};
use super::{Applied, KeySync, Landed, READ_LIMIT, ReadWindow, Snapshot, Synced, WAIT_LIMIT, big, read_many};

/// The first pause between looks at a busy lease; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(1);
/// The longest pause between looks at a busy lease.
const POLL_MAX: Duration = Duration::from_millis(8);

/// Makes `key` on `dest` equal to `key` on `origin` as of a moment after this call began, under
/// the key's lease on the destination (see [`lock`]): take the lease (or, when others hold it,
/// wait until a round that started after this call landed), read the origin while holding it
/// (renewing it when the read is slow), and write only if it is still held. A lost lease means
/// another round took over; this sync then looks again. Nothing here gives up because the key
/// keeps changing.
///
/// `exclusive` opens connections of the sync's own, for a destination that refuses scripts.
pub async fn sync_key<O, D>(
    origin: &O,
    dest: &mut D,
    exclusive: &dyn Exclusive,
    key: &[u8],
    ks: &KeySync,
) -> RedisResult<Synced>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Clone + Send + Sync,
{
    sync_key_holding(origin, dest, exclusive, key, ks, None).await
}

/// [`sync_key`], starting with the lease `held` when the caller already took it (with
/// [`acquire_lease`], while the write that needs this sync was on its way to the origin): the
/// first round then skips its acquire. A lease that ran out meanwhile is harmless: the commit
/// finds it gone and the sync goes on as usual.
pub async fn sync_key_holding<O, D>(
    origin: &O,
    dest: &mut D,
    exclusive: &dyn Exclusive,
    key: &[u8],
    ks: &KeySync,
    held: Option<Vec<u8>>,
) -> RedisResult<Synced>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Clone + Send + Sync,
{
    run(origin, dest, exclusive, key, ks, held.map(|token| (token, None))).await
}

/// [`sync_key_holding`] with the origin already read inside the lease's tenure: `seed` was read
/// after the lease `token` was taken (see [`super::seed`]), so the first round commits it
/// without a read of its own — one round trip instead of two. A commit that finds the lease
/// gone goes on like any other round.
pub async fn sync_key_seeded<O, D>(
    origin: &O,
    dest: &mut D,
    exclusive: &dyn Exclusive,
    key: &[u8],
    ks: &KeySync,
    token: Vec<u8>,
    seed: (Snapshot, ReadWindow),
) -> RedisResult<Synced>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Clone + Send + Sync,
{
    run(origin, dest, exclusive, key, ks, Some((token, Some(seed)))).await
}

/// A snapshot and when it was read.
type Read = (Snapshot, ReadWindow);

/// The rounds of a sync: `held` is a lease already taken, with what was read inside its tenure
/// if anything.
async fn run<O, D>(
    origin: &O,
    dest: &mut D,
    exclusive: &dyn Exclusive,
    key: &[u8],
    ks: &KeySync,
    held: Option<(Vec<u8>, Option<Read>)>,
) -> RedisResult<Synced>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Clone + Send + Sync,
{
    let mut session = lock::Session::new(dest, exclusive, &ks.dest_scripts, ks.lease, key);
    let mut base: Option<Baseline> = None;
    let mut poll = POLL_FIRST;
    let started = Instant::now();
    let mut held = held;
    loop {
        let mut seed = None;
        let token = match held.take() {
            Some((token, read)) => {
                seed = read;
                token
            }
            None => {
                let token = ks.token();
                match session.acquire(&token, base.as_ref()).await? {
                    Acquire::Covered => {
                        return Ok(Synced {
                            applied: Applied::Covered,
                            landed: None,
                        });
                    }
                    Acquire::Busy(seen) => {
                        if started.elapsed() > WAIT_LIMIT {
                            return Err(RedisError::from((
                                ErrorKind::Io,
                                "key-sync lease busy",
                                format!("waited {WAIT_LIMIT:?}; it will be repaired by the next verify"),
                            )));
                        }
                        if base.as_ref().is_none_or(|b| b.epoch != seen.epoch) {
                            base = Some(seen);
                        }
                        tokio::time::sleep(poll).await;
                        poll = (poll * 2).min(POLL_MAX);
                        continue;
                    }
                    Acquire::Acquired => token,
                }
            }
        };
        // A small key is read here and written by the commit below; a big one is copied and
        // published by `big` on its own.
        let read = match seed {
            Some((snapshot, read)) => Ok(Some((big::Read::Snapshot(snapshot), read))),
            None => read_holding(origin, &mut session, &token, key, ks).await,
        };
        let round = match read {
            Ok(Some((big::Read::Snapshot(snapshot), read))) => Ok(Some(Round::Read(snapshot, read))),
            Ok(Some((big::Read::Big(_), _))) => big::copy_holding(origin, &mut session, &token, key, ks)
                .await
                .map(|done| done.map(Round::Done)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let (snapshot, read) = match round {
            Ok(Some(Round::Done(synced))) => return Ok(synced),
            Ok(Some(Round::Read(snapshot, read))) => (snapshot, read),
            Ok(None) => {
                // The lease ran out while reading or copying and someone took it: look again.
                (base, poll) = (None, POLL_FIRST);
                continue;
            }
            Err(e) => {
                let _ = session.commit(&token, None).await;
                return Err(e);
            }
        };
        let aged = snapshot.clone().aged(read.sent.elapsed());
        match session.commit(&token, Some(&aged)).await? {
            Commit::Landed => {
                let applied = match aged {
                    Snapshot::Absent => Applied::Deleted,
                    Snapshot::Present { .. } => Applied::Restored,
                };
                return Ok(Synced {
                    applied,
                    landed: Some(Landed { snapshot, read }),
                });
            }
            Commit::Lost(seen) => (base, poll) = (seen, POLL_FIRST),
        }
    }
}

/// What a round holding the lease got: a small key's snapshot to commit, or a big key's copy,
/// already published.
enum Round {
    Read(Snapshot, ReadWindow),
    Done(Synced),
}

/// Reads `key` from the origin while holding the lease `token` (see [`holding`]): its snapshot,
/// or, when `ks` diverts big keys and the key is one, its size. `None` when the lease was lost.
async fn read_holding<O, D>(
    origin: &O,
    session: &mut lock::Session<'_, D>,
    token: &[u8],
    key: &[u8],
    ks: &KeySync,
) -> RedisResult<Option<(big::Read, ReadWindow)>>
where
    O: ConnectionLike + Clone + Send + Sync,
    D: ConnectionLike + Send,
{
    let sent = Instant::now();
    let read = async {
        match ks.big_key_bytes {
            Some(limit) => big::read_guarded(origin, key, &ks.origin_scripts, limit).await,
            None => {
                let mut snapshots = read_many(origin, &[key.to_vec()], &ks.origin_scripts).await?;
                Ok(big::Read::Snapshot(snapshots.pop().unwrap_or(Snapshot::Absent)))
            }
        }
    };
    let read = holding(session, token, ks, READ_LIMIT, "origin read too slow", read).await?;
    let window = ReadWindow {
        sent,
        received: Instant::now(),
    };
    Ok(read.map(|read| (read, window)))
}

/// Runs `work` while holding the lease `token`, renewing it every third of the lease: its
/// result, or `None` when the lease was lost meanwhile (someone else may have taken it, so what
/// `work` read must not be written). `work` running past `limit` is an error.
pub(super) async fn holding<T, D>(
    session: &mut lock::Session<'_, D>,
    token: &[u8],
    ks: &KeySync,
    limit: Duration,
    too_slow: &'static str,
    work: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<Option<T>>
where
    D: ConnectionLike + Send,
{
    let started = Instant::now();
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done.map(Some),
            _ = tokio::time::sleep(ks.lease / 3) => {
                if started.elapsed() > limit {
                    return Err(RedisError::from((
                        ErrorKind::Io,
                        too_slow,
                        format!("not done within {limit:?}"),
                    )));
                }
                if !session.renew(token).await? {
                    return Ok(None);
                }
            }
        }
    }
}
