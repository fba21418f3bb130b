//! What a cluster client sees: the proxy as a one-node Redis Cluster that owns all 16384 slots
//! at the address the client connected to (design §10).
//!
//! An application already configured with a cluster client (the configuration it will have
//! after the migration) can then point it at the proxy before and after the cutover: every slot
//! maps to the proxy, which routes each command by the phase.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Proxy;
use super::local::Session;
use super::resp::{Proto, Reply};
use crate::cluster::key_slot;

/// The last slot.
const LAST_SLOT: i64 = 16383;

/// Answers `CLUSTER <sub>`.
pub fn answer(proxy: &Proxy, session: &Session, args: &[Bytes]) -> Reply {
    let Some(sub) = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    else {
        return Reply::error("ERR wrong number of arguments for 'cluster' command");
    };
    let me = Me::of(proxy, session);
    match (sub.as_str(), args.len()) {
        ("SLOTS", 2) => slots(&me),
        ("SHARDS", 2) => shards(&me, session.proto),
        ("NODES", 2) => Reply::verbatim(session.proto, &nodes(&me)),
        ("INFO", 2) => Reply::verbatim(session.proto, INFO),
        ("MYID", 2) => Reply::bulk(Bytes::from(me.id)),
        ("MYSHARDID", 2) => Reply::bulk(Bytes::from(me.id)),
        ("KEYSLOT", 3) => Reply::integer(i64::from(key_slot(&args[2]))),
        ("SLOTS" | "SHARDS" | "NODES" | "INFO" | "MYID" | "MYSHARDID" | "KEYSLOT", _) => {
            Reply::error(format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                sub.to_ascii_lowercase()
            ))
        }
        _ => Reply::error(format!(
            "ERR cachemig: CLUSTER {sub} is not served by the proxy (it shows itself as a one-node cluster; only SLOTS, SHARDS, NODES, INFO, MYID and KEYSLOT are answered)"
        )),
    }
}

const INFO: &str = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\n\
cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\ncluster_stats_messages_sent:0\r\n\
cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n";

/// The proxy as a cluster node.
struct Me {
    /// 40 hex characters, stable for a proxy id.
    id: String,
    ip: String,
    port: u16,
}

impl Me {
    fn of(proxy: &Proxy, session: &Session) -> Me {
        let hash = Sha256::digest(proxy.id.as_bytes());
        let id = hex::encode(&hash[..20]);
        let (ip, port) = session.local_addr.map_or(("127.0.0.1".to_string(), 6400), |a| {
            (a.ip().to_string(), a.port())
        });
        Me { id, ip, port }
    }
}

fn text(s: &str) -> Reply {
    Reply::bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// `[[0, 16383, [ip, port, id]]]`.
fn slots(me: &Me) -> Reply {
    let node = Reply::array([text(&me.ip), Reply::integer(i64::from(me.port)), text(&me.id)]);
    Reply::array([Reply::array([Reply::integer(0), Reply::integer(LAST_SLOT), node])])
}

/// One shard, one master node, every slot (Redis 7 `CLUSTER SHARDS`).
fn shards(me: &Me, proto: Proto) -> Reply {
    let node = Reply::map(
        proto,
        [
            (text("id"), text(&me.id)),
            (text("port"), Reply::integer(i64::from(me.port))),
            (text("ip"), text(&me.ip)),
            (text("endpoint"), text(&me.ip)),
            (text("role"), text("master")),
            (text("replication-offset"), Reply::integer(0)),
            (text("health"), text("online")),
        ],
    );
    let shard = Reply::map(
        proto,
        [
            (
                text("slots"),
                Reply::array([Reply::integer(0), Reply::integer(LAST_SLOT)]),
            ),
            (text("nodes"), Reply::array([node])),
        ],
    );
    Reply::array([shard])
}

/// One line, as `CLUSTER NODES` prints it (bus port 0: the proxy has no cluster bus).
fn nodes(me: &Me) -> String {
    format!(
        "{} {}:{}@0 myself,master - 0 0 1 connected 0-{LAST_SLOT}\n",
        me.id, me.ip, me.port
    )
}
