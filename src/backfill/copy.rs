//! Copying one SCAN batch: size the keys, read small ones with pipelined MULTI/PTTL/DUMP/EXEC,
//! RESTORE them through the cluster connection (which follows MOVED/ASK and retries TRYAGAIN and
//! CLUSTERDOWN), hand big ones to the chunked copier, and dead-letter what still fails.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisResult, Value};
use tokio::sync::Semaphore;

use super::bigkey;
use super::checkpoint::Counters;
use super::deadletter::DeadLetter;
use crate::keysync::{self, Applied, Snapshot};

/// Largest sum of payload bytes read in one source pipeline.
const SUB_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Attempts for a key whose RESTORE failed with a transient error (failover, network).
const ATTEMPTS: u32 = 10;

/// Shared settings of every batch.
pub struct Copier {
    /// The new cluster.
    pub target: ClusterConnection,
    /// RESTORE … REPLACE (`on_existing = replace`).
    pub replace: bool,
    /// Keys above this many bytes (MEMORY USAGE) are copied in chunks by type.
    pub big_key_bytes: u64,
    /// Bytes of payload in flight over all batches, to bound memory.
    pub budget: Arc<Semaphore>,
    /// The budget's size in bytes (permits are bytes, capped to it).
    pub budget_bytes: u64,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Counters of this batch (scanned and matched are set by the caller).
    pub counters: Counters,
    /// Keys that failed for good.
    pub dead: Vec<DeadLetter>,
}

impl Copier {
    /// Copies `keys` (already filtered) from the source node behind `source`.
    pub async fn copy_batch(&self, source: &MultiplexedConnection, keys: Vec<Vec<u8>>) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        let sizes = match with_retries(|| memory_usage(source.clone(), &keys)).await {
            Ok(sizes) => sizes,
            Err(e) => {
                out.fail_all(&keys, &format!("source: {e}"));
                return out;
            }
        };
        let mut small: Vec<(Vec<u8>, u64)> = Vec::new();
        for (key, size) in keys.into_iter().zip(sizes) {
            match size {
                None => out.counters.vanished += 1,
                Some(size) if size > self.big_key_bytes => self.copy_big(source, key, size, &mut out).await,
                Some(size) => small.push((key, size)),
            }
        }
        for group in by_bytes(small, SUB_BATCH_BYTES) {
            self.copy_small(source, group, &mut out).await;
        }
        out
    }

    async fn copy_big(&self, source: &MultiplexedConnection, key: Vec<u8>, size: u64, out: &mut BatchOutcome) {
        let mut src = source.clone();
        let mut dst = self.target.clone();
        match bigkey::copy(&mut src, &mut dst, &key, self.replace).await {
            Ok(bigkey::BigCopy::Copied { bytes }) => {
                out.counters.copied += 1;
                out.counters.big_keys += 1;
                out.counters.bytes += bytes;
            }
            Ok(bigkey::BigCopy::KeptExisting) => out.counters.skipped_existing += 1,
            Ok(bigkey::BigCopy::Vanished) => out.counters.vanished += 1,
            Err(e) => out.dead.push(DeadLetter { key, reason: format!("big key: {e}"), size: Some(size) }),
        }
    }

    async fn copy_small(&self, source: &MultiplexedConnection, group: Vec<(Vec<u8>, u64)>, out: &mut BatchOutcome) {
        let bytes: u64 = group.iter().map(|(_, s)| *s).sum();
        let permits = bytes.clamp(1, self.budget_bytes) as u32;
        let _permit = self.budget.acquire_many(permits).await.expect("budget semaphore closed");
        let keys: Vec<Vec<u8>> = group.iter().map(|(k, _)| k.clone()).collect();
        let snapshots = match with_retries(|| read_snapshots(source.clone(), &keys)).await {
            Ok(s) => s,
            Err(e) => {
                out.fail_all(&keys, &format!("source: {e}"));
                return;
            }
        };
        let writes = keys.iter().zip(&snapshots).map(|(key, snap)| self.restore(key, snap));
        for ((key, snap), result) in keys.iter().zip(&snapshots).zip(join_all(writes).await) {
            match result {
                Ok(Applied::Restored) => {
                    out.counters.copied += 1;
                    out.counters.bytes += snap.size() as u64;
                }
                Ok(Applied::Deleted) => out.counters.vanished += 1,
                Ok(Applied::KeptExisting) => out.counters.skipped_existing += 1,
                Err(e) => out.dead.push(DeadLetter {
                    key: key.clone(),
                    reason: format!("target: {e}"),
                    size: Some(snap.size() as u64),
                }),
            }
        }
    }

    /// RESTOREs one key, retrying transient errors; a key gone from the source is not deleted
    /// on the target (the backfill only adds; deletes are the mirror's and verify's job).
    async fn restore(&self, key: &[u8], snap: &Snapshot) -> RedisResult<Applied> {
        if matches!(snap, Snapshot::Absent) {
            return Ok(Applied::Deleted);
        }
        with_retries(|| {
            let mut target = self.target.clone();
            async move {
                let reply = keysync::write_command(key, snap, self.replace).query_async::<Value>(&mut target).await;
                keysync::interpret_write(snap, reply)
            }
        })
        .await
    }
}

impl BatchOutcome {
    fn fail_all(&mut self, keys: &[Vec<u8>], reason: &str) {
        self.dead.extend(keys.iter().map(|k| DeadLetter { key: k.clone(), reason: reason.to_string(), size: None }));
    }
}

/// `MEMORY USAGE` of each key (`None` when it no longer exists), in one pipeline.
async fn memory_usage(mut source: MultiplexedConnection, keys: &[Vec<u8>]) -> RedisResult<Vec<Option<u64>>> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("MEMORY").arg("USAGE").arg(key.as_slice());
    }
    pipe.query_async(&mut source).await
}

/// Atomic snapshots of `keys`, in one pipeline of MULTI/PTTL/DUMP/EXEC groups.
async fn read_snapshots(mut source: MultiplexedConnection, keys: &[Vec<u8>]) -> RedisResult<Vec<Snapshot>> {
    let mut pipe = redis::pipe();
    for key in keys {
        keysync::snapshot_pipeline(&mut pipe, key);
    }
    let replies: Vec<Value> = pipe.query_async(&mut source).await?;
    replies.into_iter().map(keysync::decode_snapshot).collect()
}

/// Splits `items` into groups whose sizes add up to at most `limit` (a single larger item forms
/// its own group).
fn by_bytes(items: Vec<(Vec<u8>, u64)>, limit: u64) -> Vec<Vec<(Vec<u8>, u64)>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (key, size) in items {
        if !current.is_empty() && bytes + size > limit {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((key, size));
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Whether an error is worth retrying: I/O, connection loss, cluster reconfiguration.
fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(e.code(), Some("TRYAGAIN" | "CLUSTERDOWN" | "MOVED" | "ASK" | "LOADING" | "MASTERDOWN"))
}

/// Runs `op`, retrying transient errors with exponential back-off (50 ms … 12.8 s, about 25 s in
/// all), long enough to ride out a replica promotion.
async fn with_retries<T, F, Fut>(mut op: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    let mut pause = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_respect_the_byte_limit() {
        let items = vec![(b"a".to_vec(), 3), (b"b".to_vec(), 3), (b"c".to_vec(), 10), (b"d".to_vec(), 1)];
        let groups = by_bytes(items, 6);
        let sizes: Vec<Vec<u64>> = groups.iter().map(|g| g.iter().map(|(_, s)| *s).collect()).collect();
        assert_eq!(sizes, vec![vec![3, 3], vec![10], vec![1]]);
    }
}
