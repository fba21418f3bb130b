//! Online inspection of source and target, for `cachemig plan` and the "→ backfill" gates.
//!
//! Strictly read-only: only PING, INFO, CLUSTER INFO/NODES, DBSIZE, SCAN, MEMORY USAGE, DUMP and
//! CONFIG GET are sent (and CLIENT SETNAME, which names the connection `cachemig-cli`), and the
//! ACL preflight's `ACL DRYRUN` or a `MULTI` that never runs ([`acl`]), so `plan` and `--dry-run`
//! change nothing on either side.

pub mod acl;
mod acl_needs;
mod nodes;
mod rdb;

use std::collections::HashSet;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, cmd};
use serde::Serialize;
use tokio::task::JoinSet;
use url::Url;

pub use rdb::{RdbVersionSource, rdb_version_for, rdb_version_from_dump};

use crate::endpoint::{Endpoint, EndpointError, connect_node};
use crate::keys::KeyFilter;
use crate::tls::TlsSettings;
use nodes::parse_cluster_masters;
pub(crate) use nodes::parse_info;

/// The RDB probe only DUMPs keys whose `MEMORY USAGE` estimate is at most this (DUMP runs on the
/// server's main thread).
const PROBE_MAX_BYTES: u64 = 64 * 1024;
/// The RDB probe gives up (and uses the version table) after this many SCAN calls per pattern.
const PROBE_SCAN_ROUNDS: usize = 4;
/// How many matching keys a report quotes.
const SAMPLE_KEYS: usize = 5;

/// One master as inspected.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// `host:port` as connected to.
    pub addr: String,
    /// `"redis"` or `"valkey"` (INFO `server_name`).
    pub server: String,
    /// The server's own version (`valkey_version` on Valkey, else `redis_version`).
    pub redis_version: String,
    /// `master` or `slave` (INFO `role`).
    pub replication_role: String,
    /// INFO `run_id`: changes when the process restarts (SCAN cursors are then void).
    pub run_id: String,
    /// The RDB version this node's DUMP payloads carry, if known.
    pub rdb_version: Option<u16>,
    /// How `rdb_version` was found.
    pub rdb_version_source: Option<RdbVersionSource>,
    /// What the server has (commands, features) by its version; `None` for an unknown version.
    pub facts: Option<crate::server::Facts>,
    /// INFO `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes; 0 = unlimited.
    pub maxmemory: u64,
    /// INFO `maxmemory_policy` (empty when the server does not say).
    pub maxmemory_policy: String,
    /// `DBSIZE` of the selected database.
    pub dbsize: u64,
    /// Whether the side's user may run what each phase needs here (the ACL preflight).
    pub acl: acl::AclCheck,
}

impl NodeReport {
    /// Whether this node may evict keys when full: a `maxmemory` limit with a policy other than
    /// `noeviction`. On the target that would silently drop migrated keys.
    pub fn may_evict(&self) -> bool {
        self.maxmemory > 0 && !self.maxmemory_policy.is_empty() && self.maxmemory_policy != "noeviction"
    }
}

/// One side (source or target) as inspected. An unreachable side is an `Err`, never a report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSetReport {
    /// "source" or "target".
    pub role: &'static str,
    /// Whether the first reachable URL has `cluster_enabled:1`.
    pub cluster_enabled: bool,
    /// CLUSTER INFO `cluster_state` ("ok"/"fail") as the first reachable seed sees it; `None`
    /// when not a cluster.
    pub cluster_state: Option<String>,
    /// Slots assigned to masters not flagged `fail`/`fail?` (16384 = fully covered); `None` when
    /// not a cluster.
    pub slots_covered: Option<u32>,
    /// Every master serving slots (cluster), or the one node (standalone), sorted by address.
    pub masters: Vec<NodeReport>,
    /// Target only: keys that match the plan's filter, counted up to the sample limit.
    pub keys_in_range: Option<u64>,
    /// Counting stopped at the sample limit: there may be more.
    pub keys_in_range_truncated: bool,
    /// Up to five of those keys (lossy UTF-8), for messages.
    pub sample_keys: Vec<String>,
}

impl NodeSetReport {
    /// Sum of `used_memory` over the masters.
    pub fn total_used_memory(&self) -> u64 {
        self.masters.iter().map(|m| m.used_memory).sum()
    }

    /// Sum of `dbsize` over the masters.
    pub fn total_dbsize(&self) -> u64 {
        self.masters.iter().map(|m| m.dbsize).sum()
    }

    /// The lowest RDB version over the masters; `None` if any is unknown (or there are none).
    pub fn min_rdb_version(&self) -> Option<u16> {
        self.rdb_versions()?.min()
    }

    /// The highest RDB version over the masters; `None` if any is unknown (or there are none).
    pub fn max_rdb_version(&self) -> Option<u16> {
        self.rdb_versions()?.max()
    }

