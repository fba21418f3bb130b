//! The load's model: what every key written through the proxies must hold, from the replies the
//! clients got, and the comparison of old and new with it key by key at the end.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

/// What a key holds according to the acknowledged writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string (SET, INCR).
    Text(String),
    /// A list (LPUSH), head first.
    List(Vec<String>),
    /// A hash (HSET).
    Hash(BTreeMap<String, String>),
    /// A set (SADD).
    Set(BTreeSet<String>),
}

/// Key → value for every key the load wrote; `None` for a key that must not exist (deleted, or a
/// queue that was emptied).
pub type Model = BTreeMap<String, Option<Value>>;

/// Reads `key` the way the model describes it (`None` when it does not exist).
pub fn read(conn: &mut dyn redis::ConnectionLike, key: &str) -> redis::RedisResult<Option<Value>> {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn)?;
    Ok(Some(match kind.as_str() {
        "none" => return Ok(None),
        "string" => Value::Text(redis::cmd("GET").arg(key).query(conn)?),
        "list" => Value::List(redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn)?),
        "hash" => Value::Hash(redis::cmd("HGETALL").arg(key).query(conn)?),
        "set" => Value::Set(redis::cmd("SMEMBERS").arg(key).query(conn)?),
        other => Value::Text(format!("<unexpected type {other}>")),
    }))
}

/// Every key of `model` whose value on old (port `old`) or new (the cluster of `seeds`) differs
/// from the model, described; empty when both sides hold every acknowledged write.
pub fn differences(model: &Model, old: u16, seeds: &[String]) -> anyhow::Result<Vec<String>> {
    let mut old_conn = redis::Client::open(format!("redis://127.0.0.1:{old}/"))?
        .get_connection()
        .context("connecting to the old Redis")?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("cachemig-demo-check")
        .exec(&mut old_conn)?;
    let mut new_conn = redis::cluster::ClusterClient::new(seeds.to_vec())?
        .get_connection()
        .context("connecting to the new cluster")?;
    let mut out = Vec::new();
    for (key, want) in model {
        let sides: [(&str, &mut dyn redis::ConnectionLike); 2] =
            [("old", &mut old_conn), ("new", &mut new_conn)];
        for (side, conn) in sides {
            let got = read(conn, key).with_context(|| format!("reading {key} on {side}"))?;
            if &got != want {
                out.push(format!("{side} {key}: {got:?}, the model has {want:?}"));
            }
        }
    }
    Ok(out)
}
