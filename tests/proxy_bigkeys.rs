//! Issue 9, big keys in the mirror: a key above `big_key_bytes` is mirrored by the chunked,
//! type-based copy under the key's lease, not by one DUMP/RESTORE — which stalls both servers
//! and every client sharing the proxy's connection, and cannot restore a payload over 512 MB.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::{ProxyProcess, command_calls, set_phase};
use common::sandbox::Sandbox;
use common::wait_for;
use redis::Commands;

const BIG: &str = "token:big";
const FIELDS: usize = 100_000;
const FIELD_BYTES: usize = 2_000;

/// The value of field `i` as loaded.
fn field_value(i: usize) -> String {
    let head = format!("v{i}:");
    format!("{head}{}", "x".repeat(FIELD_BYTES - head.len()))
}

/// Loads the 200 MB hash on old, in pipelines of 1,000 fields.
fn load_big_hash(sb: &Sandbox) {
    let mut old = sb.source.conn();
    for batch in 0..FIELDS / 1000 {
        let mut pipe = redis::pipe();
        for i in batch * 1000..(batch + 1) * 1000 {
            pipe.hset(BIG, format!("f{i}"), field_value(i)).ignore();
        }
        let _: () = pipe.query(&mut old).unwrap();
    }
}

/// What the small clients did: the model of acknowledged SETs, the errors, the operations.
type Outcome = (BTreeMap<String, String>, Vec<String>, u64);

/// Clients writing and reading small keys through the proxy until told to stop: every
/// acknowledged SET goes into the model, every error is kept.
struct SmallClients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Outcome>>,
}

impl SmallClients {
    fn start(proxy: &ProxyProcess, n: usize) -> SmallClients {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|t| {
                let mut conn = proxy.conn();
                conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut model, mut errors, mut ops) = (BTreeMap::new(), Vec::new(), 0u64);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("token:small:{t}:{}", i % 50);
                        let value = format!("{t}-{i}");
                        match conn.set::<_, _, ()>(&key, &value) {
                            Ok(()) => {
                                model.insert(key.clone(), value);
                            }
                            Err(e) => errors.push(format!("SET {key}: {e}")),
                        }
                        if let Err(e) = conn.get::<_, Option<String>>(&key) {
                            errors.push(format!("GET {key}: {e}"));
                        }
                        ops += 2;
                        i += 1;
                    }
                    (model, errors, ops)
                })
            })
            .collect();
        SmallClients { stop, threads }
    }

    fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = (BTreeMap::new(), Vec::new(), 0);
        for t in self.threads {
            let (model, errors, ops) = t.join().unwrap();
            all.0.extend(model);
            all.1.extend(errors);
            all.2 += ops;
        }
        all
    }
}

#[test]
fn a_200_mb_key_is_mirrored_in_chunks_while_other_clients_run_without_an_error() {
    let sb = Sandbox::start();
    load_big_hash(&sb);
    let proxy = ProxyProcess::start(&sb, "p1");
    set_phase(&sb.flag_path(), "async-dual-write", 1, false, 0.0);
    proxy.wait_generation(1);
    let mut old = sb.source.conn();
    let hscans_before = command_calls(&mut old, "hscan");

    let clients = SmallClients::start(&proxy, 4);
    // Writes to the big key while its copies run: each queues another sync, which copies again.
    let model_big: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut writer = proxy.conn();
    for round in 0..4 {
        let field = format!("f{}", round * 7919 % FIELDS);
        let value = format!("changed-{round}");
        let _: () = writer.hset(BIG, &field, &value).unwrap();
        model_big.lock().unwrap().insert(field, value);
        std::thread::sleep(Duration::from_millis(150));
    }
    // The small keys' writers never stop meanwhile, so the mirror is never idle: wait for the
    // big key itself, then stop them and let the mirror drain.
    wait_for("the big key mirrored", Duration::from_secs(180), || {
        let mut new = sb.target.cluster_conn();
        let len: usize = new.hlen(BIG).unwrap();
        let last: Option<String> = new.hget(BIG, format!("f{}", 3 * 7919 % FIELDS)).unwrap();
        len == FIELDS && last.as_deref() == Some("changed-3")
    });
    let (model, errors, ops) = clients.finish();
    wait_for("the mirror drained", Duration::from_secs(60), || {
        proxy.status()["mirror"]["drained"] == true
    });
    assert!(
        errors.is_empty(),
        "{} of {ops} small-key operations failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ops > 0);

    // The chunked path ran: old served HSCANs (one per chunk), no whole-key DUMP of 200 MB.
    let chunks = command_calls(&mut old, "hscan") - hscans_before;
    assert!(
        chunks >= 100,
        "only {chunks} HSCAN chunks: the big key was not copied in chunks"
    );
    let counters = &proxy.status()["counters_since_generation"];
    assert_eq!(counters["mirror_errors"], 0, "{counters}");

    // Old and new against the model: every small key, and the big key field by field.
    let mut new = sb.target.cluster_conn();
    for (key, value) in &model {
        let on_old: Option<String> = old.get(key).unwrap();
        let on_new: Option<String> = new.get(key).unwrap();
        assert_eq!(on_old.as_deref(), Some(value.as_str()), "old {key}");
        assert_eq!(on_new.as_deref(), Some(value.as_str()), "new {key}");
    }
    let changed = model_big.lock().unwrap().clone();
    for batch in 0..FIELDS / 1000 {
        let fields: Vec<String> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| format!("f{i}"))
            .collect();
        let on_old: Vec<String> = redis::cmd("HMGET").arg(BIG).arg(&fields).query(&mut old).unwrap();
        let on_new: Vec<String> = redis::cmd("HMGET").arg(BIG).arg(&fields).query(&mut new).unwrap();
        for (j, field) in fields.iter().enumerate() {
            let i = batch * 1000 + j;
            let want = changed.get(field).cloned().unwrap_or_else(|| field_value(i));
            assert_eq!(on_old[j], want, "old {BIG} {field}");
            assert_eq!(on_new[j], want, "new {BIG} {field}");
        }
    }
    // No temporary key of a chunked copy is left behind.
    let temps: Vec<String> = sb
        .target
        .masters()
        .iter()
        .flat_map(|m| m.query::<Vec<String>>(&["KEYS", "__cachemig:tmp:*"]))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}
