//! What the proxies reported (design §5), as the gates, the fence and `status` see it: every
//! report read once, judged against one instant and the generation the CLI last wrote.
//!
//! **Acks come from every live proxy** (design §11): a generation is acknowledged when at least
//! `[proxies] expected` proxies applied it *and* no proxy that reported within
//! `heartbeat_timeout` has not. `expected` is a floor, not a quorum: a surplus proxy (a rolling
//! update's surge, an autoscaled pod, a forgotten host) that still routes by an older generation
//! would otherwise keep writing the old primary while the others switch. A report that does not
//! parse blocks too: nobody can tell whether its proxy is live or what it routes by.

use std::time::Duration;

use crate::cluster::Router;
use crate::plan::Plan;
use crate::report::{self, Counters, FenceState, ProxyReport};

/// One field of the reports hash: a report, or (proxy id, why it did not parse).
type Field = Result<ProxyReport, (String, String)>;

/// How long reading the reports may take before they count as unreadable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy reports of one migration at one instant.
#[derive(Debug, Clone)]
pub struct ProxyView {
    /// Every parsable report, or why none could be read (target unreachable, timeout).
    pub reports: Result<Vec<ProxyReport>, String>,
    /// Fields of the reports hash that did not parse: (proxy id, why).
    pub unparsable: Vec<(String, String)>,
    /// When the reports were read, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// The generation the CLI last wrote (from the journal).
    pub generation: u64,
    /// A report older than this is missing.
    pub heartbeat_timeout: Duration,
    /// `[proxies] expected`.
    pub expected: u32,
    /// Proxy ids whose mirror backlog nobody drains (dead, or a drain left unfinished), with
    /// its size: they block every ack ([`crate::proxy::backlog::drain`]).
    pub backlogs: Vec<(String, u64)>,
}

/// Who acknowledged a generation and who did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Acks {
    /// Ids of live proxies that applied the generation (and, for a fence, drained).
    pub acked: Vec<String>,
    /// Proxies that block the ack whatever `expected` says: live ones that did not apply the
    /// generation (or, for a fence, did not drain), and reports that do not parse.
    pub blocking: Vec<Pending>,
    /// Proxies whose report is older than `heartbeat_timeout`: they neither ack nor block.
    pub missing: Vec<Pending>,
}

/// A proxy that has not acked, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pending {
    /// The proxy id (the report's hash field).
    pub id: String,
    /// `at generation 4`, `fence holding`, `missing (report 14s old)`, `report unparsable: …`.
    pub why: String,
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.id, self.why)
    }
}

/// A connection to the target for reading reports repeatedly (the fence polls it).
pub struct ReportReader {
    router: Router,
    migration: String,
}

