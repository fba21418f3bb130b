#![allow(dead_code)]
//! Test harness shared by the integration tests: real `redis-server` processes on free loopback
//! ports in temporary directories (killed on drop), and the real `cachemig` binary.

mod cluster;
pub mod compare;
pub mod hotkeys;
pub mod load;
pub mod planted;
pub mod proxy;
pub mod reports;
pub mod sandbox;
pub mod servers;
pub mod tls;
pub mod typed;
pub mod wire;

pub use cluster::RedisCluster;
pub use servers::Flavor;
pub use tls::TlsFiles;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server or a cluster may take to come up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Ports handed out by this process, so parallel tests never pick the same one. Collisions with
/// other processes are caught at startup (the server fails to bind; we retry with a new port).
static USED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that was free a moment ago and is not handed out twice by this process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if USED_PORTS.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls `check` every [`POLL`] until it is true; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A free loopback port `p` ≤ 55535 whose `p + 10000` is free too (Redis 6.2's cluster bus
/// port, which it cannot be told), both handed out by [`free_port`]'s registry.
pub fn free_port_with_bus() -> (u16, u16) {
    loop {
        let port = free_port();
        let bus = port.wrapping_add(10000);
        if port > 55535 || TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        if USED_PORTS.lock().unwrap().insert(bus) {
            return (port, bus);
        }
    }
}

/// Spawns the `flavor`'s server on `port` in `dir` with `args`; its output goes to
/// `dir/redis.log`. With `tls`, `port` is a TLS port and plain TCP is off.
fn spawn_server(
    flavor: Flavor,
    port: u16,
    bus_port: Option<u16>,
    dir: &Path,
    args: &[String],
    tls: Option<&TlsFiles>,
) -> Child {
    let mut cmd = Command::new(flavor.server());
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--daemonize", "no", "--protected-mode", "no", "--dir"])
    .arg(dir)
    .args(args)
    // Later options win: these turn `--port` off and serve TLS on it instead.
    .args(tls.map(|t| t.server_args(port)).unwrap_or_default())
    .current_dir(dir)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(dir.join("redis.log")).unwrap())
    .stderr(Stdio::null());
    if let Some(bus) = bus_port.filter(|_| flavor.has_cluster_port()) {
        cmd.args(["--cluster-port", &bus.to_string()]);
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; is it installed (apt-get install redis-server, scripts/install-servers)?",
            flavor.server().display()
        )
    })
}

