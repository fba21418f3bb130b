//! The flag document: its types, checksum, parsing and validation, and the diff between two.

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::FlagError;
use super::canonical::{CHECKSUM_KEY, checksum_of_value, parse_json};
use crate::phase::{Catalog, MirrorMode, PhaseSpec, Routing, Side};

/// The flag-file format this build writes and reads. A reader rejects any other value, so a
/// future incompatible layout can never be misread as routing.
pub const FORMAT: u32 = 1;

/// The flag file: which phase is in force and how the data plane must route.
///
/// Only the CLI writes it; proxies and client routers read it. Readers route by [`FlagRouting`],
/// never by the phase name, so a phase added later needs no reader change. Unknown fields are
/// tolerated on reading (a newer writer may add some) but are covered by the checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagFile {
    /// Format version; always [`FORMAT`] for files this build writes.
    pub format: u32,
    /// The migration name from the plan; lets a reader refuse a file meant for another migration.
    pub migration: String,
    /// Increases by at least one with every decision (advance, rollback, fence). Starts at 1;
    /// generation 0 means "no flag file": phase `planned`. Readers apply only higher generations.
    pub generation: u64,
    /// The phase in force, for humans and reports.
    pub phase: String,
    /// The routing in force.
    pub routing: FlagRouting,
    /// Lowercase hex SHA-256 of the plan file the decision was made with.
    pub plan_sha256: String,
    /// When the CLI wrote the file, UTC, RFC 3339 with seconds and `Z`. Not part of [`diff`].
    pub written_at: String,
    /// Lowercase hex SHA-256 of the RFC 8785 (JCS) form of the document without this key
    /// (see [`checksum_of`](super::checksum_of)).
    pub checksum: String,
}

/// How the data plane routes while a generation is in force.
///
/// The mirror always flows from the `write` side to the other side: `write = "old"` with
/// `mirror = "sync"` mirrors old → new; `write = "new"` with `mirror = "async"` is the reverse
/// mirror new → old that keeps rollback possible.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlagRouting {
    /// Where reads are served from.
    pub read: Side,
    /// Where application writes are applied first (the write primary).
    pub write: Side,
    /// Whether and how written keys are mirrored from `write` to the other side.
    pub mirror: MirrorMode,
    /// Shadow reads: a sample of reads is also sent to the side not read from and compared.
    /// `null` in the file when off.
    pub shadow_read: Option<ShadowRead>,
    /// The primary-switch fence: hold new writes, drain the mirror queue, keep serving reads,
    /// and acknowledge the generation.
    pub fence: bool,
}

/// Shadow-read settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShadowRead {
    /// Fraction of reads that are shadowed, in [0, 1].
    pub sample_rate: f64,
    /// How long a shadow read may take before it is abandoned (it never delays the client).
    pub timeout_ms: u64,
}

impl FlagRouting {
    /// The routing of a catalog phase, with the plan's shadow-read settings and an optional fence.
    pub fn from_phase(routing: &Routing, shadow: ShadowRead, fence: bool) -> FlagRouting {
        FlagRouting {
            read: routing.read,
            write: routing.write,
            mirror: routing.mirror,
            shadow_read: routing.shadow_read.then_some(shadow),
            fence: routing.fence || fence,
        }
    }

    /// The routing in force when there is no flag file: the first catalog phase (`planned`).
    pub fn planned() -> FlagRouting {
        let first = &Catalog::builtin().first().routing;
        FlagRouting::from_phase(
            first,
            ShadowRead {
                sample_rate: 0.0,
                timeout_ms: 0,
            },
            false,
        )
    }

    /// The side written keys are mirrored to, if mirroring is on: always the side that is not the
    /// write primary.
    pub fn mirror_to(&self) -> Option<Side> {
        (self.mirror != MirrorMode::Off).then(|| self.write.other())
    }
}

impl FlagFile {
    /// A sealed (checksummed) flag file for `phase`, written now.
    ///
    /// `shadow` is used only if the phase shadows reads; `fence` adds a fence to a phase that does
    /// not have one (the CLI fences the generation before a primary switch).
    pub fn new(
        migration: &str,
        generation: u64,
        phase: &PhaseSpec,
        shadow: ShadowRead,
        plan_sha256: &str,
        fence: bool,
    ) -> FlagFile {
        let mut flag = FlagFile {
            format: FORMAT,
            migration: migration.to_string(),
            generation,
            phase: phase.name.clone(),
            routing: FlagRouting::from_phase(&phase.routing, shadow, fence),
            plan_sha256: plan_sha256.to_string(),
            written_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            checksum: String::new(),
        };
        flag.seal();
        flag
    }

    /// Recomputes `checksum` after fields were changed.
    pub fn seal(&mut self) {
        self.checksum = self.expected_checksum();
    }

    /// The checksum this document should carry, computed from its fields.
    pub fn expected_checksum(&self) -> String {
        // Our own struct always serializes, with finite numbers only (serde_json turns a NaN
        // into null), so JCS cannot fail on it.
        let value = serde_json::to_value(self).expect("a FlagFile always serializes");
        checksum_of_value(&value).expect("a serialized FlagFile canonicalizes")
    }

