//! The keys loaded into the old Redis before the walk: strings, hashes, lists, sets, sorted sets
//! and streams, a third of each with a TTL. Each key's content follows from its number, so the
//! readers can check every value they read without keeping a copy.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

/// Every key the demo touches starts with this; the plan migrates `demo:*`.
pub const PREFIX: &str = "demo:";
/// Keys sent per pipeline round trip.
const BATCH: u64 = 1000;

/// The loaded key number `i`.
pub fn key(i: u64) -> String {
    format!("{PREFIX}seed:{i}")
}

/// What kind of value key `i` holds (its number modulo 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SET.
    String,
    /// HSET of three fields.
    Hash,
    /// RPUSH of three items.
    List,
    /// SADD of three members.
    Set,
    /// ZADD of two members.
    SortedSet,
    /// XADD of two entries.
    Stream,
}

/// The kind of key `i`.
pub fn kind(i: u64) -> Kind {
    match i % 6 {
        0 => Kind::String,
        1 => Kind::Hash,
        2 => Kind::List,
        3 => Kind::Set,
        4 => Kind::SortedSet,
        _ => Kind::Stream,
    }
}

/// The value a reader expects from a cheap read of key `i` (see `load::read_seeded`).
pub fn marker(i: u64) -> String {
    format!("v{i}")
}

/// Adds the commands that create key `i` to `pipe`.
fn create(pipe: &mut redis::Pipeline, i: u64) {
    let (k, v) = (key(i), marker(i));
    match kind(i) {
        Kind::String => pipe.set(&k, &v),
        Kind::Hash => pipe.hset_multiple(&k, &[("f0", v.as_str()), ("f1", "x"), ("f2", "y")]),
        Kind::List => pipe.rpush(&k, &[v.as_str(), "b", "c"]),
        Kind::Set => pipe.sadd(&k, &[v.as_str(), "n", "o"]),
        Kind::SortedSet => pipe.zadd_multiple(&k, &[(1, "a"), (2, v.as_str())]),
        // Explicit ids, so the entries are the same on every run.
        Kind::Stream => pipe
            .cmd("XADD")
            .arg(&k)
            .arg("1-1")
            .arg("f")
            .arg(&v)
            .cmd("XADD")
            .arg(&k)
            .arg("2-1")
            .arg("g")
            .arg("2"),
    }
    .ignore();
    // A third of every kind expires, far enough ahead that no key expires during the demo.
    if (i / 6).is_multiple_of(3) {
        pipe.expire(&k, 3600 + (i % 600) as i64).ignore();
    }
}

/// Loads keys `0..n` into the Redis on `port`, pipelined, with a progress bar.
pub fn load(port: u16, n: u64) -> anyhow::Result<()> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .context("connecting to the old Redis to load keys")?;
    // Named like cachemig's own connections: not a writer that bypasses the proxies.
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("cachemig-demo-seed")
        .exec(&mut conn)?;
    let bar = ProgressBar::new(n).with_style(
        ProgressStyle::with_template("  loading {bar:30} {pos}/{len} keys ({per_sec}, {eta} left)")
            .expect("valid template"),
    );
    let mut start = 0;
    while start < n {
        let end = (start + BATCH).min(n);
        let mut pipe = redis::pipe();
        (start..end).for_each(|i| create(&mut pipe, i));
        pipe.exec(&mut conn).context("loading keys into the old Redis")?;
        bar.set_position(end);
        start = end;
    }
    bar.finish_and_clear();
    Ok(())
}
