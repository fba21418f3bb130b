//! `cachemig verify`: compare source and target key by key, in both directions, and optionally
//! repair every difference from the source (issue 3, item 3). Phase 2's catch-up is this with
//! repair (item 4). docs/verify.md is the user-facing description.
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
//! With repair, each one is key-synced from the source and checked again.
//!
//! Reads are pipelined per node ([`side`]), a bounded number of SCAN batches is in flight, and
//! DUMP payloads in flight are bounded in bytes, so memory does not grow with the keyspace.

mod digest;
mod report;
mod side;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisResult, Value};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use report::{CATCH_UP_FILE, CatchUpRecord, load_catch_up, save_catch_up};

use crate::backfill::progress::{Board, Reporter};
use crate::backfill::{Counters, bigkey, escape_key};
use crate::inspect::{inspect_source, inspect_target};
use crate::keys::KeyFilter;
use crate::plan::Plan;
use digest::{
    Canonical, canonical, canonical_from_whole, has_whole_value, payload_type, same_payload,
    whole_value_command,
};
use report::CsvReport;
use side::{Side, Writer, take, with_retries};

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
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Check about N keys per side (a random sample) instead of every key.
    pub sample: Option<u64>,
    /// Key-sync every difference from the source.
    pub repair: bool,
    /// Where to write the CSV of differences (default `state_dir/verify-report.csv`).
    pub report: Option<PathBuf>,
}

/// The kind of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// In the source, not in the target.
    Missing,
    /// In the target, not in the source.
    Extra,
    /// Both exist with different types.
    Type,
    /// Same type, different value.
    Value,
    /// Same value; one expires and the other does not, or the TTLs differ beyond the tolerance.
    Ttl,
    /// The key could not be read on one side (after retries); it counts as unresolved.
    Error,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Missing,
        Kind::Extra,
        Kind::Type,
        Kind::Value,
        Kind::Ttl,
        Kind::Error,
    ];

    /// The name used in the CSV and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Type => "type",
            Kind::Value => "value",
            Kind::Ttl => "ttl",
            Kind::Error => "error",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Differences found, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// `missing`.
    pub missing: u64,
    /// `extra`.
    pub extra: u64,
    /// `type`.
    #[serde(rename = "type")]
    pub type_: u64,
    /// `value`.
    pub value: u64,
    /// `ttl`.
    pub ttl: u64,
    /// `error`.
    pub error: u64,
}

impl KindCounts {
    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Missing => self.missing,
            Kind::Extra => self.extra,
            Kind::Type => self.type_,
            Kind::Value => self.value,
            Kind::Ttl => self.ttl,
            Kind::Error => self.error,
        }
    }

    fn add(&mut self, kind: Kind) {
        *match kind {
            Kind::Missing => &mut self.missing,
            Kind::Extra => &mut self.extra,
            Kind::Type => &mut self.type_,
            Kind::Value => &mut self.value,
            Kind::Ttl => &mut self.ttl,
            Kind::Error => &mut self.error,
        } += 1;
    }
}

/// One reported difference (the key escaped as in the CSV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DifferenceRow {
    /// The key, UTF-8 as is and other bytes as `\xNN`.
    pub key: String,
    /// The kind.
    pub kind: Kind,
    /// What differs, and what repair did.
    pub details: String,
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
    /// Differences repaired (and found equal afterwards).
    pub repaired: u64,
    /// Differences still present at the end (all of them without `--repair`).
    pub unresolved: u64,
    /// `--sample N`, if given.
    pub sample: Option<u64>,
    /// Whether `--repair` was given.
    pub repair: bool,
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
        let repair = if self.repair {
            format!(", {} repaired", self.repaired)
        } else {
            String::new()
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
        repair: options.repair,
        budget: Semaphore::new(BUDGET_BYTES as usize),
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

/// What one check found about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Equal (or, target→source, present on the source).
    Same,
    /// The key this pass starts from no longer exists: nothing to compare.
    Gone,
    /// A difference.
    Differs {
        kind: Kind,
        details: String,
        /// `MEMORY USAGE` on the source, when known (big keys are repaired in chunks).
        source_size: Option<u64>,
    },
}

