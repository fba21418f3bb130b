//! A key's value and TTL, read atomically from the origin: the [`Snapshot`], when it was read
//! ([`ReadWindow`]), and the reads themselves (one script call per key, or MULTI/EXEC when the
//! origin refuses scripts).

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{RedisError, RedisResult, Value};

/// A key's value and TTL read atomically from the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// The key does not exist (or expired before it could be read).
    Absent,
    /// The key exists.
    Present {
        /// Remaining TTL in milliseconds; `None` means no expiry.
        ttl_ms: Option<u64>,
        /// The DUMP payload (value + RDB version + CRC64).
        payload: Vec<u8>,
    },
}

impl Snapshot {
    /// Builds a snapshot from the PTTL and DUMP replies of one MULTI/EXEC.
    ///
    /// PTTL −2 means gone; −1 means no expiry; 0 means it expires this millisecond, which we
    /// treat as gone, because `RESTORE K 0` would create the key *without* an expiry.
    pub fn from_replies(pttl: i64, dump: Option<Vec<u8>>) -> Snapshot {
        match (pttl, dump) {
            (_, None) | (-2, _) => Snapshot::Absent,
            (t, _) if t == 0 || t < -2 => Snapshot::Absent,
            (-1, Some(payload)) => Snapshot::Present {
                ttl_ms: None,
                payload,
            },
            (t, Some(payload)) => Snapshot::Present {
                ttl_ms: Some(t as u64),
                payload,
            },
        }
    }

    /// Whether `self`, read during `read`, and `other`, read during `other_read`, hold the same
    /// value and the same absolute expiry, within `tolerance`.
    ///
    /// A relative TTL keeps shrinking, so expiries are compared as instants: the origin
    /// evaluated PTTL somewhere inside the read's window, so the expiry lies in
    /// `[sent + ttl, received + ttl]`. Two reads agree when their intervals are at most
    /// `tolerance` apart: a slow reply widens its interval and cannot make an unchanged expiry
    /// look moved.
    pub fn same_state(
        &self,
        read: ReadWindow,
        other: &Snapshot,
        other_read: ReadWindow,
        tolerance: Duration,
    ) -> bool {
        match (self, other) {
            (Snapshot::Absent, Snapshot::Absent) => true,
            (
                Snapshot::Present {
                    ttl_ms: a,
                    payload: p,
                },
                Snapshot::Present {
                    ttl_ms: b,
                    payload: q,
                },
            ) => {
                p == q
                    && match (a, b) {
                        (None, None) => true,
                        (Some(a), Some(b)) => {
                            let base = read.sent.min(other_read.sent);
                            let (lo1, hi1) = read.expiry_ns(base, *a);
                            let (lo2, hi2) = other_read.expiry_ns(base, *b);
                            let gap = (lo2 - hi1).max(lo1 - hi2).max(0);
                            gap <= tolerance.as_nanos() as i128
                        }
                        _ => false,
                    }
            }
            _ => false,
        }
    }

    /// The snapshot `elapsed` after it was read: its TTL shortened by that much, and gone if the
    /// TTL ran out meanwhile (so a copy never outlives the origin by the time it waited).
    pub fn aged(self, elapsed: std::time::Duration) -> Snapshot {
        match self {
            Snapshot::Present {
                ttl_ms: Some(t),
                payload,
            } => {
                let left = t.saturating_sub(elapsed.as_millis() as u64);
                if left == 0 {
                    Snapshot::Absent
                } else {
                    Snapshot::Present {
                        ttl_ms: Some(left),
                        payload,
                    }
                }
            }
            other => other,
        }
    }

    /// The payload size in bytes (0 when absent).
    pub fn size(&self) -> usize {
        match self {
            Snapshot::Absent => 0,
            Snapshot::Present { payload, .. } => payload.len(),
        }
    }
}

/// When a snapshot was read, on this process's monotonic clock: the origin evaluated it
/// somewhere between `sent` and `received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWindow {
    /// Just before the read was sent.
    pub sent: Instant,
    /// Just after its reply arrived.
    pub received: Instant,
}

impl ReadWindow {
    /// A read known only to describe the origin as of `at` (a caller's snapshot, already aged
    /// to that instant).
    pub fn at(at: Instant) -> ReadWindow {
        ReadWindow {
            sent: at,
            received: at,
        }
    }

    /// The interval, in nanoseconds after `base`, that holds the expiry of a key read in this
    /// window with `ttl_ms` left.
    fn expiry_ns(self, base: Instant, ttl_ms: u64) -> (i128, i128) {
        let ttl = ttl_ms as i128 * 1_000_000;
        let since = |t: Instant| t.saturating_duration_since(base).as_nanos() as i128;
        (since(self.sent) + ttl, since(self.received) + ttl)
    }
}

