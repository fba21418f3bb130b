//! What the servers of the two sides have, read once at startup (`INFO server` of old and of
//! every master of new, looked up in the server-facts table [`crate::server`]): how each
//! direction copies keys — `DUMP`/`RESTORE`, or by type where the destination cannot RESTORE the
//! origin's payloads, chosen by [`crate::server::copy_mode`] with the plan's
//! `[backfill] copy_mode` exactly as `plan` and `verify` choose — and which commands the proxy
//! refuses because one side lacks them or a by-type copy would lose what they set
//! (docs/proxy.md, "Commands one side lacks").

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Proxy;
use super::command::needs::{Feature, NEEDS};
use crate::flags::FlagRouting;
use crate::phase::{MirrorMode, Side};
use crate::plan::Plan;
use crate::server::copy_mode::choose_rdb;
use crate::server::{Choice, CopyMode, CopySetting, ServerVersion};

/// One side's servers as `INFO server` told them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Servers {
    /// The distinct versions of its masters.
    pub versions: Vec<ServerVersion>,
    /// Masters whose version could not be read or is not in the table, with why.
    pub unknown: Vec<String>,
}

impl Servers {
    fn add_version(&mut self, addr: &str, version: ServerVersion) {
        if version.facts().is_none() {
            self.unknown
                .push(format!("{addr}: {version} is not in the server-facts table"));
        } else if !self.versions.contains(&version) {
            self.versions.push(version);
        }
    }

    /// Records the master at `addr` from its `INFO server` reply.
    fn add(&mut self, addr: &str, info: Result<String>) {
        let version = info.map(|text| ServerVersion::from_info(&crate::inspect::parse_info(&text)));
        match version {
            Ok(Some(version)) => self.add_version(addr, version),
            Ok(None) => self.unknown.push(format!("{addr}: INFO names no version")),
            Err(e) => self.unknown.push(format!("{addr}: {e:#}")),
        }
    }

    /// The highest (`highest`) or lowest RDB version of its masters; `None` when one is unknown.
    fn rdb(&self, highest: bool) -> Option<u16> {
        if !self.unknown.is_empty() {
            return None;
        }
        let all = self.versions.iter().filter_map(|v| v.rdb_version());
        if highest { all.max() } else { all.min() }
    }

    /// A version among its masters that lacks `feature`, if any (unknown versions lack nothing:
    /// the server itself answers what it does not know).
    fn lacking(&self, feature: Feature) -> Option<ServerVersion> {
        let lacks = |v: &&ServerVersion| v.facts().is_some_and(|f| !feature.of(&f));
        self.versions.iter().find(lacks).copied()
    }

    /// "Redis 7.0", "Redis 7.0, Redis 7.2", with what could not be read.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.versions.iter().map(ToString::to_string).collect();
        parts.extend(self.unknown.iter().map(|u| format!("unknown ({u})")));
        match parts.is_empty() {
            true => "unknown".into(),
            false => parts.join(", "),
        }
    }
}

/// The two sides, the copy mode of each direction and the commands refused.
#[derive(Debug, Clone)]
pub struct Compat {
    /// Old's servers.
    pub old: Servers,
    /// New's masters.
    pub new: Servers,
    /// How each direction copies, indexed by [`super::mirror::Direction`] (old → new, new → old).
    pub copy: [Choice; 2],
    /// Refusal text per command name: while old still counts (every phase before `finalized`),
    /// and in `finalized` (new only).
    refused: [HashMap<&'static str, String>; 2],
}

/// Index of [`Compat::refused`] while the migration runs, and once finalized.
const MIGRATING: usize = 0;
const FINALIZED: usize = 1;

impl Compat {
    /// Reads both sides' versions (`old_is_cluster`: every master of old too) and decides.
    /// Never fails: a side that cannot be read is described as unknown (see [`Compat::decide`]).
    pub async fn read(plan: &Plan, old_is_cluster: bool) -> Compat {
        let (old, new) = tokio::join!(
            read_side(&plan.source, old_is_cluster),
            read_side(&plan.target, true)
        );
        Compat::decide(plan.backfill.copy_mode, old, new)
    }

    /// The copy modes and refusals for these servers under the plan's `setting`. A direction
    /// whose versions are unknown under `auto` copies by type: that works between any two
    /// servers, where a `RESTORE` the destination refuses would fail every copy and stall the
    /// migration (the cost, hash-field TTLs, is covered by refusing their commands).
    pub fn decide(setting: CopySetting, old: Servers, new: Servers) -> Compat {
        let choose = |from: &Servers, to: &Servers| {
            choose_rdb(setting, from.rdb(true), to.rdb(false)).unwrap_or_else(|| Choice {
                mode: CopyMode::ByType,
                reason: format!(
                    "the RDB versions are not all known (origin {}, destination {}): copied by type, which works between any two servers",
                    from.describe(),
                    to.describe()
                ),
                blocked: false,
            })
        };
        let copy = [choose(&old, &new), choose(&new, &old)];
        let refused = [MIGRATING, FINALIZED].map(|when| refusals(&old, &new, &copy, when));
        Compat {
            old,
            new,
            copy,
            refused,
        }
    }

    /// The big-key limit of each direction's key-syncs, indexed by [`super::mirror::Direction`]:
    /// 0 (every key copied by type, in chunks) where it copies by type, else `big_key_bytes`.
    pub fn big_key_limits(&self, big_key_bytes: u64) -> [u64; 2] {
        self.copy.clone().map(|c| match c.mode {
            CopyMode::ByType => 0,
            CopyMode::Dump => big_key_bytes,
        })
    }

