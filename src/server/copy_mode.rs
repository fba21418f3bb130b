//! How keys are copied between two servers: `DUMP`/`RESTORE` when the destination restores the
//! origin's payloads, else by type (the chunked writer of [`crate::backfill::bigkey`]).

use serde::{Deserialize, Serialize};

use super::facts::restores;
use crate::inspect::NodeSetReport;

/// `[backfill] copy_mode` in the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopySetting {
    /// `DUMP`/`RESTORE` when the target restores the source's payloads, else by type.
    #[default]
    Auto,
    /// Always `DUMP`/`RESTORE` (the `rdb-compatible` gate blocks when the target cannot).
    Dump,
    /// Always by type, even where `RESTORE` would work.
    ByType,
}

/// How one direction copies keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// `PTTL` + `DUMP` read atomically, `RESTORE` on the other side (big keys by type).
    Dump,
    /// Every key by type in chunks into a temporary key, renamed onto the key.
    ByType,
}

/// The mode for one direction and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The mode.
    pub mode: CopyMode,
    /// Why, for `plan` and the backfill's first line: "RDB 11 → RDB 10: …".
    pub reason: String,
    /// Whether copying cannot work this way (forced `dump` across an incompatible pair): the
    /// `rdb-compatible` gate blocks.
    pub blocked: bool,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::Dump => "dump",
            CopyMode::ByType => "by-type",
        })
    }
}

/// The mode for copying from `from` to `to` under `setting`, from the RDB versions measured by
/// inspection (the highest on `from`, the lowest on `to`). `None` when a version is unknown and
/// the setting does not decide by itself.
pub fn choose(setting: CopySetting, from: &NodeSetReport, to: &NodeSetReport) -> Option<Choice> {
    choose_rdb(setting, from.max_rdb_version(), to.min_rdb_version())
}

/// [`choose`] from the RDB versions themselves.
pub fn choose_rdb(setting: CopySetting, from: Option<u16>, to: Option<u16>) -> Option<Choice> {
    let versions = match (from, to) {
        (Some(a), Some(b)) => Some((a, b, restores(a, b))),
        _ => None,
    };
    let said = |why: &str| match versions {
        Some((a, b, _)) => format!("RDB {a} → RDB {b}: {why}"),
        None => why.to_string(),
    };
    let (mode, reason, blocked) = match (setting, versions) {
        (CopySetting::ByType, _) => (CopyMode::ByType, said("by type, as the plan says"), false),
        (CopySetting::Dump, Some((_, _, false))) => (
            CopyMode::Dump,
            said("the plan says dump, but the target cannot RESTORE these payloads"),
            true,
        ),
        (CopySetting::Dump, _) => (CopyMode::Dump, said("DUMP/RESTORE, as the plan says"), false),
        (CopySetting::Auto, None) => return None,
        (CopySetting::Auto, Some((_, _, true))) => (
            CopyMode::Dump,
            said("the target restores these payloads: DUMP/RESTORE"),
            false,
        ),
        (CopySetting::Auto, Some((_, _, false))) => (
            CopyMode::ByType,
            said("the target cannot RESTORE these payloads: copied by type"),
            false,
        ),
    };
    Some(Choice {
        mode,
        reason,
        blocked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_copies_by_type_only_when_restore_would_fail() {
        let c = choose_rdb(CopySetting::Auto, Some(11), Some(10)).unwrap();
        assert_eq!(c.mode, CopyMode::ByType);
        assert!(!c.blocked);
        assert!(
            c.reason.contains("RDB 11") && c.reason.contains("RDB 10"),
            "{}",
            c.reason
        );
        assert_eq!(
            choose_rdb(CopySetting::Auto, Some(9), Some(10)).unwrap().mode,
            CopyMode::Dump
        );
        assert_eq!(
            choose_rdb(CopySetting::Auto, Some(12), Some(80)).unwrap().mode,
            CopyMode::ByType
        );
        assert_eq!(choose_rdb(CopySetting::Auto, None, Some(10)), None);
    }

    #[test]
    fn the_plan_can_force_either_mode() {
        assert_eq!(
            choose_rdb(CopySetting::ByType, None, None).unwrap().mode,
            CopyMode::ByType
        );
        assert_eq!(
            choose_rdb(CopySetting::ByType, Some(9), Some(10)).unwrap().mode,
            CopyMode::ByType
        );
        let forced = choose_rdb(CopySetting::Dump, Some(11), Some(10)).unwrap();
        assert_eq!(forced.mode, CopyMode::Dump);
        assert!(forced.blocked);
        assert!(!choose_rdb(CopySetting::Dump, None, None).unwrap().blocked);
    }
}
