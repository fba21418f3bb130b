//! The per-master SCAN passes: which keys are checked (all, or a sample), and the batches fed
//! to the engine with a bounded number in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Pass;
use super::engine::{BatchStats, Engine};
use crate::backfill::Counters;
use crate::backfill::progress::Board;
use crate::keys::KeyFilter;

/// Counters of one node's scan.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NodeTotals {
    pub scanned: u64,
    pub batch: BatchStats,
}

impl NodeTotals {
    /// Adds another node's counters.
    pub fn add(&mut self, o: &NodeTotals) {
        self.scanned += o.scanned;
        self.batch.add(&o.batch);
    }

    /// As the progress board shows them: checked as "matched", repaired as "copied",
    /// differences as "failed".
    fn counters(&self) -> Counters {
        Counters {
            scanned: self.scanned,
            matched: self.batch.checked,
            copied: self.batch.repaired,
            failed: self.batch.found,
            bytes: self.batch.bytes,
            ..Counters::default()
        }
    }
}

/// Chooses which scanned keys are checked: all of them, or (`--sample N`) each with
/// probability N / DBSIZE of the side, never more than N.
pub(super) struct Sampler {
    probability: f64,
    limit: u64,
    taken: AtomicU64,
    state: AtomicU64,
}

impl Sampler {
    /// A sampler of about `sample` keys out of `population` (all keys when `None`).
    pub fn new(sample: Option<u64>, population: u64, seed: u64) -> Sampler {
        let (probability, limit) = match sample {
            None => (1.0, u64::MAX),
            Some(n) if population == 0 => (1.0, n),
            Some(n) => ((n as f64 / population as f64).min(1.0), n),
        };
        Sampler {
            probability,
            limit,
            taken: AtomicU64::new(0),
            state: AtomicU64::new(seed),
        }
    }

    /// Whether the next key is checked.
    fn take(&self) -> bool {
        if self.probability < 1.0 {
            let x = splitmix64(self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
            let uniform = (x >> 11) as f64 / (1u64 << 53) as f64;
            if uniform >= self.probability {
                return false;
            }
        }
        self.taken.fetch_add(1, Ordering::Relaxed) < self.limit
    }

    /// The sample is complete: scanning can stop.
    fn full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) >= self.limit
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The scan of one master, feeding batches to the engine.
pub(super) struct NodeScan {
    pub engine: Arc<Engine>,
    pub pass: Pass,
    /// "source 127.0.0.1:6379", for messages.
    pub name: String,
    pub conn: MultiplexedConnection,
    pub filter: KeyFilter,
    pub scan_count: u32,
    pub sampler: Arc<Sampler>,
    pub inflight: Arc<Semaphore>,
    pub board: Arc<Board>,
    pub index: usize,
}

impl NodeScan {
    pub async fn run(self) -> anyhow::Result<(Pass, NodeTotals)> {
        let mut totals = NodeTotals::default();
        let mut batches: JoinSet<BatchStats> = JoinSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys) =
                crate::cluster::scan_step(&self.conn, cursor, self.filter.scan_pattern(), self.scan_count)
                    .await
                    .with_context(|| format!("SCAN on {}", self.name))?;
            totals.scanned += keys.len() as u64;
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| self.filter.matches(k) && self.sampler.take())
                .collect();
            if !keys.is_empty() {
                let permit = self.inflight.clone().acquire_owned().await?;
                let (engine, pass) = (self.engine.clone(), self.pass);
                batches.spawn(async move {
                    let stats = engine.check_batch(pass, keys).await;
                    drop(permit);
                    stats
                });
            }
            while let Some(done) = batches.try_join_next() {
                totals.batch.add(&done?);
            }
            self.board.update(self.index, totals.counters(), false);
            cursor = next;
            if cursor == 0 || self.sampler.full() {
                break;
            }
        }
        while let Some(done) = batches.join_next().await {
            totals.batch.add(&done?);
            self.board.update(self.index, totals.counters(), false);
        }
        self.board.update(self.index, totals.counters(), true);
        Ok((self.pass, totals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_takes_about_n_and_never_more() {
        let all = Sampler::new(None, 100, 1);
        assert!((0..1000).all(|_| all.take()));
        let s = Sampler::new(Some(100), 10_000, 42);
        let taken = (0..10_000).filter(|_| s.take()).count();
        assert!(taken <= 100, "{taken}");
        assert!(
            taken >= 50,
            "a Bernoulli sample of p = 1% over 10 000 keys: {taken}"
        );
        let small = Sampler::new(Some(5), 3, 7);
        assert_eq!((0..10).filter(|_| small.take()).count(), 5, "p = 1, capped at N");
        assert!(small.full());
    }
}
