//! `WAIT numreplicas timeout` through the proxy.
//!
//! Redis answers `WAIT` with how many replicas acknowledged every write *this connection* sent
//! before it: the server remembers the replication offset after the connection's last write. A
//! proxy client's writes travel on shared backend connections, and running `WAIT` on one of those
//! would block every client sharing it for up to the timeout. So the proxy remembers which slots
//! the client wrote (and whether the keys migrate) and, at `WAIT`, for every node of the current
//! write primary owning one of them (old for keys the plan leaves behind), opens a connection of
//! its own and sends two commands there: a write of a short-lived reserved key in a slot the node
//! owns (`SET __cachemig:wait-marker:{tag} 1 PX 1000`), which moves that connection's offset past every
//! write the node took before it — the client's included, since their replies came back first —
//! and then `WAIT` with the client's arguments. The client gets the smallest count over those
//! nodes: that many replicas of every node hold all its writes. A client that wrote nothing gets
//! what Redis answers a fresh connection (the write primary's `WAIT` without the marker write).
//!
//! `WAIT` is about the primary: the copies the mirror makes on the other side are not counted.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::backend::Backend;
use super::call::Call;
use super::resp::{Proto, Reply, encode_request};
use super::{Applied, Proxy};
use crate::phase::Side;

/// How long the marker key lives (it only has to reach the replicas with the client's writes).
const MARKER_TTL_MS: &str = "1000";

/// The slots a client's writes went to, and whether their keys migrate (keys the plan's `[keys]`
/// leave out stay on old in every phase).
#[derive(Default)]
pub struct Written(BTreeSet<(bool, Option<u16>)>);

impl Written {
    /// Records a write (cheap: at most one entry per slot).
    pub fn record(&mut self, call: &Call) {
        self.0.insert((call.migrates, call.slot()));
    }
}

/// Answers `WAIT` for a client whose writes are `written`, under `applied`.
pub async fn answer(proxy: &Proxy, applied: &Applied, written: &Written, args: &[Bytes]) -> Reply {
    let wait = encode_request(args);
    let targets = targets(proxy, applied, written).await;
    if targets.is_empty() {
        let backend = proxy.backend(applied.routing.write);
        let conn = backend.dedicated(None, Proto::Resp2).await;
        return first(conn.send(vec![wait]).await);
    }
    let runs = targets.iter().map(|(backend, addr, slot)| {
        let conn = backend.dedicated_at(addr, Proto::Resp2);
        let marker = marker(*slot);
        let wait = wait.clone();
        async move { conn.send(vec![marker, wait]).await }
    });
    let mut least: Option<(i64, Reply)> = None;
    for replies in futures::future::join_all(runs).await {
        let mut replies = replies.into_iter();
        let (mark, acked) = (replies.next(), replies.next());
        match (mark, acked) {
            (Some(m), _) if m.is_error() => return m,
            (_, Some(a)) => match integer(&a) {
                Some(n) if least.as_ref().is_none_or(|(l, _)| n < *l) => least = Some((n, a)),
                Some(_) => {}
                None => return a,
            },
            _ => return Reply::error("ERR cachemig: no reply to WAIT"),
        }
    }
    least.map_or_else(|| Reply::error("ERR cachemig: no reply to WAIT"), |(_, r)| r)
}

/// One (side, node address, a slot it owns) per node that took the client's writes.
async fn targets(
    proxy: &Proxy,
    applied: &Applied,
    written: &Written,
) -> Vec<(std::sync::Arc<Backend>, String, Option<u16>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &(migrates, slot) in &written.0 {
        let side = if migrates {
            applied.routing.write
        } else {
            Side::Old
        };
        let backend = proxy.backend(side);
        // A keyless write (EVAL with no keys) went to any master: slot 0's stands for it, so
        // the marker's slot and the node it is sent to agree.
        let slot = backend.is_cluster().then(|| slot.unwrap_or(0));
        let addr = backend.owner(slot).await;
        if seen.insert((side == Side::New, addr.clone())) {
            out.push((backend, addr, slot));
        }
    }
    out
}

/// A write of a reserved key in `slot` that the replicas must receive (so it moves the
/// connection's replication offset); it expires on its own.
fn marker(slot: Option<u16>) -> Bytes {
    let tag = slot.map_or_else(|| "0".to_string(), tag_for);
    let key = format!("__cachemig:wait-marker:{{{tag}}}");
    encode_request(&["SET", &key, "1", "PX", MARKER_TTL_MS])
}

/// The shortest decimal number whose slot is `slot` (a hashtag that puts a key there).
fn tag_for(slot: u16) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|t| crate::cluster::key_slot(t.as_bytes()) == slot)
        .expect("every slot is reached by some decimal number")
}

fn integer(reply: &Reply) -> Option<i64> {
    std::str::from_utf8(reply.raw.strip_prefix(b":")?)
        .ok()?
        .trim_end()
        .parse()
        .ok()
}

fn first(replies: Vec<Reply>) -> Reply {
    replies
        .into_iter()
        .next()
        .unwrap_or_else(|| Reply::error("ERR cachemig: no reply to WAIT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_lands_in_the_slot() {
        for slot in [0u16, 1, 5000, 16383] {
            let tag = tag_for(slot);
            let key = format!("__cachemig:wait-marker:{{{tag}}}");
            assert_eq!(crate::cluster::key_slot(key.as_bytes()), slot);
        }
        assert_eq!(integer(&Reply::integer(3)), Some(3));
        assert_eq!(integer(&Reply::error("ERR x")), None);
    }
}
