//! The sandbox's processes: one standalone old Redis, a 3-master Redis Cluster and the
//! `cachemig proxy` children, each in its own directory of the sandbox with its own log.
//!
//! Every child runs in a process group of its own, so a Ctrl-C at the terminal reaches only the
//! demo, which then stops them in order (and `--keep` can leave them running after it exits).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// How long a server or a proxy may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a start on ports found free is retried with other ports: another process
/// (a second demo, a test) may take a port between the look and the bind.
const ATTEMPTS: usize = 5;
/// Cluster ports are drawn from here. Their bus ports (port + 10000, 22000–31999) stay below the
/// usual ephemeral range (32768 and up), so outgoing connections rarely hold them, and every
/// port stays at or below 55535, above which a node cannot open its bus port at all.
const CLUSTER_PORTS: std::ops::Range<u16> = 12_000..21_997;
/// Offset of a cluster node's bus port, Redis's default.
const BUS_OFFSET: u16 = 10_000;

/// One child process of the sandbox.
struct Proc {
    name: String,
    child: Child,
}

/// The sandbox's child processes, shared with the Ctrl-C handler.
#[derive(Clone, Default)]
pub struct Children(Arc<Mutex<Vec<Proc>>>);

impl Children {
    fn push(&self, name: String, child: Child) {
        self.0.lock().expect("children lock").push(Proc { name, child });
    }

    /// Kills and reaps every child, newest first (proxies before the servers they use).
    pub fn stop_all(&self) {
        let mut procs = self.0.lock().expect("children lock");
        while let Some(mut p) = procs.pop() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Kills and reaps the child named `name` (a start that failed).
    fn stop(&self, name: &str) {
        let mut procs = self.0.lock().expect("children lock");
        if let Some(i) = procs.iter().position(|p| p.name == name) {
            let mut p = procs.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Whether the child named `name` has exited.
    fn exited(&self, name: &str) -> bool {
        let mut procs = self.0.lock().expect("children lock");
        procs
            .iter_mut()
            .find(|p| p.name == name)
            .is_none_or(|p| !matches!(p.child.try_wait(), Ok(None)))
    }

    /// `name pid` of every running child, for `--keep`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let procs = self.0.lock().expect("children lock");
        procs.iter().map(|p| (p.name.clone(), p.child.id())).collect()
    }

    /// Forgets the children without stopping them (`--keep`).
    pub fn release(&self) {
        self.0.lock().expect("children lock").clear();
    }
}

/// A loopback port the system just handed out (for the old Redis and the proxies, whose ports
/// may come from the ephemeral range).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a loopback port")?
        .local_addr()?
        .port())
}

/// Whether `port` can be bound on loopback right now.
fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A first cluster port P such that P..P+3 and their bus ports are free now.
fn cluster_base() -> anyhow::Result<u16> {
    for _ in 0..500 {
        let p = rand::random_range(CLUSTER_PORTS);
        if (p..p + 3).all(|q| bindable(q) && bindable(q + BUS_OFFSET)) {
            return Ok(p);
        }
    }
    bail!(
        "found no three free loopback ports (and their bus ports) between {} and {}",
        CLUSTER_PORTS.start,
        CLUSTER_PORTS.end
    )
}

/// Fails with a message naming `scripts/install-deps` when a Redis binary is not on PATH.
pub fn preflight() -> anyhow::Result<()> {
    for bin in ["redis-server", "redis-cli"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!(
                "`{bin}` is not on PATH; the demo starts real Redis servers. Install them with \
                 `scripts/install-deps` (Debian/Ubuntu: the redis-server and redis-tools packages)"
            );
        }
    }
    Ok(())
}

/// Where the servers run.
pub struct Servers {
    /// The old Redis's port.
    pub old: u16,
    /// The cluster masters' ports.
    pub cluster: Vec<u16>,
}

/// Starts the old Redis and the cluster under `dir`; `cluster_port` fixes the first cluster port
/// (no retry on other ports then).
pub fn start(dir: &Path, children: &Children, cluster_port: Option<u16>) -> anyhow::Result<Servers> {
    let old = retry(|| {
        let port = free_port()?;
        spawn_redis(dir, children, "old", port, &[])?;
        Ok(port)
    })?;
    let cluster = match cluster_port {
        Some(p) => start_cluster(dir, children, p)?,
        None => retry(|| start_cluster(dir, children, cluster_base()?))?,
    };
    Ok(Servers { old, cluster })
}

