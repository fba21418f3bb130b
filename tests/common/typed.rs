//! Writers through real proxies on keys of every plain type — strings, lists, hashes (some with
//! a TTL), sets and sorted sets — keeping a model of every acknowledged write, and old and new
//! compared with that model key by key, type by type (in the form of
//! [`canonical`](super::compare::canonical)). Replies are checked against the model as they
//! come (read-your-writes through the proxy in every phase).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::compare::canonical;
use super::load::Reconnecting;
use super::sandbox::Sandbox;

/// What a key holds according to the acknowledged writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// INCR.
    Text(String),
    /// RPUSH, LPOP.
    List(Vec<String>),
    /// HSET, and EXPIRE now and then.
    Hash(BTreeMap<String, String>),
    /// SADD, SREM.
    Set(BTreeSet<String>),
    /// ZINCRBY (integer scores).
    Zset(BTreeMap<String, i64>),
}

/// A key's value and whether it has a TTL.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The value.
    pub value: Typed,
    /// Whether an EXPIRE was acknowledged on it.
    pub ttl: bool,
}

impl Entry {
    /// The key as [`canonical`] shows it; `None` for an emptied collection (the key is gone).
    pub fn canonical(&self) -> Option<String> {
        let (kind, content): (&str, Vec<String>) = match &self.value {
            Typed::Text(v) => ("string", vec![v.clone()]),
            Typed::List(l) => ("list", l.clone()),
            Typed::Hash(h) => ("hash", h.iter().map(|(f, v)| format!("{f}={v}")).collect()),
            Typed::Set(s) => ("set", s.iter().cloned().collect()),
            Typed::Zset(z) => {
                let mut by_score: Vec<(&i64, &String)> = z.iter().map(|(m, s)| (s, m)).collect();
                by_score.sort();
                let flat = by_score.into_iter().flat_map(|(s, m)| [m.clone(), s.to_string()]);
                ("zset", flat.collect())
            }
        };
        (kind == "string" || !content.is_empty()).then(|| format!("{kind}:{content:?} ttl:{}", self.ttl))
    }
}

/// Key → entry, for every acknowledged write.
pub type Model = BTreeMap<String, Entry>;

/// What the writers did, all together.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every acknowledged write.
    pub model: Model,
    /// Errors the clients saw (after their reconnects), with the request.
    pub errors: Vec<String>,
}

/// Writers on keys `{prefix}:w{W}:…`, writer W through `ports[W % ports.len()]`, until
/// [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Outcome>>,
}

impl Writers {
    /// Starts `writers` writers.
    pub fn start(prefix: &str, ports: &[u16], writers: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let threads = (0..writers)
            .map(|w| {
                let (stop, ops, port) = (stop.clone(), ops.clone(), ports[w % ports.len()]);
                let prefix = format!("{prefix}:w{w}");
                std::thread::spawn(move || write_until(&prefix, port, &stop, &ops))
            })
            .collect();
        Writers { stop, ops, threads }
    }

    /// Waits until `more` further requests were acknowledged.
    pub fn wait_progress(&self, more: u64) {
        let target = self.ops.load(Ordering::SeqCst) + more;
        super::wait_for("writer progress", Duration::from_secs(30), || {
            self.ops.load(Ordering::SeqCst) >= target
        });
    }

    /// Stops the writers; what they did.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Outcome::default();
        for t in self.threads {
            let o = t.join().expect("a writer panicked");
            all.model.extend(o.model);
            all.errors.extend(o.errors);
        }
        all
    }
}

/// Keys of each type per writer.
const KEYS: u64 = 4;

