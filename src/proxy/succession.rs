//! One proxy id, two processes: the report field during a restart.
//!
//! Reports are one field per proxy id in the reports hash (design §5), the last write wins. While
//! a restarted proxy and its predecessor both run under one id, sharing the field would let the
//! CLI read one process's ack (say, `drained`) while the other still holds writes. So the field
//! has one owner: a process that starts while a live report holds its id reports under
//! `ID~PID` (a proxy of its own for the acks and the fence, which must ack like any other) until
//! the predecessor's report is gone (it removes it when it stops cleanly, [`Succession::retire`])
//! or older than `heartbeat_timeout` (it died); then it takes the id and removes `ID~PID`.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cluster::Router;
use crate::report::{self, reports_key};

/// The field this process reports under, and whether it still waits for the id.
pub struct Succession {
    router: Router,
    id: String,
    migration: String,
    timeout: Duration,
    field: RwLock<String>,
    waiting: AtomicBool,
}

impl Succession {
    /// Reports under `id` unless a live report already holds it (a predecessor still running).
    /// `router` is a connection of its own to the target.
    pub async fn claim(router: Router, migration: &str, id: &str, timeout: Duration) -> Succession {
        let succession = Succession {
            router,
            id: id.to_string(),
            migration: migration.to_string(),
            timeout,
            field: RwLock::new(id.to_string()),
            waiting: AtomicBool::new(false),
        };
        if succession.id_held().await {
            let field = format!("{id}~{}", std::process::id());
            eprintln!(
                "cachemig proxy {id}: a live process reports as {id}; reporting as {field} until it stops"
            );
            *succession.field.write().expect("not poisoned") = field;
            succession.waiting.store(true, Ordering::SeqCst);
        }
        succession
    }

    /// Whether a live report (per the reports master's clock) holds this id. An unreadable hash
    /// counts as held: waiting a heartbeat longer is safe, sharing the field is not.
    pub async fn id_held(&self) -> bool {
        let Ok((now, fields)) = report::read_all(&self.router, &self.migration).await else {
            return true;
        };
        fields.iter().any(|f| match f {
            Ok(r) => r.id == self.id && r.age_ms(now) <= self.timeout.as_millis() as u64,
            Err((field, _)) => *field == self.id,
        })
    }

    /// The field to report under now.
    pub fn field(&self) -> String {
        self.field.read().expect("not poisoned").clone()
    }

    /// Before each heartbeat: takes the id over once the predecessor's report is gone or stale.
    pub async fn tick(&self) {
        if !self.waiting.load(Ordering::SeqCst) || self.id_held().await {
            return;
        }
        let interim = self.field();
        *self.field.write().expect("not poisoned") = self.id.clone();
        self.waiting.store(false, Ordering::SeqCst);
        // The report under the id is written right after this; the interim one would linger
        // as "missing" for the CLI until the hash expires.
        if let Err(e) = self.remove(&interim).await {
            tracing::warn!("removing the interim report {interim}: {e}");
        }
        eprintln!(
            "cachemig proxy {}: the predecessor stopped; reporting as {}",
            self.id, self.id
        );
    }

    /// At a clean stop: removes this process's report, so a successor takes the id at once (and
    /// the CLI does not wait for a stopped proxy's report to age out).
    pub async fn retire(&self) -> redis::RedisResult<()> {
        self.remove(&self.field()).await
    }

    async fn remove(&self, field: &str) -> redis::RedisResult<()> {
        let key = reports_key(&self.migration);
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(&key).arg(field);
        self.router.query(key.as_bytes(), hdel).await.map(drop)
    }
}
