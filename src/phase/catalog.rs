//! Loading and querying the embedded phase catalog.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The catalog files, in phase order. A test checks that this list matches `phases/`.
const SOURCES: &[(&str, &str)] = &[
    ("0-planned.toml", include_str!("../../phases/0-planned.toml")),
    ("1-backfill.toml", include_str!("../../phases/1-backfill.toml")),
    (
        "2-async-dual-write.toml",
        include_str!("../../phases/2-async-dual-write.toml"),
    ),
    (
        "3-sync-dual-write.toml",
        include_str!("../../phases/3-sync-dual-write.toml"),
    ),
    (
        "4-shadow-read.toml",
        include_str!("../../phases/4-shadow-read.toml"),
    ),
    (
        "5-read-cutover.toml",
        include_str!("../../phases/5-read-cutover.toml"),
    ),
    (
        "6-write-stop.toml",
        include_str!("../../phases/6-write-stop.toml"),
    ),
    ("7-finalized.toml", include_str!("../../phases/7-finalized.toml")),
];

/// Which Redis a class of commands goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The Redis being migrated away from.
    Old,
    /// The Redis Cluster being migrated to.
    New,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Old => Side::New,
            Side::New => Side::Old,
        }
    }
}

/// How written keys are mirrored from the write side to the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    /// No mirroring.
    Off,
    /// Mirrored in the background; the client does not wait.
    Async,
    /// Mirrored before the client gets its reply.
    Sync,
}

/// What a phase does to data-plane routing. The mirror always flows from `write` to the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Where reads are served from.
    pub read: Side,
    /// Where application writes are applied first (the write primary).
    pub write: Side,
    /// Whether and how written keys are mirrored to the other side.
    pub mirror: MirrorMode,
    /// Whether a sample of reads is also sent to the other side and compared.
    pub shadow_read: bool,
    /// Whether proxies must hold new writes and drain their mirror (the primary-switch fence).
    pub fence: bool,
}

/// Displays a unit enum the way serde writes it in the catalog and the flag file.
macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
                f.write_str(text.trim_matches('"'))
            }
        }
    )*};
}

display_as_serde!(Side, MirrorMode, Action);

/// The data-moving action the CLI runs when a phase is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing runs.
    None,
    /// Bulk copy of the keyspace.
    Backfill,
    /// Verify and repair both ways once every proxy acked.
    CatchUp,
    /// The fenced switch of the write primary.
    FencedSwitch,
}

/// A gate threshold as written in the catalog or a plan: a number or a duration string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    /// A count or ratio.
    Number(f64),
    /// A duration such as `"10m"`.
    Duration(String),
}

/// One gate checked before a phase is entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Stable gate name, also used by `--skip-gate` and plan overrides.
    pub name: String,
    /// What the gate checks, for humans.
    pub description: String,
    /// The default threshold, when the gate has one.
    #[serde(default)]
    pub threshold: Option<Threshold>,
}

/// One phase of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Stable phase name (`backfill`, `read-cutover`, …).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// What runs on entry.
    pub action: Action,
    /// The phase a rollback from here goes to; `None` only for the first and the terminal phase.
    #[serde(default)]
    pub rollback: Option<String>,
    /// The terminal phase (`finalized`): entered only by `cachemig finalize`, never by `advance`,
    /// and never left (no rollback). At most one, the last.
    #[serde(default)]
    pub terminal: bool,
    /// Routing while this phase is in force.
    pub routing: Routing,
    /// Gates checked before entering this phase.
    #[serde(default)]
    pub gates: Vec<GateSpec>,
}

/// The ordered list of phases.
#[derive(Debug, Clone)]
pub struct Catalog {
    phases: Vec<PhaseSpec>,
}

