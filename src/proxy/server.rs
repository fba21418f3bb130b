//! `cachemig proxy`: wiring the parts together and accepting connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

use super::backend::Backend;
use super::backlog::{self, Backlog};
use super::compat::Compat;
use super::hotkeys::HotKeys;
use super::listen_tls::ListenTls;
use super::metrics::Metrics;
use super::mirror::Mirror;
use super::node::ErrorSink;
use super::shadow::Shadow;
use super::succession::Succession;
use super::{Proxy, client, drain, heartbeat, http, listener, routing};
use crate::cluster::Router;
use crate::flags::{FlagWatcher, WatchOptions};
use crate::plan::Plan;

/// Where the proxy listens and how it names itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client address, e.g. `127.0.0.1:6400`.
    pub listen: String,
    /// Report id; default `hostname:port`.
    pub id: Option<String>,
    /// `/metrics` and `/status` address, if any.
    pub metrics: Option<String>,
    /// The password clients must AUTH with (from the plan's `[proxies] password_env`).
    pub password: Option<String>,
    /// Start without a valid flag file even when the beacon says the migration is past
    /// `planned` (the proxy is then stale: writes refused until the flag file appears).
    pub allow_missing_flag_file: bool,
    /// On SIGTERM, how long client connections may take to reach a request boundary.
    pub drain_timeout: Duration,
}

/// Hot-key window and table size.
const HOT_WINDOW: Duration = Duration::from_secs(10);
const HOT_CAPACITY: usize = 64;
/// One keyed request in this many is counted (the count is scaled back up in reports).
const HOT_SAMPLE: u64 = 8;

impl ErrorSink for Metrics {
    fn backend_error(&self, _text: &str) {
        self.backend_errors.inc();
    }
}

/// Runs the proxy for `plan` until the process is stopped.
pub async fn run(plan: Plan, options: Options) -> Result<()> {
    let addr = listener::resolve(&options.listen)?;
    let tls = ListenTls::from_plan(&plan.proxies).context("[proxies] tls_cert_file / tls_key_file")?;
    let id = options
        .id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
    let succession = Arc::new(
        Succession::claim(
            Router::connect(&plan.target).await?,
            &plan.name,
            &id,
            plan.proxies.heartbeat_timeout,
        )
        .await,
    );
    if listener::in_use(addr).await && !succession.id_held().await {
        anyhow::bail!(
            "{addr} is in use, and not by a live proxy {id} of migration {}: a restart shares the port only with its predecessor (same --id)",
            plan.name
        );
    }
    let listener = listener::bind(addr)?;
    let local = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new(&id, &plan.name));
    let errors: Arc<dyn ErrorSink> = metrics.clone();
    let (source_is_cluster, server_version) = inspect_source(&plan).await?;
    let compat = Compat::read(&plan, source_is_cluster).await;
    for line in compat.log_lines() {
        eprintln!("cachemig proxy {id}: {line}");
    }
    let name = format!(
        "cachemig-proxy:{}",
        id.replace(|c: char| !c.is_ascii_graphic(), "_")
    );
    let old =
        Arc::new(Backend::connect("old", &plan.source, source_is_cluster, errors.clone(), &name).await?);
    let new = Arc::new(Backend::connect("new", &plan.target, true, errors, &name).await?);
    let router = Router::connect(&plan.target).await?;
    let watcher = FlagWatcher::start(
        plan.flag_file.clone(),
        WatchOptions {
            expected_migration: Some(plan.name.clone()),
            ..WatchOptions::default()
        },
    )?;
    let flag = watcher.subscribe();
    if flag.borrow().applied.is_none() && !options.allow_missing_flag_file {
        refuse_without_flag_file(&plan, &router).await?;
    }
    let applied = routing::follow(watcher.subscribe(), metrics.clone());
    let backlog = Backlog::new(backlog::set_key(&plan.name, &id), new.clone(), metrics.clone());
    let mirror = Mirror::new(
        plan.dual_write.queue_capacity as usize,
        old.clone(),
        new.clone(),
        metrics.clone(),
        compat.big_key_limits(plan.backfill.big_key_bytes),
        backlog,
    );
    mirror.start();
    let proxy = Arc::new(Proxy {
        id: id.clone(),
        migration: plan.name.clone(),
        old,
        new,
        applied,
        flag,
        mirror,
        shadow: Shadow::new(metrics.clone()),
        metrics,
        hot: HotKeys::sampled(HOT_CAPACITY, HOT_WINDOW, HOT_SAMPLE),
        password: options.password.clone(),
        filter: plan.keys.clone(),
        sync_timeout: Duration::from_millis(plan.dual_write.sync_timeout_ms),
        reverse_mirror: plan.dual_write.reverse_mirror,
        allow_flush: plan.proxies.allow_flush,
        writes_in_flight: AtomicUsize::new(0),
        scripts: Default::default(),
        server_version,
        compat,
        stale: Default::default(),
        stale_after: plan.proxies.heartbeat_timeout,
        draining: tokio::sync::watch::Sender::new(false),
        carried: Default::default(),
    });
    let heartbeat = tokio::spawn(heartbeat::run(proxy.clone(), router, succession.clone()));
    if let Some(addr) = &options.metrics {
        let http = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        eprintln!(
            "cachemig proxy {id}: metrics on http://{}/metrics",
            http.local_addr()?
        );
        tokio::spawn(http::serve(http, proxy.clone()));
    }
    let applied = proxy.applied();
    eprintln!(
        "cachemig proxy {id}: listening on {local}, generation {} ({})",
        applied.generation, applied.phase
    );
    let stopping = accept(&listener, &proxy, &tls).await?;
    eprintln!("cachemig proxy {id}: {stopping}");
    let serve = {
        let proxy = proxy.clone();
        Box::new(move |stream| spawn_client(&proxy, &tls, stream))
    };
    let result = drain::stop(
        &proxy,
        drain::Stop {
            listener,
            serve,
            timeout: options.drain_timeout,
            heartbeat,
            succession,
        },
    )
    .await;
    drop(watcher); // followed the flag file until the last connection closed
    result
}

