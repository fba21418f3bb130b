//! The `bypass-writers` gate: clients that talk to old directly instead of through a proxy.
//!
//! From `async-dual-write` on, every write must go through a proxy, or it lands on old without
//! being mirrored and is overwritten or lost at the switch (docs/guarantees.md, assumption 1).
//! Proxies name their backend connections `cachemig-proxy:<id>` and the CLI names its own
//! `cachemig-cli`, so `CLIENT LIST` on every old master tells who else is there.
//!
//! Redis 7.0's `CLIENT LIST` has no per-client command counter (`tot-cmds` came later); what it
//! has is `idle`, the seconds since the client's last command, and `cmd`, that command. A client
//! whose `idle` is shorter than the time the phase has been in force issued a command during the
//! phase; whether an earlier one was a write cannot be told. So the gate counts **every**
//! non-cachemig client that issued any command since the phase began, and says which of them
//! certainly wrote (their last command is a write). That cannot miss a writer that wrote during
//! the phase and is still connected. It cannot see one that connected, wrote and disconnected
//! between two looks (a cron `redis-cli`); `INFO commandstats` write counts on old rising faster
//! than the proxies' forwarded writes would (docs/runbook.md).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use redis::Value;
use serde::Serialize;

use super::Verdict;
use crate::endpoint::Endpoint;

/// The name prefix of cachemig's own connections.
pub const CACHEMIG_PREFIX: &str = "cachemig-";

/// One client connection on an old master, as `CLIENT LIST` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    /// The master (`host:port`) it is connected to.
    pub node: String,
    /// Its address (`addr=`).
    pub addr: String,
    /// `name=`.
    pub name: String,
    /// `idle=`: seconds since its last command.
    pub idle_secs: u64,
    /// `flags=`.
    pub flags: String,
    /// `cmd=`: its last command (`client|list` for subcommands).
    pub cmd: String,
    /// Whether `cmd` writes (from `COMMAND INFO` on the node).
    pub wrote: bool,
}

impl Client {
    /// Whether cachemig itself (a proxy, the CLI) or replication owns the connection.
    fn is_ours(&self) -> bool {
        // S: a replica's link, M: the master's link, O: MONITOR.
        self.name.starts_with(CACHEMIG_PREFIX) || self.flags.contains(['S', 'M', 'O'])
    }

    /// `127.0.0.1:5000 (last command set, a write)`.
    fn describe(&self) -> String {
        let what = if self.wrote {
            "a write"
        } else {
            "not a write; it may have written before"
        };
        let name = if self.name.is_empty() {
            String::new()
        } else {
            format!(" name={}", self.name)
        };
        format!(
            "{}{name} on {} (last command {}, {what})",
            self.addr, self.node, self.cmd
        )
    }
}

/// The clients of every old master.
pub async fn scan(source: &Endpoint, masters: &[String]) -> Result<Vec<Client>, String> {
    let mut all = Vec::new();
    for node in masters {
        let url = crate::cluster::node_url(&source.urls[0], node).map_err(|e| format!("{e:#}"))?;
        let mut conn = source.connect_node(&url).await.map_err(|e| e.to_string())?;
        let text: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("CLIENT LIST on {node}: {e}"))?;
        let mut clients = parse_client_list(node, &text);
        let writes = write_commands(&mut conn, &clients).await;
        for c in &mut clients {
            c.wrote = writes.get(&c.cmd).copied().unwrap_or(false);
        }
        all.extend(clients);
    }
    Ok(all)
}

/// Asks the node which of the clients' last commands write (`COMMAND INFO`, flag `write`; a
/// script or transaction is counted as a write, since it may contain one).
async fn write_commands(
    conn: &mut redis::aio::MultiplexedConnection,
    clients: &[Client],
) -> HashMap<String, bool> {
    let names: BTreeSet<&str> = clients.iter().map(|c| c.cmd.as_str()).collect();
    let mut writes = HashMap::new();
    for name in names {
        let info: redis::RedisResult<Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query_async(conn)
            .await;
        let wrote = matches!(
            name,
            "exec" | "eval" | "evalsha" | "fcall" | "eval_ro" | "evalsha_ro"
        ) || info.is_ok_and(|v| has_write_flag(&v));
        writes.insert(name.to_string(), wrote);
    }
    writes
}

/// Whether a `COMMAND INFO` reply lists the `write` flag.
fn has_write_flag(v: &Value) -> bool {
    let Value::Array(items) = v else { return false };
    let Some(Value::Array(doc)) = items.first() else {
        return false;
    };
    let Some(Value::Array(flags)) = doc.get(2) else {
        return false;
    };
    flags.iter().any(|f| match f {
        Value::SimpleString(s) => s == "write",
        Value::BulkString(b) => b == b"write",
        _ => false,
    })
}

