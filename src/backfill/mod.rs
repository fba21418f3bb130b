//! The backfill (phase 1): copy the keyspace into the new cluster, throttled and resumable.
//!
//! Every source node (the standalone source, or every master of a source cluster) is scanned
//! with SCAN; each batch of matching keys is copied by [`copy::Copier`]; up to `workers`
//! batches are in flight. A node's checkpoint advances only over batches whose writes were all
//! acknowledged, so `resume` after kill -9 continues without skipping a key.

pub mod bigkey;
mod checkpoint;
mod copy;
mod deadletter;
mod functions;
pub(crate) mod progress;
mod read;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use checkpoint::{BackfillDir, Counters, Manifest, NodeCheckpoint, Progress};
pub use deadletter::{DeadLetter, escape_key};

use crate::inspect::{NodeReport, inspect_source, inspect_target};
use crate::keys::KeyFilter;
use crate::plan::{OnExisting, Plan};
use copy::Copier;
use progress::{Board, Reporter};
use throttle::Throttle;

/// Payload bytes in flight over all batches (bounds memory whatever the keyspace size).
const BUDGET_BYTES: u64 = 32 * 1024 * 1024;
/// Checkpoints are written at most this often per node (and always at the end).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Connections per source node that batches are spread over (fewer when `workers` is lower).
/// One multiplexed connection decodes every reply on one task; a few let the replies of
/// concurrent batches be decoded on several threads while the source stays the bottleneck
/// (measured in docs/backfill.md). The throttle is untouched: it admits batches, whichever
/// connection carries them.
const SOURCE_CONNECTIONS: u32 = 4;

/// The result of a backfill run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per node: address, counters, finished.
    pub nodes: Vec<(String, Counters, bool)>,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// Per node: what earlier runs had counted when this one started (a resume's checkpoints);
    /// rates divide only this run's share by this run's time.
    pub earlier: BTreeMap<String, Counters>,
    /// Where failed keys were written.
    pub dead_letter: std::path::PathBuf,
    /// Times the throttle held a batch back.
    pub throttle_waits: u64,
}

impl Summary {
    /// Counters summed over nodes.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for (_, c, _) in &self.nodes {
            t.add(c);
        }
        t
    }

    /// What this run counted (the total less what earlier runs had counted).
    pub fn this_run(&self) -> Counters {
        let mut earlier = Counters::default();
        for c in self.earlier.values() {
            earlier.add(c);
        }
        self.total().since(&earlier)
    }

    /// The summary table.
    pub fn table(&self) -> comfy_table::Table {
        progress::summary_table(&self.nodes, &self.earlier, self.elapsed)
    }
}