impl Catalog {
    /// The catalog embedded in the binary. Panics only if the embedded files are broken, which
    /// the unit tests below rule out.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| Catalog::parse(SOURCES).expect("embedded phase catalog is valid"))
    }

    /// Parses catalog files given as (file name, contents), in order.
    fn parse(sources: &[(&str, &str)]) -> Result<Catalog, String> {
        let mut phases = Vec::new();
        for (file, text) in sources {
            let phase: PhaseSpec = toml::from_str(text).map_err(|e| format!("phases/{file}: {e}"))?;
            phases.push(phase);
        }
        let catalog = Catalog { phases };
        catalog.check()?;
        Ok(catalog)
    }

    /// Checks the invariants the state machine relies on.
    fn check(&self) -> Result<(), String> {
        for (i, phase) in self.phases.iter().enumerate() {
            if phase.terminal && i + 1 != self.phases.len() {
                return Err(format!("the terminal phase {} must be the last", phase.name));
            }
            // A terminal phase is never left: it has no rollback.
            let expected = i
                .checked_sub(1)
                .filter(|_| !phase.terminal)
                .map(|p| self.phases[p].name.as_str());
            if phase.rollback.as_deref() != expected {
                return Err(format!(
                    "phase {} rolls back to {:?}, expected the previous phase {:?}",
                    phase.name, phase.rollback, expected
                ));
            }
        }
        Ok(())
    }

    /// All phases in order.
    pub fn phases(&self) -> &[PhaseSpec] {
        &self.phases
    }

    /// The names of all phases in order.
    pub fn names(&self) -> Vec<&str> {
        self.phases.iter().map(|p| p.name.as_str()).collect()
    }

    /// The first phase (`planned`).
    pub fn first(&self) -> &PhaseSpec {
        &self.phases[0]
    }

    /// Looks a phase up by name.
    pub fn get(&self, name: &str) -> Option<&PhaseSpec> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The position of a phase in the order.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    /// The terminal phase (`finalized`), if the catalog has one.
    pub fn terminal(&self) -> Option<&PhaseSpec> {
        self.phases.last().filter(|p| p.terminal)
    }

    /// The phase after `name`, if any. After the last reversible phase this is the terminal
    /// phase, which only `cachemig finalize` enters (check [`PhaseSpec::terminal`]).
    pub fn next(&self, name: &str) -> Option<&PhaseSpec> {
        self.index_of(name).and_then(|i| self.phases.get(i + 1))
    }

    /// The phase a rollback from `name` goes to, if any.
    pub fn previous(&self, name: &str) -> Option<&PhaseSpec> {
        let phase = self.get(name)?;
        phase.rollback.as_deref().and_then(|r| self.get(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_eight_phases_in_order() {
        let names = Catalog::builtin().names();
        assert_eq!(
            names,
            [
                "planned",
                "backfill",
                "async-dual-write",
                "sync-dual-write",
                "shadow-read",
                "read-cutover",
                "write-stop",
                "finalized"
            ]
        );
        let c = Catalog::builtin();
        assert_eq!(c.terminal().unwrap().name, "finalized");
        assert!(c.phases().iter().filter(|p| p.terminal).count() == 1);
    }

    #[test]
    fn the_terminal_phase_has_no_rollback_and_no_fence_step() {
        let c = Catalog::builtin();
        let end = c.terminal().unwrap();
        assert!(c.previous(&end.name).is_none());
        assert!(c.next(&end.name).is_none());
        // Finalize keeps the write primary of write-stop, so the step needs no fence.
        assert_eq!(end.routing.write, c.get("write-stop").unwrap().routing.write);
        assert_eq!(end.routing.mirror, MirrorMode::Off);
        assert!(!end.routing.fence && !end.routing.shadow_read);
    }

    #[test]
    fn embedded_list_matches_phases_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/phases");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SOURCES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, embedded, "add new phases/ files to SOURCES");
    }

    #[test]
    fn next_and_previous_walk_the_order() {
        let c = Catalog::builtin();
        assert_eq!(c.next("planned").unwrap().name, "backfill");
        assert_eq!(c.previous("backfill").unwrap().name, "planned");
        assert!(c.previous("planned").is_none());
        assert_eq!(c.next("write-stop").unwrap().name, "finalized");
    }

    #[test]
    fn a_rollback_that_skips_a_phase_is_rejected() {
        let bad = [
            (
                "a.toml",
                "name='a'\ndescription=''\naction='none'\n[routing]\nread='old'\nwrite='old'\nmirror='off'\nshadow_read=false\nfence=false\n",
            ),
            (
                "b.toml",
                "name='b'\ndescription=''\naction='none'\nrollback='zzz'\n[routing]\nread='old'\nwrite='old'\nmirror='off'\nshadow_read=false\nfence=false\n",
            ),
        ];
        assert!(
            Catalog::parse(&bad)
                .unwrap_err()
                .contains("expected the previous phase")
        );
    }

    #[test]
    fn adjacent_phases_change_the_primary_only_between_read_cutover_and_write_stop() {
        // Design §1: any two adjacent phases must be safe together; only 5 <-> 6 switches the
        // write primary, and that step is fenced.
        let c = Catalog::builtin();
        for pair in c.phases().windows(2) {
            if pair[0].routing.write != pair[1].routing.write {
                assert_eq!(
                    (pair[0].name.as_str(), pair[1].name.as_str()),
                    ("read-cutover", "write-stop")
                );
                assert_eq!(pair[1].action, Action::FencedSwitch);
            }
        }
    }
}
