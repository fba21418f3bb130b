//! Unit tests of `compat`: copy modes per direction and refusals per phase, from versions.

use super::*;
use crate::proxy::mirror::Direction;

fn servers(versions: &[(&str, &str)]) -> Servers {
    let mut s = Servers::default();
    for (family, version) in versions {
        s.add_version("n:1", ServerVersion::parse(family, version).unwrap());
    }
    s
}

fn decide(old: &[(&str, &str)], new: &[(&str, &str)]) -> Compat {
    Compat::decide(CopySetting::Auto, servers(old), servers(new))
}

const UNTIL_FINALIZED: bool = false;
const ONCE_FINALIZED: bool = true;

fn refused(c: &Compat, name: &str, finalized: bool) -> Option<String> {
    c.refusal(name, || finalized).map(str::to_string)
}

#[test]
fn redis_7_0_to_6_2_copies_forward_by_type_and_refuses_what_6_2_lacks() {
    let c = decide(&[("redis", "7.0.15")], &[("redis", "6.2.14")]);
    assert_eq!(c.copy[Direction::OldToNew as usize].mode, CopyMode::ByType);
    assert_eq!(c.copy[Direction::NewToOld as usize].mode, CopyMode::Dump);
    assert_eq!(c.big_key_limits(1000), [0, 1000]);
    let lmpop = refused(&c, "LMPOP", UNTIL_FINALIZED).expect("LMPOP refused");
    assert!(lmpop.starts_with("ERR cachemig: LMPOP"), "{lmpop}");
    assert!(lmpop.contains("new (Redis 6.2)"), "{lmpop}");
    for name in ["ZMPOP", "BLMPOP", "BZMPOP", "EXPIRETIME", "FUNCTION", "FCALL"] {
        assert!(refused(&c, name, UNTIL_FINALIZED).is_some(), "{name}");
    }
    // Old lacks the hash-field TTL commands too: old is named first.
    let hexpire = refused(&c, "HEXPIRE", UNTIL_FINALIZED).unwrap();
    assert!(hexpire.contains("old (Redis 7.0)"), "{hexpire}");
    assert!(refused(&c, "GET", UNTIL_FINALIZED).is_none());
    // Once finalized only new counts, and it still lacks LMPOP.
    let lmpop = refused(&c, "LMPOP", ONCE_FINALIZED).unwrap();
    assert!(lmpop.contains("new (Redis 6.2)"), "{lmpop}");
}

#[test]
fn an_old_side_that_lacks_a_command_counts_only_until_finalized() {
    let c = decide(&[("redis", "6.2.14")], &[("redis", "7.0.15")]);
    assert_eq!(c.big_key_limits(7), [7, 0], "new → old copies by type");
    let lmpop = refused(&c, "LMPOP", UNTIL_FINALIZED).unwrap();
    assert!(lmpop.contains("old (Redis 6.2)"), "{lmpop}");
    assert_eq!(refused(&c, "LMPOP", ONCE_FINALIZED), None);
    assert!(
        refused(&c, "HEXPIRE", ONCE_FINALIZED)
            .unwrap()
            .contains("new (Redis 7.0)")
    );
}

#[test]
fn hash_field_ttls_are_refused_while_a_direction_copies_by_type() {
    // Both have hash-field TTLs; RDB 12 → 13 restores, 13 → 12 does not.
    let c = decide(&[("redis", "7.4.2")], &[("redis", "8.6.0")]);
    assert_eq!(c.big_key_limits(9), [9, 0]);
    let hexpire = refused(&c, "HEXPIRE", UNTIL_FINALIZED).unwrap();
    assert!(hexpire.contains("by type new -> old"), "{hexpire}");
    assert!(hexpire.contains("hash-field TTLs"), "{hexpire}");
    assert_eq!(refused(&c, "HEXPIRE", ONCE_FINALIZED), None);
    assert_eq!(refused(&c, "LMPOP", UNTIL_FINALIZED), None);
}

#[test]
fn same_versions_refuse_nothing_and_copy_with_dump() {
    let c = decide(&[("redis", "7.4.2")], &[("redis", "7.4.1"), ("redis", "8.0.2")]);
    assert_eq!(c.big_key_limits(5), [5, 5]);
    for (name, _) in NEEDS {
        assert_eq!(refused(&c, name, UNTIL_FINALIZED), None, "{name}");
    }
    assert!(c.log_lines().iter().all(|l| !l.starts_with("refused")));
}

#[test]
fn unknown_versions_copy_by_type_unless_the_plan_says_otherwise() {
    let unknown = Servers {
        versions: Vec::new(),
        unknown: vec!["n:1: INFO server: timed out".into()],
    };
    let c = Compat::decide(
        CopySetting::Auto,
        unknown.clone(),
        servers(&[("redis", "7.0.15")]),
    );
    assert_eq!(c.big_key_limits(5), [0, 0]);
    assert!(c.copy[0].reason.contains("not all known"), "{}", c.copy[0].reason);
    assert!(c.log_lines()[0].contains("unknown (n:1: INFO server: timed out)"));
    // Nothing known is lacking, but copies by type lose hash-field TTLs.
    assert_eq!(refused(&c, "LMPOP", UNTIL_FINALIZED), None);
    assert!(refused(&c, "HTTL", UNTIL_FINALIZED).is_some());
    let forced = Compat::decide(CopySetting::Dump, unknown, servers(&[("redis", "7.0.15")]));
    assert_eq!(forced.big_key_limits(5), [5, 5]);
}

#[test]
fn a_version_the_table_does_not_know_is_unknown() {
    let s = servers(&[("redis", "255.0.0")]);
    assert!(s.versions.is_empty() && s.unknown.len() == 1, "{s:?}");
    assert_eq!(s.rdb(true), None);
}

#[test]
fn finalized_is_the_routing_without_old() {
    let routing = |read, write, mirror| FlagRouting {
        read,
        write,
        mirror,
        shadow_read: None,
        fence: false,
    };
    assert!(finalized(&routing(Side::New, Side::New, MirrorMode::Off)));
    assert!(!finalized(&routing(Side::New, Side::New, MirrorMode::Sync)));
    assert!(!finalized(&routing(Side::Old, Side::Old, MirrorMode::Off)));
}
