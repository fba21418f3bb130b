//! A migration sandbox for control-plane tests: a standalone source, a 3-master cluster target
//! and a plan in a temporary directory, plus helpers to run `cachemig` on that plan.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cachemig::flags::FlagFile;
use cachemig::state::{Entry, Journal};

use super::{Cachemig, Flavor, RedisCluster, RedisServer, Run, TlsFiles, write_plan};

/// The environment variable the password sandbox names in its plan.
const PASSWORD_ENV: &str = "CACHEMIG_TEST_SOURCE_PASSWORD";

/// Source, target, and a plan that moves `token:*` with no proxies expected.
pub struct Sandbox {
    /// The old Redis.
    pub source: RedisServer,
    /// The new cluster.
    pub target: RedisCluster,
    dir: tempfile::TempDir,
    plan: PathBuf,
    env: Vec<(String, String)>,
    source_url: String,
    extra: String,
    /// Extra lines of `[source]` and `[target]` (the `tls_*` keys).
    side_keys: [String; 2],
}

impl Sandbox {
    /// A standalone source without a password.
    pub fn start() -> Sandbox {
        Sandbox::build(RedisServer::start(), RedisCluster::start(3, 0), Vec::new())
    }

    /// A standalone `source` server and a 3-master `target` cluster of the given flavors (Valkey
    /// 8.1, Redis 6.2, Debian's Redis 7.0), started side by side.
    pub fn start_of(source: Flavor, target: Flavor) -> Sandbox {
        let (source, target) = std::thread::scope(|s| {
            let t = s.spawn(|| RedisCluster::start_of(target, 3, 0, None));
            (RedisServer::start_flavor(source, &[]), t.join().unwrap())
        });
        Sandbox::build(source, target, Vec::new())
    }

    /// A standalone source and a target of 3 masters with one replica each (for failovers).
    pub fn start_with_replicas() -> Sandbox {
        Sandbox::build(RedisServer::start(), RedisCluster::start(3, 1), Vec::new())
    }

    /// A source that requires `password`; the plan names it through `password_env`.
    pub fn start_with_source_password(password: &str) -> Sandbox {
        let source = RedisServer::start_with(&["--requirepass", password]);
        Sandbox::build(
            source,
            RedisCluster::start(3, 0),
            vec![(PASSWORD_ENV.into(), password.into())],
        )
    }

    /// A standalone source and a 3-master target that speak only TLS (cluster bus and
    /// replication included), both with certificates of `tls`'s CA and requiring a client
    /// certificate; the plan names the CA and the client certificate on both sides.
    pub fn start_tls(tls: &Arc<TlsFiles>) -> Sandbox {
        let mut sb = Sandbox::build(
            RedisServer::start_tls(tls, &[]),
            RedisCluster::start_with(3, 0, Some(tls)),
            Vec::new(),
        );
        sb.set_side_keys(&tls.plan_keys(), &tls.plan_keys());
        sb
    }