/// Runs `start` up to [`ATTEMPTS`] times; the last error if none succeeds.
fn retry<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match start() {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .expect("at least one attempt")
        .context(format!("{ATTEMPTS} attempts on other ports failed too")))
}

/// Three cluster nodes on `base`..`base+3` joined by `redis-cli --cluster create`.
fn start_cluster(dir: &Path, children: &Children, base: u16) -> anyhow::Result<Vec<u16>> {
    let ports: Vec<u16> = (base..base + 3).collect();
    let names: Vec<String> = ports.iter().map(|p| format!("new-{p}")).collect();
    let started = ports.iter().zip(&names).try_for_each(|(port, name)| {
        let bus = (port + BUS_OFFSET).to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            "--cluster-port",
            &bus,
        ];
        spawn_redis(dir, children, name, *port, &args)
    });
    let created = started.and_then(|()| create_cluster(&ports));
    if created.is_err() {
        names.iter().for_each(|n| children.stop(n));
    }
    created.map(|()| ports)
}

/// `redis-cli --cluster create` over `ports`, then waits for `cluster_state:ok` everywhere.
fn create_cluster(ports: &[u16]) -> anyhow::Result<()> {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .arg("--cluster-yes")
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while !ports.iter().all(|p| cluster_ok(*p)) {
        if Instant::now() > deadline {
            bail!("the cluster on {addrs:?} did not reach cluster_state:ok in {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn cluster_ok(port: u16) -> bool {
    let info = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
    info.is_ok_and(|i| i.contains("cluster_state:ok") && i.contains("cluster_slots_assigned:16384"))
}

/// Starts `redis-server` on `port` in `dir/name` and waits until it is ready; on failure it
/// names the log (kept) and quotes its end.
fn spawn_redis(dir: &Path, children: &Children, name: &str, port: u16, args: &[&str]) -> anyhow::Result<()> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let log = home.join("redis.log");
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args([
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(&home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("starting redis-server")?;
    children.push(name.to_string(), child);
    let ready = || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to accept connections")) && ping(port)
    };
    wait_up(children, name, ready).map_err(|why| {
        children.stop(name);
        anyhow!(
            "redis-server `{name}` on port {port} {why}; its log: {}{}",
            log.display(),
            tail(&log)
        )
    })
}

/// Waits until `ready`, or fails saying whether the child exited or timed out.
fn wait_up(children: &Children, name: &str, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if children.exited(name) {
            return Err("exited before it was ready".into());
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("was not ready after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a log, indented, to quote in an error.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    last.iter().map(|l| format!("\n  {l}")).collect()
}

/// PING over a raw socket.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// A running `cachemig proxy`.
#[derive(Debug, Clone)]
pub struct ProxyAddr {
    /// Its id in reports.
    pub id: String,
    /// Clients connect here.
    pub port: u16,
    /// `/status` and `/metrics`.
    pub metrics_port: u16,
    /// Its log.
    pub log: PathBuf,
}

/// Starts `cachemig proxy PLAN` (this very binary) as `id`, on free ports, and waits until both
/// its listeners accept.
pub fn start_proxy(dir: &Path, children: &Children, plan: &Path, id: &str) -> anyhow::Result<ProxyAddr> {
    let exe = std::env::current_exe().context("locating the cachemig binary")?;
    let log = dir.join(format!("{id}.log"));
    retry(|| {
        let (port, metrics_port) = (free_port()?, free_port()?);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&exe)
            .arg("proxy")
            .arg(plan)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--id", id])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting cachemig proxy")?;
        children.push(id.to_string(), child);
        let up = |p| TcpStream::connect(("127.0.0.1", p)).is_ok();
        wait_up(children, id, || up(port) && up(metrics_port)).map_err(|why| {
            children.stop(id);
            anyhow!(
                "proxy {id} on port {port} {why}; its log: {}{}",
                log.display(),
                tail(&log)
            )
        })?;
        Ok(ProxyAddr {
            id: id.to_string(),
            port,
            metrics_port,
            log: log.clone(),
        })
    })
}