impl ReportReader {
    /// Connects to the target cluster (bounded by a timeout).
    pub async fn connect(plan: &Plan) -> Result<ReportReader, String> {
        let router = tokio::time::timeout(READ_TIMEOUT, Router::connect(&plan.target))
            .await
            .map_err(|_| format!("target did not answer within {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("target unreachable: {e:#}"))?;
        Ok(ReportReader {
            router,
            migration: plan.name.clone(),
        })
    }

    /// Reads every report now and judges it against `plan` and `generation`.
    pub async fn view(&self, plan: &Plan, generation: u64) -> ProxyView {
        let read = tokio::time::timeout(READ_TIMEOUT, report::read_all(&self.router, &self.migration)).await;
        let fields = match read {
            Err(_) => Err(format!("reading proxy reports took longer than {READ_TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("reading proxy reports: {e}")),
            Ok(Ok(read)) => Ok(read),
        };
        let mut view = ProxyView::from_fields(plan, generation, fields);
        if let Err(e) = self.read_backlogs(&mut view).await {
            view.reports = Err(format!("reading proxy backlogs: {e}"));
        }
        view
    }

    /// Sizes the backlog of every reported proxy id nobody drains (see [`ProxyView::backlogs`]).
    async fn read_backlogs(&self, view: &mut ProxyView) -> Result<(), String> {
        let ids: Vec<(String, bool)> = view
            .all()
            .iter()
            .map(|r| (r.id.clone(), !view.is_live(r)))
            .chain(view.unparsable.iter().map(|(id, _)| (id.clone(), false)))
            .collect();
        for (id, dead) in ids {
            let read = crate::proxy::backlog::drain::undrained(&self.router, &self.migration, &id, dead);
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => view.backlogs.push((id, n)),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no answer within {READ_TIMEOUT:?}")),
            }
        }
        Ok(())
    }
}

impl ProxyView {
    /// Connects and reads once; an unreachable target gives a view whose `reports` is `Err`.
    pub async fn load(plan: &Plan, generation: u64) -> ProxyView {
        match ReportReader::connect(plan).await {
            Ok(reader) => reader.view(plan, generation).await,
            Err(e) => ProxyView::from_fields(plan, generation, Err(e)),
        }
    }

    /// [`ProxyView::load`] on a runtime of its own, for synchronous commands.
    pub fn load_blocking(plan: &Plan, generation: u64) -> ProxyView {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(ProxyView::load(plan, generation)),
            Err(e) => ProxyView::from_fields(plan, generation, Err(format!("no async runtime: {e}"))),
        }
    }

    /// `read` is the reports and the time on the reports' master (the local clock when they
    /// could not be read: nothing is judged live then anyway).
    fn from_fields(plan: &Plan, generation: u64, read: Result<(u64, Vec<Field>), String>) -> ProxyView {
        let now_ms = read.as_ref().map_or_else(|_| report::now_ms(), |(now, _)| *now);
        let fields = read.map(|(_, fields)| fields);
        let mut unparsable = Vec::new();
        let reports = fields.map(|fields| {
            let mut reports: Vec<ProxyReport> = fields
                .into_iter()
                .filter_map(|f| f.map_err(|bad| unparsable.push(bad)).ok())
                .collect();
            reports.sort_by(|a, b| a.id.cmp(&b.id));
            reports
        });
        ProxyView {
            reports,
            unparsable,
            now_ms,
            generation,
            heartbeat_timeout: plan.proxies.heartbeat_timeout,
            expected: plan.proxies.expected,
            backlogs: Vec::new(),
        }
    }

    /// Every report read (none when they could not be read).
    pub fn all(&self) -> &[ProxyReport] {
        self.reports.as_deref().unwrap_or_default()
    }

    /// Whether `r` was written within the heartbeat timeout.
    pub fn is_live(&self, r: &ProxyReport) -> bool {
        r.age_ms(self.now_ms) <= self.heartbeat_timeout.as_millis() as u64
    }

    /// Live reports.
    pub fn live(&self) -> Vec<&ProxyReport> {
        self.all().iter().filter(|r| self.is_live(r)).collect()
    }

    /// Live reports at the current generation: the ones whose counters describe the phase now
    /// in force (counters restart with every generation).
    pub fn current(&self) -> Vec<&ProxyReport> {
        self.all()
            .iter()
            .filter(|r| self.is_live(r) && r.generation >= self.generation)
            .collect()
    }

    /// The counters of [`ProxyView::current`] summed; `None` when no live proxy is current.
    pub fn current_counters(&self) -> Option<Counters> {
        let current = self.current();
        if current.is_empty() {
            return None;
        }
        Some(
            current
                .iter()
                .fold(Counters::default(), |a, r| add(a, &r.counters)),
        )
    }

    /// Who applied `generation` (and reports the fence drained, when `drained`), who blocks it,
    /// and who is missing (see the module documentation).
    pub fn acks(&self, generation: u64, drained: bool) -> Acks {
        let mut acks = Acks::default();
        let pending = |id: &str, why: String| Pending { id: id.into(), why };
        for r in self.all() {
            let age = Duration::from_millis(r.age_ms(self.now_ms));
            if !self.is_live(r) {
                acks.missing
                    .push(pending(&r.id, format!("missing (report {}s old)", age.as_secs())));
            } else if r.generation < generation {
                acks.blocking
                    .push(pending(&r.id, format!("at generation {}", r.generation)));
            } else if drained && r.fence != FenceState::Drained {
                let state = serde_json::to_string(&r.fence).unwrap_or_default();
                acks.blocking
                    .push(pending(&r.id, format!("fence {}", state.trim_matches('"'))));
            } else {
                acks.acked.push(r.id.clone());
            }
        }
        for (id, keys) in &self.backlogs {
            acks.blocking.push(pending(
                id,
                format!("left {keys} key(s) in its mirror backlog undrained (`cachemig advance`, `rollback` and `finalize` drain it first, as does restarting the proxy)"),
            ));
        }
        for (id, error) in &self.unparsable {
            acks.blocking
                .push(pending(id, format!("report unparsable ({error})")));
        }
        acks
    }

    /// Why the reports cannot be judged, if they cannot.
    pub fn unreadable(&self) -> Option<&str> {
        self.reports.as_ref().err().map(String::as_str)
    }
}

impl Acks {
    /// Whether the generation is acknowledged: at least `expected` proxies acked and no live
    /// proxy (nor an unparsable report) blocks.
    pub fn enough(&self, expected: u32) -> bool {
        self.blocking.is_empty() && self.acked.len() >= expected as usize
    }

    /// `2 of 2 expected proxies at generation 5 (p1, p2)`, then who blocks and who is missing.
    pub fn describe(&self, expected: u32, what: &str) -> String {
        let list = |items: &[Pending]| {
            items
                .iter()
                .map(Pending::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!("{} of {expected} expected proxies {what}", self.acked.len());
        if !self.acked.is_empty() {
            text.push_str(&format!(" ({})", self.acked.join(", ")));
        }
        if !self.blocking.is_empty() {
            text.push_str(&format!(
                "; blocked by live proxies that have not acked: {}",
                list(&self.blocking)
            ));
        }
        if !self.missing.is_empty() {
            text.push_str(&format!("; not live: {}", list(&self.missing)));
        }
        text
    }
}

fn add(a: Counters, b: &Counters) -> Counters {
    Counters {
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        new_requests: a.new_requests + b.new_requests,
        new_errors: a.new_errors + b.new_errors,
        mirror_ok: a.mirror_ok + b.mirror_ok,
        mirror_errors: a.mirror_errors + b.mirror_errors,
        mirror_overflow: a.mirror_overflow + b.mirror_overflow,
        sync_mirror_failures: a.sync_mirror_failures + b.sync_mirror_failures,
        shadow_samples: a.shadow_samples + b.shadow_samples,
        shadow_mismatches: a.shadow_mismatches + b.shadow_mismatches,
        shadow_skipped: a.shadow_skipped + b.shadow_skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, generation: u64, written_at_ms: u64, fence: FenceState) -> ProxyReport {
        ProxyReport {
            id: id.into(),
            generation,
            phase: "read-cutover".into(),
            fence,
            written_at_ms,
            applied_at_ms: 0,
            counters: Counters {
                shadow_samples: 10,
                ..Counters::default()
            },
            mirror_queue_depth: 0,
            mirror_lag_ms: 0,
            dirty_keys: 0,
            qps: 0.0,
            last_error: None,
            flag_error: None,
            hot_keys: Vec::new(),
            stale: None,
        }
    }

    fn view(reports: Vec<ProxyReport>) -> ProxyView {
        ProxyView {
            reports: Ok(reports),
            unparsable: Vec::new(),
            now_ms: 100_000,
            generation: 5,
            heartbeat_timeout: Duration::from_secs(10),
            expected: 2,
            backlogs: Vec::new(),
        }
    }

    #[test]
    fn stale_and_behind_proxies_do_not_ack() {
        let v = view(vec![
            report("p1", 5, 99_000, FenceState::Off),
            report("p2", 4, 99_000, FenceState::Off),
            report("p3", 5, 80_000, FenceState::Off),
        ]);
        let acks = v.acks(5, false);
        assert_eq!(acks.acked, vec!["p1"]);
        assert!(!acks.enough(2));
        assert!(!acks.enough(1), "p2 is live and behind: it blocks");
        let text = acks.describe(2, "at generation 5");
        assert!(
            text.contains("blocked by live proxies that have not acked: p2 at generation 4"),
            "{text}"
        );
        assert!(text.contains("not live: p3 missing (report 20s old)"), "{text}");
        assert_eq!(v.current_counters().unwrap().shadow_samples, 10);
    }

    #[test]
    fn every_live_proxy_must_ack_not_just_expected_of_them() {
        // Three live proxies for two expected: the surplus one, behind, blocks.
        let v = view(vec![
            report("p1", 5, 99_000, FenceState::Off),
            report("p2", 5, 99_000, FenceState::Off),
            report("p3", 4, 99_500, FenceState::Off),
        ]);
        let acks = v.acks(5, false);
        assert_eq!(acks.acked, vec!["p1", "p2"]);
        assert!(!acks.enough(2));
        assert_eq!(acks.blocking[0].to_string(), "p3 at generation 4");
        // A dead proxy (report older than the timeout) neither acks nor blocks.
        let v = view(vec![
            report("p1", 5, 99_000, FenceState::Off),
            report("p2", 5, 99_000, FenceState::Off),
            report("p3", 4, 50_000, FenceState::Off),
        ]);
        assert!(v.acks(5, false).enough(2));
        // Too few live proxies still fail, even when none blocks.
        assert!(!v.acks(5, false).enough(3));
        // A report nobody can read blocks: its proxy may be live at any generation.
        let mut v = view(vec![
            report("p1", 5, 99_000, FenceState::Off),
            report("p2", 5, 99_000, FenceState::Off),
        ]);
        v.unparsable
            .push(("p9".into(), "expected value at line 1".into()));
        let acks = v.acks(5, false);
        assert!(!acks.enough(2));
        assert!(
            acks.describe(2, "live").contains("p9 report unparsable"),
            "{acks:?}"
        );
    }

    #[test]
    fn a_fence_needs_drained() {
        let v = view(vec![
            report("p1", 6, 99_000, FenceState::Drained),
            report("p2", 6, 99_000, FenceState::Holding),
        ]);
        let acks = v.acks(6, true);
        assert_eq!(acks.acked, vec!["p1"]);
        assert_eq!(acks.blocking[0].to_string(), "p2 fence holding");
        assert!(!acks.enough(1));
    }
}