    /// The error text refusing `name` under the routing `finalized` tells (asked only when the
    /// command is one a side may lack, so the common path pays one empty-map check).
    pub fn refusal(&self, name: &str, finalized: impl FnOnce() -> bool) -> Option<&str> {
        if self.refused[MIGRATING].is_empty() && self.refused[FINALIZED].is_empty() {
            return None;
        }
        let when = if finalized() { FINALIZED } else { MIGRATING };
        self.refused[when].get(name).map(String::as_str)
    }

    /// Lines for the startup log: the servers, each direction's copy mode and why, the refusals.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "servers: old {}; new {}",
            self.old.describe(),
            self.new.describe()
        )];
        for (dir, choice) in DIRECTIONS.iter().zip(&self.copy) {
            lines.push(format!("copy {dir}: {} ({})", choice.mode, choice.reason));
        }
        for (label, when) in [("until finalized", MIGRATING), ("once finalized", FINALIZED)] {
            let names = self.refused_names(when);
            if !names.is_empty() {
                lines.push(format!("refused {label}: {}", names.join(", ")));
            }
        }
        lines
    }

    fn refused_names(&self, when: usize) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.refused[when].keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The same for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let copy: BTreeMap<&str, &Choice> =
            ["old_to_new", "new_to_old"].into_iter().zip(&self.copy).collect();
        serde_json::json!({
            "old": self.old.describe(),
            "new": self.new.describe(),
            "copy": copy,
            "refused_until_finalized": self.refused_names(MIGRATING),
            "refused_once_finalized": self.refused_names(FINALIZED),
        })
    }
}

/// Names of the directions, in [`super::mirror::Direction`] order.
const DIRECTIONS: [&str; 2] = ["old → new", "new → old"];

/// Whether `routing` is `finalized`'s: nothing reads, writes or mirrors to old any more.
pub fn finalized(routing: &FlagRouting) -> bool {
    routing.read == Side::New && routing.write == Side::New && routing.mirror == MirrorMode::Off
}

impl Proxy {
    /// Why the command `name` is refused in the phase in force, if it is
    /// ([`Compat::refusal`]).
    pub fn version_refusal(&self, name: &str) -> Option<&str> {
        self.compat.refusal(name, || finalized(&self.applied().routing))
    }
}

/// The refusal text of every command that needs a feature, `when` (before `finalized`: both
/// sides count, and hash-field TTLs need both directions to copy with `DUMP`; once finalized:
/// only new).
fn refusals(old: &Servers, new: &Servers, copy: &[Choice; 2], when: usize) -> HashMap<&'static str, String> {
    let by_type = DIRECTIONS
        .iter()
        .zip(copy)
        .find(|(_, c)| c.mode == CopyMode::ByType);
    let mut out = HashMap::new();
    for &(name, feature) in NEEDS {
        let old_lacks = old.lacking(feature).filter(|_| when == MIGRATING);
        let why = match (old_lacks, new.lacking(feature), by_type) {
            (Some(v), _, _) => format!(
                "old ({v}) does not have it, and old serves this migration's keys until read-cutover and again after a rollback"
            ),
            (None, Some(v), _) if when == MIGRATING => format!(
                "new ({v}) does not have it, and new serves this migration's keys from read-cutover on: it would break at the switch"
            ),
            (None, Some(v), _) => format!("new ({v}) does not have it"),
            (None, None, Some((dir, c))) if feature == Feature::HashFieldTtl && when == MIGRATING => {
                format!(
                    "keys are copied by type {dir} ({}), and a copy by type does not carry hash-field TTLs",
                    c.reason
                )
            }
            _ => continue,
        };
        // ASCII on the wire: some clients decode error lines as Latin-1.
        let text = format!("ERR cachemig: {name} is refused: {why}").replace('→', "->");
        out.insert(name, text);
    }
    out
}

/// The servers of one side: every master of a cluster, or the node of the first URL.
async fn read_side(endpoint: &crate::endpoint::Endpoint, cluster: bool) -> Servers {
    let mut servers = Servers::default();
    match connect_side(endpoint, cluster).await {
        Ok(nodes) => {
            for (addr, mut conn) in nodes {
                servers.add(&addr, info_server(&mut conn).await);
            }
        }
        Err(e) => servers.unknown.push(format!("{}: {e:#}", endpoint.role)),
    }
    servers
}

async fn connect_side(
    endpoint: &crate::endpoint::Endpoint,
    cluster: bool,
) -> Result<Vec<(String, redis::aio::MultiplexedConnection)>> {
    if cluster {
        return Ok(crate::cluster::Router::connect(endpoint).await?.masters().await);
    }
    let url = endpoint.urls.first().context("no URL")?;
    let conn = endpoint.connect_node(url).await?;
    let addr = format!("{}:{}", url.host_str().unwrap_or(""), url.port().unwrap_or(6379));
    Ok(vec![(addr, conn)])
}

/// How long a master may take to answer `INFO server` before its version counts as unknown (the
/// proxy does not wait on one slow node to start).
const INFO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn info_server(conn: &mut redis::aio::MultiplexedConnection) -> Result<String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    let info = tokio::time::timeout(INFO_TIMEOUT, cmd.query_async::<String>(conn))
        .await
        .context("INFO server: no answer within 5 s")?;
    info.context("INFO server")
}

#[cfg(test)]
mod tests;
