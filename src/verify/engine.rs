//! What happens to one SCAN batch: a first look, a re-check of what differs after
//! [`RECHECK_DELAY`], repair if asked, and the record (CSV and tally) of what persisted.

use std::sync::Mutex;

use futures::StreamExt;
use tokio::sync::Semaphore;

use super::moved;
use super::report::CsvReport;
use super::side::{Side, command, take};
use super::verdict::Verdict;
use super::{DifferenceRow, EXAMPLES, Kind, KindCounts, Pass, RECHECK_DELAY, REPAIR_CONCURRENCY};
use crate::backfill::{bigkey, escape_key};
use crate::cluster::with_retries;
use crate::keysync::{self, KeySync};
use crate::phase::Side as Primary;

/// What repair did for one difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    /// No repair asked.
    Unrepaired,
    /// Synced, and equal afterwards.
    Repaired,
    /// Synced (or covered by a mirror's sync that read later), but the key changed on the write
    /// primary since: its later writes are the proxies' to mirror. A hot key looks like this.
    RepairedThenChanged,
    /// The sync failed but the key matched afterwards anyway.
    ResolvedAnyway(String),
    /// Still different after repair.
    Unresolved(String),
}

/// What a repair wrote.
pub(super) enum Repair {
    /// A key-sync landed this state.
    Landed(keysync::Landed),
    /// A mirror's key-sync that read the primary later landed first.
    Covered,
    /// A big key copied in chunks.
    Chunked,
}

/// Counters of one batch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BatchStats {
    pub checked: u64,
    pub bytes: u64,
    pub found: u64,
    pub transient: u64,
    pub repaired: u64,
}

impl BatchStats {
    pub fn add(&mut self, o: &BatchStats) {
        self.checked += o.checked;
        self.bytes += o.bytes;
        self.found += o.found;
        self.transient += o.transient;
        self.repaired += o.repaired;
    }
}

/// Everything the differences feed: the CSV and the tally.
#[derive(Default)]
pub(super) struct Collector {
    pub csv: Option<CsvReport>,
    pub tally: Tally,
    pub io_error: Option<std::io::Error>,
}

/// The differences recorded so far, for the summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub found: u64,
    pub kinds: KindCounts,
    pub repaired: u64,
    pub unresolved: u64,
    pub examples: Vec<DifferenceRow>,
}

/// A difference that survived the re-check.
pub(super) struct Confirmed {
    pub key: Vec<u8>,
    pub kind: Kind,
    pub details: String,
    pub source_size: Option<u64>,
}

/// Shared by every batch.
pub(super) struct Engine {
    pub source: Side,
    pub target: Side,
    /// Keys above this many bytes are compared by canonical digest and repaired in chunks.
    pub big_key_bytes: u64,
    /// With repair: the write primary, which repairs copy from (the other side is written).
    pub repair: Option<Primary>,
    /// DUMP payload bytes in flight (permits are bytes).
    pub budget: Semaphore,
    /// Repairs key-sync under each key's lease on the written side, as the mirrors do.
    pub keysync: KeySync,
    pub collector: Mutex<Collector>,
}

impl Engine {
    /// Checks one SCAN batch: first look, re-check after a delay, repair, record.
    pub async fn check_batch(&self, pass: Pass, keys: Vec<Vec<u8>>) -> BatchStats {
        let mut stats = BatchStats {
            checked: keys.len() as u64,
            ..BatchStats::default()
        };
        let (first, bytes) = self.check(pass, &keys).await;
        stats.bytes += bytes;
        let candidates: Vec<Vec<u8>> = keys
            .into_iter()
            .zip(first)
            .filter_map(|(k, v)| matches!(v, Verdict::Differs { .. }).then_some(k))
            .collect();
        if candidates.is_empty() {
            return stats;
        }
        let first_look = candidates.len() as u64;
        tokio::time::sleep(RECHECK_DELAY).await;
        let (second, _) = self.check(pass, &candidates).await;
        let confirmed: Vec<Confirmed> = candidates
            .into_iter()
            .zip(second)
            .filter_map(|(key, v)| match v {
                Verdict::Differs {
                    kind,
                    details,
                    source_size,
                } => Some(Confirmed {
                    key,
                    kind,
                    details,
                    source_size,
                }),
                _ => None,
            })
            .collect();
        stats.found = confirmed.len() as u64;
        stats.transient = first_look - stats.found;
        let statuses = if let Some(primary) = self.repair {
            self.repair_all(pass, primary, &confirmed).await
        } else {
            vec![Status::Unrepaired; confirmed.len()]
        };
        stats.repaired = statuses
            .iter()
            .filter(|s| matches!(s, Status::Repaired | Status::RepairedThenChanged))
            .count() as u64;
        self.record(confirmed, statuses);
        stats
    }