/// Serves `stream` as a new client connection (over TLS when the plan gives the proxy a
/// certificate).
fn spawn_client(proxy: &Arc<Proxy>, tls: &Option<Arc<ListenTls>>, stream: TcpStream) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(client::serve(proxy.clone(), stream, id, tls.clone()));
}

/// Accepts connections until SIGTERM or Ctrl-C; which one stopped it.
async fn accept(
    listener: &TcpListener,
    proxy: &Arc<Proxy>,
    tls: &Option<Arc<ListenTls>>,
) -> Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => spawn_client(proxy, tls, stream),
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok("stopped by Ctrl-C"),
            _ = terminate.recv() => return Ok("stopped by SIGTERM"),
        }
    }
}

/// A proxy without a valid flag file would serve as `planned`: writes to old, unmirrored. That
/// is right only while the migration is there; past it, such a proxy would be a second primary.
async fn refuse_without_flag_file(plan: &Plan, router: &Router) -> Result<()> {
    let beacon = crate::beacon::read(router, &plan.name)
        .await
        .context("reading the generation beacon from the target")?;
    match beacon {
        Some(b) if b.generation > 0 && b.phase != "planned" => anyhow::bail!(
            "no valid flag file at {}, but the migration is at generation {} ({}) according to the new cluster; \
             without it this proxy would write old unmirrored. Fix the path or the mount (see docs/flag-file.md), \
             or pass --allow-missing-flag-file to start anyway with writes refused until it appears",
            plan.flag_file.display(),
            b.generation,
            b.phase
        ),
        _ => Ok(()),
    }
}

/// Whether the source is a cluster (`cluster_enabled:1`), and its version.
pub(crate) async fn inspect_source(plan: &Plan) -> Result<(bool, String)> {
    let url = plan.source.urls.first().context("the source has no URL")?;
    let mut conn = plan.source.connect_node(url).await?;
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
    let cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .unwrap_or("7.0.0")
        .to_string();
    Ok((cluster, version))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".into())
}
