//! Telling a key written again since its repair from a repair that did not stick.
//!
//! A key that still differs after a repair that landed is only a failure if the write primary
//! still holds what the repair wrote *and held it all along*: otherwise the difference is the
//! later writes on their way through the mirror (or, before the mirror is on, not mirrored at
//! all). Redis keeps no version per key, so "all along" can only be sampled, and one sample
//! taken after the re-check is fooled by a key that came back to the repaired state: a repair
//! that read the key just deleted, a `SET` the re-check saw on the primary only, then another
//! `DEL` before the sample — absent again, "unchanged" (the unresolved key of a `cachemig demo`
//! run; an `INCR` counter deleted and counted up again to the same number does the same). So the
//! primary is sampled twice: alongside the re-check, so the state the re-check compared is a
//! witness too, and once more after it. Either one in another state than the repair wrote
//! means the key was written since. (A key that leaves and comes back to that state entirely
//! between the repair's read and the re-check, *and* whose last write's mirror has not landed
//! by the re-check, still looks unchanged: two writes and a mirror lag inside a few
//! milliseconds.)

use std::time::Instant;

use super::side::Side;
use crate::keysync::{self, EXPIRY_TOLERANCE, Landed, ReadWindow, Snapshot};

/// The primary's state of one key, read atomically, and when.
pub(super) type Sample = Option<(Snapshot, ReadWindow)>;

/// Reads `key` on `origin` atomically (`PTTL` + `DUMP`); `None` when it cannot be read.
pub(super) async fn sample(origin: &Side, key: &[u8], scripts: &keysync::ScriptSupport) -> Sample {
    let conn = origin.node_conn(key).await;
    let sent = Instant::now();
    let mut read = keysync::read_many(&conn, &[key.to_vec()], scripts).await.ok()?;
    let window = ReadWindow {
        sent,
        received: Instant::now(),
    };
    Some((read.pop().unwrap_or(Snapshot::Absent), window))
}

/// [`sample`] of every key, concurrently.
pub(super) async fn sample_all(
    origin: &Side,
    keys: &[Vec<u8>],
    scripts: &keysync::ScriptSupport,
) -> Vec<Sample> {
    futures::future::join_all(keys.iter().map(|key| sample(origin, key, scripts))).await
}

/// Whether `sample` shows the primary no longer in the state `landed` wrote (value, or expiry
/// beyond [`EXPIRY_TOLERANCE`]). A key that could not be read is no witness.
pub(super) fn moved(landed: &Landed, sample: &Sample) -> bool {
    sample.as_ref().is_some_and(|(now, window)| {
        !landed
            .snapshot
            .same_state(landed.read, now, *window, EXPIRY_TOLERANCE)
    })
}
