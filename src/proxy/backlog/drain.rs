//! Draining the backlog of a dead proxy from the CLI (design §4, "Crash-safe backlog").
//!
//! A proxy id whose report is older than `heartbeat_timeout` may have died with keys in its
//! backlog. The CLI first moves that set aside to the id's *draining* set (so a proxy restarted
//! meanwhile with the same id writes a fresh set of its own, which the CLI never touches), then
//! key-syncs every member from the write primary in force, under each key's lease, with the very
//! mirror a proxy runs ([`crate::proxy::mirror::Mirror`], its backlog being the draining set):
//! members leave the set only after their sync landed. A draining set left by a CLI that died is
//! drained by the next run, whoever owns the id now.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Backlog, draining_key, members, set_key};
use crate::phase::Side;
use crate::plan::Plan;
use crate::proxy::backend::Backend;
use crate::proxy::compat::Compat;
use crate::proxy::keyconn::SlotConn;
use crate::proxy::metrics::Metrics;
use crate::proxy::mirror::{Direction, Mirror};

/// How long one proxy id's backlog may take to drain before the CLI gives up (the gate then
/// still shows it).
const DEADLINE: Duration = Duration::from_secs(120);
/// How often the drain looks whether it is done.
const POLL: Duration = Duration::from_millis(100);
/// Queue of the CLI's mirror.
const CAPACITY: usize = 10_000;

/// The old and new backends, opened once for every id drained.
pub struct Drainer {
    old: Arc<Backend>,
    new: Arc<Backend>,
    metrics: Arc<Metrics>,
    migration: String,
    /// Per direction, as the proxies copy ([`crate::proxy::compat`]).
    big_key_bytes: [u64; 2],
}

impl Drainer {
    /// Connects to both sides of `plan`, as a proxy would, and copies in each direction as a
    /// proxy would (by type where the destination cannot RESTORE the origin's payloads).
    pub async fn connect(plan: &Plan) -> Result<Drainer> {
        let metrics = Arc::new(Metrics::new("cachemig-cli", &plan.name));
        let (cluster, _) = crate::proxy::server::inspect_source(plan).await?;
        let compat = Compat::read(plan, cluster).await;
        let name = "cachemig-backlog-drain";
        let sink: Arc<dyn crate::proxy::node::ErrorSink> = metrics.clone();
        let old = Backend::connect("old", &plan.source, cluster, sink.clone(), name).await?;
        let new = Backend::connect("new", &plan.target, true, sink, name).await?;
        Ok(Drainer {
            old: Arc::new(old),
            new: Arc::new(new),
            metrics,
            migration: plan.name.clone(),
            big_key_bytes: compat.big_key_limits(plan.backfill.big_key_bytes),
        })
    }

    /// Drains proxy `id`'s backlog: its live set too when `dead`, else only a draining set left
    /// behind. Syncs from `primary` to the other side. The number of keys synced.
    pub async fn drain(&self, id: &str, dead: bool, primary: Side) -> Result<usize> {
        let draining = draining_key(&self.migration, id);
        if dead {
            self.set_aside(id, &draining)
                .await
                .with_context(|| format!("moving the backlog of proxy {id} aside"))?;
        }
        let keys = members(&self.new, &draining)
            .await
            .with_context(|| format!("reading the backlog of proxy {id}"))?;
        let n = keys.len();
        if n == 0 {
            return Ok(0);
        }
        let backlog = Backlog::new(draining, self.new.clone(), self.metrics.clone());
        let mirror = Mirror::new(
            CAPACITY,
            self.old.clone(),
            self.new.clone(),
            self.metrics.clone(),
            self.big_key_bytes,
            backlog.clone(),
        );
        mirror.start();
        mirror.recover(Direction::from_primary(primary), keys);
        let started = Instant::now();
        while !(mirror.drained() && backlog.is_empty() && backlog.settled()) {
            if started.elapsed() > DEADLINE {
                let why = mirror.last_error().or(backlog.last_error()).unwrap_or_default();
                anyhow::bail!(
                    "the backlog of proxy {id} did not drain within {DEADLINE:?}: {} key(s) left; {why}",
                    backlog.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(n)
    }

    /// Moves the id's backlog into its draining set (added to what an earlier run left there).
    async fn set_aside(&self, id: &str, draining: &str) -> redis::RedisResult<()> {
        let live = set_key(&self.migration, id);
        let mut conn = SlotConn::for_key(self.new.clone(), live.as_bytes());
        // Not atomic, and it need not be: the proxy is dead, and a crash between the two leaves
        // the keys in both sets, drained twice at worst.
        redis::cmd("SUNIONSTORE")
            .arg(draining)
            .arg(draining)
            .arg(&live)
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("DEL").arg(&live).query_async::<()>(&mut conn).await
    }
}

/// Keys in the backlog of proxy `id` that nobody drains now: its live set when `dead`, plus its
/// draining set (the gates block on these, `status` shows them).
pub async fn undrained(
    router: &crate::cluster::Router,
    migration: &str,
    id: &str,
    dead: bool,
) -> redis::RedisResult<u64> {
    let mut total = 0;
    let sets = [
        Some(draining_key(migration, id)),
        dead.then(|| set_key(migration, id)),
    ];
    for key in sets.into_iter().flatten() {
        let mut cmd = redis::cmd("SCARD");
        cmd.arg(&key);
        let n: u64 = redis::FromRedisValue::from_redis_value(router.query(key.as_bytes(), cmd).await?)?;
        total += n;
    }
    Ok(total)
}

/// Drains every backlog the gates would block on now ([`crate::gate::ProxyView::backlogs`]),
/// syncing from `primary`, on a runtime of its own; one line per proxy id for the operator. A
/// drain that fails is reported in its line: the gates then still block on it.
pub fn drain_blocking(plan: &Plan, generation: u64, primary: Side) -> Vec<String> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![format!("cannot drain proxy backlogs: no async runtime: {e}")],
    };
    runtime.block_on(drain_all(plan, generation, primary))
}

async fn drain_all(plan: &Plan, generation: u64, primary: Side) -> Vec<String> {
    let view = crate::gate::ProxyView::load(plan, generation).await;
    if view.backlogs.is_empty() {
        return Vec::new();
    }
    let drainer = match Drainer::connect(plan).await {
        Ok(d) => d,
        Err(e) => return vec![format!("cannot drain proxy backlogs: {e:#}")],
    };
    let mut lines = Vec::new();
    for (id, _) in &view.backlogs {
        let dead = view.all().iter().any(|r| &r.id == id && !view.is_live(r));
        lines.push(match drainer.drain(id, dead, primary).await {
            Ok(n) => format!("drained the mirror backlog of proxy {id}: {n} key(s) synced from {primary:?} to the other side"),
            Err(e) => format!("{e:#}"),
        });
    }
    lines
}
