//! A cluster side: the slot map, one batch per master, and redirections (design §6).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::{Mutex, RwLock};

use super::{ATTEMPTS, Node, Unit, send_node};
use crate::cluster::{SLOTS, parse_slots};
use crate::proxy::node::{ErrorSink, IN_DOUBT, Login, NOT_SENT};
use crate::proxy::resp::{Proto, Reply, encode_request};

/// Which master serves each slot.
pub(super) struct SlotMap {
    pub(super) owner: Vec<Option<u16>>,
    pub(super) nodes: Vec<Node>,
    pub(super) loaded_at: Instant,
}

impl SlotMap {
    pub(super) fn empty() -> SlotMap {
        SlotMap {
            owner: vec![None; SLOTS],
            nodes: Vec::new(),
            loaded_at: Instant::now(),
        }
    }
}

/// A cluster side.
pub(super) struct Cluster {
    pub(super) label: &'static str,
    pub(super) seeds: Vec<String>,
    pub(super) login: Login,
    pub(super) errors: Arc<dyn ErrorSink>,
    pub(super) map: RwLock<Arc<SlotMap>>,
    /// Every node ever talked to, by address: connections outlive slot-map refreshes.
    pub(super) conns: Mutex<HashMap<String, Node>>,
    pub(super) refreshing: Mutex<()>,
}

/// What to do about one reply from a cluster node.
enum Redirect {
    /// A final reply.
    None,
    /// The slot moved: refresh the map, resend.
    Moved,
    /// The slot is being imported by this node: `ASKING`, then the request, there.
    Ask(String),
    /// Not now (failover, loading, the node unreachable so nothing was sent): back off, refresh
    /// the map from any node that answers, resend.
    Wait,
    /// The connection broke with the request in flight: it may have been applied, so it is not
    /// resent (a retried INCR would apply twice), but the map is refreshed for what follows.
    Refresh,
}

/// Whether a unit must be sent again, and where.
///
/// Only the first reply decides: when it is final, the unit's first request ran, and resending
/// the unit would run it again (a unit may carry a write followed by a read of its key). A
/// redirected later request then just stays an error for its caller.
fn first_redirect(replies: &[Reply]) -> Redirect {
    replies.first().map_or(Redirect::None, redirect)
}

fn redirect(reply: &Reply) -> Redirect {
    let Some(text) = reply.error_text() else {
        return Redirect::None;
    };
    let mut words = text.split(' ');
    match words.next() {
        Some("MOVED") => Redirect::Moved,
        Some("ASK") => words
            .nth(1)
            .map_or(Redirect::None, |a| Redirect::Ask(a.to_string())),
        Some("TRYAGAIN" | "CLUSTERDOWN" | "LOADING") => Redirect::Wait,
        _ if text.starts_with(NOT_SENT) => Redirect::Wait,
        _ if text.starts_with(IN_DOUBT) => Redirect::Refresh,
        _ => Redirect::None,
    }
}

impl Cluster {
    async fn conn(&self, addr: &str) -> Node {
        let mut conns = self.conns.lock().await;
        conns
            .entry(addr.to_string())
            .or_insert_with(|| Node::spawn(self.label, addr, &self.login, &self.errors))
            .clone()
    }

    /// The address of the master serving `slot` (any master for `None`).
    pub(super) async fn owner(&self, slot: Option<u16>) -> String {
        let map = self.map.read().await.clone();
        let node = slot.map_or(Some(0), |s| map.owner[usize::from(s)]);
        node.and_then(|n| map.nodes.get(usize::from(n)))
            .map_or_else(|| self.seeds[0].clone(), |n| n.addr().to_string())
    }

