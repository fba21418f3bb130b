//! Keyspace commands: `SCAN`, `KEYS`, `DBSIZE`, `RANDOMKEY` (design §10).
//!
//! They read the side that holds every migrated key in the phase — the write primary: old until
//! `write-stop`, new in it — and, in `write-stop`, old as well for the keys the plan leaves
//! behind (only when `[keys]` leaves some). On a cluster every master is walked. Keys under the
//! reserved prefix are never returned.
//!
//! The proxy's `SCAN` cursor encodes the node: the low [`NODE_BITS`] bits are the index of the
//! node in the walk, the rest is that node's own cursor. Like a Redis cursor it is stateless, so
//! a scan may continue on any connection, and it inherits `SCAN`'s guarantee per node (a key
//! present for the whole scan is returned at least once) as long as the set of masters does not
//! change during the scan.
//!
//! `FLUSHDB`/`FLUSHALL`, where the plan allows them ([`flush`]), walk the masters the same way and
//! delete what the application owns, sparing cachemig's own keys.

use bytes::Bytes;
use redis::Value;

use super::node::NodeConn;
use super::resp::{Proto, Reply, encode_request};
use super::{Applied, Proxy};
use crate::keys::RESERVED_PREFIX;
use crate::phase::Side;
use crate::report::reports_key;

/// Bits of the proxy cursor that name the node.
const NODE_BITS: u32 = 10;
/// Tries before RANDOMKEY gives up on finding a key the client may see.
const RANDOM_TRIES: usize = 16;

/// Which of a node's keys a walk keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Every key (but reserved ones).
    All,
    /// Keys that migrate (new, in write-stop).
    Migrating,
    /// Keys the plan leaves on old (old, in write-stop).
    Staying,
}

/// The nodes to walk, in order, with what to keep from each.
async fn walk(proxy: &Proxy, applied: &Applied) -> Vec<(NodeConn, Keep)> {
    let mut out = Vec::new();
    match applied.routing.write {
        Side::Old => out.extend(proxy.old.masters().await.into_iter().map(|n| (n, Keep::All))),
        Side::New => {
            out.extend(
                proxy
                    .new
                    .masters()
                    .await
                    .into_iter()
                    .map(|n| (n, Keep::Migrating)),
            );
            let everything = proxy.filter.include.is_empty() && proxy.filter.exclude.is_empty();
            if !everything {
                out.extend(proxy.old.masters().await.into_iter().map(|n| (n, Keep::Staying)));
            }
        }
    }
    out
}

fn kept(proxy: &Proxy, keep: Keep, key: &[u8]) -> bool {
    !key.starts_with(RESERVED_PREFIX)
        && match keep {
            Keep::All => true,
            Keep::Migrating => proxy.filter.matches(key),
            Keep::Staying => !proxy.filter.matches(key),
        }
}

/// Answers a keyspace command under `applied`, in `proto`.
pub async fn answer(proxy: &Proxy, applied: &Applied, args: &[Bytes], proto: Proto) -> Reply {
    let nodes = walk(proxy, applied).await;
    if nodes.is_empty() {
        return Reply::error("CLUSTERDOWN cachemig: no master to read the keyspace from");
    }
    let result = match args[0].to_ascii_uppercase().as_slice() {
        b"SCAN" => scan(proxy, &nodes, args).await,
        b"KEYS" => keys(proxy, &nodes, args).await,
        b"DBSIZE" => dbsize(proxy, &nodes).await,
        b"RANDOMKEY" => randomkey(proxy, &nodes, proto).await,
        _ => Err(Reply::error("ERR cachemig: not a keyspace command")),
    };
    result.unwrap_or_else(|e| e)
}

/// One request to one node, as a `redis::Value` (errors become the reply the client gets).
async fn ask(node: &NodeConn, args: &[&[u8]]) -> Result<Value, Reply> {
    let reply = node
        .send(vec![encode_request(args)])
        .await
        .pop()
        .unwrap_or_else(|| Reply::error("ERR cachemig: no reply"));
    if reply.is_error() {
        return Err(reply);
    }
    redis::parse_redis_value(&reply.raw).map_err(|e| Reply::error(format!("ERR cachemig: {e}")))
}