/// Parses `CLIENT LIST` (one `key=value ...` line per client).
pub fn parse_client_list(node: &str, text: &str) -> Vec<Client> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                    .unwrap_or_default()
                    .to_string()
            };
            Client {
                node: node.to_string(),
                addr: field("addr"),
                name: field("name"),
                idle_secs: field("idle").parse().unwrap_or(0),
                flags: field("flags"),
                cmd: field("cmd"),
                wrote: false,
            }
        })
        .collect()
}

/// The clients that bypassed the proxies while the phase has been in force for `in_force`.
pub fn bypassing(clients: &[Client], in_force: Duration) -> Vec<&Client> {
    clients
        .iter()
        .filter(|c| !c.is_ours() && Duration::from_secs(c.idle_secs) < in_force)
        .collect()
}

/// Measures the gate from a scan; `in_force` is how long the phase has been in force.
pub(super) fn measure(clients: &[Client], in_force: Duration, allowed: u64, plan: &str) -> (String, Verdict) {
    let found = bypassing(clients, in_force);
    if found.is_empty() {
        let others = clients.iter().filter(|c| !c.is_ours()).count();
        return (
            format!(
                "0 clients on old outside cachemig issued a command since the phase began ({others} idle)"
            ),
            Verdict::Pass,
        );
    }
    let wrote = found.iter().filter(|c| c.wrote).count();
    let list: Vec<String> = found.iter().map(|c| c.describe()).collect();
    let verdict = if found.len() as u64 <= allowed {
        Verdict::Pass
    } else {
        Verdict::Blocked
    };
    (
        format!(
            "{} client(s) on old bypass the proxies since the phase began, {wrote} of them last wrote: {}; route them through a proxy or stop them (`CLIENT KILL ADDR <addr>` on old), then `cachemig verify {plan} --repair` and `cachemig verify {plan}`",
            found.len(),
            list.join("; ")
        ),
        verdict,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "id=4 addr=127.0.0.1:35082 laddr=127.0.0.1:6379 fd=8 name= age=9 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=16384 rbp=16384 obl=0 oll=0 omem=0 tot-mem=37658 events=r cmd=set user=default redir=-1 resp=2
id=5 addr=127.0.0.1:35083 laddr=127.0.0.1:6379 fd=9 name=cachemig-proxy:p1 age=9 idle=0 flags=N db=0 cmd=set
id=6 addr=127.0.0.1:35084 laddr=127.0.0.1:6379 fd=10 name=report age=99 idle=90 flags=N db=0 cmd=set
id=7 addr=127.0.0.1:35085 laddr=127.0.0.1:6379 fd=11 name= age=9 idle=1 flags=S db=0 cmd=replconf
id=8 addr=127.0.0.1:35086 laddr=127.0.0.1:6379 fd=12 name=cachemig-cli age=0 idle=0 flags=N db=0 cmd=client|list
id=9 addr=127.0.0.1:35087 laddr=127.0.0.1:6379 fd=13 name= age=30 idle=2 flags=N db=0 cmd=get
";

    #[test]
    fn counts_active_clients_outside_cachemig_and_names_them() {
        let mut clients = parse_client_list("old:6379", LIST);
        assert_eq!(clients.len(), 6);
        clients[0].wrote = true;
        let found = bypassing(&clients, Duration::from_secs(60));
        let addrs: Vec<&str> = found.iter().map(|c| c.addr.as_str()).collect();
        // The proxy, the CLI and the replica are ours; `report` has been idle since before the
        // phase began.
        assert_eq!(addrs, ["127.0.0.1:35082", "127.0.0.1:35087"]);
        let (text, verdict) = measure(&clients, Duration::from_secs(60), 0, "p.toml");
        assert_eq!(verdict, Verdict::Blocked);
        assert!(
            text.contains("2 client(s)") && text.contains("1 of them last wrote"),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.1:35082 on old:6379 (last command set, a write)"),
            "{text}"
        );
        // Ninety seconds into the phase, `report` (idle 90 s) still did nothing in it.
        assert_eq!(bypassing(&clients, Duration::from_secs(90)).len(), 2);
        assert_eq!(bypassing(&clients, Duration::from_secs(91)).len(), 3);
    }

    #[test]
    fn write_flag_from_command_info() {
        let doc = |flags: &[&str]| {
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"x".to_vec()),
                Value::Int(-3),
                Value::Array(flags.iter().map(|f| Value::SimpleString(f.to_string())).collect()),
            ])])
        };
        assert!(has_write_flag(&doc(&["write", "denyoom"])));
        assert!(!has_write_flag(&doc(&["readonly", "fast"])));
        assert!(!has_write_flag(&Value::Array(vec![Value::Nil])));
    }
}