    fn build(source: RedisServer, target: RedisCluster, env: Vec<(String, String)>) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let source_url = source.url();
        let mut sb = Sandbox {
            source,
            target,
            dir,
            plan: PathBuf::new(),
            env,
            source_url,
            extra: String::new(),
            side_keys: [String::new(), String::new()],
        };
        sb.write();
        sb
    }

    fn write(&mut self) {
        let urls: Vec<String> = self
            .target
            .seed_urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        let password = if self.env.is_empty() {
            String::new()
        } else {
            format!("password_env = \"{PASSWORD_ENV}\"\n")
        };
        let body = format!(
            "[migration]\nname = \"sandbox\"\n\n[source]\nurl = \"{}\"\n{password}{}\n[target]\nurls = [{}]\n{}\n[keys]\ninclude = [\"token:*\"]\n\n[proxies]\nexpected = 0\n\n{}",
            self.source_url,
            self.side_keys[0],
            urls.join(", "),
            self.side_keys[1],
            self.extra
        );
        self.plan = write_plan(self.dir.path(), "sandbox.toml", &body);
    }

    /// Appends TOML tables (e.g. `[backfill]`) to the plan.
    pub fn set_plan_extra(&mut self, toml: &str) {
        self.extra = toml.to_string();
        self.write();
    }

    /// Sets the extra lines of `[source]` and `[target]` (e.g. `tls_ca_file = "…"`).
    pub fn set_side_keys(&mut self, source: &str, target: &str) {
        self.side_keys = [source.to_string(), target.to_string()];
        self.write();
    }

    /// Points the plan's source somewhere else (e.g. a [`SlowProxy`]).
    pub fn rewrite_plan_source(&mut self, url: &str) {
        self.source_url = url.to_string();
        self.write();
    }

    /// Environment variables the plan needs (password variables).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The plan file.
    pub fn plan(&self) -> &Path {
        &self.plan
    }

    /// `state_dir` (the plan's default, `.cachemig/sandbox` next to it).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".cachemig/sandbox")
    }

    /// The flag file (the plan's default, `flags/sandbox.json` next to it).
    pub fn flag_path(&self) -> PathBuf {
        self.dir.path().join("flags/sandbox.json")
    }

    /// `cachemig <args[0]> <plan> <args[1..]>`, not run yet (to add an environment variable).
    pub fn command(&self, args: &[&str]) -> Cachemig {
        let (sub, rest) = args.split_first().expect("a subcommand");
        let mut c = Cachemig::new().arg(sub).arg(&self.plan).args(rest);
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    /// Runs `cachemig <args[0]> <plan> <args[1..]>` to completion.
    pub fn cachemig(&self, args: &[&str]) -> Run {
        self.command(args).run()
    }

    /// Starts `cachemig <args[0]> <plan> <args[1..]>` without waiting.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn()
    }

    /// A copy of the plan, written in `dir`, whose proxies read their flag file from `flag` (a
    /// proxy with its own, possibly missing or late, copy of the flag file).
    pub fn plan_with_flag_file(&self, dir: &Path, flag: &Path) -> PathBuf {
        let text = std::fs::read_to_string(&self.plan).unwrap().replacen(
            "[migration]\n",
            &format!("[migration]\nflag_file = \"{}\"\n", flag.display()),
            1,
        );
        write_plan(dir, "own-flag-file.toml", &text)
    }

    /// The flag file, verified, if present.
    pub fn flag(&self) -> Option<FlagFile> {
        cachemig::flags::read(&self.flag_path()).expect("flag file valid")
    }

    /// The journal's committed entries.
    pub fn journal_entries(&self) -> Vec<Entry> {
        Journal::read(&self.state_dir().join("journal.jsonl"))
            .unwrap()
            .entries()
            .to_vec()
    }

    /// The journal's raw text ("" when absent).
    pub fn journal_text(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("journal.jsonl")).unwrap_or_default()
    }

    /// Every file under the sandbox directory and its bytes, to prove a command wrote nothing.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.insert(path.clone(), Vec::new());
                    stack.push(path);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    /// Writes `token:0` … `token:{n-1}` on the source (value `value-{i}`), pipelined.
    pub fn fill_source(&self, n: u64) {
        let mut src = self.source.conn();
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            let mut pipe = redis::pipe();
            for i in chunk {
                pipe.set(format!("token:{i}"), format!("value-{i}")).ignore();
            }
            pipe.exec(&mut src).unwrap();
        }
    }

    /// Skips `target-empty` with `reason` on an advance (the target already holds keys).
    pub fn advance_acknowledging_existing_keys(&self, reason: &str) -> Run {
        self.cachemig(&[
            "advance",
            "--yes",
            "--skip-gate",
            "target-empty",
            "--reason",
            reason,
        ])
    }

    /// Runs a command on the source.
    pub fn source_cmd(&self, args: &[&str]) -> String {
        self.source.cli(args)
    }

    /// Runs a command on the target cluster (redirections followed).
    pub fn target_cmd(&self, args: &[&str]) -> String {
        self.target.cli(args)
    }
}

/// A TCP relay in front of a real Redis that delays every reply, so a command that talks to it
/// stays busy (and holds its lock) for a while.
pub struct SlowProxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    /// Relays 127.0.0.1:<new port> to 127.0.0.1:`backend`, sleeping `delay` before each reply chunk.
    pub fn start(backend: u16, delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => relay(client, backend, delay),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SlowProxy { port, stop }
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, backend: u16, delay: Duration) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = TcpStream::connect(("127.0.0.1", backend)) else {
        return;
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || pump(c2, s2, Duration::ZERO));
    std::thread::spawn(move || pump(server, client, delay));
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
