//! The data plane: a RESP proxy that routes every command by the phase in the flag file.
//!
//! Module map:
//! - [`resp`]: framing of requests and replies (on `redis-protocol`);
//! - [`command`]: the command table (read, write, local, rejected; key positions);
//! - [`compat`]: the two sides' server versions, each direction's copy mode, and the commands
//!   refused because a side lacks them;
//! - [`call`]: a request resolved against the table, split per slot and merged back;
//! - [`node`], [`backend`]: multiplexed connections to a node, and a side (standalone or cluster);
//! - [`routing`]: the applied flag-file generation, hot-reloaded;
//! - [`client`], [`batch`], [`hooks`], [`local`]: one client connection, routing a batch of its
//!   requests (segments, fence), the mirror and shadow hooks, and the commands the proxy answers
//!   itself;
//! - [`tx`], [`scripts`], [`blocking`], [`wait`], [`cluster_view`]: transactions, Lua scripts, blocking
//!   commands, WAIT, and the one-node cluster a cluster client sees;
//! - [`functions`]: FUNCTION libraries on every master of both sides;
//! - [`pubsub`]: subscriptions held on both sides, messages pushed to the client;
//! - [`keyspace`]: SCAN, KEYS, DBSIZE and RANDOMKEY over every master of the side holding the keys;
//! - [`mirror`], [`keyconn`], [`backlog`]: key-sync of written keys to the other side, and the
//!   persisted list of keys that may owe one;
//! - [`shadow`]: sampled, detached comparison of reads;
//! - [`stale`]: the generation beacon check (writes refused while the flag file lags);
//! - [`heartbeat`], [`metrics`], [`http`], [`hotkeys`]: reports (design §5);
//! - [`server`], [`listener`], [`drain`], [`succession`]: wiring and the accept loop, the
//!   shared (`SO_REUSEPORT`) listener, stopping without dropping clients, and one proxy id
//!   reported by two processes during a restart.

pub mod backend;
pub mod backlog;
pub mod batch;
pub mod blocking;
pub mod call;
pub mod client;
pub mod cluster_view;
pub mod command;
pub mod compat;
pub mod dial;
pub mod drain;
pub mod functions;
pub mod heartbeat;
pub mod hooks;
pub mod hotkeys;
pub mod http;
pub mod keyconn;
pub mod keyspace;
pub mod listen_tls;
pub mod listener;
pub mod local;
pub mod metrics;
pub mod mirror;
pub mod node;
pub mod pubsub;
pub mod resp;
pub mod routing;
pub mod scripts;
pub mod server;
pub mod shadow;
pub mod stale;
pub mod succession;
pub mod tx;
pub mod wait;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::watch;

pub use routing::Applied;
pub use server::{Options, run};

use crate::flags::WatchState;
use crate::keys::KeyFilter;
use crate::phase::Side;

/// Everything the connections of one proxy share.
pub struct Proxy {
    /// This proxy's id in reports.
    pub id: String,
    /// The migration name.
    pub migration: String,
    /// The old Redis.
    pub old: Arc<backend::Backend>,
    /// The new Redis Cluster.
    pub new: Arc<backend::Backend>,
    /// The routing in force.
    pub applied: watch::Receiver<Arc<Applied>>,
    /// What the flag-file watcher last saw (errors included).
    pub flag: watch::Receiver<WatchState>,
    /// Key-sync of written keys.
    pub mirror: Arc<mirror::Mirror>,
    /// Shadow reads.
    pub shadow: Arc<shadow::Shadow>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Hot keys.
    pub hot: hotkeys::HotKeys,
    /// The password clients must AUTH with, if any.
    pub password: Option<String>,
    /// Which keys migrate: others stay on old in every phase and are never mirrored.
    pub filter: KeyFilter,
    /// `[dual_write] sync_timeout_ms`.
    pub sync_timeout: Duration,
    /// `[dual_write] reverse_mirror`.
    pub reverse_mirror: bool,
    /// `[proxies] allow_flush`: FLUSHDB/FLUSHALL applied to both sides instead of refused.
    pub allow_flush: bool,
    /// Write segments sent but not yet mirrored: the fence is acknowledged only at zero.
    pub writes_in_flight: AtomicUsize,
    /// Script bodies seen, for answering NOSCRIPT.
    pub scripts: scripts::Scripts,
    /// The old server's version, which HELLO and INFO report (clients check it for features).
    pub server_version: String,
    /// Both sides' versions, each direction's copy mode, the commands refused for them.
    pub compat: compat::Compat,
    /// Why the proxy refuses writes as stale ([`stale`]), while it does.
    pub stale: std::sync::RwLock<Option<String>>,
    /// How long the applied generation may stay behind the beacon before the proxy is stale
    /// (the plan's `[proxies] heartbeat_timeout`).
    pub stale_after: Duration,
    /// Set once the proxy stops for a restart ([`drain`]): connections close at their next
    /// request boundary and blocked commands are released.
    pub draining: watch::Sender<bool>,
    /// The counters an earlier process of this proxy id reported at its generation (read at
    /// start): reports at that generation continue from them, so a restart forgets no failure.
    pub carried: std::sync::OnceLock<(u64, crate::report::Counters)>,
}

impl Proxy {
    /// The routing in force now.
    pub fn applied(&self) -> Arc<Applied> {
        self.applied.borrow().clone()
    }

    /// Why writes are refused as stale, if they are.
    pub fn stale(&self) -> Option<String> {
        self.stale.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The backend of `side`.
    pub fn backend(&self, side: Side) -> Arc<backend::Backend> {
        match side {
            Side::Old => self.old.clone(),
            Side::New => self.new.clone(),
        }
    }
}