    /// Reloads the slot map from any node that answers, unless another task did since `seen`.
    pub(super) async fn refresh(&self, seen: Instant) -> Result<()> {
        let _one = self.refreshing.lock().await;
        if self.map.read().await.loaded_at > seen {
            return Ok(());
        }
        let mut candidates: Vec<String> = self
            .map
            .read()
            .await
            .nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect();
        candidates.extend(self.seeds.iter().cloned());
        let mut last = None;
        for addr in candidates {
            let conn = self.conn(&addr).await;
            let reply = conn
                .conn(Proto::Resp2)
                .send(vec![encode_request(&["CLUSTER", "SLOTS"])])
                .await
                .remove(0);
            match self.map_from(&reply, &addr).await {
                Ok(map) => {
                    *self.map.write().await = Arc::new(map);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no seed node")))
            .with_context(|| format!("cannot load the slot map of {}", self.label))
    }

    async fn map_from(&self, reply: &Reply, addr: &str) -> Result<SlotMap> {
        if let Some(e) = reply.error_text() {
            bail!("{addr}: {e}");
        }
        let value = redis::parse_redis_value(&reply.raw)?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let mut map = SlotMap::empty();
        let mut index: HashMap<String, u16> = HashMap::new();
        for (start, end, node) in parse_slots(value, host)? {
            let next = map.nodes.len() as u16;
            let i = *index.entry(node.clone()).or_insert(next);
            if i == next {
                map.nodes.push(self.conn(&node).await);
            }
            for slot in start..=end {
                map.owner[usize::from(slot)] = Some(i);
            }
        }
        if map.nodes.is_empty() {
            bail!("{addr}: CLUSTER SLOTS lists no master");
        }
        Ok(map)
    }

    /// Sends units grouped per master, then resends the redirected ones.
    pub(super) async fn send(&self, units: Vec<Unit>, proto: Proto) -> Vec<Reply> {
        let mut replies: Vec<Vec<Reply>> = vec![Vec::new(); units.len()];
        let mut todo: Vec<usize> = (0..units.len()).collect();
        for attempt in 1..=ATTEMPTS {
            let map = self.map.read().await.clone();
            let results = self.round(&map, &units, &todo, proto).await;
            let mut again = Vec::new();
            let (mut moved, mut wait, mut stale) = (false, false, false);
            for (i, mut got) in results {
                let mut what = first_redirect(&got);
                if let Redirect::Ask(addr) = what {
                    got = self.ask(&addr, &units[i], proto).await;
                    what = first_redirect(&got);
                }
                replies[i] = got;
                match what {
                    Redirect::Moved => {
                        moved = true;
                        again.push(i);
                    }
                    Redirect::Wait => {
                        wait = true;
                        again.push(i);
                    }
                    Redirect::Refresh => stale = true,
                    Redirect::None | Redirect::Ask(_) => {}
                }
            }
            if stale && again.is_empty() {
                let _ = self.refresh(map.loaded_at).await;
            }
            if again.is_empty() || attempt == ATTEMPTS {
                break;
            }
            if wait {
                tokio::time::sleep(crate::cluster::backoff(attempt)).await;
            }
            if (moved || wait)
                && let Err(e) = self.refresh(map.loaded_at).await
            {
                self.errors.backend_error(&format!("{e:#}"));
            }
            todo = again;
        }
        replies.into_iter().flatten().collect()
    }

    /// One round: the units in `todo`, one batch per master, all masters at once.
    async fn round(
        &self,
        map: &SlotMap,
        units: &[Unit],
        todo: &[usize],
        proto: Proto,
    ) -> Vec<(usize, Vec<Reply>)> {
        let mut by_node: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut out = Vec::new();
        for &i in todo {
            match units[i].slot.map_or(Some(0), |s| map.owner[usize::from(s)]) {
                Some(node) if usize::from(node) < map.nodes.len() => {
                    by_node.entry(usize::from(node)).or_default().push(i)
                }
                _ => out.push((
                    i,
                    vec![
                        Reply::error("CLUSTERDOWN cachemig: the slot is not served by any master");
                        units[i].count
                    ],
                )),
            }
        }
        let batches = by_node.into_iter().map(|(node, members)| {
            let conn = map.nodes[node].conn(proto).clone();
            let mut chosen: Vec<Unit> = members.iter().map(|&i| units[i].clone()).collect();
            async move {
                let counts: Vec<usize> = chosen.iter().map(|u| u.count).collect();
                let mut replies = send_node(&conn, &mut chosen).await.into_iter();
                members
                    .into_iter()
                    .zip(counts)
                    .map(|(i, n)| (i, replies.by_ref().take(n).collect()))
                    .collect::<Vec<(usize, Vec<Reply>)>>()
            }
        });
        for batch in join_all(batches).await {
            out.extend(batch);
        }
        out
    }

    /// Sends `ASKING` then the unit to the node an `ASK` named (a slot being imported there).
    ///
    /// `ASKING` holds for one command only, so each request of the unit gets its own; a unit
    /// whose bytes hold several requests in one piece (a packed pipeline) gets one, in front.
    async fn ask(&self, addr: &str, unit: &Unit, proto: Proto) -> Vec<Reply> {
        let node = self.conn(addr).await;
        let conn = node.conn(proto);
        let asking = encode_request(&["ASKING"]);
        let requests: Vec<Bytes> = unit.clone().requests().collect();
        let one_per_request = requests.len() == unit.count;
        let mut raw = Vec::with_capacity(requests.len() * 2);
        for (i, request) in requests.into_iter().enumerate() {
            if one_per_request || i == 0 {
                raw.push(asking.clone());
            }
            raw.push(request);
        }
        let askings = if one_per_request { unit.count } else { 1 };
        let replies = conn.send_counted(raw, unit.count + askings).await;
        strip_asking(replies, one_per_request)
    }
}

/// The replies to the requests of an `ASK` resend, without those to the `ASKING`s.
fn strip_asking(replies: Vec<Reply>, one_per_request: bool) -> Vec<Reply> {
    if one_per_request {
        replies.into_iter().skip(1).step_by(2).collect()
    } else {
        replies.into_iter().skip(1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_recognised() {
        assert!(matches!(
            redirect(&Reply::error("MOVED 3999 127.0.0.1:6381")),
            Redirect::Moved
        ));
        assert!(
            matches!(redirect(&Reply::error("ASK 3999 127.0.0.1:6381")), Redirect::Ask(a) if a == "127.0.0.1:6381")
        );
        assert!(matches!(
            redirect(&Reply::error("TRYAGAIN Multiple keys")),
            Redirect::Wait
        ));
        assert!(matches!(redirect(&Reply::error("ERR other")), Redirect::None));
        let unsent = Reply::error(format!("{NOT_SENT} new 127.0.0.1:1 unreachable"));
        assert!(matches!(redirect(&unsent), Redirect::Wait));
        let in_doubt = Reply::error(format!("{IN_DOUBT} connection lost"));
        assert!(matches!(redirect(&in_doubt), Redirect::Refresh));
        assert!(matches!(redirect(&Reply::ok()), Redirect::None));
        let write_then_moved_read = [Reply::integer(1), Reply::error("MOVED 1 127.0.0.1:1")];
        assert!(
            matches!(first_redirect(&write_then_moved_read), Redirect::None),
            "a unit whose write ran is never resent"
        );
        let replies = vec![Reply::ok(), Reply::integer(1), Reply::ok(), Reply::integer(2)];
        assert_eq!(
            strip_asking(replies, true),
            vec![Reply::integer(1), Reply::integer(2)]
        );
    }
}
