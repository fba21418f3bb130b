//! Backfill checkpoints: one file per source node under `state_dir/backfill/`, written only
//! after every key up to its cursor is acknowledged by the target, so a resume after kill -9
//! never skips a key (it may copy a few twice, which key-sync makes harmless).

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{read_json, write_json};

/// Counters of one source node's backfill (also summed for the total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Keys returned by SCAN (duplicates included).
    pub scanned: u64,
    /// Keys that matched the plan's filter.
    pub matched: u64,
    /// Keys written to the target.
    pub copied: u64,
    /// Of those, keys copied in chunks by type (big keys).
    pub big_keys: u64,
    /// Keys the target already had (`on_existing = skip`).
    pub skipped_existing: u64,
    /// Keys gone (deleted or expired) before they could be read.
    pub vanished: u64,
    /// Keys that still failed after retries (in the dead-letter report).
    pub failed: u64,
    /// Payload bytes moved.
    pub bytes: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.scanned += other.scanned;
        self.matched += other.matched;
        self.copied += other.copied;
        self.big_keys += other.big_keys;
        self.skipped_existing += other.skipped_existing;
        self.vanished += other.vanished;
        self.failed += other.failed;
        self.bytes += other.bytes;
    }

    /// What was counted since `earlier` (a snapshot of the same counters): this run's share of
    /// a resumed backfill.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            scanned: self.scanned.saturating_sub(earlier.scanned),
            matched: self.matched.saturating_sub(earlier.matched),
            copied: self.copied.saturating_sub(earlier.copied),
            big_keys: self.big_keys.saturating_sub(earlier.big_keys),
            skipped_existing: self.skipped_existing.saturating_sub(earlier.skipped_existing),
            vanished: self.vanished.saturating_sub(earlier.vanished),
            failed: self.failed.saturating_sub(earlier.failed),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Where one source node's scan stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCheckpoint {
    /// `host:port` of the source node.
    pub node: String,
    /// The node's `run_id` when the scan started: a cursor is void on another process.
    pub run_id: String,
    /// The SCAN cursor to continue from (0 with `done` false = not started).
    pub cursor: u64,
    /// The scan reached cursor 0 again: every key present for the whole scan was copied.
    pub done: bool,
    /// How many times the scan restarted from 0 because the node's `run_id` changed.
    pub restarts: u32,
    /// Counters so far.
    pub counters: Counters,
    /// When this checkpoint was written.
    pub updated_at: DateTime<Utc>,
}

/// The backfill as a whole: which nodes it covers, when it started and finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Source nodes scanned (every master of a source cluster, or the one standalone node).
    pub nodes: Vec<String>,
    /// When the first run started.
    pub started_at: DateTime<Utc>,
    /// When the last node finished (`None` while running or interrupted).
    pub finished_at: Option<DateTime<Utc>>,
    /// SHA-256 of the plan used.
    pub plan_sha256: String,
}

/// The backfill files of one migration.
#[derive(Debug, Clone)]
pub struct BackfillDir {
    root: PathBuf,
}

impl BackfillDir {
    /// `state_dir/backfill`.
    pub fn new(state_dir: &Path) -> BackfillDir {
        BackfillDir {
            root: state_dir.join("backfill"),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The dead-letter CSV.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.root.join("dead-letter.csv")
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    fn node_path(&self, node: &str) -> PathBuf {
        self.root
            .join(format!("node-{}.json", node.replace([':', '/', '[', ']'], "_")))
    }

    /// Moves an earlier run's files aside (`backfill.<time>`), so a new entry into the phase
    /// starts from zero while its dead letters stay available.
    pub fn archive(&self) -> io::Result<()> {
        if !self.root.exists() {
            return Ok(());
        }
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let name = format!("backfill.{stamp}");
        std::fs::rename(&self.root, self.root.with_file_name(name))
    }

    /// The manifest, if a backfill ever started.
    pub fn manifest(&self) -> io::Result<Option<Manifest>> {
        read_json(&self.manifest_path())
    }

    /// Writes the manifest.
    pub fn save_manifest(&self, manifest: &Manifest) -> io::Result<()> {
        write_json(&self.manifest_path(), manifest)
    }

    /// The checkpoint of `node`, if any.
    pub fn checkpoint(&self, node: &str) -> io::Result<Option<NodeCheckpoint>> {
        read_json(&self.node_path(node))
    }

    /// Writes the checkpoint of its node.
    pub fn save_checkpoint(&self, checkpoint: &NodeCheckpoint) -> io::Result<()> {
        write_json(&self.node_path(&checkpoint.node), checkpoint)
    }

    /// Where the backfill stands, for gates and `status`: `None` if it never started.
    pub fn progress(&self) -> io::Result<Option<Progress>> {
        let Some(manifest) = self.manifest()? else {
            return Ok(None);
        };
        let mut total = Counters::default();
        let mut done = 0;
        for node in &manifest.nodes {
            if let Some(cp) = self.checkpoint(node)? {
                total.add(&cp.counters);
                done += usize::from(cp.done);
            }
        }
        Ok(Some(Progress {
            nodes: manifest.nodes.len(),
            nodes_done: done,
            counters: total,
            manifest,
        }))
    }
}

/// A summary of the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Source nodes in the backfill.
    pub nodes: usize,
    /// Source nodes whose scan is complete.
    pub nodes_done: usize,
    /// Counters summed over nodes.
    pub counters: Counters,
    /// The manifest.
    pub manifest: Manifest,
}

impl Progress {
    /// Whether every node finished.
    pub fn complete(&self) -> bool {
        self.nodes > 0 && self.nodes_done == self.nodes
    }
}