/// Runs (or resumes) the backfill of `plan` to completion.
pub async fn run(plan: &Plan) -> Result<Summary> {
    let started = Instant::now();
    let dir = BackfillDir::new(&plan.state_dir);
    let source = inspect_source(&plan.source, &plan.keys).await?;
    let by_type = copy_by_type(plan, &source).await?;
    let mut manifest = match dir.manifest()? {
        Some(m) => m,
        None => Manifest {
            nodes: source.masters.iter().map(|m| m.addr.clone()).collect(),
            started_at: chrono::Utc::now(),
            finished_at: None,
            plan_sha256: plan.sha256.clone(),
        },
    };
    // A source cluster may have gained masters since the first run: scan them too.
    for m in &source.masters {
        if !manifest.nodes.contains(&m.addr) {
            manifest.nodes.push(m.addr.clone());
        }
    }
    dir.save_manifest(&manifest)?;

    let copier = Arc::new(Copier {
        target: Arc::new(crate::cluster::Router::connect(&plan.target).await?),
        cluster: plan.target.connect_cluster().await?,
        replace: plan.backfill.on_existing == OnExisting::Replace,
        big_key_bytes: plan.backfill.big_key_bytes,
        by_type,
        budget: Arc::new(Semaphore::new(BUDGET_BYTES as usize)),
        budget_bytes: BUDGET_BYTES,
        scripts: Default::default(),
    });
    let written = functions::copy(plan, &copier.target).await?;
    if written > 0 {
        eprintln!("backfill: copied the source's function libraries to {written} target master(s)");
    }
    let throttle = Arc::new(Throttle::new(
        plan.backfill.max_keys_per_sec,
        plan.backfill.max_source_latency_ms,
    ));
    let probe_url = crate::cluster::node_url(&plan.source.urls[0], &source.masters[0].addr)?;
    let probe = throttle.spawn_probe(plan.source.connect_node(&probe_url).await?);
    let board = Arc::new(Board::default());
    let reporter = {
        let t = throttle.clone();
        Reporter::start("backfill", board.clone(), move || t.reason())
    };
    let workers = Arc::new(Semaphore::new(plan.backfill.workers as usize));

    let mut tasks = JoinSet::new();
    let mut earlier = BTreeMap::new();
    for node in &source.masters {
        let cp = load_checkpoint(&dir, node)?;
        earlier.insert(node.addr.clone(), cp.counters);
        let index = board.add_node(&node.addr, node.dbsize, cp.counters, cp.done);
        if cp.done {
            continue;
        }
        let url = crate::cluster::node_url(&plan.source.urls[0], &node.addr)?;
        let mut conns = Vec::new();
        for _ in 0..plan.backfill.workers.clamp(1, SOURCE_CONNECTIONS) {
            conns.push(plan.source.connect_node(&url).await?);
        }
        let job = NodeJob {
            conns,
            checkpoint: cp,
            filter: plan.keys.clone(),
            scan_count: plan.backfill.scan_count,
            dir: dir.clone(),
            copier: copier.clone(),
            throttle: throttle.clone(),
            workers: workers.clone(),
            board: board.clone(),
            index,
        };
        tasks.spawn(job.run());
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
            failure.get_or_insert(e);
        }
    }
    probe.abort();
    drop(reporter);
    if let Some(e) = failure {
        return Err(e.context("backfill interrupted; `cachemig resume PLAN` continues from the checkpoints"));
    }
    let progress = dir.progress()?.context("backfill manifest vanished")?;
    if progress.complete() {
        manifest.finished_at = Some(chrono::Utc::now());
        dir.save_manifest(&manifest)?;
    }
    let mut nodes = Vec::new();
    for addr in &manifest.nodes {
        if let Some(cp) = dir.checkpoint(addr)? {
            nodes.push((addr.clone(), cp.counters, cp.done));
        }
    }
    Ok(Summary {
        nodes,
        elapsed: started.elapsed(),
        earlier,
        dead_letter: dir.dead_letter_path(),
        throttle_waits: throttle.waits(),
    })
}

/// Whether every key is copied by type: the plan says so, or (`auto`) the target cannot RESTORE
/// the source's payloads. Said on stderr either way, with the reason.
async fn copy_by_type(plan: &Plan, source: &crate::inspect::NodeSetReport) -> Result<bool> {
    use crate::server::{CopyMode, CopySetting};
    let choice = match plan.backfill.copy_mode {
        // Forced: no need to look at the target's version.
        setting @ (CopySetting::ByType | CopySetting::Dump) => {
            crate::server::copy_mode::choose_rdb(setting, None, None)
        }
        CopySetting::Auto => {
            let target = inspect_target(&plan.target, &plan.keys, 0).await?;
            crate::server::choose(CopySetting::Auto, source, &target)
        }
    };
    let choice = choice.context(
        "the RDB versions of source and target are unknown, so cachemig cannot tell whether the \
         target restores the source's payloads; set `[backfill] copy_mode` in the plan",
    )?;
    eprintln!("backfill: copy mode {}: {}", choice.mode, choice.reason);
    Ok(choice.mode == CopyMode::ByType)
}

/// The checkpoint to continue from: the saved one if the node is the same process, a fresh one
/// (with a warning) if its `run_id` changed, because a SCAN cursor is void on another process.
fn load_checkpoint(dir: &BackfillDir, node: &NodeReport) -> Result<NodeCheckpoint> {
    let fresh = |counters: Counters, restarts| NodeCheckpoint {
        node: node.addr.clone(),
        run_id: node.run_id.clone(),
        cursor: 0,
        done: false,
        restarts,
        counters,
        updated_at: chrono::Utc::now(),
    };
    Ok(match dir.checkpoint(&node.addr)? {
        None => fresh(Counters::default(), 0),
        Some(cp) if cp.run_id == node.run_id || cp.done => cp,
        Some(cp) => {
            tracing::warn!(node = %node.addr, "source node restarted (run_id changed); restarting its scan from the beginning");
            eprintln!(
                "warning: source node {} restarted (run_id changed); restarting its scan from the beginning",
                node.addr
            );
            fresh(Counters::default(), cp.restarts + 1)
        }
    })
}

