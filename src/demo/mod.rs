//! `cachemig demo`: a whole migration on this machine, end to end (docs/demo.md).
//!
//! It starts a local old Redis and a 3-master cluster, loads keys, starts two real proxies (this
//! binary) under a reader/writer load with a model of every acknowledged write, walks every
//! phase with the real gates through the CLI's own code, and ends with a verify, a comparison of
//! both sides with the model, and a per-phase latency and throughput summary.

mod live;
mod load;
mod model;
mod plan;
mod report;
mod sandbox;
mod seed;
mod servers;
mod stats;
mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Command, Format};
use crate::error::{Error, Result};
use plan::Pace;
use sandbox::Sandbox;
use servers::{ProxyAddr, Servers};

/// Options of `cachemig demo`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--keys N`: keys loaded before the walk.
    pub keys: u64,
    /// `--keep`: leave the sandbox running at the end.
    pub keep: bool,
    /// `--fast`: short soaks and few shadow samples.
    pub fast: bool,
    /// `--cluster-port P`: the cluster's first port.
    pub cluster_port: Option<u16>,
    /// `--dir DIR`: the sandbox directory instead of a temporary one.
    pub dir: Option<PathBuf>,
}

/// What a finished demo leaves running (for `--keep`).
struct Running {
    servers: Servers,
    proxies: Vec<ProxyAddr>,
    plan: PathBuf,
}

/// Runs the demo; exit 0 when both sides hold every acknowledged write and verify finds no
/// difference.
pub fn run(opts: Options) -> Result<u8> {
    let started = Instant::now();
    println!("cachemig demo: a migration from a local Redis to a local 3-master Redis Cluster");
    servers::preflight()?;
    let sandbox = Sandbox::create(opts.dir.as_deref())?;
    sandbox.stop_on_signal(opts.keep)?;
    println!("sandbox: {}", sandbox.dir.display());
    match demo(&sandbox, &opts) {
        Ok(running) => {
            if opts.keep {
                print_keep(&sandbox, &running);
                sandbox.children.release();
            } else {
                sandbox.tear_down(false);
            }
            println!("demo finished in {:.0}s", started.elapsed().as_secs_f64());
            Ok(0)
        }
        Err(e) => {
            sandbox.tear_down(true);
            eprintln!(
                "the sandbox's logs and state are kept in {}",
                sandbox.dir.display()
            );
            Err(e)
        }
    }
}

/// Shows a spinner with `what` while `f` runs, then a line with how long it took.
fn stage<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Result<T> {
    let spinner = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("  {spinner} {msg} {elapsed}").expect("valid template"))
        .with_message(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    let out = f();
    spinner.finish_and_clear();
    let t = start.elapsed().as_secs_f64();
    match &out {
        Ok(_) => println!("  ✓ {what} ({t:.1}s)"),
        Err(_) => println!("  ✗ {what} ({t:.1}s)"),
    }
    Ok(out?)
}

