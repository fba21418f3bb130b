//! A concurrent writer load through two proxies, with a model of every acknowledged write, for
//! the rows that kill things: each writer owns its keys (SET, INCR, RPUSH), checks every reply
//! against its model, and, when a request fails (its proxy was killed), keeps both the value
//! before and the value it tried as possible outcomes, retires the key and goes on through the
//! other proxy. At the end old and new must be equal key by key and hold a possible value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Commands;

use crate::common::compare;
use crate::common::proxy::ProxyProcess;
use crate::common::sandbox::Sandbox;

/// Keys per writer.
const KEYS: u64 = 24;
/// Writers per proxy.
const PER_PROXY: usize = 2;

/// What a key holds, as `compare::canonical` would show it without the TTL part.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Text(String),
    /// A list, head first.
    List(Vec<String>),
}

/// Key → every value it may hold (one, unless a write to it failed in flight).
pub type Model = BTreeMap<String, Vec<Option<Value>>>;

/// Writers running until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handles: Vec<JoinHandle<Model>>,
}

impl Load {
    /// `PER_PROXY` writers on each port of `ports` (the first one is the proxy the row kills);
    /// a failed writer moves to the next port.
    pub fn start(ports: &[u16]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let handles = (0..ports.len() * PER_PROXY)
            .map(|w| {
                let ports: Vec<u16> = ports
                    .iter()
                    .cycle()
                    .skip(w % ports.len())
                    .take(ports.len())
                    .copied()
                    .collect();
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || write(w, &ports, &stop, &acked))
            })
            .collect();
        Load { stop, acked, handles }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes were acknowledged.
    pub fn wait_for_more(&self, n: u64) {
        let from = self.acked();
        crate::common::wait_for("writes acknowledged", Duration::from_secs(60), || {
            self.acked() >= from + n
        });
    }

    /// Stops the writers and merges their models.
    pub fn finish(self) -> Model {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Model::new();
        for h in self.handles {
            all.extend(h.join().expect("a writer panicked"));
        }
        all
    }
}

fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let conn = client.get_connection().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    conn
}

fn write(w: usize, ports: &[u16], stop: &AtomicBool, acked: &AtomicU64) -> Model {
    let mut port = 0;
    let mut conn = connect(ports[port]);
    let mut model = Model::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let i = n % KEYS;
        let key = format!("token:w{w}:{i}");
        let before = match model.get(&key) {
            Some(values) if values.len() > 1 => continue, // retired
            Some(values) => values[0].clone(),
            None => None,
        };
        let (tried, result) = op(&mut conn, &key, i, n, &before);
        match result {
            Ok(()) => {
                model.insert(key, vec![tried]);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                assert!(
                    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error(),
                    "writer {w}: {key}: {e}"
                );
                model.insert(key, vec![before, tried]);
                port = (port + 1).min(ports.len() - 1);
                conn = connect(ports[port]);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    model
}

/// One write of key number `i` (its kind fixed by `i`); the value it leaves when it lands.
fn op(
    conn: &mut redis::Connection,
    key: &str,
    i: u64,
    n: u64,
    before: &Option<Value>,
) -> (Option<Value>, redis::RedisResult<()>) {
    match i % 3 {
        0 => {
            let v = format!("v{n}");
            let r = conn.set::<_, _, ()>(key, &v);
            (Some(Value::Text(v)), r)
        }
        1 => {
            let base = match before {
                Some(Value::Text(t)) => t.parse::<i64>().unwrap(),
                _ => 0,
            };
            let r = conn.incr::<_, _, i64>(key, 1).map(|got| {
                assert_eq!(got, base + 1, "INCR {key}: an acknowledged write was lost");
            });
            (Some(Value::Text((base + 1).to_string())), r)
        }
        _ => {
            let mut list = match before {
                Some(Value::List(l)) => l.clone(),
                _ => Vec::new(),
            };
            list.push(n.to_string());
            let r = conn.rpush::<_, _, i64>(key, n).map(|len| {
                assert_eq!(
                    len as usize,
                    list.len(),
                    "RPUSH {key}: an acknowledged write was lost"
                );
            });
            (Some(Value::List(list)), r)
        }
    }
}

/// What `key` holds on a side.
fn read(conn: &mut dyn redis::ConnectionLike, key: &str) -> Option<Value> {
    let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
    match kind.as_str() {
        "none" => None,
        "string" => Some(Value::Text(redis::cmd("GET").arg(key).query(conn).unwrap())),
        "list" => Some(Value::List(
            redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(conn).unwrap(),
        )),
        other => panic!("{key}: unexpected type {other}"),
    }
}

/// Waits until every proxy drained its mirror, then asserts that old and new equal the model
/// ([`check`]); `after` names the fault in the message.
pub fn assert_drained_and_equal(sb: &Sandbox, proxies: &[&ProxyProcess], model: &Model, after: &str) {
    for p in proxies {
        crate::common::wait_for(
            "the proxies drained their mirrors",
            std::time::Duration::from_secs(60),
            || p.status()["mirror"]["drained"] == true,
        );
    }
    let differences = check(sb, model);
    assert!(
        differences.is_empty(),
        "{} difference(s) after {after}: {differences:#?}",
        differences.len()
    );
}

/// Old and new compared key by key (through `compare::differences`), and each key on old
/// against the model: every difference found, none expected.
pub fn check(sb: &Sandbox, model: &Model) -> Vec<String> {
    let keys: Vec<String> = model.keys().cloned().collect();
    let mut out = compare::differences(sb, &keys);
    let mut old = sb.source.conn();
    for (key, allowed) in model {
        let got = read(&mut old, key);
        if !allowed.contains(&got) {
            out.push(format!("{key}: old holds {got:?}, the model allows {allowed:?}"));
        }
    }
    out
}
