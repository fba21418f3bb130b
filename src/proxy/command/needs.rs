//! Commands that not every server version has, each tied to the fact of the server-facts table
//! ([`crate::server::Facts`]) that says whether a server has it. The proxy refuses such a command
//! while one side of the migration lacks it ([`crate::proxy::compat`]).

use crate::server::Facts;

/// A fact of [`Facts`] a command depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `FUNCTION`, `FCALL`, `FCALL_RO`.
    Function,
    /// `EXPIRETIME`, `PEXPIRETIME`.
    Expiretime,
    /// `LMPOP`, `ZMPOP`, `BLMPOP`, `BZMPOP`.
    Lmpop,
    /// The hash-field TTL commands (`HEXPIRE`, `HTTL`, …); a by-type copy does not carry the TTLs
    /// they set.
    HashFieldTtl,
}

impl Feature {
    /// Whether a server with `facts` has it.
    pub fn of(self, facts: &Facts) -> bool {
        match self {
            Feature::Function => facts.function,
            Feature::Expiretime => facts.expiretime,
            Feature::Lmpop => facts.lmpop,
            Feature::HashFieldTtl => facts.hash_field_ttl,
        }
    }
}

/// Every command of the table that needs a feature, with the feature.
pub const NEEDS: &[(&str, Feature)] = &[
    ("FUNCTION", Feature::Function),
    ("FCALL", Feature::Function),
    ("FCALL_RO", Feature::Function),
    ("EXPIRETIME", Feature::Expiretime),
    ("PEXPIRETIME", Feature::Expiretime),
    ("LMPOP", Feature::Lmpop),
    ("ZMPOP", Feature::Lmpop),
    ("BLMPOP", Feature::Lmpop),
    ("BZMPOP", Feature::Lmpop),
    ("HEXPIRE", Feature::HashFieldTtl),
    ("HPEXPIRE", Feature::HashFieldTtl),
    ("HEXPIREAT", Feature::HashFieldTtl),
    ("HPEXPIREAT", Feature::HashFieldTtl),
    ("HTTL", Feature::HashFieldTtl),
    ("HPTTL", Feature::HashFieldTtl),
    ("HEXPIRETIME", Feature::HashFieldTtl),
    ("HPEXPIRETIME", Feature::HashFieldTtl),
    ("HPERSIST", Feature::HashFieldTtl),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_that_needs_a_feature_is_in_the_table() {
        for (name, _) in NEEDS {
            assert!(super::super::lookup(name.as_bytes()).is_some(), "{name}");
        }
    }

    #[test]
    fn features_follow_the_facts() {
        let v = |f: &str, v: &str| {
            crate::server::ServerVersion::parse(f, v)
                .unwrap()
                .facts()
                .unwrap()
        };
        let (r62, r70, r74) = (v("redis", "6.2.14"), v("redis", "7.0.15"), v("redis", "7.4.1"));
        assert!(!Feature::Lmpop.of(&r62) && Feature::Lmpop.of(&r70));
        assert!(!Feature::Function.of(&r62) && !Feature::Expiretime.of(&r62));
        assert!(!Feature::HashFieldTtl.of(&r70) && Feature::HashFieldTtl.of(&r74));
    }
}