/// The scan of one source node.
struct NodeJob {
    /// The node's connections: SCAN on the first, batches spread over all of them.
    conns: Vec<MultiplexedConnection>,
    checkpoint: NodeCheckpoint,
    filter: KeyFilter,
    scan_count: u32,
    dir: BackfillDir,
    copier: Arc<Copier>,
    throttle: Arc<Throttle>,
    workers: Arc<Semaphore>,
    board: Arc<Board>,
    index: usize,
}

/// A batch finished: its sequence number, the cursor after it, its outcome.
type Finished = (u64, u64, copy::BatchOutcome);

impl NodeJob {
    async fn run(mut self) -> Result<()> {
        let mut cursor = self.checkpoint.cursor;
        let mut next_seq = 0u64;
        // Batches finish out of order; the checkpoint may only move over a finished prefix.
        let mut committed_seq = 0u64;
        let mut finished: BTreeMap<u64, (u64, copy::BatchOutcome)> = BTreeMap::new();
        let mut in_flight: JoinSet<Finished> = JoinSet::new();
        let mut last_save = Instant::now();
        let mut scanning = true;
        while scanning || !in_flight.is_empty() {
            if scanning {
                let (next, keys) = self.scan(cursor).await?;
                let scanned = keys.len() as u64;
                let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| self.filter.matches(k)).collect();
                let matched = keys.len() as u64;
                self.throttle.admit(matched).await;
                let permit = self.workers.clone().acquire_owned().await?;
                let conn = self.conns[next_seq as usize % self.conns.len()].clone();
                let (copier, seq) = (self.copier.clone(), next_seq);
                in_flight.spawn(async move {
                    let mut outcome = copier.copy_batch(&conn, keys).await;
                    outcome.counters.scanned = scanned;
                    outcome.counters.matched = matched;
                    drop(permit);
                    (seq, next, outcome)
                });
                next_seq += 1;
                cursor = next;
                scanning = next != 0;
            }
            // Collect whatever finished (wait for one when we cannot scan further).
            while let Some(joined) = if scanning {
                in_flight.try_join_next()
            } else {
                in_flight.join_next().await
            } {
                let (seq, after, outcome) = joined?;
                finished.insert(seq, (after, outcome));
            }
            while let Some((after, outcome)) = finished.remove(&committed_seq) {
                self.absorb(after, outcome)?;
                committed_seq += 1;
            }
            let all_done = !scanning && in_flight.is_empty() && finished.is_empty();
            self.checkpoint.done = all_done;
            if all_done || last_save.elapsed() >= CHECKPOINT_EVERY {
                self.save()?;
                last_save = Instant::now();
            }
            self.board
                .update(self.index, self.checkpoint.counters, self.checkpoint.done);
        }
        Ok(())
    }

    async fn scan(&mut self, cursor: u64) -> Result<(u64, Vec<Vec<u8>>)> {
        let reply = crate::cluster::scan_step(
            &self.conns[0],
            cursor,
            self.filter.scan_pattern(),
            self.scan_count,
        )
        .await
        .with_context(|| format!("SCAN on source node {}", self.checkpoint.node))?;
        Ok(reply)
    }

    /// Folds a committed batch into the checkpoint; its dead letters are written first, so a
    /// checkpoint never covers a failed key that is not in the report.
    fn absorb(&mut self, after: u64, mut outcome: copy::BatchOutcome) -> Result<()> {
        outcome.counters.failed = outcome.dead.len() as u64;
        deadletter::append(&self.dir.dead_letter_path(), &outcome.dead)?;
        self.checkpoint.counters.add(&outcome.counters);
        self.checkpoint.cursor = after;
        Ok(())
    }

    fn save(&mut self) -> Result<()> {
        self.checkpoint.updated_at = chrono::Utc::now();
        self.dir
            .save_checkpoint(&self.checkpoint)
            .context("writing backfill checkpoint")
    }
}
