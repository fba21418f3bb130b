//! Writing a snapshot to the destination without the lease (the backfill): `RESTORE` (with or
//! without `REPLACE`) or `DEL`, and what the reply means.

use redis::aio::ConnectionLike;
use redis::{RedisError, RedisResult, Value};

use super::Snapshot;

/// What a write did on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// RESTORE succeeded.
    Restored,
    /// The origin had no such key; DEL ran on the destination.
    Deleted,
    /// `replace` was off and the destination already had the key (BUSYKEY): it is newer.
    KeptExisting,
    /// Another sync of the key, which read the origin after this one started, landed: nothing
    /// left to write (see [`lock`]).
    Covered,
}

/// The destination command that makes `key` equal to `snapshot`.
pub fn write_command(key: &[u8], snapshot: &Snapshot, replace: bool) -> redis::Cmd {
    match snapshot {
        Snapshot::Absent => {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            cmd
        }
        Snapshot::Present { ttl_ms, payload } => {
            let mut cmd = redis::cmd("RESTORE");
            cmd.arg(key).arg(ttl_ms.unwrap_or(0)).arg(payload.as_slice());
            if replace {
                cmd.arg("REPLACE");
            }
            cmd
        }
    }
}

/// Interprets the destination's reply to [`write_command`].
pub fn interpret_write(snapshot: &Snapshot, reply: RedisResult<Value>) -> RedisResult<Applied> {
    match reply {
        Ok(_) if matches!(snapshot, Snapshot::Absent) => Ok(Applied::Deleted),
        Ok(_) => Ok(Applied::Restored),
        Err(e) if is_busykey(&e) => Ok(Applied::KeptExisting),
        Err(e) => Err(e),
    }
}

/// Whether `e` is RESTORE's "BUSYKEY Target key name already exists."
pub fn is_busykey(e: &RedisError) -> bool {
    e.code() == Some("BUSYKEY") || e.to_string().contains("BUSYKEY")
}

/// Writes `snapshot` of `key` to the destination.
pub async fn write(
    dest: &mut impl ConnectionLike,
    key: &[u8],
    snapshot: &Snapshot,
    replace: bool,
) -> RedisResult<Applied> {
    let reply = write_command(key, snapshot, replace)
        .query_async::<Value>(dest)
        .await;
    interpret_write(snapshot, reply)
}