    /// The document as the CLI writes it: pretty-printed JSON with a trailing newline.
    pub fn to_pretty_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a FlagFile always serializes");
        text.push('\n');
        text
    }

    /// Parses and verifies a flag file: not empty, JSON without repeated keys, `format` supported,
    /// checksum matching the document as read (unknown fields included), schema and values valid
    /// — in that order, so a future format is reported as such even if its schema differs.
    pub fn parse(bytes: &[u8]) -> Result<FlagFile, FlagError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(FlagError::Empty);
        }
        let value = parse_json(bytes)?;
        let object = value
            .as_object()
            .ok_or_else(|| FlagError::Malformed("the document is not a JSON object".into()))?;
        check_format(object)?;
        verify_checksum(&value)?;
        let flag: FlagFile =
            serde_json::from_value(value).map_err(|e| FlagError::Malformed(format!("schema: {e}")))?;
        flag.validate()?;
        Ok(flag)
    }

    /// Checks the values the schema alone cannot: what a reader would otherwise misroute on.
    pub fn validate(&self) -> Result<(), FlagError> {
        let bad = |what: String| Err(FlagError::Malformed(what));
        if self.format != FORMAT {
            return Err(FlagError::UnsupportedFormat(self.format));
        }
        if self.migration.is_empty() {
            return bad("\"migration\" is empty".into());
        }
        if self.phase.is_empty() {
            return bad("\"phase\" is empty".into());
        }
        if self.generation == 0 {
            return bad("\"generation\" is 0; written generations start at 1".into());
        }
        if let Some(shadow) = &self.routing.shadow_read
            && !(0.0..=1.0).contains(&shadow.sample_rate)
        {
            return bad(format!(
                "routing.shadow_read.sample_rate {} is outside [0, 1]",
                shadow.sample_rate
            ));
        }
        Ok(())
    }
}

/// Reads `format` before anything else: its meaning decides how the rest is read.
fn check_format(object: &Map<String, Value>) -> Result<(), FlagError> {
    let format = object
        .get("format")
        .and_then(Value::as_u64)
        .ok_or_else(|| FlagError::Malformed("\"format\" is missing or not a non-negative integer".into()))?;
    if format != u64::from(FORMAT) {
        return Err(FlagError::UnsupportedFormat(
            u32::try_from(format).unwrap_or(u32::MAX),
        ));
    }
    Ok(())
}

/// Compares the stored checksum with one computed from the document as read — not from the
/// parsed struct, which would silently drop unknown fields from the verification.
fn verify_checksum(document: &Value) -> Result<(), FlagError> {
    let stored = document
        .get(CHECKSUM_KEY)
        .and_then(Value::as_str)
        .ok_or_else(|| FlagError::Malformed("\"checksum\" is missing or not a string".into()))?;
    if stored != checksum_of_value(document)? {
        return Err(FlagError::Checksum);
    }
    Ok(())
}

/// One field that differs between two flag files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Dotted path of the field, e.g. `routing.mirror`.
    pub field: String,
    /// The value before, as text; `None` when there was no flag file.
    pub old: Option<String>,
    /// The value after, as text.
    pub new: String,
}

/// What changes from `old` to `new`, field by field in document order. `written_at` and
/// `checksum` are left out: they change with every write and say nothing about routing. With no
/// `old` (first write), every field is listed.
pub fn diff(old: Option<&FlagFile>, new: &FlagFile) -> Vec<FieldChange> {
    let before = old.map(fields);
    fields(new)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (field, value))| {
            let previous = before.as_ref().map(|b| b[i].1.clone());
            (previous.as_deref() != Some(value.as_str())).then(|| FieldChange {
                field: field.to_string(),
                old: previous,
                new: value,
            })
        })
        .collect()
}

/// The compared fields as (dotted path, text), always in the same order.
fn fields(flag: &FlagFile) -> Vec<(&'static str, String)> {
    let r = &flag.routing;
    vec![
        ("format", flag.format.to_string()),
        ("migration", flag.migration.clone()),
        ("generation", flag.generation.to_string()),
        ("phase", flag.phase.clone()),
        ("routing.read", side_name(r.read).to_string()),
        ("routing.write", side_name(r.write).to_string()),
        ("routing.mirror", mirror_name(r.mirror).to_string()),
        ("routing.shadow_read", shadow_text(r.shadow_read.as_ref())),
        ("routing.fence", r.fence.to_string()),
        ("plan_sha256", flag.plan_sha256.clone()),
    ]
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Old => "old",
        Side::New => "new",
    }
}

fn mirror_name(mode: MirrorMode) -> &'static str {
    match mode {
        MirrorMode::Off => "off",
        MirrorMode::Async => "async",
        MirrorMode::Sync => "sync",
    }
}

fn shadow_text(shadow: Option<&ShadowRead>) -> String {
    match shadow {
        None => "off".to_string(),
        Some(s) => format!("sample_rate={},timeout_ms={}", s.sample_rate, s.timeout_ms),
    }
}

/// A valid backfill-phase flag file for unit tests.
#[cfg(test)]
pub(crate) fn sample_flag(migration: &str, generation: u64) -> FlagFile {
    let spec = crate::phase::Catalog::builtin()
        .get("backfill")
        .expect("catalog has backfill");
    FlagFile::new(
        migration,
        generation,
        spec,
        ShadowRead {
            sample_rate: 0.05,
            timeout_ms: 50,
        },
        "",
        false,
    )
}

#[cfg(test)]
mod tests;
