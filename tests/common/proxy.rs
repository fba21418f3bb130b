//! A running `cachemig proxy` for integration tests, and a way to put a phase in force by
//! writing the flag file directly (what `advance` would write, without its gates).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cachemig::flags::{FlagFile, ShadowRead, write_atomic};
use cachemig::phase::Catalog;

use super::sandbox::Sandbox;
use super::{Cachemig, START_TIMEOUT, free_port, wait_for};

/// A proxy process on a free loopback port, killed on drop.
pub struct ProxyProcess {
    child: Child,
    /// The client port.
    pub port: u16,
    /// The /metrics and /status port.
    pub metrics_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `cachemig proxy` on the sandbox's plan with id `id` and waits until it accepts.
    pub fn start(sandbox: &Sandbox, id: &str) -> ProxyProcess {
        ProxyProcess::start_with_env(sandbox, id, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_with_env(sandbox: &Sandbox, id: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let mut all: Vec<(&str, &str)> = sandbox
            .env()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        ProxyProcess::start_on(sandbox.plan(), id, &all)
    }

    /// `cachemig proxy` on any plan, with environment variables `env`.
    pub fn start_on(plan: &Path, id: &str, env: &[(&str, &str)]) -> ProxyProcess {
        ProxyProcess::start_on_with_args(plan, id, env, &[])
    }

    /// The same, with extra command-line arguments.
    pub fn start_on_with_args(plan: &Path, id: &str, env: &[(&str, &str)], args: &[&str]) -> ProxyProcess {
        ProxyProcess::start_on_port(plan, id, free_port(), env, args)
    }

    /// A restart: a second process with the same id on the same client port as `previous`
    /// (which keeps running until it is told to stop), with its own metrics port.
    pub fn successor(previous: &ProxyProcess, plan: &Path, id: &str, env: &[(&str, &str)]) -> ProxyProcess {
        ProxyProcess::start_on_port(plan, id, previous.port, env, &[])
    }

    fn start_on_port(plan: &Path, id: &str, port: u16, env: &[(&str, &str)], args: &[&str]) -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let metrics_port = free_port();
        let mut cmd = Cachemig::new().arg("proxy").arg(plan).args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--id",
            id,
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
        ]);
        cmd = cmd.args(args);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let child = cmd.spawn_logged(&log);
        let mut proxy = ProxyProcess {
            child,
            port,
            metrics_port,
            log,
            _dir: dir,
        };
        let ready = wait_ready(&mut proxy);
        assert!(ready, "the proxy did not start:\n{}", proxy.log());
        proxy
    }

    /// Kills the process with SIGKILL (a crash: nothing is drained) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a clean stop: drain, then exit) without waiting.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits (up to `timeout`) until the process exited; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection to the proxy.
    pub fn conn(&self) -> redis::Connection {
        self.conn_with("")
    }

    /// A RESP3 connection to the proxy (it opens with `HELLO 3`).
    pub fn conn_resp3(&self) -> redis::Connection {
        self.conn_with("?protocol=resp3")
    }

    fn conn_with(&self, query: &str) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/{query}", self.port)).unwrap();
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        conn
    }

    /// What the proxy printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let body = http_get(self.metrics_port, "/status");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status ({e}): {body}"))
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
    }

    /// Waits until the proxy routes by `generation`.
    pub fn wait_generation(&self, generation: u64) {
        wait_for(
            &format!("proxy at generation {generation}"),
            Duration::from_secs(10),
            || self.status()["generation"].as_u64() == Some(generation),
        );
    }
}

fn wait_ready(proxy: &mut ProxyProcess) -> bool {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if proxy.child.try_wait().unwrap().is_some() {
            return false;
        }
        // The metrics listener is bound after the client one: wait for both.
        let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up(proxy.port) && up(proxy.metrics_port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET on loopback; the body.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    body.to_string()
}

/// Writes the flag file for `phase` at `generation` (5 % shadow sampling unless `rate` says
/// otherwise), as `advance` would after its gates passed.
pub fn set_phase(flag_path: &Path, phase: &str, generation: u64, fence: bool, rate: f64) {
    let spec = Catalog::builtin().get(phase).expect("a catalog phase");
    let shadow = ShadowRead {
        sample_rate: rate,
        timeout_ms: 5000,
    };
    let flag = FlagFile::new("sandbox", generation, spec, shadow, "test", fence);
    std::fs::create_dir_all(flag_path.parent().unwrap()).unwrap();
    write_atomic(flag_path, &flag).unwrap();
}

/// A proxy's own copy of the flag file (a ConfigMap synced to one host): each version of `from`
/// is copied to `to` `delay` after it appeared (at once by default; never while frozen).
pub struct FlagCopy {
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FlagCopy {
    /// Starts copying.
    pub fn start(from: PathBuf, to: PathBuf) -> FlagCopy {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (delay, stopping) = (delay_ms.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pending: Vec<(Instant, Vec<u8>)> = Vec::new();
            let mut seen = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                if let Ok(bytes) = std::fs::read(&from)
                    && bytes != seen
                {
                    let due = Instant::now().checked_add(Duration::from_millis(delay.load(Ordering::SeqCst)));
                    if let Some(due) = due {
                        pending.push((due, bytes.clone()));
                    }
                    seen = bytes;
                }
                while pending.first().is_some_and(|(due, _)| *due <= Instant::now()) {
                    let (_, bytes) = pending.remove(0);
                    write_atomically(&to, &bytes);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        FlagCopy {
            delay_ms,
            stop,
            thread: Some(thread),
        }
    }

    /// Versions written from now on are copied `delay` after they appear.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Versions written from now on are never copied.
    pub fn freeze(&self) {
        self.delay_ms.store(u64::MAX / 2, Ordering::SeqCst);
    }
}

impl Drop for FlagCopy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many times `conn`'s server ran `command` (`INFO commandstats`): what a proxy sent it.
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

fn write_atomically(to: &Path, bytes: &[u8]) {
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}