    fn rdb_versions(&self) -> Option<impl Iterator<Item = u16>> {
        let all: Option<Vec<u16>> = self.masters.iter().map(|m| m.rdb_version).collect();
        all.filter(|v| !v.is_empty()).map(Vec::into_iter)
    }

    /// Memory headroom: the sum over masters of `maxmemory − used_memory`. `None` means
    /// **unlimited**: some master has `maxmemory 0` (it grows until the OS says no). The sum
    /// assumes keys spread evenly over slots; a skewed keyspace can fill one master first.
    pub fn total_free_memory(&self) -> Option<u64> {
        self.masters
            .iter()
            .map(|m| (m.maxmemory > 0).then(|| m.maxmemory.saturating_sub(m.used_memory)))
            .sum()
    }
}

/// Inspects the source (standalone or cluster, detected), with the password from the
/// environment. `filter` makes the RDB probe prefer a key the migration will move.
pub async fn inspect_source(ep: &Endpoint, filter: &KeyFilter) -> Result<NodeSetReport, EndpointError> {
    let password = ep.password()?;
    inspect_source_with_password(ep, password.as_deref(), filter).await
}

/// [`inspect_source`] with the password given rather than read from the environment.
pub async fn inspect_source_with_password(
    ep: &Endpoint,
    password: Option<&str>,
    filter: &KeyFilter,
) -> Result<NodeSetReport, EndpointError> {
    inspect(ep, password, filter, None)
        .await
        .map_err(|e| e.for_endpoint(ep))
}

/// Inspects the target through the first reachable seed: every master, and the keys already
/// present that match `filter` (counted up to `sample_limit`, at least 1). A target that is not
/// a cluster is reported with `cluster_enabled: false`, not as an error.
pub async fn inspect_target(
    ep: &Endpoint,
    filter: &KeyFilter,
    sample_limit: usize,
) -> Result<NodeSetReport, EndpointError> {
    let password = ep.password()?;
    inspect_target_with_password(ep, password.as_deref(), filter, sample_limit).await
}

/// [`inspect_target`] with the password given rather than read from the environment.
pub async fn inspect_target_with_password(
    ep: &Endpoint,
    password: Option<&str>,
    filter: &KeyFilter,
    sample_limit: usize,
) -> Result<NodeSetReport, EndpointError> {
    let limit = sample_limit.max(1);
    inspect(ep, password, filter, Some(limit))
        .await
        .map_err(|e| e.for_endpoint(ep))
}

/// Keys found by [`count_keys`] on one master.
struct KeyCount {
    count: u64,
    truncated: bool,
    samples: Vec<String>,
}