impl Verdict {
    fn differs(kind: Kind, details: impl Into<String>, source_size: Option<u64>) -> Verdict {
        Verdict::Differs {
            kind,
            details: details.into(),
            source_size,
        }
    }
}

/// A key's existence, TTL and size on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Absent,
    Present { ttl_ms: Option<u64>, size: u64 },
}

impl Meta {
    /// From the replies to `PTTL k`, `MEMORY USAGE k` and `GETRANGE k 0 …` (see [`meta_cmds`]);
    /// also returns the string's first bytes when the key is a string.
    fn decode(replies: RedisResult<Vec<Value>>) -> RedisResult<(Meta, Option<Vec<u8>>)> {
        let replies = replies?;
        let [pttl, size, prefix] = <[Value; 3]>::try_from(replies).map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "expected PTTL, MEMORY USAGE and GETRANGE",
            ))
        })?;
        let pttl: i64 = take(pttl)?;
        let size: Option<u64> = take(size)?;
        // WRONGTYPE (not a string) is expected here.
        let prefix: Option<Vec<u8>> = take(prefix).ok();
        let meta = match (pttl, size) {
            (_, None) => Meta::Absent,
            (-1, Some(size)) => Meta::Present { ttl_ms: None, size },
            (t, Some(size)) if t >= 0 => Meta::Present {
                ttl_ms: Some(t as u64),
                size,
            },
            _ => Meta::Absent,
        };
        Ok((meta, prefix))
    }

    fn size(self) -> Option<u64> {
        match self {
            Meta::Absent => None,
            Meta::Present { size, .. } => Some(size),
        }
    }

    fn ttl(self) -> Option<u64> {
        match self {
            Meta::Absent => None,
            Meta::Present { ttl_ms, .. } => ttl_ms,
        }
    }
}

/// The TTL difference between two present keys, if beyond the tolerance: no expiry versus an
/// expiry always is; otherwise `|src − dst| > max(1000 ms, 1% of the larger)`.
pub fn ttl_difference(source: Option<u64>, target: Option<u64>) -> Option<String> {
    match (source, target) {
        (None, None) => None,
        (Some(s), None) => Some(format!("source expires in {s} ms, target never expires")),
        (None, Some(t)) => Some(format!("source never expires, target expires in {t} ms")),
        (Some(s), Some(t)) => {
            let tolerance = TTL_TOLERANCE_MS.max(s.max(t) / 100);
            (s.abs_diff(t) > tolerance)
                .then(|| format!("source ttl {s} ms, target ttl {t} ms (tolerance {tolerance} ms)"))
        }
    }
}

/// What repair did for one difference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// No repair asked.
    Unrepaired,
    /// Synced, and equal afterwards.
    Repaired,
    /// The sync failed but the key matched afterwards anyway.
    ResolvedAnyway(String),
    /// Still different after repair.
    Unresolved(String),
}

/// Counters of one batch.
#[derive(Debug, Clone, Copy, Default)]
struct BatchStats {
    checked: u64,
    bytes: u64,
    found: u64,
    transient: u64,
    repaired: u64,
}

impl BatchStats {
    fn add(&mut self, o: &BatchStats) {
        self.checked += o.checked;
        self.bytes += o.bytes;
        self.found += o.found;
        self.transient += o.transient;
        self.repaired += o.repaired;
    }
}

/// Counters of one node's scan.
#[derive(Debug, Clone, Copy, Default)]
struct NodeTotals {
    scanned: u64,
    batch: BatchStats,
}

