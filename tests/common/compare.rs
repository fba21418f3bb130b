//! Old and new compared key by key, by type (not by DUMP payload, whose encoding may differ).

use super::sandbox::Sandbox;

/// A key's value in a form that compares equal when the data is equal: its type, its content
/// (members of unordered types sorted) and whether it has a TTL; `None` when it does not exist.
pub fn canonical(conn: &mut dyn redis::ConnectionLike, key: &str) -> Option<String> {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    // Values are read as bytes (a bitmap is not UTF-8) and shown escaped.
    let q = |conn: &mut dyn redis::ConnectionLike, args: &[&str]| -> Vec<String> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let raw: Vec<Vec<u8>> = cmd.query(conn).unwrap();
        raw.iter().map(|b| b.escape_ascii().to_string()).collect()
    };
    let mut content = match kind.as_str() {
        "none" => return None,
        // A HyperLogLog caches its cardinality in its header (PFCOUNT rewrites it on the side
        // that served the read): compared by its count.
        "string" => match q(conn, &["MGET", key]) {
            v if v[0].starts_with("HYLL") => vec![format!(
                "hll:{}",
                redis::cmd("PFCOUNT").arg(key).query::<i64>(conn).unwrap()
            )],
            v => v,
        },
        "list" => q(conn, &["LRANGE", key, "0", "-1"]),
        "hash" => q(conn, &["HGETALL", key])
            .chunks(2)
            .map(|p| p.join("="))
            .collect(),
        "set" => q(conn, &["SMEMBERS", key]),
        "zset" => q(conn, &["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        "stream" => vec![format!(
            "{:?}",
            redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query::<redis::Value>(conn)
                .unwrap()
        )],
        other => vec![format!("<{other}>")],
    };
    if matches!(kind.as_str(), "hash" | "set") {
        content.sort();
    }
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(conn).unwrap();
    Some(format!("{kind}:{content:?} ttl:{}", ttl > 0))
}

/// The keys whose value differs between the sandbox's old and new, with both values.
pub fn differences(sb: &Sandbox, keys: &[String]) -> Vec<String> {
    differences_on(&mut sb.source.conn(), &mut sb.target.cluster_conn(), keys)
}

/// [`differences`] between any two connections (e.g. two clusters).
pub fn differences_on(
    old: &mut dyn redis::ConnectionLike,
    new: &mut dyn redis::ConnectionLike,
    keys: &[String],
) -> Vec<String> {
    keys.iter()
        .filter_map(|k| {
            let (a, b) = (canonical(old, k), canonical(new, k));
            (a != b).then(|| format!("{k}: old {a:?}, new {b:?}"))
        })
        .collect()
}
