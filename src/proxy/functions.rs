//! Redis 7 functions through the proxy (design §10).
//!
//! `FCALL`/`FCALL_RO` route like `EVAL`/`EVAL_RO` (their declared keys are mirrored). Libraries
//! are not keys, so `FUNCTION` is handled here: a change (`LOAD`, `DELETE`, `FLUSH`, `RESTORE`)
//! is applied on every master of the write primary — the client gets the first one's answer, and
//! an error there stops it — and then on every master of the other side, so `FCALL` finds its
//! library whichever side serves it after a switch. (The backfill copies the libraries that
//! existed before the proxies.) `LIST`, `DUMP`, `STATS` read the read side.

use bytes::Bytes;

use super::node::NodeConn;
use super::resp::{Proto, Reply};
use super::{Applied, Proxy};

/// Answers `FUNCTION <sub> …` under `applied`.
pub async fn answer(proxy: &Proxy, applied: &Applied, args: &[Bytes], proto: Proto) -> Reply {
    let sub = args.get(1).map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    let request = super::resp::encode_request(args);
    let changes = matches!(sub.as_slice(), b"LOAD" | b"DELETE" | b"FLUSH" | b"RESTORE");
    if !changes {
        let side = applied.routing.read;
        let Some(node) = proxy.backend(side).masters_as(proto).await.into_iter().next() else {
            return Reply::error("CLUSTERDOWN cachemig: no master to ask");
        };
        return first(node.send(vec![request]).await);
    }
    let primary = applied.routing.write;
    let mut nodes = proxy.backend(primary).masters_as(proto).await;
    let others: Vec<NodeConn> = proxy.backend(primary.other()).masters_as(proto).await;
    if nodes.is_empty() {
        return Reply::error("CLUSTERDOWN cachemig: no master to change");
    }
    let leader = nodes.remove(0);
    let reply = first(leader.send(vec![request.clone()]).await);
    if reply.is_error() {
        return reply;
    }
    let rest = nodes.into_iter().chain(others).map(|n| {
        let request = request.clone();
        async move { (n.addr().to_string(), first(n.send(vec![request]).await)) }
    });
    for (addr, r) in futures::future::join_all(rest).await {
        if let Some(e) = r.error_text() {
            tracing::warn!("FUNCTION {} on {addr} failed: {e}", String::from_utf8_lossy(&sub));
            proxy.metrics.backend_errors.inc();
        }
    }
    reply
}

fn first(replies: Vec<Reply>) -> Reply {
    replies
        .into_iter()
        .next()
        .unwrap_or_else(|| Reply::error("ERR cachemig: no reply"))
}