/// Everything between creating the sandbox and tearing it down.
fn demo(sandbox: &Sandbox, opts: &Options) -> Result<Running> {
    let (dir, children) = (&sandbox.dir, &sandbox.children);
    let pace = if opts.fast { Pace::FAST } else { Pace::NORMAL };
    let servers = stage("starting the old Redis and a 3-master cluster", || {
        servers::start(dir, children, opts.cluster_port)
    })?;
    println!(
        "  old Redis on 127.0.0.1:{}, cluster masters on {:?}",
        servers.old, servers.cluster
    );
    stage(&format!("loading {} keys into the old Redis", opts.keys), || {
        seed::load(servers.old, opts.keys)
    })?;
    let plan = plan::write(dir, servers.old, &servers.cluster, pace)?;
    let proxies = stage("starting two proxies (cachemig proxy)", || {
        ["demo-a", "demo-b"]
            .iter()
            .map(|id| servers::start_proxy(dir, children, &plan, id))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    for p in &proxies {
        println!(
            "  proxy {} on 127.0.0.1:{} (status: http://127.0.0.1:{}/status)",
            p.id, p.port, p.metrics_port
        );
    }
    let stats = Arc::new(stats::Stats::new("planned"));
    let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
    let load = load::Load::start(&ports, opts.keys, stats.clone()).map_err(Error::Runtime)?;
    println!(
        "  load: 4 writers, 2 readers, a queue (LPUSH/BLPOP), transactions and scripts, through the proxies"
    );
    let live = live::Live::start(stats.clone(), proxies.clone());
    let flag_file = crate::plan::Plan::load(&plan)?.flag_file;
    let walk = walk::Walk {
        plan: plan.clone(),
        flag_file,
        stats: &stats,
        live: &live,
        proxies: &proxies,
    };
    // A baseline first: the same load through the proxies before anything moves.
    walk.linger(pace.soak);
    walk.run()?;
    walk.linger(pace.soak);
    live.pause();
    let model = load.finish();
    walk.wait_drained()?;
    check(&plan, &servers, &model, &stats)?;
    walk.finalize()?;
    live.pause();
    drop(live);
    Ok(Running {
        servers,
        proxies,
        plan,
    })
}

/// The final verify, old and new against the model, and the per-phase summary; an error when
/// anything differs or a client saw an error.
fn check(
    plan: &std::path::Path,
    servers: &Servers,
    model: &model::Model,
    stats: &stats::Stats,
) -> Result<()> {
    println!("\n══ final verify: old and new compared key by key, both ways ══");
    crate::commands::execute(Command::Verify {
        plan: plan.to_path_buf(),
        sample: None,
        repair: false,
        report: None,
        format: Format::Table,
    })?;
    let seeds: Vec<String> = servers
        .cluster
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let differences = model::differences(model, servers.old, &seeds).context("comparing with the model")?;
    println!(
        "model: {} keys written through the proxies; {} differ from the acknowledged writes on old or new",
        model.len(),
        differences.len()
    );
    differences.iter().take(10).for_each(|d| println!("  {d}"));
    println!("\n══ the load, per phase ══");
    report::print(&stats.finish());
    let messages = stats.messages();
    messages.iter().for_each(|m| println!("  error: {m}"));
    if !differences.is_empty() || stats.errors() > 0 {
        return Err(Error::Runtime(anyhow!(
            "{} key(s) differ from the model and the clients saw {} error(s)",
            differences.len(),
            stats.errors()
        )));
    }
    println!("every acknowledged write is on old and on new; the clients saw no error");
    Ok(())
}

/// How to use what `--keep` leaves running.
fn print_keep(sandbox: &Sandbox, r: &Running) {
    let plan = r.plan.display();
    let bin = std::env::current_exe().map_or("cachemig".into(), |p| p.display().to_string());
    let pids: Vec<String> = sandbox
        .children
        .pids()
        .iter()
        .map(|(_, pid)| pid.to_string())
        .collect();
    println!("\nThe sandbox keeps running (--keep):");
    println!("  old Redis     redis-cli -p {}", r.servers.old);
    println!(
        "  new cluster   redis-cli -c -p {}   (masters {:?})",
        r.servers.cluster[0], r.servers.cluster
    );
    for p in &r.proxies {
        println!(
            "  proxy {}  redis-cli -p {}   curl http://127.0.0.1:{}/status   log {}",
            p.id,
            p.port,
            p.metrics_port,
            p.log.display()
        );
    }
    println!("Try next (the proxies follow every step):");
    println!("  {bin} status {plan}");
    println!("  {bin} verify {plan}");
    println!("  {bin} rollback {plan} --yes        # back to read-cutover, through the fence");
    println!("  {bin} plan {plan}");
    println!(
        "Stop it all:  kill {} && rm -rf {}",
        pids.join(" "),
        sandbox.dir.display()
    );
}