/// One `redis-server` process; killed (and its directory removed) on drop.
pub struct RedisServer {
    flavor: Flavor,
    child: Child,
    port: u16,
    bus_port: Option<u16>,
    password: Option<String>,
    args: Vec<String>,
    tls: Option<Arc<TlsFiles>>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a standalone server with extra config, e.g. `&["--requirepass", "pw"]`.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_retrying(Flavor::Redis70, args, false, None)
    }

    /// Starts a standalone server of `flavor` with extra config.
    pub fn start_flavor(flavor: Flavor, args: &[&str]) -> Self {
        Self::start_retrying(flavor, args, false, None)
    }

    /// Starts a standalone server that speaks only TLS, with `tls`'s certificates (clients must
    /// present one too).
    pub fn start_tls(tls: &Arc<TlsFiles>, args: &[&str]) -> Self {
        Self::start_retrying(Flavor::Redis70, args, false, Some(tls))
    }

    /// Starts a cluster-enabled node (not yet part of any cluster).
    pub fn start_cluster_node() -> Self {
        Self::start_cluster_node_with(None)
    }

    /// The same, speaking only TLS (clients, cluster bus and replication) when `tls` is given.
    pub fn start_cluster_node_with(tls: Option<&Arc<TlsFiles>>) -> Self {
        Self::start_cluster_node_of(Flavor::Redis70, tls)
    }

    /// A cluster-enabled node of `flavor` (TLS when `tls` is given).
    pub fn start_cluster_node_of(flavor: Flavor, tls: Option<&Arc<TlsFiles>>) -> Self {
        let args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
        let fast = [
            "--cluster-node-timeout",
            "2000",
            "--repl-diskless-sync-delay",
            "0",
        ];
        Self::start_retrying(flavor, &[&args[..], &fast[..]].concat(), true, tls)
    }

    fn start_retrying(flavor: Flavor, args: &[&str], cluster: bool, tls: Option<&Arc<TlsFiles>>) -> Self {
        let mut last_log = String::new();
        for _ in 0..5 {
            match Self::try_start(flavor, args, cluster, tls.cloned()) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start after 5 attempts; last log:\n{last_log}");
    }

    /// Spawns one server; `Err(log)` if it exits (e.g. port taken) or never gets ready.
    fn try_start(
        flavor: Flavor,
        args: &[&str],
        cluster: bool,
        tls: Option<Arc<TlsFiles>>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let (port, bus_port) = match (cluster, flavor.has_cluster_port()) {
            (false, _) => (free_port(), None),
            (true, true) => (free_port(), Some(free_port())),
            (true, false) => {
                let (port, bus) = free_port_with_bus();
                (port, Some(bus))
            }
        };
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| args.get(i + 1))
            .cloned();
        let child = spawn_server(flavor, port, bus_port, dir.path(), &args, tls.as_deref());
        let mut server = Self {
            flavor,
            child,
            port,
            bus_port,
            password,
            args,
            tls,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts the server again after [`RedisServer::kill`], on the same port, directory and
    /// configuration (a backend that comes back).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_server(
            self.flavor,
            self.port,
            self.bus_port,
            self.dir.path(),
            &self.args,
            self.tls.as_deref(),
        );
        self.wait_ready()
            .unwrap_or_else(|log| panic!("redis-server did not restart:\n{log}"));
    }

    /// Waits until this process (not a foreign one on the port) accepts commands.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return Err(self.log()); // Drop reaps it; the caller retries on a new port.
            }
            // Our own log line, so a foreign server that grabbed the port can't fool us.
            if self.log().contains("Ready to accept connections") && self.raw_ping() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// PING over a raw socket (over TLS through the `redis` crate); `-NOAUTH` counts as an answer.
    fn raw_ping(&self) -> bool {
        if self.tls.is_some() {
            let ping = self
                .client()
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            return match ping {
                Ok(_) => true,
                Err(e) => e.code() == Some("NOAUTH"),
            };
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    }

    /// Which server binary runs.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port (cluster nodes only).
    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// `redis://127.0.0.1:PORT`, `rediss://` for a TLS server (never with the password).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificates of a TLS server.
    pub fn tls(&self) -> Option<&Arc<TlsFiles>> {
        self.tls.as_ref()
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs `redis-cli` against this server (authenticating if needed); trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            cmd.args(tls.cli_args());
        }
        if let Some(pw) = &self.password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A synchronous connection (authenticated if the server has `--requirepass`).
    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// A client for this server: its password, its certificates.
    fn client(&self) -> redis::Client {
        let url = match &self.password {
            Some(pw) => self.url().replace("://", &format!("://:{pw}@")),
            None => self.url(),
        };
        match &self.tls {
            Some(tls) => redis::Client::build_with_tls(url, tls.certificates()).unwrap(),
            None => redis::Client::open(url).unwrap(),
        }
    }

    /// Runs one command on a fresh connection and converts the reply.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.port))
    }

    /// A field of `INFO` (any section), if present.
    pub fn info_field(&self, field: &str) -> Option<String> {
        let info: String = self.query(&["INFO", "everything"]);
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// Kills the server now (as a crash would), leaving the struct to be dropped later.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result of one `cachemig` run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (-1 if killed by a signal).
    pub status: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Run {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n$ {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Panics (showing the whole output) unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.status != code {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    /// Exit code 0.
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Panics unless stdout contains `s`.
    pub fn assert_stdout_contains(&self, s: &str) -> &Self {
        if !self.stdout.contains(s) {
            self.fail(&format!("expected stdout to contain {s:?}"));
        }
        self
    }

    /// Panics unless stderr contains `s`.
    pub fn assert_stderr_contains(&self, s: &str) -> &Self {
        if !self.stderr.contains(s) {
            self.fail(&format!("expected stderr to contain {s:?}"));
        }
        self
    }

    /// Panics if stdout or stderr contains `s` (e.g. a password).
    pub fn assert_output_lacks(&self, s: &str) -> &Self {
        if self.stdout.contains(s) || self.stderr.contains(s) {
            self.fail(&format!("expected no {s:?} in the output"));
        }
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| self.fail(&format!("stdout is not JSON: {e}")))
    }
}

/// Runs `cachemig ARGS` to completion (see [`Cachemig`]).
pub fn cachemig(args: &[&str]) -> Run {
    Cachemig::new().args(args).run()
}

/// A builder running the real `cachemig` binary with stdin null (never a terminal).
pub struct Cachemig {
    cmd: Command,
    timeout: Duration,
}

impl Default for Cachemig {
    fn default() -> Self {
        Self::new()
    }
}

impl Cachemig {
    /// `cachemig` with no arguments and `NO_COLOR=1`, for stable output.
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachemig"));
        cmd.env("NO_COLOR", "1").stdin(Stdio::null());
        Self {
            cmd,
            timeout: Duration::from_secs(120),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable for the child only.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable for the child only.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Kills the run (and fails the test) after `timeout`; default 120 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn describe(&self) -> String {
        let args = self
            .cmd
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>();
        format!("cachemig {}", args.join(" "))
    }

    /// Starts the binary with stdout/stderr piped, for concurrency tests.
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run cachemig")
    }

    /// Starts the binary in the background with stdout and stderr appended to `log` (a file,
    /// so a long-running process never blocks on a full pipe).
    pub fn spawn_logged(mut self, log: &Path) -> Child {
        let file = std::fs::File::create(log).unwrap();
        self.cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("cannot run cachemig")
    }

    /// Runs to completion (bounded by the timeout) and captures the output.
    pub fn run(self) -> Run {
        let (command, timeout) = (self.describe(), self.timeout);
        let out = run_bounded(self.cmd, timeout);
        let run = Run {
            command,
            status: out.code.unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        };
        if out.timed_out {
            run.fail(&format!("timed out after {timeout:?}"));
        }
        run
    }
}

/// What a bounded child process did.
pub struct Bounded {
    /// The exit code; `None` when killed (by a signal, or on timeout).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Whether it was killed for running past its timeout.
    pub timed_out: bool,
}

/// Runs `cmd` to completion with stdin null and stdout and stderr captured; kills it after
/// `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Bounded {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Bounded {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        timed_out,
    }
}

/// Writes `body` to `dir/name` and returns the path.
pub fn write_plan(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}
