//! `cachemig verify`: compare source and target key by key, in both directions, and optionally
//! repair every difference from the write primary of the phase in force (issue 3, item 3;
//! issue 9): old before `write-stop`, new in it. Phase 2's catch-up is this with repair (item 4).
//! docs/verify.md is the user-facing description.
//!
//! Two passes run at once, over the keys of the plan's filter:
//! - **source → target**: every source master is SCANned; each key is compared with the target:
//!   existence, TTL (within a tolerance), type and value (see [`digest`]). Kinds found:
//!   `missing`, `type`, `value`, `ttl`.
//! - **target → source**: every target master is SCANned (the reserved prefix and keys outside
//!   the filter skipped); each key must exist on the source, else it is `extra`. Keys present on
//!   both sides are compared once, by the first pass.
//!
//! A key whose reads fail (after retries) is reported as `error`. A difference is re-checked
//! after [`RECHECK_DELAY`] (a live key may just have changed) and counts only if it persists.
//! With repair, each one is key-synced from the write primary ([`Options::primary`]) to the other
//! side and checked again. Repairing old → new while new is the primary would revert or delete
//! writes the application made (and was acknowledged) on new.
//!
//! Reads are pipelined per master ([`side`], through [`crate::cluster::Router`] on a cluster), a
//! bounded number of SCAN batches is in flight, and DUMP payloads in flight are bounded in bytes,
//! so memory does not grow with the keyspace.
//!
//! Layout: [`scan`] runs the per-master SCAN passes and feeds batches to the [`engine`], which
//! takes a batch through its first look, re-check, repair and record; [`compare`] is one look at
//! a batch, deciding each key with the rules in [`verdict`]; values are compared by [`digest`]
//! (read whole, or in chunks by [`chunked`]); [`moved`] tells a key written again since its
//! repair from a repair that did not stick; [`kinds`] and [`report`] are what comes out.

mod chunked;
mod compare;
mod digest;
mod engine;
mod kinds;
mod moved;
mod report;
mod scan;
mod side;
mod verdict;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use kinds::{DifferenceRow, Kind, KindCounts};
pub use report::{CATCH_UP_FILE, CatchUpRecord, load_catch_up, save_catch_up};
pub use verdict::ttl_difference;

use crate::backfill::Counters;
use crate::backfill::progress::{Board, Reporter};
use crate::inspect::{inspect_source, inspect_target};
use crate::plan::Plan;
use engine::{Collector, Engine};
use report::CsvReport;
use scan::{NodeScan, NodeTotals, Sampler};
use side::Side;

/// How long a difference waits before it is read again (a live key may just have changed).
pub const RECHECK_DELAY: Duration = Duration::from_millis(200);
/// The report's file name in `state_dir` when `--report` is not given.
pub const DEFAULT_REPORT: &str = "verify-report.csv";
/// DUMP payload bytes in flight over all batches.
const BUDGET_BYTES: u64 = 32 * 1024 * 1024;
/// Largest sum of (source + target) payload bytes fetched in one pipeline.
const SUB_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Keys compared in one round trip (a SCAN batch can be larger: `scan_count` is a hint).
const ROUND_KEYS: usize = 1024;
/// Strings shorter than this are read whole in the first round trip and compared directly
/// (at most `ROUND_KEYS` × this many bytes per side and batch in flight).
const INLINE_STRING: usize = 1024;
/// Keys of one batch whose canonical digest is computed at once.
const SLOW_CONCURRENCY: usize = 4;
/// Keys of one batch repaired at once.
const REPAIR_CONCURRENCY: usize = 16;
/// Differences kept in the summary as examples.
const EXAMPLES: usize = 10;
/// The smallest TTL difference reported, in milliseconds.
pub const TTL_TOLERANCE_MS: u64 = 1000;

/// What `verify` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Check about N keys per side (a random sample) instead of every key.
    pub sample: Option<u64>,
    /// Key-sync every difference from [`Options::primary`] to the other side.
    pub repair: bool,
    /// The write primary of the phase in force (its routing's `write`): repairs copy from it.
    /// No default on purpose: every caller says which side wins.
    pub primary: crate::phase::Side,
    /// Where to write the CSV of differences (default `state_dir/verify-report.csv`).
    pub report: Option<PathBuf>,
}

