//! A Redis Cluster of real `redis-server` nodes for tests, created with `redis-cli --cluster
//! create` as an operator would.

use std::process::{Command, Stdio};
use std::sync::Arc;

use super::{Flavor, RedisServer, START_TIMEOUT, TlsFiles, wait_for};

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
        Self::start_of(Flavor::Redis70, masters, replicas_per_master, tls)
    }

    /// The same with nodes of `flavor` (Valkey 8.1, Redis 6.2, …).
    pub fn start_of(
        flavor: Flavor,
        masters: usize,
        replicas_per_master: usize,
        tls: Option<&Arc<TlsFiles>>,
    ) -> Self {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let total = masters * (1 + replicas_per_master);
        let mut nodes: Vec<RedisServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..total)
                .map(|_| s.spawn(|| RedisServer::start_cluster_node_of(flavor, tls)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new(flavor.cli())
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

    /// Adds a master that serves no slot yet (speaking TLS like the others), through
    /// `redis-cli --cluster add-node`, and returns its index in [`RedisCluster::nodes`].
    pub fn add_empty_master(&mut self) -> usize {
        let node = RedisServer::start_cluster_node_of(self.nodes[0].flavor(), self.tls.as_ref());
        let out = Command::new("redis-cli")
            .args(self.tls.as_ref().map(|t| t.cli_args()).unwrap_or_default())
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{}", node.port()))
            .arg(format!("127.0.0.1:{}", self.nodes[0].port()))
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster add-node");
        assert!(
            out.status.success(),
            "add-node failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let total = self.nodes.len() + 1;
        wait_for("every node knows the new master", START_TIMEOUT, || {
            self.nodes.iter().chain([&node]).all(|n| {
                let info: String = n.query(&["CLUSTER", "INFO"]);
                info.contains(&format!("cluster_known_nodes:{total}")) && info.contains("cluster_state:ok")
            })
        });
        self.nodes.insert(self.masters, node);
        self.masters += 1;
        self.masters - 1
    }

    /// The index of the master that serves `key` (the one that does not answer `MOVED`).
    pub fn owner_of(&self, key: &str) -> Option<usize> {
        (0..self.masters).find(|&i| {
            redis::cmd("EXISTS")
                .arg(key)
                .query::<i64>(&mut self.nodes[i].conn())
                .is_ok()
        })
    }

    /// Moves the slot of `key`, which must hold no key, to master `to` (the `CLUSTER SETSLOT`
    /// sequence of a resharding; the other masters learn it by gossip).
    pub fn move_empty_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key).expect("a master serves the key");
        let slot = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query::<i64>(&mut self.nodes[from].conn())
            .unwrap()
            .to_string();
        let id = |i: usize| self.nodes[i].cli(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from), id(to));
        self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        wait_for("the slot's new owner", START_TIMEOUT, || {
            self.owner_of(key) == Some(to)
        });
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
