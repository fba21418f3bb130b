//! Copying one SCAN batch. By default each key is read in one trip ([`read`]): small keys come
//! back with their atomic PTTL/DUMP and are RESTOREd through the cluster connection (which
//! follows MOVED/ASK and retries TRYAGAIN and CLUSTERDOWN); larger ones come back as a size and
//! are read under the byte budget, or copied in chunks when big. When the source refuses scripts,
//! or every key is copied by type, the batch is sized with `MEMORY USAGE` first. What still fails
//! is dead-lettered.

use std::sync::Arc;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::bigkey;
use super::checkpoint::Counters;
use super::deadletter::DeadLetter;
use super::read::{self, Read};
use crate::cluster::{Router, with_retries};
use crate::keysync::{self, Applied, Snapshot};

/// Largest sum of payload bytes read in one source pipeline.
const SUB_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Keys of one batch copied by type at the same time (each is a few round trips).
const BY_TYPE_CONCURRENCY: usize = 16;

/// Shared settings of every batch.
pub struct Copier {
    /// The new cluster, pipelined per master.
    pub target: Arc<Router>,
    /// The new cluster through the redis crate's client, for the chunked big-key copy.
    pub cluster: ClusterConnection,
    /// RESTORE … REPLACE (`on_existing = replace`).
    pub replace: bool,
    /// Keys above this many bytes (MEMORY USAGE) are copied in chunks by type.
    pub big_key_bytes: u64,
    /// Every key is copied by type (the target cannot RESTORE the source's payloads, or the
    /// plan says `copy_mode = "by-type"`).
    pub by_type: bool,
    /// Bytes of payload in flight over all batches, to bound memory.
    pub budget: Arc<Semaphore>,
    /// Whether the source runs the snapshot script.
    pub scripts: keysync::ScriptSupport,
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
        // By type, a DUMP read would be wasted: size first, then copy each key by type.
        let rest = if self.by_type {
            keys
        } else {
            self.copy_one_trip(source, keys, &mut out).await
        };
        if !rest.is_empty() {
            self.copy_sized(source, rest, &mut out).await;
        }
        out
    }

    /// Copies `keys` with the one-trip read, pipeline by pipeline; returns the keys left over
    /// when the source refuses scripts (none otherwise), for [`Copier::copy_sized`].
    async fn copy_one_trip(
        &self,
        source: &MultiplexedConnection,
        mut keys: Vec<Vec<u8>>,
        out: &mut BatchOutcome,
    ) -> Vec<Vec<u8>> {
        let mut later: Vec<(Vec<u8>, u64)> = Vec::new();
        while !keys.is_empty() {
            let rest = keys.split_off(keys.len().min(read::PIPELINE_KEYS));
            let chunk = std::mem::replace(&mut keys, rest);
            // Every key may bring INLINE_BYTES: reserve that, give back what did not come.
            let mut permit = self.reserve(chunk.len() as u64 * read::INLINE_BYTES).await;
            let reads = match with_retries(|| read::read_batch(source, &chunk, &self.scripts)).await {
                Ok(Some(reads)) => reads,
                Ok(None) => {
                    let mut back = chunk;
                    back.append(&mut keys);
                    keys = back;
                    break;
                }
                Err(e) => {
                    out.fail_all(&chunk, &format!("source: {e}"));
                    continue;
                }
            };
            let (mut small, mut snapshots) = (Vec::new(), Vec::new());
            for (key, read) in chunk.into_iter().zip(reads) {
                match read {
                    Read::Inline(snapshot) => {
                        small.push(key);
                        snapshots.push(snapshot);
                    }
                    Read::Sized(size) => later.push((key, size)),
                }
            }
            trim(&mut permit, snapshots.iter().map(|s| s.size() as u64).sum());
            self.restore_counted(&small, &snapshots, out).await;
        }
        self.copy_presized(source, later, out).await;
        keys
    }

    /// Sizes `keys` with one pipeline of `MEMORY USAGE`, then copies them: the path when the
    /// source refuses scripts, and in the by-type mode.
    async fn copy_sized(&self, source: &MultiplexedConnection, keys: Vec<Vec<u8>>, out: &mut BatchOutcome) {
        let sizes = match with_retries(|| memory_usage(source.clone(), &keys)).await {
            Ok(sizes) => sizes,
            Err(e) => {
                out.fail_all(&keys, &format!("source: {e}"));
                return;
            }
        };
        let mut present = Vec::new();
        for (key, size) in keys.into_iter().zip(sizes) {
            match size {
                None => out.counters.vanished += 1,
                Some(size) => present.push((key, size)),
            }
        }
        self.copy_presized(source, present, out).await;
    }

    /// Copies keys of known size: big ones in chunks (one at a time), the others by type or in
    /// groups of at most [`SUB_BATCH_BYTES`] under the byte budget.
    async fn copy_presized(
        &self,
        source: &MultiplexedConnection,
        keys: Vec<(Vec<u8>, u64)>,
        out: &mut BatchOutcome,
    ) {
        let mut small: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut chunked: Vec<(Vec<u8>, u64)> = Vec::new();
        for (key, size) in keys {
            match size {
                size if size > self.big_key_bytes => self.copy_big(source, key, size, out).await,
                size if self.by_type => chunked.push((key, size)),
                size => small.push((key, size)),
            }
        }
        for group in crate::batch::by_bytes(small, SUB_BATCH_BYTES) {
            self.copy_small(source, group, out).await;
        }
        self.copy_by_type(source, chunked, out).await;
    }

    /// Takes `bytes` (at least 1, at most the whole budget) of the payload budget.
    async fn reserve(&self, bytes: u64) -> SemaphorePermit<'_> {
        let permits = bytes.clamp(1, self.budget_bytes) as u32;
        self.budget
            .acquire_many(permits)
            .await
            .expect("budget semaphore closed")
    }

    /// Copies small keys by type, several at a time (one big key at a time is enough to keep
    /// both sides busy; small ones are a few round trips each).
    async fn copy_by_type(
        &self,
        source: &MultiplexedConnection,
        keys: Vec<(Vec<u8>, u64)>,
        out: &mut BatchOutcome,
    ) {
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(keys)
            .map(|(key, size)| async move {
                let result = self.chunked(source, &key).await;
                (key, size, result)
            })
            .buffer_unordered(BY_TYPE_CONCURRENCY)
            .collect()
            .await;
        for (key, size, result) in results {
            out.absorb_chunked(key, size, result, false);
        }
    }

    async fn copy_big(
        &self,
        source: &MultiplexedConnection,
        key: Vec<u8>,
        size: u64,
        out: &mut BatchOutcome,
    ) {
        let result = self.chunked(source, &key).await;
        out.absorb_chunked(key, size, result, true);
    }

    /// One key copied in chunks by type (see [`bigkey`]).
    async fn chunked(&self, source: &MultiplexedConnection, key: &[u8]) -> RedisResult<bigkey::BigCopy> {
        let mut src = source.clone();
        let mut dst = self.cluster.clone();
        bigkey::copy(&mut src, &mut dst, key, self.replace).await
    }

    async fn copy_small(
        &self,
        source: &MultiplexedConnection,
        group: Vec<(Vec<u8>, u64)>,
        out: &mut BatchOutcome,
    ) {
        let _permit = self.reserve(group.iter().map(|(_, s)| *s).sum()).await;
        // The keys move out of the group: no per-key copy on this path.
        let keys: Vec<Vec<u8>> = group.into_iter().map(|(k, _)| k).collect();
        let snapshots = match with_retries(|| keysync::read_many(source, &keys, &self.scripts)).await {
            Ok(s) => s,
            Err(e) => {
                out.fail_all(&keys, &format!("source: {e}"));
                return;
            }
        };
        self.restore_counted(&keys, &snapshots, out).await;
    }

    /// RESTOREs the snapshots read for `keys` and counts each key's outcome.
    async fn restore_counted(&self, keys: &[Vec<u8>], snapshots: &[Snapshot], out: &mut BatchOutcome) {
        if keys.is_empty() {
            return;
        }
        for ((key, snap), result) in keys
            .iter()
            .zip(snapshots)
            .zip(self.restore_all(keys, snapshots).await)
        {
            match result {
                Ok(Applied::Restored) => {
                    out.counters.copied += 1;
                    out.counters.bytes += snap.size() as u64;
                }
                Ok(Applied::Deleted) => out.counters.vanished += 1,
                // (The backfill writes without the lease: never covered.)
                Ok(Applied::KeptExisting | Applied::Covered) => out.counters.skipped_existing += 1,
                Err(e) => out.dead.push(DeadLetter {
                    key: key.clone(),
                    reason: format!("target: {e}"),
                    size: Some(snap.size() as u64),
                }),
            }
        }
    }

    /// RESTOREs every present key, pipelined per target master (the router retries redirections
    /// and transient errors). A key gone from the source is not deleted on the target: the
    /// backfill only adds; deletes are the mirror's and verify's job.
    async fn restore_all(&self, keys: &[Vec<u8>], snapshots: &[Snapshot]) -> Vec<RedisResult<Applied>> {
        let present: Vec<usize> = (0..keys.len())
            .filter(|&i| !matches!(snapshots[i], Snapshot::Absent))
            .collect();
        let present_keys: Vec<&[u8]> = present.iter().map(|&i| keys[i].as_slice()).collect();
        let commands = present
            .iter()
            .map(|&i| keysync::write_command(&keys[i], &snapshots[i], self.replace))
            .collect();
        let replies = self.target.send(&present_keys, commands).await;
        let mut out: Vec<RedisResult<Applied>> = (0..keys.len()).map(|_| Ok(Applied::Deleted)).collect();
        for (&i, reply) in present.iter().zip(replies) {
            out[i] = keysync::interpret_write(&snapshots[i], reply);
        }
        out
    }
}