/// The result of a verify run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Keys returned by SCAN on the source masters.
    pub source_scanned: u64,
    /// Keys returned by SCAN on the target masters.
    pub target_scanned: u64,
    /// Source keys (in the filter, sampled) compared with the target.
    pub source_checked: u64,
    /// Target keys (in the filter, sampled) checked against the source.
    pub target_checked: u64,
    /// DUMP payload bytes compared.
    pub bytes_compared: u64,
    /// Differences found (persistent after the re-check), all kinds.
    pub found: u64,
    /// Of those, by kind.
    pub kinds: KindCounts,
    /// Differences that were gone when re-checked (live keys that just changed).
    pub transient: u64,
    /// Differences repaired (and found equal afterwards, or different only because the primary
    /// changed again since the repair).
    pub repaired: u64,
    /// Differences still present at the end (all of them without `--repair`).
    pub unresolved: u64,
    /// `--sample N`, if given.
    pub sample: Option<u64>,
    /// Whether `--repair` was given.
    pub repair: bool,
    /// With `--repair`: the side repairs copied from (the write primary), `old` or `new`.
    pub repair_from: Option<crate::phase::Side>,
    /// The CSV report.
    pub report: PathBuf,
    /// The first few differences.
    pub examples: Vec<DifferenceRow>,
    /// Wall time.
    #[serde(rename = "elapsed_secs", serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Summary {
    /// Keys checked in both directions.
    pub fn checked(&self) -> u64 {
        self.source_checked + self.target_checked
    }

    /// Source keys compared per second of wall time (the keyspace verified per second; each
    /// of them is also checked from the target side when it is there).
    pub fn keys_per_sec(&self) -> f64 {
        self.source_checked as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// "3 missing, 1 value" (kinds with a count only), or "none".
    pub fn kinds_text(&self) -> String {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| self.kinds.get(**k) > 0)
            .map(|k| format!("{} {k}", self.kinds.get(*k)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// One line for the journal and logs.
    pub fn one_line(&self) -> String {
        let repair = match (self.repair, self.repair_from) {
            (true, Some(from)) => format!(", {} repaired from {from}", self.repaired),
            (true, None) => format!(", {} repaired", self.repaired),
            (false, _) => String::new(),
        };
        format!(
            "checked {} keys ({} source→target, {} target→source{}) in {:.1}s: {} difference(s) ({}){repair}, {} unresolved; report {}",
            self.checked(),
            self.source_checked,
            self.target_checked,
            self.sample
                .map_or(String::new(), |n| format!(", sample of about {n} per side")),
            self.elapsed.as_secs_f64(),
            self.found,
            self.kinds_text(),
            self.unresolved,
            self.report.display()
        )
    }
}

/// The key-sync repairs use: every key by type (in chunks, under its lease) when the repair's
/// destination cannot RESTORE its origin's payloads or the plan says `copy_mode = "by-type"`;
/// else DUMP/RESTORE. The direction is the repair's: from the write primary to the other side.
fn repair_keysync(
    plan: &Plan,
    options: &Options,
    source: &crate::inspect::NodeSetReport,
    target: &crate::inspect::NodeSetReport,
) -> crate::keysync::KeySync {
    let ks = crate::keysync::KeySync::default();
    if !options.repair {
        return ks;
    }
    let (from, to) = match options.primary {
        crate::phase::Side::Old => (source, target),
        crate::phase::Side::New => (target, source),
    };
    match crate::server::choose(plan.backfill.copy_mode, from, to) {
        Some(choice) if choice.mode == crate::server::CopyMode::ByType => {
            eprintln!("verify: repairs copy by type: {}", choice.reason);
            // Every key has a MEMORY USAGE above 0, so every key is copied in chunks.
            ks.with_big_keys(0)
        }
        _ => ks,
    }
}

/// Runs verify (with repair if asked) over the whole keyspace of `plan`'s filter, or a sample.
pub async fn run(plan: &Plan, options: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    if options.sample == Some(0) {
        bail!("--sample must be at least 1");
    }
    let (source_report, target_report) = tokio::join!(
        inspect_source(&plan.source, &plan.keys),
        inspect_target(&plan.target, &plan.keys, 1)
    );
    let (source_report, target_report) = (source_report?, target_report?);
    let (source, target) = tokio::join!(
        Side::connect(&plan.source, &source_report),
        Side::connect(&plan.target, &target_report)
    );
    let report_path = options
        .report
        .clone()
        .unwrap_or_else(|| default_report(&plan.state_dir));
    let csv = CsvReport::create(&report_path)
        .with_context(|| format!("cannot create the report {}", report_path.display()))?;
    let engine = Arc::new(Engine {
        source: source?,
        target: target?,
        big_key_bytes: plan.backfill.big_key_bytes,
        repair: options.repair.then_some(options.primary),
        budget: Semaphore::new(BUDGET_BYTES as usize),
        keysync: repair_keysync(plan, options, &source_report, &target_report),
        collector: Mutex::new(Collector {
            csv: Some(csv),
            ..Collector::default()
        }),
    });

    let board = Arc::new(Board::default());
    let reporter = Reporter::start("verify", board.clone(), || None);
    // SCAN batches in flight over all nodes (each holds at most ROUND_KEYS keys' replies).
    let inflight = Arc::new(Semaphore::new((plan.backfill.workers as usize * 2).max(8)));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let samplers = [
        Arc::new(Sampler::new(options.sample, source_report.total_dbsize(), seed)),
        Arc::new(Sampler::new(
            options.sample,
            target_report.total_dbsize(),
            seed ^ 0x5555_5555_5555_5555,
        )),
    ];
    let mut tasks = JoinSet::new();
    for (pass, report) in [
        (Pass::SourceToTarget, &source_report),
        (Pass::TargetToSource, &target_report),
    ] {
        let side = match pass {
            Pass::SourceToTarget => &engine.source,
            Pass::TargetToSource => &engine.target,
        };
        for node in &report.masters {
            let name = format!("{} {}", side.role, node.addr);
            let index = board.add_node(&name, node.dbsize, Counters::default(), false);
            let conn = side.connect_scan(&node.addr).await?;
            let scan = NodeScan {
                engine: engine.clone(),
                pass,
                name,
                conn,
                filter: plan.keys.clone(),
                scan_count: plan.backfill.scan_count,
                sampler: samplers[pass as usize].clone(),
                inflight: inflight.clone(),
                board: board.clone(),
                index,
            };
            tasks.spawn(scan.run());
        }
    }
    let mut totals = [NodeTotals::default(), NodeTotals::default()];
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((pass, t)) => totals[pass as usize].add(&t),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    drop(reporter);
    if let Some(e) = failure {
        return Err(e.context(format!(
            "verify did not finish; the partial report is next to {}",
            report_path.display()
        )));
    }
    let collector = std::mem::take(&mut *engine.collector.lock().expect("collector lock"));
    if let Some(e) = collector.io_error {
        return Err(anyhow::Error::from(e).context(format!("writing the report {}", report_path.display())));
    }
    let report = collector
        .csv
        .context("report already closed")?
        .finish()
        .with_context(|| format!("writing the report {}", report_path.display()))?;
    let [source_totals, target_totals] = totals;
    let tally = collector.tally;
    Ok(Summary {
        source_scanned: source_totals.scanned,
        target_scanned: target_totals.scanned,
        source_checked: source_totals.batch.checked,
        target_checked: target_totals.batch.checked,
        bytes_compared: source_totals.batch.bytes,
        found: tally.found,
        kinds: tally.kinds,
        transient: source_totals.batch.transient + target_totals.batch.transient,
        repaired: tally.repaired,
        unresolved: tally.unresolved,
        sample: options.sample,
        repair: options.repair,
        repair_from: options.repair.then_some(options.primary),
        report,
        examples: tally.examples,
        elapsed: started.elapsed(),
    })
}

/// Which direction a key is checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// A source key, compared with the target.
    SourceToTarget = 0,
    /// A target key, checked for existence on the source.
    TargetToSource = 1,
}

/// The default report path for a plan.
pub fn default_report(state_dir: &Path) -> PathBuf {
    state_dir.join(DEFAULT_REPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_text_and_one_line() {
        let mut s = Summary {
            source_checked: 7,
            target_checked: 3,
            ..Summary::default()
        };
        assert_eq!(s.kinds_text(), "none");
        s.kinds.add(Kind::Missing);
        s.kinds.add(Kind::Missing);
        s.kinds.add(Kind::Ttl);
        s.found = 3;
        s.unresolved = 3;
        assert_eq!(s.kinds_text(), "2 missing, 1 ttl");
        let line = s.one_line();
        assert!(
            line.contains("checked 10 keys") && line.contains("3 unresolved"),
            "{line}"
        );
    }
}