    /// Key-syncs every confirmed difference from the write primary, then checks each key again.
    ///
    /// A key that still differs after a key-sync that landed is a failed repair only if nothing
    /// shows the primary written since the snapshot the sync wrote ([`moved`]): the primary is
    /// sampled alongside the re-check and once more after it. Either sample showing a later
    /// write (or the sync covered by a mirror's later one) makes the difference that write on its
    /// way through the mirror, not a failed repair — a key written all the time always differs at
    /// some instant. Otherwise: unresolved.
    async fn repair_all(&self, pass: Pass, primary: Primary, confirmed: &[Confirmed]) -> Vec<Status> {
        let work: Vec<(Vec<u8>, Option<u64>)> =
            confirmed.iter().map(|c| (c.key.clone(), c.source_size)).collect();
        let (origin, dest) = match primary {
            Primary::Old => (&self.source, &self.target),
            Primary::New => (&self.target, &self.source),
        };
        let attempts: Vec<Result<Repair, String>> = futures::stream::iter(work)
            .map(|(key, size)| async move {
                let size = if primary == Primary::Old { size } else { None };
                self.repair_one(origin, dest, &key, size).await
            })
            .buffered(REPAIR_CONCURRENCY)
            .collect()
            .await;
        let keys: Vec<Vec<u8>> = confirmed.iter().map(|c| c.key.clone()).collect();
        let scripts = &self.keysync.origin_scripts;
        let ((after, _), alongside) =
            tokio::join!(self.check(pass, &keys), moved::sample_all(origin, &keys, scripts));
        let mut statuses = Vec::with_capacity(keys.len());
        for (((key, attempt), after), alongside) in keys.iter().zip(attempts).zip(after).zip(alongside) {
            statuses.push(match (attempt, after) {
                (Ok(_), Verdict::Same | Verdict::Gone) => Status::Repaired,
                (Err(e), Verdict::Same | Verdict::Gone) => Status::ResolvedAnyway(e),
                (Ok(Repair::Covered), Verdict::Differs { .. }) => Status::RepairedThenChanged,
                (Ok(Repair::Landed(landed)), Verdict::Differs { kind, details, .. }) => {
                    if self.written_since(origin, key, &landed, &alongside).await {
                        Status::RepairedThenChanged
                    } else {
                        Status::Unresolved(format!("still differs after repair ({kind}: {details})"))
                    }
                }
                (Ok(Repair::Chunked), Verdict::Differs { kind, details, .. }) => {
                    Status::Unresolved(format!("still differs after repair ({kind}: {details})"))
                }
                (Err(e), Verdict::Differs { .. }) => Status::Unresolved(format!("repair failed: {e}")),
            });
        }
        statuses
    }

    /// Whether `key` was written on `origin` since `landed` was read: the sample taken alongside
    /// the re-check, or one taken now, shows another state (see [`moved`]). A sample that could
    /// not be read is no witness.
    async fn written_since(
        &self,
        origin: &Side,
        key: &[u8],
        landed: &keysync::Landed,
        alongside: &moved::Sample,
    ) -> bool {
        if moved::moved(landed, alongside) {
            return true;
        }
        let now = moved::sample(origin, key, &self.keysync.origin_scripts).await;
        moved::moved(landed, &now)
    }

    /// Makes `key` on `dest` equal to `origin` (the write primary): chunked copy for a big key,
    /// otherwise key-sync under the key's lease on `dest` (`RESTORE … REPLACE`, or `DEL` when
    /// the origin has no such key). `origin_size` is the key's `MEMORY USAGE` on the origin when
    /// the comparison read it; it is asked for here otherwise (the comparison reads sizes on the
    /// source only).
    async fn repair_one(
        &self,
        origin: &Side,
        dest: &Side,
        key: &[u8],
        origin_size: Option<u64>,
    ) -> Result<Repair, String> {
        let size = match origin_size {
            Some(size) => Some(size),
            None => origin
                .query_key(key, &command("MEMORY", ("USAGE", key)))
                .await
                .ok()
                .and_then(|v| take::<Option<u64>>(v).ok().flatten()),
        };
        if size.is_some_and(|s| s > self.big_key_bytes) {
            let mut source = origin.node_conn(key).await;
            match dest.writer().copy_big(&mut source, key).await {
                Ok(bigkey::BigCopy::Vanished) => {} // gone from the origin: key-sync deletes it
                Ok(_) => return Ok(Repair::Chunked),
                Err(e) => return Err(format!("chunked copy of a big key: {e}")),
            }
        }
        let synced = with_retries(|| async {
            let mut source = origin.node_conn(key).await;
            dest.writer()
                .sync_from(&mut source, key, dest, &self.keysync)
                .await
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(match synced.landed {
            Some(landed) => Repair::Landed(landed),
            None => Repair::Covered,
        })
    }

    /// Writes confirmed differences to the CSV and the tally.
    fn record(&self, confirmed: Vec<Confirmed>, statuses: Vec<Status>) {
        let mut c = self.collector.lock().expect("collector lock");
        let c = &mut *c;
        for (d, status) in confirmed.into_iter().zip(statuses) {
            c.tally.found += 1;
            c.tally.kinds.add(d.kind);
            let details = match status {
                Status::Unrepaired => {
                    c.tally.unresolved += 1;
                    d.details
                }
                Status::Repaired => {
                    c.tally.repaired += 1;
                    format!("{}; repaired", d.details)
                }
                Status::RepairedThenChanged => {
                    c.tally.repaired += 1;
                    format!(
                        "{}; repaired, and written again since on the primary (mirrored)",
                        d.details
                    )
                }
                Status::ResolvedAnyway(e) => {
                    format!("{}; repair failed ({e}) but the key now matches", d.details)
                }
                Status::Unresolved(why) => {
                    c.tally.unresolved += 1;
                    format!("{}; {why}", d.details)
                }
            };
            if c.tally.examples.len() < EXAMPLES {
                c.tally.examples.push(DifferenceRow {
                    key: escape_key(&d.key),
                    kind: d.kind,
                    details: details.clone(),
                });
            }
            if let Some(csv) = c.csv.as_mut()
                && let Err(e) = csv.write(&d.key, d.kind, &details)
            {
                c.io_error.get_or_insert(e);
            }
        }
    }
}