/// How far apart two reads of the origin may put its absolute expiry and still count as the
/// same state: 1 s. `verify --repair` uses it to tell a key written again since its repair (a
/// hot key: the difference is its later writes on their way through the mirror) from a repair
/// that did not stick.
///
/// - Read latency does not eat into it: each read is bracketed by a [`ReadWindow`], so this only
///   absorbs PTTL's millisecond truncation and clock steps on the origin.
/// - It equals the smallest TTL difference `verify` reports
///   ([`crate::verify::TTL_TOLERANCE_MS`]).
/// - A key whose expiry is refreshed on every request (a sliding session: `EXPIRE k 1800` per
///   hit) moves its expiry by the time between requests; within 1 s that counts as unchanged.
pub const EXPIRY_TOLERANCE: Duration = Duration::from_millis(crate::verify::TTL_TOLERANCE_MS);

/// A pipeline-ready MULTI / PTTL / DUMP / EXEC for `key`; its one reply is `[pttl, dump]`.
pub fn snapshot_pipeline(pipe: &mut redis::Pipeline, key: &[u8]) {
    pipe.cmd("MULTI").ignore();
    pipe.cmd("PTTL").arg(key).ignore();
    pipe.cmd("DUMP").arg(key).ignore();
    pipe.cmd("EXEC");
}

/// Decodes the EXEC reply `[pttl, dump]` built by [`snapshot_pipeline`].
pub fn decode_snapshot(value: Value) -> RedisResult<Snapshot> {
    let (pttl, dump): (i64, Option<Vec<u8>>) = redis::from_redis_value(value)?;
    Ok(Snapshot::from_replies(pttl, dump))
}

/// PTTL and DUMP of `KEYS[1]` in one atomic call: one command per key on the origin instead of
/// the four of MULTI/PTTL/DUMP/EXEC, which matters when the origin is the bottleneck.
const SNAPSHOT_LUA: &str = "return {redis.call('PTTL', KEYS[1]), redis.call('DUMP', KEYS[1])}";

/// [`SNAPSHOT_LUA`] with its SHA-1 computed once (the `redis` crate hashes on every `new`).
static SNAPSHOT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SNAPSHOT_LUA));

/// The `EVALSHA` that reads `key`'s snapshot (its reply decodes with [`decode_snapshot`]); it
/// fails with NOSCRIPT until the script is loaded, which [`read_many`] does.
pub fn snapshot_evalsha(key: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SNAPSHOT_SCRIPT.get_hash()).arg(1).arg(key);
    cmd
}

/// Whether `e` says the origin will not run the snapshot script at all (an ACL without
/// `@scripting`, `EVALSHA` renamed away, a NOSCRIPT right after loading it) rather than that
/// this one attempt failed (a lost connection must not switch scripts off for the whole run).
pub(super) fn refuses_scripts(e: &RedisError) -> bool {
    let text = e.to_string();
    match e.code() {
        Some("NOPERM" | "NOSCRIPT") => true,
        Some("ERR") => text.contains("unknown command") || text.contains("scripting"),
        _ => false,
    }
}

/// Whether the origin runs the snapshot script; shared by every batch of a run.
#[derive(Debug, Default)]
pub struct ScriptSupport {
    /// Set once the origin refused scripts (ACL, disabled scripting): MULTI/EXEC from then on.
    refused: std::sync::atomic::AtomicBool,
}