impl BatchOutcome {
    /// Counts a chunked copy (`big`: a key above `big_key_bytes`, else a by-type copy).
    fn absorb_chunked(&mut self, key: Vec<u8>, size: u64, result: RedisResult<bigkey::BigCopy>, big: bool) {
        match result {
            Ok(bigkey::BigCopy::Copied { bytes }) => {
                self.counters.copied += 1;
                self.counters.big_keys += u64::from(big);
                self.counters.bytes += bytes;
            }
            Ok(bigkey::BigCopy::KeptExisting) => self.counters.skipped_existing += 1,
            Ok(bigkey::BigCopy::Vanished) => self.counters.vanished += 1,
            Err(e) => self.dead.push(DeadLetter {
                key,
                reason: format!("{}: {e}", if big { "big key" } else { "by type" }),
                size: Some(size),
            }),
        }
    }

    fn fail_all(&mut self, keys: &[Vec<u8>], reason: &str) {
        self.dead.extend(keys.iter().map(|k| DeadLetter {
            key: k.clone(),
            reason: reason.to_string(),
            size: None,
        }));
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

/// Gives back the part of `permit` above `keep` bytes (at least 1 permit stays).
fn trim(permit: &mut SemaphorePermit<'_>, keep: u64) {
    let keep = keep.max(1) as usize;
    if let Some(excess) = permit.num_permits().checked_sub(keep).filter(|&n| n > 0) {
        drop(permit.split(excess));
    }
}