async fn inspect(
    ep: &Endpoint,
    password: Option<&str>,
    filter: &KeyFilter,
    key_limit: Option<usize>,
) -> Result<NodeSetReport, EndpointError> {
    let mut last_err = None;
    let mut seed = None;
    for url in &ep.urls {
        match Node::connect(url, password, ep.tls.as_ref()).await {
            Ok(node) => {
                seed = Some(node);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some(mut seed) = seed else {
        return Err(last_err.unwrap_or_else(|| EndpointError::InvalidUrl {
            role: None,
            url: String::new(),
            reason: "no URL given".into(),
        }));
    };
    let info = parse_info(&seed.run::<String>("INFO", cmd("INFO").arg("cluster")).await?);
    let cluster_enabled = info.get("cluster_enabled").is_some_and(|v| v == "1");
    let (urls, cluster_state, slots_covered) = if cluster_enabled {
        let cluster_info = parse_info(
            &seed
                .run::<String>("CLUSTER INFO", cmd("CLUSTER").arg("INFO"))
                .await?,
        );
        let text = seed
            .run::<String>("CLUSTER NODES", cmd("CLUSTER").arg("NODES"))
            .await?;
        let masters = parse_cluster_masters(&text);
        let covered = masters.iter().filter(|m| !m.failing).map(|m| m.slots).sum();
        let urls = masters
            .iter()
            .map(|m| node_url(&seed.url, &m.host, m.port))
            .collect();
        (urls, cluster_info.get("cluster_state").cloned(), Some(covered))
    } else {
        (vec![seed.url.clone()], None, None)
    };
    drop(seed);

    let mut tasks = JoinSet::new();
    for (i, url) in urls.into_iter().enumerate() {
        let (password, filter, tls) = (password.map(str::to_owned), filter.clone(), ep.tls.clone());
        let role = (ep.role, cluster_enabled);
        tasks.spawn(async move { (i, inspect_node(url, password, tls, filter, key_limit, role).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("inspection task panicked");
        results.push((i, result?));
    }
    results.sort_by_key(|(i, _)| *i);

    let mut report = NodeSetReport {
        role: ep.role,
        cluster_enabled,
        cluster_state,
        slots_covered,
        masters: Vec::new(),
        keys_in_range: None,
        keys_in_range_truncated: false,
        sample_keys: Vec::new(),
    };
    for (_, (node, keys)) in results {
        report.masters.push(node);
        if let Some(k) = keys {
            *report.keys_in_range.get_or_insert(0) += k.count;
            report.keys_in_range_truncated |= k.truncated;
            report.sample_keys.extend(k.samples);
        }
    }
    if let (Some(limit), Some(count)) = (key_limit, report.keys_in_range.as_mut())
        && *count > limit as u64
    {
        *count = limit as u64;
        report.keys_in_range_truncated = true;
    }
    report.sample_keys.truncate(SAMPLE_KEYS);
    Ok(report)
}

/// The URL of a discovered cluster node: the seed's scheme, user and options, database 0.
fn node_url(seed: &Url, host: &str, port: u16) -> Url {
    let mut url = seed.clone();
    if !host.is_empty() {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        if url.set_host(Some(&host)).is_err() {
            return seed.clone();
        }
    }
    let _ = url.set_port(Some(port));
    url.set_path("");
    url
}

/// A connected node and what its errors need to say.
struct Node {
    url: Url,
    conn: MultiplexedConnection,
    /// Only to scrub it from error messages.
    secret: Option<String>,
}

impl Node {
    async fn connect(
        url: &Url,
        password: Option<&str>,
        tls: Option<&TlsSettings>,
    ) -> Result<Self, EndpointError> {
        let conn = connect_node(url, password, tls).await?;
        let secret = password.or(url.password()).map(str::to_owned);
        Ok(Self {
            url: url.clone(),
            conn,
            secret,
        })
    }

    async fn run<T: FromRedisValue>(&mut self, label: &str, command: &mut Cmd) -> Result<T, EndpointError> {
        command
            .query_async(&mut self.conn)
            .await
            .map_err(|e| EndpointError::command(&self.url, label, &e, self.secret.as_deref()))
    }

    fn addr(&self) -> String {
        let host = self.url.host_str().unwrap_or("?");
        format!("{host}:{}", self.url.port().unwrap_or(6379))
    }
}

/// Inspects one master; `(role, cluster)` say which side's ACL needs apply.
async fn inspect_node(
    url: Url,
    password: Option<String>,
    tls: Option<TlsSettings>,
    filter: KeyFilter,
    key_limit: Option<usize>,
    (role, cluster): (&'static str, bool),
) -> Result<(NodeReport, Option<KeyCount>), EndpointError> {
    let mut node = Node::connect(&url, password.as_deref(), tls.as_ref()).await?;
    let info = parse_info(&node.run::<String>("INFO", &mut cmd("INFO")).await?);
    let field = |k: &str| info.get(k).cloned().unwrap_or_default();
    let number = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
    let dbsize: u64 = node.run("DBSIZE", &mut cmd("DBSIZE")).await?;
    let maxmemory = match number("maxmemory") {
        Some(m) => m,
        None => {
            let pair: Vec<String> = node
                .run("CONFIG GET maxmemory", cmd("CONFIG").arg("GET").arg("maxmemory"))
                .await?;
            pair.get(1).and_then(|v| v.parse().ok()).unwrap_or(0)
        }
    };
    let known = crate::server::ServerVersion::from_info(&info);
    let valkey = known.is_some_and(|v| v.family == crate::server::Family::Valkey);
    let (server, version) = match valkey {
        true => (
            "valkey",
            info.get("valkey_version")
                .cloned()
                .unwrap_or_else(|| field("redis_version")),
        ),
        false => ("redis", field("redis_version")),
    };
    let dumped = if dbsize > 0 {
        probe_rdb_version(&mut node, &filter).await
    } else {
        None
    };
    let (rdb_version, rdb_version_source) = match dumped {
        Some(v) => (Some(v), Some(RdbVersionSource::Dump)),
        None => {
            let v = rdb_version_for(server, &version);
            (v, v.map(|_| RdbVersionSource::VersionTable))
        }
    };
    let keys = match key_limit {
        Some(limit) => Some(count_keys(&mut node, &filter, limit).await?),
        None => None,
    };
    let facts = known.and_then(|v| v.facts());
    let acl = acl::check(role, &url, password.as_deref(), tls.as_ref(), cluster, &filter).await;
    let report = NodeReport {
        addr: node.addr(),
        server: server.to_string(),
        redis_version: version,
        replication_role: field("role"),
        run_id: field("run_id"),
        rdb_version,
        rdb_version_source,
        facts,
        used_memory: number("used_memory").unwrap_or(0),
        maxmemory,
        maxmemory_policy: field("maxmemory_policy"),
        dbsize,
        acl,
    };
    Ok((report, keys))
}

/// Reads the RDB version from a DUMP of a small existing key (read-only). `None` when no
/// suitable key turns up quickly or a command is refused; the caller then uses the table.
async fn probe_rdb_version(node: &mut Node, filter: &KeyFilter) -> Option<u16> {
    let mut patterns = vec![filter.scan_pattern()];
    if patterns[0] != "*" {
        patterns.push("*");
    }
    for pattern in patterns {
        let mut cursor = 0u64;
        for _ in 0..PROBE_SCAN_ROUNDS {
            let mut scan = cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(100);
            let (next, keys): (u64, Vec<Vec<u8>>) = node.run("SCAN", &mut scan).await.ok()?;
            for key in keys.iter().filter(|k| pattern == "*" || filter.matches(k)) {
                let usage: Option<u64> = node
                    .run("MEMORY USAGE", cmd("MEMORY").arg("USAGE").arg(key))
                    .await
                    .ok()?;
                if usage.is_none_or(|u| u > PROBE_MAX_BYTES) {
                    continue;
                }
                let payload: Option<Vec<u8>> = node.run("DUMP", cmd("DUMP").arg(key)).await.ok()?;
                if let Some(v) = payload.as_deref().and_then(rdb_version_from_dump) {
                    return Some(v);
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    None
}

/// Counts distinct keys matching `filter` with `SCAN MATCH … COUNT 1000`, stopping at `limit`.
async fn count_keys(node: &mut Node, filter: &KeyFilter, limit: usize) -> Result<KeyCount, EndpointError> {
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut scan = cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(filter.scan_pattern())
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<Vec<u8>>) = node.run("SCAN", &mut scan).await?;
        for key in keys {
            if seen.len() < limit && filter.matches(&key) && !seen.contains(&key) {
                if samples.len() < SAMPLE_KEYS {
                    samples.push(String::from_utf8_lossy(&key).into_owned());
                }
                seen.insert(key);
            }
        }
        cursor = next;
        if cursor == 0 || seen.len() >= limit {
            return Ok(KeyCount {
                count: seen.len() as u64,
                truncated: cursor != 0,
                samples,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(rdb: Option<u16>, used: u64, max: u64) -> NodeReport {
        NodeReport {
            addr: "h:1".into(),
            server: "redis".into(),
            redis_version: "7.0.0".into(),
            replication_role: "master".into(),
            run_id: "r".into(),
            rdb_version: rdb,
            rdb_version_source: rdb.map(|_| RdbVersionSource::VersionTable),
            facts: None,
            used_memory: used,
            maxmemory: max,
            maxmemory_policy: "noeviction".into(),
            dbsize: 2,
            acl: Default::default(),
        }
    }

    #[test]
    fn only_a_limit_with_an_evicting_policy_may_evict() {
        let mut n = node(None, 0, 1 << 30);
        assert!(!n.may_evict(), "noeviction");
        n.maxmemory_policy = "allkeys-lru".into();
        assert!(n.may_evict());
        n.maxmemory = 0;
        assert!(!n.may_evict(), "no limit, nothing to evict for");
    }

    fn set(masters: Vec<NodeReport>) -> NodeSetReport {
        NodeSetReport {
            role: "target",
            cluster_enabled: true,
            cluster_state: Some("ok".into()),
            slots_covered: Some(16384),
            masters,
            keys_in_range: Some(0),
            keys_in_range_truncated: false,
            sample_keys: vec![],
        }
    }

    #[test]
    fn aggregates() {
        let r = set(vec![node(Some(10), 100, 1000), node(Some(11), 300, 200)]);
        assert_eq!((r.total_used_memory(), r.total_dbsize()), (400, 4));
        assert_eq!((r.min_rdb_version(), r.max_rdb_version()), (Some(10), Some(11)));
        assert_eq!(r.total_free_memory(), Some(900));
        let r = set(vec![node(Some(10), 100, 1000), node(None, 300, 0)]);
        assert_eq!((r.min_rdb_version(), r.total_free_memory()), (None, None));
        assert_eq!(set(vec![]).min_rdb_version(), None);
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains("\"rdb_version_source\":\"version-table\""),
            "{json}"
        );
    }

    #[test]
    fn discovered_node_urls_keep_scheme_and_user() {
        let seed = Url::parse("rediss://app@10.0.0.1:7000/0").unwrap();
        assert_eq!(
            node_url(&seed, "10.0.0.2", 7001).as_str(),
            "rediss://app@10.0.0.2:7001"
        );
        assert_eq!(node_url(&seed, "", 7002).as_str(), "rediss://app@10.0.0.1:7002");
        assert_eq!(node_url(&seed, "::1", 7003).as_str(), "rediss://app@[::1]:7003");
    }
}
