//! The rules of the lock, as the scripts apply them, in Rust for the `WATCH` fallback: when a
//! look takes the lease, is covered or waits, and when a commit lands.

use super::{Acquire, Baseline};

/// A contention record as read for a `WATCH` transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waits {
    /// `n`: landings since the record was made.
    pub landed: i64,
    /// `l`: the last lander's token.
    pub last: Vec<u8>,
    /// `e`: the epoch (the creator's token).
    pub epoch: Vec<u8>,
}

/// What a look at a busy or free lease does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// Acquired, covered or busy.
    pub outcome: Acquire,
    /// Busy and no record yet: make one (epoch = this token, no landings).
    pub create_record: bool,
}

/// The look rule (also the script's), for the `WATCH` path: `holder` is the lock's value,
/// `waits` the record, `base` what this sync saw when it last found the lease busy.
pub fn decide_look(
    holder: Option<&[u8]>,
    waits: Option<&Waits>,
    token: &[u8],
    base: Option<&Baseline>,
) -> Look {
    if let (Some(w), Some(b)) = (waits, base)
        && w.epoch == b.epoch
        && (w.landed >= b.landed + 2 || (w.landed == b.landed + 1 && w.last != b.holder))
    {
        return Look {
            outcome: Acquire::Covered,
            create_record: false,
        };
    }
    let Some(holder) = holder else {
        return Look {
            outcome: Acquire::Acquired,
            create_record: false,
        };
    };
    let (epoch, landed) = match waits {
        Some(w) => (w.epoch.clone(), w.landed),
        None => (token.to_vec(), 0),
    };
    Look {
        outcome: Acquire::Busy(Baseline {
            epoch,
            landed,
            holder: holder.to_vec(),
        }),
        create_record: waits.is_none(),
    }
}

/// The commit rule, for the `WATCH` path: `Err(what we saw)` when the lease is not `token`'s;
/// `Ok(count)` when it lands, `count` telling whether a record exists to count the landing in.
pub fn decide_commit(
    holder: Option<&[u8]>,
    waits: Option<&Waits>,
    token: &[u8],
) -> Result<bool, Option<Baseline>> {
    if holder == Some(token) {
        return Ok(waits.is_some());
    }
    Err(waits.map(|w| Baseline {
        epoch: w.epoch.clone(),
        landed: w.landed,
        holder: holder.unwrap_or_default().to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(landed: i64, last: &str) -> Waits {
        Waits {
            landed,
            last: last.into(),
            epoch: b"E".to_vec(),
        }
    }

    fn base(landed: i64, holder: &str) -> Baseline {
        Baseline {
            epoch: b"E".to_vec(),
            landed,
            holder: holder.into(),
        }
    }

    fn outcome(holder: Option<&str>, w: Option<&Waits>, b: Option<&Baseline>) -> Acquire {
        decide_look(holder.map(str::as_bytes), w, b"t9", b).outcome
    }

    #[test]
    fn a_look_takes_a_free_lease_and_notes_a_held_one() {
        assert_eq!(outcome(None, None, None), Acquire::Acquired);
        assert_eq!(outcome(None, Some(&waits(3, "t0")), None), Acquire::Acquired);
        // Held, no record yet: one is made, with this sync's token as the epoch.
        let look = decide_look(Some(b"t0"), None, b"t9", None);
        assert!(look.create_record);
        assert_eq!(
            look.outcome,
            Acquire::Busy(Baseline {
                epoch: b"t9".to_vec(),
                landed: 0,
                holder: b"t0".to_vec()
            })
        );
        let look = decide_look(Some(b"t0"), Some(&waits(3, "x")), b"t9", None);
        assert!(!look.create_record);
        assert_eq!(look.outcome, Acquire::Busy(base(3, "t0")));
    }

    #[test]
    fn a_waiter_is_covered_only_by_a_round_that_started_after_it_looked() {
        // It saw t0 holding after 3 landings.
        let seen = base(3, "t0");
        // t0 landed (4th): t0 may have read before the waiter's write. Not covered; free → take.
        assert_eq!(
            outcome(None, Some(&waits(4, "t0")), Some(&seen)),
            Acquire::Acquired
        );
        // t0 lost its lease and t1, which took it later, landed: covered.
        assert_eq!(
            outcome(None, Some(&waits(4, "t1")), Some(&seen)),
            Acquire::Covered
        );
        // Two landings since: the second started after t0's tenure, so after the look.
        assert_eq!(
            outcome(Some("t2"), Some(&waits(5, "t1")), Some(&seen)),
            Acquire::Covered
        );
        // A new epoch (the record expired and was made again) says nothing about the old count.
        let mut other = waits(9, "t4");
        other.epoch = b"F".to_vec();
        assert!(matches!(
            outcome(Some("t5"), Some(&other), Some(&seen)),
            Acquire::Busy(b) if b.epoch == b"F"
        ));
    }

    #[test]
    fn commit_lands_only_for_the_holder_and_counts_when_someone_waits() {
        assert_eq!(decide_commit(Some(b"t1"), None, b"t1"), Ok(false));
        assert_eq!(decide_commit(Some(b"t1"), Some(&waits(3, "t0")), b"t1"), Ok(true));
        assert_eq!(
            decide_commit(Some(b"t2"), Some(&waits(3, "t0")), b"t1"),
            Err(Some(base(3, "t2")))
        );
        assert_eq!(
            decide_commit(None, Some(&waits(3, "t0")), b"t1"),
            Err(Some(base(3, "")))
        );
        assert_eq!(decide_commit(None, None, b"t1"), Err(None));
    }
}
