//! The rows' shared writer and model: SETs of fresh keys through the proxies, each recorded once
//! acknowledged, and the end-of-row comparison of old and new against that model. (A plain SET
//! writer on its own connections: `common::load::Writers` retries dropped connections and mixes
//! INCR/RPUSH/GET, `load.rs` here keeps every possible outcome of a write cut by a kill.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Commands;

use crate::common::load;
use crate::common::proxy::ProxyProcess;
use crate::common::sandbox::Sandbox;

/// Key → the value of its last acknowledged write.
pub type Model = BTreeMap<String, String>;

/// A writer that SETs `token:<tag>:<n>` through each proxy in turn, every 5 ms, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Model>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Writer {
    /// Starts writing through `proxies`.
    pub fn start(proxies: &[&ProxyProcess], tag: &str) -> Writer {
        let mut conns: Vec<redis::Connection> = proxies.iter().map(|p| p.conn()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stopping, errs, tag) = (stop.clone(), errors.clone(), tag.to_string());
        let thread = std::thread::spawn(move || {
            let mut model = Model::new();
            let mut n = 0usize;
            while !stopping.load(Ordering::Relaxed) {
                let (key, value) = (format!("token:{tag}:{}", n % 500), format!("v{n}"));
                let which = n % conns.len();
                let conn = &mut conns[which];
                match conn.set::<_, _, ()>(&key, &value) {
                    Ok(()) => {
                        model.insert(key, value);
                    }
                    Err(e) => errs.lock().unwrap().push(format!("SET {key}: {e}")),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            model
        });
        Writer {
            stop,
            thread: Some(thread),
            errors,
        }
    }

    /// Stops; the model of what was acknowledged, and the errors the client saw.
    pub fn finish(mut self) -> (Model, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let model = self.thread.take().unwrap().join().expect("the writer panicked");
        let errors = self.errors.lock().unwrap().clone();
        (model, errors)
    }
}

/// Old and new both hold, for every key of `model`, the value of its last acknowledged write
/// (compared as `common::load::differences` compares every row's model).
pub fn assert_sides_equal(sb: &Sandbox, model: &Model) {
    let texts: load::Model = model
        .iter()
        .map(|(key, value)| (key.clone(), load::Value::Text(value.clone())))
        .collect();
    let wrong = load::differences(sb, &texts);
    assert!(
        wrong.is_empty(),
        "{} difference(s) from the model of {} key(s): {:?}",
        wrong.len(),
        model.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// GETs every key of `model` through each proxy: shadow-read samples.
pub fn read_through(proxies: &[&ProxyProcess], keys: &[String]) {
    for p in proxies {
        let mut conn = p.conn();
        for key in keys {
            let _: Option<String> = conn.get(key).unwrap();
        }
    }
}