impl ScriptSupport {
    /// Whether the origin refused the snapshot script (MULTI/EXEC is used instead).
    pub fn refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that the server refused scripts, for the rest of the run.
    pub(crate) fn refuse(&self) {
        self.refused.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Atomic snapshots of `keys`, pipelined: EVALSHA of [`SNAPSHOT_LUA`] per key, loading the script
/// on NOSCRIPT, or MULTI/PTTL/DUMP/EXEC per key when the origin refuses scripts.
pub async fn read_many<C: ConnectionLike + Clone>(
    origin: &C,
    keys: &[Vec<u8>],
    scripts: &ScriptSupport,
) -> RedisResult<Vec<Snapshot>> {
    let calls = keys.iter().map(|key| snapshot_evalsha(key)).collect();
    if let Some(replies) = run_script(origin, SNAPSHOT_LUA, calls, scripts).await? {
        return replies.into_iter().map(decode_snapshot).collect();
    }
    let mut pipe = redis::pipe();
    for key in keys {
        snapshot_pipeline(&mut pipe, key);
    }
    let replies: Vec<Value> = pipe.query_async(&mut origin.clone()).await?;
    replies.into_iter().map(decode_snapshot).collect()
}

/// Sends `calls` (`EVALSHA`s of `body`) as one pipeline, loading `body` on NOSCRIPT and trying
/// once more; `None` when the origin refuses scripts (noted in `scripts` for the whole run), or
/// when they were refused before.
pub(crate) async fn run_script<C: ConnectionLike + Clone>(
    origin: &C,
    body: &str,
    calls: Vec<redis::Cmd>,
    scripts: &ScriptSupport,
) -> RedisResult<Option<Vec<Value>>> {
    if scripts.refused() {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.add_command(call);
    }
    for _ in 0..2 {
        match pipe.query_async::<Vec<Value>>(&mut origin.clone()).await {
            Ok(replies) => return Ok(Some(replies)),
            Err(e) if e.code() == Some("NOSCRIPT") => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(body)
                    .query_async::<String>(&mut origin.clone())
                    .await?;
            }
            Err(e) if refuses_scripts(&e) => break,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!("the origin refuses the snapshot script; using MULTI/EXEC");
    scripts.refuse();
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pttl_edge_cases() {
        let p = || Some(b"x".to_vec());
        assert_eq!(Snapshot::from_replies(-2, None), Snapshot::Absent);
        assert_eq!(
            Snapshot::from_replies(-1, p()),
            Snapshot::Present {
                ttl_ms: None,
                payload: b"x".to_vec()
            }
        );
        assert_eq!(
            Snapshot::from_replies(0, p()),
            Snapshot::Absent,
            "PTTL 0 must not become 'no expiry'"
        );
        assert_eq!(
            Snapshot::from_replies(1500, p()),
            Snapshot::Present {
                ttl_ms: Some(1500),
                payload: b"x".to_vec()
            }
        );
        assert_eq!(
            Snapshot::from_replies(1500, None),
            Snapshot::Absent,
            "expired between PTTL and DUMP"
        );
    }

    #[test]
    fn ageing_shortens_the_ttl_and_drops_what_expired() {
        let with = |t| Snapshot::Present {
            ttl_ms: t,
            payload: vec![1],
        };
        let ms = std::time::Duration::from_millis;
        assert_eq!(with(Some(100)).aged(ms(30)), with(Some(70)));
        assert_eq!(with(Some(100)).aged(ms(100)), Snapshot::Absent);
        assert_eq!(with(None).aged(ms(1000)), with(None));
    }

    #[test]
    fn same_state_compares_values_persistence_and_absolute_expiry() {
        let with = |t: Option<u64>, v: u8| Snapshot::Present {
            ttl_ms: t,
            payload: vec![v],
        };
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let at = |offset: u64| ReadWindow::at(t0 + ms(offset));
        let tol = EXPIRY_TOLERANCE;
        // Unchanged: read 5 s apart, the TTL 5 s shorter: the same expiry.
        assert!(with(Some(86_400_000), 1).same_state(at(0), &with(Some(86_395_000), 1), at(5_000), tol));
        // The value, or having an expiry at all, differs.
        assert!(!with(Some(100), 1).same_state(at(0), &with(Some(100), 2), at(0), tol));
        assert!(!with(Some(100), 1).same_state(at(0), &with(None, 1), at(0), tol));
        assert!(!with(None, 1).same_state(at(0), &Snapshot::Absent, at(0), tol));
        assert!(Snapshot::Absent.same_state(at(0), &Snapshot::Absent, at(9), tol));
        // A stale short TTL after EXPIRE k 86400: a different expiry, in either direction.
        assert!(!with(Some(5_000), 1).same_state(at(0), &with(Some(86_400_000), 1), at(10), tol));
        assert!(!with(Some(86_400_000), 1).same_state(at(0), &with(Some(5_000), 1), at(10), tol));
        // Within the tolerance (a sliding expiry refreshed 400 ms later) is the same; beyond is not.
        assert!(with(Some(1_800_000), 1).same_state(at(0), &with(Some(1_800_000), 1), at(400), tol));
        assert!(!with(Some(1_800_000), 1).same_state(at(0), &with(Some(1_800_000), 1), at(1_500), tol));
    }

    #[test]
    fn a_slow_read_does_not_make_an_unchanged_expiry_look_moved() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let key = |t| Snapshot::Present {
            ttl_ms: Some(t),
            payload: vec![1],
        };
        // The first read took 3 s: PTTL ran somewhere in it (here at its very start, 60 000 ms
        // left); the re-check 1 ms after that reply sees 57 000 ms left, the same expiry.
        let slow = ReadWindow {
            sent: t0,
            received: t0 + ms(3_000),
        };
        let quick = ReadWindow::at(t0 + ms(3_000));
        assert!(key(60_000).same_state(slow, &key(57_000), quick, EXPIRY_TOLERANCE));
        // Had the first read been taken as of its reply, the expiries would be 3 s apart.
        let as_of_reply = ReadWindow::at(t0 + ms(3_000));
        assert!(!key(60_000).same_state(as_of_reply, &key(57_000), quick, EXPIRY_TOLERANCE));
    }
}