fn write_until(prefix: &str, port: u16, stop: &AtomicBool, ops: &AtomicU64) -> Outcome {
    let mut client = Reconnecting::new(port);
    let mut out = Outcome::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        match step(&mut client, &mut out.model, prefix, n) {
            Ok(()) => {
                ops.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => out.errors.push(e),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    out
}

/// One request of a writer, chosen by `n`; the model follows what was acknowledged, and a reply
/// the model disagrees with is an error.
fn step(client: &mut Reconnecting, model: &mut Model, prefix: &str, n: u64) -> Result<(), String> {
    let kinds = ["counter", "list", "hash", "set", "zset", "list", "counter"];
    let op = ((n / KEYS) % kinds.len() as u64) as usize;
    let key = format!("{prefix}:{}{}", kinds[op], n % KEYS);
    if op == 6 {
        return check_get(client, model, &key);
    }
    let fresh = match op {
        0 => Typed::Text("0".into()),
        1 | 5 => Typed::List(Vec::new()),
        2 => Typed::Hash(BTreeMap::new()),
        3 => Typed::Set(BTreeSet::new()),
        _ => Typed::Zset(BTreeMap::new()),
    };
    let entry = model.entry(key.clone()).or_insert(Entry {
        value: fresh,
        ttl: false,
    });
    let mut query = |cmd: &mut redis::Cmd| -> Result<redis::Value, String> {
        client.query(cmd).map_err(|e| format!("{key}: {e}"))
    };
    let int = |v: redis::Value| -> i64 { redis::from_redis_value(v).unwrap_or(-1) };
    let text = |v: redis::Value| -> Option<String> { redis::from_redis_value(v).unwrap_or(None) };
    let want_got = |what: &str, want: String, got: String| match want == got {
        true => Ok(()),
        false => Err(format!("{what} {key}: {got}, the model has {want}")),
    };
    match (op, &mut entry.value) {
        (0, Typed::Text(v)) => {
            let got = int(query(redis::cmd("INCR").arg(&key))?);
            *v = got.to_string();
        }
        (1, Typed::List(l)) => {
            let item = format!("i{n}");
            let len = int(query(redis::cmd("RPUSH").arg(&key).arg(&item))?);
            l.push(item);
            want_got("RPUSH length", l.len().to_string(), len.to_string())?;
        }
        (5, Typed::List(l)) => {
            let got = text(query(redis::cmd("LPOP").arg(&key))?);
            let want = (!l.is_empty()).then(|| l.remove(0));
            want_got("LPOP", format!("{want:?}"), format!("{got:?}"))?;
        }
        (2, Typed::Hash(h)) => {
            let (field, value) = (format!("f{}", n % 3), format!("v{n}"));
            query(redis::cmd("HSET").arg(&key).arg(&field).arg(&value))?;
            h.insert(field, value);
            if n.is_multiple_of(5) {
                query(redis::cmd("EXPIRE").arg(&key).arg(86_400))?;
                entry.ttl = true;
            }
        }
        (3, Typed::Set(s)) => {
            let member = format!("m{}", n % 5);
            let (cmd, change) = match n % 3 {
                0 => ("SREM", s.remove(&member)),
                _ => ("SADD", s.insert(member.clone())),
            };
            let got = int(query(redis::cmd(cmd).arg(&key).arg(&member))?);
            want_got(cmd, i64::from(change).to_string(), got.to_string())?;
        }
        (_, Typed::Zset(z)) => {
            let member = format!("m{}", n % 4);
            let got = text(query(redis::cmd("ZINCRBY").arg(&key).arg(1).arg(&member))?);
            let score = z.entry(member).or_insert(0);
            *score += 1;
            want_got("ZINCRBY", score.to_string(), got.unwrap_or_default())?;
        }
        (_, other) => unreachable!("{key} holds {other:?}"),
    }
    Ok(())
}

/// A GET of a counter, checked against the model (nil when no INCR was acknowledged yet).
fn check_get(client: &mut Reconnecting, model: &Model, key: &str) -> Result<(), String> {
    let got: Option<String> = client
        .query(redis::cmd("GET").arg(key))
        .map_err(|e| format!("GET {key}: {e}"))?;
    let want = match model.get(key) {
        Some(Entry {
            value: Typed::Text(v),
            ..
        }) => Some(v.clone()),
        _ => None,
    };
    match got == want {
        true => Ok(()),
        false => Err(format!("GET {key}: {got:?}, the model has {want:?}")),
    }
}

/// The keys whose value on old or new differs from the model; empty when both sides hold
/// every acknowledged write.
pub fn differences(sb: &Sandbox, model: &Model) -> Vec<String> {
    let (mut old, mut new) = (sb.source.conn(), sb.target.cluster_conn());
    let mut out = Vec::new();
    for (key, entry) in model {
        let want = entry.canonical();
        for (side, conn) in [
            ("old", &mut old as &mut dyn redis::ConnectionLike),
            ("new", &mut new),
        ] {
            let got = canonical(conn, key);
            if got != want {
                out.push(format!("{side} {key}: {got:?}, the model has {want:?}"));
            }
        }
    }
    out
}
