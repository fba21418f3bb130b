//! The kinds of difference verify reports, their counts, and a reported row.

use serde::Serialize;

/// The kind of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// In the source, not in the target.
    Missing,
    /// In the target, not in the source.
    Extra,
    /// Both exist with different types.
    Type,
    /// Same type, different value.
    Value,
    /// Same value; one expires and the other does not, or the TTLs differ beyond the tolerance.
    Ttl,
    /// The key could not be read on one side (after retries); it counts as unresolved.
    Error,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Missing,
        Kind::Extra,
        Kind::Type,
        Kind::Value,
        Kind::Ttl,
        Kind::Error,
    ];

    /// The name used in the CSV and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Type => "type",
            Kind::Value => "value",
            Kind::Ttl => "ttl",
            Kind::Error => "error",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Differences found, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// `missing`.
    pub missing: u64,
    /// `extra`.
    pub extra: u64,
    /// `type`.
    #[serde(rename = "type")]
    pub type_: u64,
    /// `value`.
    pub value: u64,
    /// `ttl`.
    pub ttl: u64,
    /// `error`.
    pub error: u64,
}

impl KindCounts {
    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Missing => self.missing,
            Kind::Extra => self.extra,
            Kind::Type => self.type_,
            Kind::Value => self.value,
            Kind::Ttl => self.ttl,
            Kind::Error => self.error,
        }
    }

    /// Counts one more of `kind`.
    pub(super) fn add(&mut self, kind: Kind) {
        *match kind {
            Kind::Missing => &mut self.missing,
            Kind::Extra => &mut self.extra,
            Kind::Type => &mut self.type_,
            Kind::Value => &mut self.value,
            Kind::Ttl => &mut self.ttl,
            Kind::Error => &mut self.error,
        } += 1;
    }
}

/// One reported difference (the key escaped as in the CSV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DifferenceRow {
    /// The key, UTF-8 as is and other bytes as `\xNN`.
    pub key: String,
    /// The kind.
    pub kind: Kind,
    /// What differs, and what repair did.
    pub details: String,
}
