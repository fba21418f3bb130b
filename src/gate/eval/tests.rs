//! Unit tests of `eval`.

use super::*;
use crate::phase::Catalog;

#[test]
fn rdb_compatibility() {
    assert!(rdb_loadable(9, 10));
    assert!(!rdb_loadable(11, 10));
    assert!(rdb_loadable(11, 80), "Valkey 9 loads Redis 7.2 payloads");
    assert!(!rdb_loadable(12, 80), "Valkey 9 refuses Redis 7.4 payloads");
}

#[test]
fn every_catalog_gate_has_an_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "[migration]\nname='t'\n[source]\nurl='redis://127.0.0.1:1'\n[target]\nurls=['redis://127.0.0.1:2']\n[proxies]\nexpected=0\n").unwrap();
    let plan = Plan::load(&path).unwrap();
    let state = State::from_journal("t", "planned", &[]);
    for phase in Catalog::builtin().phases() {
        for r in evaluate(&plan, &state, phase, None, None, Utc::now()) {
            assert!(
                !r.measured.contains("does not know"),
                "{}: {}",
                phase.name,
                r.gate
            );
        }
    }
}