fn bulks(value: &Value) -> Vec<Bytes> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| match v {
                Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn key_array(keys: Vec<Bytes>) -> Reply {
    Reply::array(keys.into_iter().map(Reply::bulk))
}

async fn scan(proxy: &Proxy, nodes: &[(NodeConn, Keep)], args: &[Bytes]) -> Result<Reply, Reply> {
    let cursor: u64 = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let index = (cursor & ((1 << NODE_BITS) - 1)) as usize;
    let Some((node, keep)) = nodes.get(index) else {
        return Ok(Reply::array([Reply::bulk("0"), Reply::array([])]));
    };
    let node_cursor = (cursor >> NODE_BITS).to_string();
    let mut request: Vec<&[u8]> = vec![b"SCAN", node_cursor.as_bytes()];
    request.extend(args[2..].iter().map(|a| a.as_ref()));
    let value = ask(node, &request).await?;
    let Value::Array(parts) = &value else {
        return Err(Reply::error(
            "ERR cachemig: a node answered SCAN with a non-array",
        ));
    };
    let next: u64 = match parts.first() {
        Some(Value::BulkString(c)) => std::str::from_utf8(c).ok().and_then(|c| c.parse().ok()),
        _ => None,
    }
    .ok_or_else(|| Reply::error("ERR cachemig: a node answered SCAN without a cursor"))?;
    if next >> (64 - NODE_BITS) != 0 {
        return Err(Reply::error(
            "ERR cachemig: a node's SCAN cursor is too large to carry",
        ));
    }
    let found = parts.get(1).map(bulks).unwrap_or_default();
    let keys = found.into_iter().filter(|k| kept(proxy, *keep, k)).collect();
    let proxy_cursor = match (next, index + 1 < nodes.len()) {
        (0, true) => (index + 1) as u64,
        (0, false) => 0,
        (n, _) => (n << NODE_BITS) | index as u64,
    };
    Ok(Reply::array([
        Reply::bulk(Bytes::from(proxy_cursor.to_string())),
        key_array(keys),
    ]))
}

async fn keys(proxy: &Proxy, nodes: &[(NodeConn, Keep)], args: &[Bytes]) -> Result<Reply, Reply> {
    let mut out = Vec::new();
    for (node, keep) in nodes {
        let value = ask(node, &[b"KEYS", &args[1]]).await?;
        out.extend(bulks(&value).into_iter().filter(|k| kept(proxy, *keep, k)));
    }
    Ok(key_array(out))
}

/// The number of keys a client may see. Old's keys in a walk that keeps only some of them are
/// counted by a scan (slow on a big old, but only when `[keys]` leaves keys behind); new's
/// count leaves out cachemig's lasting keys ([`reserved_on_new`]); transient ones (a big key's
/// temporary copy, a key-sync lease, a `WAIT` marker) may be counted for an instant.
async fn dbsize(proxy: &Proxy, nodes: &[(NodeConn, Keep)]) -> Result<Reply, Reply> {
    let mut total = 0i64;
    for (node, keep) in nodes {
        total += match keep {
            Keep::All | Keep::Migrating => match ask(node, &[b"DBSIZE"]).await? {
                Value::Int(n) => n,
                _ => 0,
            },
            Keep::Staying => count_by_scan(proxy, node, *keep).await?,
        };
    }
    if nodes.first().is_some_and(|(_, keep)| *keep == Keep::Migrating) {
        total -= reserved_on_new(proxy).await;
    }
    Ok(Reply::integer(total.max(0)))
}

/// How many of cachemig's lasting keys new holds: the proxies' report hash, the generation
/// beacon, and each reporting proxy's mirror backlog (and one being drained). Each is looked up
/// with `EXISTS` in its own slot, so the cost does not grow with the keyspace.
async fn reserved_on_new(proxy: &Proxy) -> i64 {
    let migration = &proxy.migration;
    let reports = reports_key(migration);
    let mut candidates = vec![reports.clone(), crate::beacon::beacon_key(migration)];
    let ids = proxy
        .new
        .request(
            encode_request(&["HKEYS", &reports]),
            Some(crate::cluster::key_slot(reports.as_bytes())),
        )
        .await;
    if let Ok(fields) = redis::parse_redis_value(&ids.raw) {
        for field in bulks(&fields) {
            // A successor reports as `ID~PID` while its predecessor runs; the backlog is the id's.
            let field = String::from_utf8_lossy(&field).into_owned();
            let id = field.split('~').next().unwrap_or_default().to_string();
            candidates.push(super::backlog::set_key(migration, &id));
            candidates.push(super::backlog::draining_key(migration, &id));
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut found = 0;
    for key in &candidates {
        let reply = proxy
            .new
            .request(
                encode_request(&["EXISTS", key]),
                Some(crate::cluster::key_slot(key.as_bytes())),
            )
            .await;
        if reply.raw.as_ref() == b":1\r\n" {
            found += 1;
        }
    }
    found
}

async fn count_by_scan(proxy: &Proxy, node: &NodeConn, keep: Keep) -> Result<i64, Reply> {
    let mut cursor = "0".to_string();
    let mut count = 0;
    loop {
        let value = ask(node, &[b"SCAN", cursor.as_bytes(), b"COUNT", b"1000"]).await?;
        let Value::Array(parts) = value else {
            return Ok(count);
        };
        count += parts
            .get(1)
            .map(bulks)
            .unwrap_or_default()
            .iter()
            .filter(|k| kept(proxy, keep, k))
            .count() as i64;
        cursor = match parts.first() {
            Some(Value::BulkString(c)) => String::from_utf8_lossy(c).into_owned(),
            _ => return Ok(count),
        };
        if cursor == "0" {
            return Ok(count);
        }
    }
}

async fn randomkey(proxy: &Proxy, nodes: &[(NodeConn, Keep)], proto: Proto) -> Result<Reply, Reply> {
    for _ in 0..RANDOM_TRIES {
        let (node, keep) = &nodes[rand::random_range(0..nodes.len())];
        if let Value::BulkString(key) = ask(node, &[b"RANDOMKEY"]).await?
            && kept(proxy, *keep, &key)
        {
            return Ok(Reply::bulk(Bytes::from(key)));
        }
    }
    Ok(Reply::null(proto))
}

/// FLUSHDB/FLUSHALL `[ASYNC|SYNC]`, where the plan allows them: every key of old (the
/// application's whole database there) and every migrated key of new is deleted, master by
/// master (SCAN, then UNLINK of each key), sparing cachemig's own keys (`__cachemig:*`: reports,
/// the generation beacon, key-sync leases), which a real FLUSHALL would destroy. Not atomic:
/// a write that lands while the walk runs may survive it.
pub async fn flush(proxy: &Proxy, args: &[Bytes]) -> Reply {
    let mode_ok = |m: &Bytes| matches!(m.to_ascii_uppercase().as_slice(), b"ASYNC" | b"SYNC");
    if args.len() > 2 || args.get(1).is_some_and(|m| !mode_ok(m)) {
        return Reply::error("ERR syntax error");
    }
    let mut nodes: Vec<(NodeConn, Keep)> = proxy
        .old
        .masters()
        .await
        .into_iter()
        .map(|n| (n, Keep::All))
        .collect();
    nodes.extend(
        proxy
            .new
            .masters()
            .await
            .into_iter()
            .map(|n| (n, Keep::Migrating)),
    );
    for (node, keep) in &nodes {
        if let Err(e) = clear(proxy, node, *keep).await {
            return e;
        }
    }
    Reply::ok()
}

/// Deletes the keys of `node` that `keep` selects.
async fn clear(proxy: &Proxy, node: &NodeConn, keep: Keep) -> Result<(), Reply> {
    let mut cursor = "0".to_string();
    loop {
        let value = ask(node, &[b"SCAN", cursor.as_bytes(), b"COUNT", b"1000"]).await?;
        let Value::Array(parts) = value else {
            return Err(Reply::error("ERR cachemig: unexpected SCAN reply"));
        };
        let unlinks: Vec<Bytes> = parts
            .get(1)
            .map(bulks)
            .unwrap_or_default()
            .iter()
            .filter(|k| kept(proxy, keep, k))
            .map(|k| encode_request(&[b"UNLINK".as_slice(), k]))
            .collect();
        if !unlinks.is_empty()
            && let Some(e) = node.send(unlinks).await.into_iter().find(Reply::is_error)
        {
            return Err(e);
        }
        cursor = match parts.first() {
            Some(Value::BulkString(c)) => String::from_utf8_lossy(c).into_owned(),
            _ => return Ok(()),
        };
        if cursor == "0" {
            return Ok(());
        }
    }
}