impl NodeTotals {
    fn add(&mut self, o: &NodeTotals) {
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

/// Everything the differences feed: the CSV and the tally.
#[derive(Default)]
struct Collector {
    csv: Option<CsvReport>,
    tally: Tally,
    io_error: Option<std::io::Error>,
}

#[derive(Debug, Default)]
struct Tally {
    found: u64,
    kinds: KindCounts,
    repaired: u64,
    unresolved: u64,
    examples: Vec<DifferenceRow>,
}

/// A difference that survived the re-check.
struct Confirmed {
    key: Vec<u8>,
    kind: Kind,
    details: String,
    source_size: Option<u64>,
}

/// Shared by every batch.
struct Engine {
    source: Side,
    target: Side,
    big_key_bytes: u64,
    repair: bool,
    /// DUMP payload bytes in flight (permits are bytes).
    budget: Semaphore,
    collector: Mutex<Collector>,
}

impl Engine {
    /// Checks one SCAN batch: first look, re-check after a delay, repair, record.
    async fn check_batch(&self, pass: Pass, keys: Vec<Vec<u8>>) -> BatchStats {
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
        let statuses = if self.repair {
            self.repair_all(pass, &confirmed).await
        } else {
            vec![Status::Unrepaired; confirmed.len()]
        };
        stats.repaired = statuses.iter().filter(|s| **s == Status::Repaired).count() as u64;
        self.record(confirmed, statuses);
        stats
    }

    /// One look at `keys` in this pass; also returns the payload bytes compared.
    async fn check(&self, pass: Pass, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        match pass {
            Pass::SourceToTarget => self.compare(keys).await,
            Pass::TargetToSource => (self.extras(keys).await, 0),
        }
    }

    /// Source → target: existence, TTL, type and value of each key.
    async fn compare(&self, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for chunk in keys.chunks(ROUND_KEYS) {
            let (v, b) = self.compare_round(chunk).await;
            verdicts.extend(v);
            bytes += b;
        }
        (verdicts, bytes)
    }

    /// [`Engine::compare`] for at most [`ROUND_KEYS`] keys. Small strings are compared from the
    /// first round trip; other small values by DUMP; big ones by canonical digest in chunks.
    async fn compare_round(&self, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        let (src, dst) = tokio::join!(
            self.source.per_key(keys, 3, meta_cmds),
            self.target.per_key(keys, 3, meta_cmds)
        );
        let mut bytes = 0;
        let mut verdicts: Vec<Option<Verdict>> = vec![None; keys.len()];
        let mut metas: Vec<(Meta, Meta)> = vec![(Meta::Absent, Meta::Absent); keys.len()];
        let mut dumps: Vec<(usize, u64)> = Vec::new();
        let mut slow: Vec<usize> = Vec::new();
        for (i, (s, d)) in src.into_iter().zip(dst).enumerate() {
            let ((s, s_prefix), (d, d_prefix)) = match (Meta::decode(s), Meta::decode(d)) {
                (Err(e), _) => {
                    verdicts[i] = Some(Verdict::differs(Kind::Error, format!("source: {e}"), None));
                    continue;
                }
                (Ok((s, _)), Err(e)) => {
                    verdicts[i] = Some(Verdict::differs(Kind::Error, format!("target: {e}"), s.size()));
                    continue;
                }
                (Ok(s), Ok(d)) => (s, d),
            };
            metas[i] = (s, d);
            if let (Meta::Present { .. }, Meta::Present { .. }, Some(a), Some(b)) =
                (s, d, &s_prefix, &d_prefix)
                && a.len() < INLINE_STRING
                && b.len() < INLINE_STRING
            {
                // Two small strings, read whole already.
                bytes += (a.len() + b.len()) as u64;
                verdicts[i] = Some(if a == b {
                    ttl_verdict(s, d)
                } else {
                    Verdict::differs(
                        Kind::Value,
                        format!(
                            "source string of {} bytes, target string of {} bytes: contents differ",
                            a.len(),
                            b.len()
                        ),
                        s.size(),
                    )
                });
                continue;
            }
            match (s, d) {
                (Meta::Absent, _) => verdicts[i] = Some(Verdict::Gone),
                (Meta::Present { size, .. }, Meta::Absent) => {
                    verdicts[i] = Some(Verdict::differs(
                        Kind::Missing,
                        format!("not in target (source: {size} bytes)"),
                        Some(size),
                    ))
                }
                (Meta::Present { size: a, .. }, Meta::Present { size: b, .. }) => {
                    if a > self.big_key_bytes || b > self.big_key_bytes {
                        slow.push(i);
                    } else {
                        dumps.push((i, a + b));
                    }
                }
            }
        }

        for group in by_bytes(dumps, SUB_BATCH_BYTES) {
            let weight: u64 = group.iter().map(|(_, w)| *w).sum();
            let permits = weight.clamp(1, BUDGET_BYTES) as u32;
            let _permit = self
                .budget
                .acquire_many(permits)
                .await
                .expect("budget semaphore closed");
            let group_keys: Vec<&[u8]> = group.iter().map(|(i, _)| keys[*i].as_slice()).collect();
            let dump = |p: &mut Pipeline, k: &[u8]| {
                p.cmd("DUMP").arg(k);
            };
            let (src, dst) = tokio::join!(
                self.source.per_key(&group_keys, 1, dump),
                self.target.per_key(&group_keys, 1, dump)
            );
            // Payloads that differ with the same known type: read the whole (small) values,
            // pipelined per type, and compare canonical forms.
            let mut whole: Vec<(usize, &'static str)> = Vec::new();
            for (((i, _), s), d) in group.iter().zip(src).zip(dst) {
                let (ms, md) = metas[*i];
                let verdict = match (s, d) {
                    (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
                    (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
                    (Ok(s), Ok(d)) => match (first::<Option<Vec<u8>>>(s), first::<Option<Vec<u8>>>(d)) {
                        (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
                        (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
                        (Ok(None), _) => Verdict::Gone,
                        (Ok(Some(_)), Ok(None)) => {
                            Verdict::differs(Kind::Missing, "not in target", ms.size())
                        }
                        (Ok(Some(a)), Ok(Some(b))) => {
                            bytes += (a.len() + b.len()) as u64;
                            let (ta, tb) = (payload_type(&a), payload_type(&b));
                            if same_payload(&a, &b) {
                                ttl_verdict(ms, md)
                            } else if ta != tb && has_whole_value(ta) && has_whole_value(tb) {
                                Verdict::differs(Kind::Type, format!("source {ta}, target {tb}"), ms.size())
                            } else if ta == tb && has_whole_value(ta) {
                                whole.push((*i, ta));
                                continue;
                            } else {
                                // A module type, or an RDB type this build does not know.
                                slow.push(*i);
                                continue;
                            }
                        }
                    },
                };
                verdicts[*i] = Some(verdict);
            }
            for (i, verdict) in self.compare_whole(keys, &metas, whole).await {
                verdicts[i] = Some(verdict);
            }
        }

        let slow_results: Vec<(usize, RedisResult<Canonical>, RedisResult<Canonical>)> =
            futures::stream::iter(slow)
                .map(|i| {
                    let key = keys[i].as_slice();
                    let (ms, md) = metas[i];
                    async move {
                        let (a, b) = tokio::join!(
                            canonical(&self.source, key, ms.size().unwrap_or(0)),
                            canonical(&self.target, key, md.size().unwrap_or(0))
                        );
                        (i, a, b)
                    }
                })
                .buffer_unordered(SLOW_CONCURRENCY)
                .collect()
                .await;
        for (i, a, b) in slow_results {
            let (ms, md) = metas[i];
            verdicts[i] = Some(canonical_pair_verdict(a, b, ms, md));
        }
        let verdicts = verdicts.into_iter().map(|v| v.unwrap_or(Verdict::Gone)).collect();
        (verdicts, bytes)
    }

    /// Compares small values whose DUMP payloads differ by reading them whole (one pipelined
    /// read per type and side) and comparing canonical forms.
    async fn compare_whole(
        &self,
        keys: &[Vec<u8>],
        metas: &[(Meta, Meta)],
        whole: Vec<(usize, &'static str)>,
    ) -> Vec<(usize, Verdict)> {
        let mut by_type: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for (i, kind) in whole {
            by_type.entry(kind).or_default().push(i);
        }
        let reads = by_type.into_iter().map(|(kind, indexes)| async move {
            let type_keys: Vec<&[u8]> = indexes.iter().map(|i| keys[*i].as_slice()).collect();
            let read = |p: &mut Pipeline, k: &[u8]| whole_value_command(kind, p, k);
            let (src, dst) = tokio::join!(
                self.source.per_key(&type_keys, 1, read),
                self.target.per_key(&type_keys, 1, read)
            );
            let decode = |r: RedisResult<Vec<Value>>| {
                r.and_then(|v| canonical_from_whole(kind, take(v.into_iter().next().unwrap_or_default())?))
            };
            indexes
                .into_iter()
                .zip(src.into_iter().zip(dst))
                .map(|(i, (s, d))| {
                    let (ms, md) = metas[i];
                    (i, canonical_pair_verdict(decode(s), decode(d), ms, md))
                })
                .collect::<Vec<_>>()
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Target → source: each key must exist on the source.
    async fn extras(&self, keys: &[Vec<u8>]) -> Vec<Verdict> {
        let exists = |p: &mut Pipeline, k: &[u8]| {
            p.cmd("EXISTS").arg(k);
        };
        if self.source.is_standalone() && self.source.all_exist(keys).await {
            return vec![Verdict::Same; keys.len()];
        }
        let src = self.source.per_key(keys, 1, exists).await;
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut absent = Vec::new();
        for (i, s) in src.into_iter().enumerate() {
            verdicts.push(match s.and_then(first::<i64>) {
                Err(e) => Verdict::differs(Kind::Error, format!("source: {e}"), None),
                Ok(0) => {
                    absent.push(i);
                    Verdict::Same
                }
                Ok(_) => Verdict::Same,
            });
        }
        if absent.is_empty() {
            return verdicts;
        }
        let absent_keys: Vec<&[u8]> = absent.iter().map(|i| keys[*i].as_slice()).collect();
        let dst = self
            .target
            .per_key(&absent_keys, 2, |p, k| {
                p.cmd("TYPE").arg(k);
                p.cmd("PTTL").arg(k);
            })
            .await;
        for (i, d) in absent.into_iter().zip(dst) {
            let decoded = d.and_then(|v| {
                let mut v = v.into_iter();
                let ty: String = take(v.next().unwrap_or_default())?;
                let pttl: i64 = take(v.next().unwrap_or_default())?;
                Ok((ty, pttl))
            });
            verdicts[i] = match decoded {
                Err(e) => Verdict::differs(Kind::Error, format!("target: {e}"), None),
                Ok((ty, _)) if ty == "none" => Verdict::Gone,
                Ok((ty, pttl)) => {
                    let ttl = if pttl >= 0 {
                        format!(", expires in {pttl} ms")
                    } else {
                        String::new()
                    };
                    Verdict::differs(Kind::Extra, format!("not in source (target: {ty}{ttl})"), None)
                }
            };
        }
        verdicts
    }

    /// Key-syncs every confirmed difference from the source, then checks each key again.
    async fn repair_all(&self, pass: Pass, confirmed: &[Confirmed]) -> Vec<Status> {
        let work: Vec<(Vec<u8>, Option<u64>)> =
            confirmed.iter().map(|c| (c.key.clone(), c.source_size)).collect();
        let attempts: Vec<Result<(), String>> = futures::stream::iter(work)
            .map(|(key, size)| async move { self.repair_one(&key, size).await })
            .buffered(REPAIR_CONCURRENCY)
            .collect()
            .await;
        let keys: Vec<Vec<u8>> = confirmed.iter().map(|c| c.key.clone()).collect();
        let (after, _) = self.check(pass, &keys).await;
        attempts
            .into_iter()
            .zip(after)
            .map(|(attempt, after)| match (attempt, after) {
                (Ok(()), Verdict::Same | Verdict::Gone) => Status::Repaired,
                (Err(e), Verdict::Same | Verdict::Gone) => Status::ResolvedAnyway(e),
                (Ok(()), Verdict::Differs { kind, details, .. }) => {
                    Status::Unresolved(format!("still differs after repair ({kind}: {details})"))
                }
                (Err(e), Verdict::Differs { .. }) => Status::Unresolved(format!("repair failed: {e}")),
            })
            .collect()
    }

    /// Makes `key` on the target equal to the source: chunked copy for a big key, otherwise
    /// key-sync (`RESTORE … REPLACE`, or `DEL` when the source has no such key).
    async fn repair_one(&self, key: &[u8], source_size: Option<u64>) -> Result<(), String> {
        if source_size.is_some_and(|s| s > self.big_key_bytes)
            && let Writer::Cluster(mut target) = self.target.writer(key)
        {
            let mut source = self.source.node_conn(key);
            match bigkey::copy(&mut source, &mut target, key, true).await {
                Ok(bigkey::BigCopy::Vanished) => {} // gone from the source: key-sync deletes it
                Ok(_) => return Ok(()),
                Err(e) => return Err(format!("chunked copy of a big key: {e}")),
            }
        }
        with_retries(|| async {
            let mut source: MultiplexedConnection = self.source.node_conn(key);
            self.target.writer(key).sync_from(&mut source, key).await
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// The first round of the source → target comparison, per key: TTL, size, and the first
/// bytes of the value when it is a string (WRONGTYPE otherwise, which costs next to nothing).
fn meta_cmds(p: &mut Pipeline, k: &[u8]) {
    p.cmd("PTTL").arg(k);
    p.cmd("MEMORY").arg("USAGE").arg(k);
    p.cmd("GETRANGE").arg(k).arg(0).arg(INLINE_STRING - 1);
}

/// The first reply of a key's replies, converted.
fn first<T: redis::FromRedisValue>(replies: Vec<Value>) -> RedisResult<T> {
    take(replies.into_iter().next().unwrap_or_default())
}

/// The verdict on two present keys with equal values: a TTL difference or none.
fn ttl_verdict(source: Meta, target: Meta) -> Verdict {
    match ttl_difference(source.ttl(), target.ttl()) {
        Some(details) => Verdict::differs(Kind::Ttl, details, source.size()),
        None => Verdict::Same,
    }
}

/// The verdict on the canonical forms read from both sides (or the errors that stopped them).
fn canonical_pair_verdict(
    a: RedisResult<Canonical>,
    b: RedisResult<Canonical>,
    ms: Meta,
    md: Meta,
) -> Verdict {
    match (a, b) {
        (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
        (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
        (Ok(Canonical::Absent), _) => Verdict::Gone,
        (Ok(_), Ok(Canonical::Absent)) => Verdict::differs(Kind::Missing, "not in target", ms.size()),
        (Ok(a), Ok(b)) => canonical_verdict(&a, &b, ms, md),
    }
}

/// The verdict on two canonical forms of present keys.
fn canonical_verdict(a: &Canonical, b: &Canonical, ms: Meta, md: Meta) -> Verdict {
    let (
        Canonical::Value {
            kind: ka, digest: da, ..
        },
        Canonical::Value {
            kind: kb, digest: db, ..
        },
    ) = (a, b)
    else {
        return Verdict::Gone;
    };
    if ka != kb {
        return Verdict::differs(Kind::Type, format!("source {ka}, target {kb}"), ms.size());
    }
    match (da, db) {
        (Some(x), Some(y)) if x == y => ttl_verdict(ms, md),
        (Some(_), Some(_)) => Verdict::differs(
            Kind::Value,
            format!(
                "source {}, target {}: contents differ",
                a.describe(),
                b.describe()
            ),
            ms.size(),
        ),
        _ => Verdict::differs(
            Kind::Value,
            format!("{ka}: DUMP payloads differ and the type has no canonical form"),
            ms.size(),
        ),
    }
}

/// Splits `(index, bytes)` items into groups of at most `limit` bytes (a larger item alone).
fn by_bytes(items: Vec<(usize, u64)>, limit: u64) -> Vec<Vec<(usize, u64)>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, size) in items {
        if !current.is_empty() && bytes + size > limit {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((i, size));
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Chooses which scanned keys are checked: all of them, or (`--sample N`) each with
/// probability N / DBSIZE of the side, never more than N.
struct Sampler {
    probability: f64,
    limit: u64,
    taken: AtomicU64,
    state: AtomicU64,
}

impl Sampler {
    fn new(sample: Option<u64>, population: u64, seed: u64) -> Sampler {
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
struct NodeScan {
    engine: Arc<Engine>,
    pass: Pass,
    /// "source 127.0.0.1:6379", for messages.
    name: String,
    conn: MultiplexedConnection,
    filter: KeyFilter,
    scan_count: u32,
    sampler: Arc<Sampler>,
    inflight: Arc<Semaphore>,
    board: Arc<Board>,
    index: usize,
}

impl NodeScan {
    async fn run(self) -> anyhow::Result<(Pass, NodeTotals)> {
        let mut totals = NodeTotals::default();
        let mut batches: JoinSet<BatchStats> = JoinSet::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(self.filter.scan_pattern())
                .arg("COUNT")
                .arg(self.scan_count);
            let (next, keys): (u64, Vec<Vec<u8>>) = with_retries(|| {
                let (mut conn, scan) = (self.conn.clone(), &scan);
                async move { scan.query_async(&mut conn).await }
            })
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

/// The default report path for a plan.
pub fn default_report(state_dir: &Path) -> PathBuf {
    state_dir.join(DEFAULT_REPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_tolerance() {
        assert_eq!(ttl_difference(None, None), None);
        assert!(
            ttl_difference(Some(5_000), None)
                .unwrap()
                .contains("never expires")
        );
        assert!(ttl_difference(None, Some(5_000)).is_some());
        assert_eq!(ttl_difference(Some(5_000), Some(4_100)), None, "within 1000 ms");
        assert!(ttl_difference(Some(5_000), Some(3_900)).is_some());
        assert_eq!(
            ttl_difference(Some(1_000_000), Some(991_000)),
            None,
            "within 1% of a long TTL"
        );
        assert!(ttl_difference(Some(1_000_000), Some(980_000)).is_some());
    }

    #[test]
    fn meta_decodes_pttl_memory_usage_and_prefix() {
        let wrongtype = || redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let ok = |p: i64, m: Value, prefix: Value| Meta::decode(Ok(vec![Value::Int(p), m, prefix])).unwrap();
        let empty = || Value::BulkString(Vec::new());
        assert_eq!(ok(-2, Value::Nil, empty()).0, Meta::Absent);
        assert_eq!(
            ok(-1, Value::Int(56), Value::BulkString(b"abc".to_vec())),
            (
                Meta::Present {
                    ttl_ms: None,
                    size: 56
                },
                Some(b"abc".to_vec())
            )
        );
        assert_eq!(
            ok(1500, Value::Int(56), wrongtype()),
            (
                Meta::Present {
                    ttl_ms: Some(1500),
                    size: 56
                },
                None
            ),
            "not a string"
        );
        assert_eq!(
            ok(-2, Value::Int(56), empty()).0,
            Meta::Absent,
            "expired between the replies"
        );
        assert!(Meta::decode(Ok(vec![Value::Int(1)])).is_err());
        assert!(Meta::decode(Ok(vec![wrongtype(), Value::Int(1), empty()])).is_err());
    }

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

    #[test]
    fn canonical_verdicts() {
        let present = Meta::Present {
            ttl_ms: None,
            size: 10,
        };
        let v = |kind: &str, d: u8| Canonical::Value {
            kind: kind.into(),
            count: 1,
            digest: Some([d; 16]),
        };
        assert_eq!(
            canonical_verdict(&v("hash", 1), &v("hash", 1), present, present),
            Verdict::Same
        );
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("set", 1), present, present),
            Verdict::Differs { kind: Kind::Type, .. }
        ));
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("hash", 2), present, present),
            Verdict::Differs {
                kind: Kind::Value,
                ..
            }
        ));
        let expiring = Meta::Present {
            ttl_ms: Some(60_000),
            size: 10,
        };
        assert!(matches!(
            canonical_verdict(&v("hash", 1), &v("hash", 1), present, expiring),
            Verdict::Differs { kind: Kind::Ttl, .. }
        ));
    }

    #[test]
    fn byte_groups() {
        let groups = by_bytes(vec![(0, 3), (1, 3), (2, 10), (3, 1)], 6);
        assert_eq!(groups, vec![vec![(0, 3), (1, 3)], vec![(2, 10)], vec![(3, 1)]]);
    }
}
