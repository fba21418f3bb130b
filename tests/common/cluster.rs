//! A Redis Cluster of real `redis-server` nodes for tests, created with `redis-cli --cluster
//! create` as an operator would.

use std::process::{Command, Stdio};
use std::sync::Arc;

use super::{RedisServer, START_TIMEOUT, TlsFiles, wait_for};

/// A Redis Cluster of real nodes on loopback; every node killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    tls: Option<Arc<TlsFiles>>,
}

impl RedisCluster {
    /// Starts `masters` masters (slots split evenly) with `replicas_per_master` replicas each,
    /// and waits until every node reports `cluster_state:ok` with all 16384 slots assigned.
    ///
    /// Built with `redis-cli --cluster create`, as an operator would; every node has an explicit
    /// cluster bus port, so the default port+10000 need not be free.
    pub fn start(masters: usize, replicas_per_master: usize) -> Self {
        Self::start_with(masters, replicas_per_master, None)
    }

    /// The same, every node speaking only TLS with `tls`'s certificates (clients, cluster bus,
    /// replication) when `tls` is given.
    pub fn start_with(masters: usize, replicas_per_master: usize, tls: Option<&Arc<TlsFiles>>) -> Self {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let total = masters * (1 + replicas_per_master);
        let mut nodes: Vec<RedisServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..total)
                .map(|_| s.spawn(|| RedisServer::start_cluster_node_with(tls)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new("redis-cli")
            .args(tls.map(|t| t.cli_args()).unwrap_or_default())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args([
                "--cluster-replicas",
                &replicas_per_master.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // redis-cli chooses which nodes become masters; keep masters first.
        nodes.sort_by_key(|n| n.info_field("role").as_deref() != Some("master"));
        let cluster = Self {
            nodes,
            masters,
            tls: tls.cloned(),
        };
        wait_for("cluster_state:ok on every node", START_TIMEOUT, || {
            cluster.is_ok()
        });
        wait_for("replicas in sync", START_TIMEOUT, || {
            cluster.nodes[masters..]
                .iter()
                .all(|r| r.info_field("master_link_status").as_deref() == Some("up"))
        });
        cluster
    }

    /// Whether every node says `cluster_state:ok` and `cluster_slots_assigned:16384`.
    pub fn is_ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            let info: String = n.query(&["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384")
        })
    }

    /// Every node, masters first (as created; a failover changes who is master).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes created as masters.
    pub fn masters(&self) -> &[RedisServer] {
        &self.nodes[..self.masters]
    }

    /// Mutable access to the nodes, e.g. to [`RedisServer::kill`] one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The masters' URLs, for a plan's `[target] urls`.
    pub fn seed_urls(&self) -> Vec<String> {
        self.masters().iter().map(RedisServer::url).collect()
    }

    /// A synchronous cluster connection (follows MOVED/ASK).
    pub fn cluster_conn(&self) -> redis::cluster::ClusterConnection {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.seed_urls());
        if let Some(tls) = &self.tls {
            builder = builder.certs(tls.certificates());
        }
        builder.build().unwrap().get_connection().unwrap()
    }

    /// `redis-cli -c` against the first node (follows redirections); trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.nodes[0].cli(&[&["-c"], args].concat())
    }

    /// Total keys over the masters (DBSIZE summed), not counting cachemig's own bookkeeping
    /// under the reserved prefix (proxy reports, the generation beacon).
    pub fn dbsize(&self) -> u64 {
        self.masters()
            .iter()
            .map(|m| {
                let reserved = m.query::<Vec<String>>(&["KEYS", "__cachemig:*"]).len() as u64;
                m.query::<u64>(&["DBSIZE"]) - reserved
            })
            .sum()
    }
}
