//! Unit tests of `file`.

use super::*;
use crate::flags::{canonical_json, checksum_of};

const SHADOW: ShadowRead = ShadowRead {
    sample_rate: 0.05,
    timeout_ms: 50,
};

fn flag(phase: &str, generation: u64) -> FlagFile {
    let spec = Catalog::builtin().get(phase).unwrap();
    FlagFile::new("tokens", generation, spec, SHADOW, "ab12", false)
}

/// A fixed document, so the expected canonical string and checksum are stable.
fn known() -> FlagFile {
    let mut f = flag("shadow-read", 7);
    f.written_at = "2026-11-21T23:00:00Z".into();
    f.plan_sha256 = "00ff".into();
    f.seal();
    f
}

#[test]
fn canonical_form_of_a_known_document_is_fixed() {
    // Any change to these strings is a change to the contract with every client: it needs a
    // new FORMAT, not an updated test. Expected values computed independently with Python's
    // `jcs` package: `jcs.canonicalize(doc)` and `hashlib.sha256(...).hexdigest()`.
    let expected = concat!(
        r#"{"format":1,"generation":7,"migration":"tokens","phase":"shadow-read","plan_sha256":"00ff","#,
        r#""routing":{"fence":false,"mirror":"sync","read":"old","shadow_read":{"sample_rate":0.05,"#,
        r#""timeout_ms":50},"write":"old"},"written_at":"2026-11-21T23:00:00Z"}"#
    );
    let doc = known();
    assert_eq!(canonical_json(doc.to_pretty_json().as_bytes()).unwrap(), expected);
    assert_eq!(
        doc.checksum,
        "c3d31d3920f7160b3fad7aca6a2d798f328522711e39735e74537ed9ff109ad9"
    );

    // A whole-number float is written as an integer (ECMAScript form), unlike Python's repr.
    let mut doc = known();
    doc.routing.shadow_read = Some(ShadowRead {
        sample_rate: 1.0,
        timeout_ms: 50,
    });
    doc.seal();
    let expected = expected.replace(r#""sample_rate":0.05"#, r#""sample_rate":1"#);
    assert_eq!(canonical_json(doc.to_pretty_json().as_bytes()).unwrap(), expected);
    assert_eq!(
        doc.checksum,
        "28fa23c31b56bbc899fcc5667cef65934aae3c5b4c93afdbfa495f01cdedb249"
    );
}

#[test]
fn checksum_round_trips_through_the_written_form() {
    let doc = flag("shadow-read", 7);
    assert_eq!(doc.checksum.len(), 64);
    assert_eq!(FlagFile::parse(doc.to_pretty_json().as_bytes()).unwrap(), doc);
    let compact = serde_json::to_vec(&doc).unwrap();
    assert_eq!(FlagFile::parse(&compact).unwrap(), doc);
}

#[test]
fn new_takes_routing_from_the_phase() {
    let doc = flag("shadow-read", 7);
    assert_eq!(doc.routing.shadow_read, Some(SHADOW));
    assert_eq!(doc.routing.mirror_to(), Some(Side::New));
    let doc = flag("read-cutover", 8);
    assert_eq!(doc.routing.shadow_read, None);
    assert!(!doc.routing.fence);
    let spec = Catalog::builtin().get("read-cutover").unwrap();
    assert!(FlagFile::new("tokens", 9, spec, SHADOW, "", true).routing.fence);
    assert!(
        doc.written_at.ends_with('Z') && doc.written_at.len() == 20,
        "{}",
        doc.written_at
    );
}

#[test]
fn shadow_read_off_is_written_as_null() {
    let text = flag("backfill", 2).to_pretty_json();
    assert!(text.contains(r#""shadow_read": null"#), "{text}");
}

#[test]
fn any_tampered_field_is_detected() {
    let text = flag("shadow-read", 7).to_pretty_json();
    for (from, to) in [
        (r#""generation": 7"#, r#""generation": 8"#),
        (r#""read": "old""#, r#""read": "new""#),
        (r#""fence": false"#, r#""fence": true"#),
        (r#""sample_rate": 0.05"#, r#""sample_rate": 0.5"#),
        (r#""written_at": "2"#, r#""written_at": "1"#),
    ] {
        assert!(text.contains(from), "{from}");
        let tampered = text.replace(from, to);
        assert_eq!(
            FlagFile::parse(tampered.as_bytes()),
            Err(FlagError::Checksum),
            "{to}"
        );
    }
}

#[test]
fn whitespace_and_key_order_do_not_change_the_checksum() {
    let doc = flag("async-dual-write", 3);
    let mut value = serde_json::to_value(&doc).unwrap();
    let routing = value["routing"].take();
    let reordered = format!(
        "{{ \"routing\" : {routing} ,\n\"checksum\":\"{}\", \"phase\":\"async-dual-write\", \
         \"plan_sha256\":\"ab12\", \"generation\":3, \"migration\":\"tokens\", \"format\":1, \
         \"written_at\":\"{}\" }}",
        doc.checksum, doc.written_at
    );
    assert_eq!(FlagFile::parse(reordered.as_bytes()).unwrap(), doc);
}

#[test]
fn an_unknown_field_is_tolerated_but_covered_by_the_checksum() {
    let doc = flag("sync-dual-write", 4);
    let mut value = serde_json::to_value(&doc).unwrap();
    value["owner"] = Value::from("team-a");
    value["checksum"] = Value::from("");
    let sealed = checksum_of(&serde_json::to_vec(&value).unwrap()).unwrap();
    value["checksum"] = Value::from(sealed);
    let text = serde_json::to_string_pretty(&value).unwrap();

    let parsed = FlagFile::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.generation, 4);
    // The struct drops the unknown field, so a checksum over the struct would not match: the
    // verification has to cover the raw document.
    assert_ne!(parsed.expected_checksum(), parsed.checksum);

    let tampered = text.replace("team-a", "team-b");
    assert_eq!(FlagFile::parse(tampered.as_bytes()), Err(FlagError::Checksum));
}

#[test]
fn a_repeated_key_is_malformed_even_if_the_checksum_would_match() {
    // The checksum covers the last "generation" (7); a first-wins parser would route by 99.
    let text = flag("shadow-read", 7).to_pretty_json();
    let doubled = text.replacen("{\n", "{\n  \"generation\": 99,\n", 1);
    let err = FlagFile::parse(doubled.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, FlagError::Malformed(m) if m.contains("duplicate key")),
        "{err}"
    );
}

#[test]
fn rejections_are_classified() {
    assert_eq!(FlagFile::parse(b""), Err(FlagError::Empty));
    assert_eq!(FlagFile::parse(b" \n"), Err(FlagError::Empty));
    assert!(matches!(
        FlagFile::parse(b"{\"format\":1,"),
        Err(FlagError::Malformed(_))
    ));
    assert!(matches!(
        FlagFile::parse(b"\x00\x01garbage"),
        Err(FlagError::Malformed(_))
    ));
    assert!(matches!(FlagFile::parse(b"[1]"), Err(FlagError::Malformed(_))));
    assert_eq!(
        FlagFile::parse(br#"{"format":2,"anything":true}"#),
        Err(FlagError::UnsupportedFormat(2))
    );
    assert!(matches!(
        FlagFile::parse(br#"{"format":1}"#),
        Err(FlagError::Malformed(_))
    ));
    let mut half = flag("backfill", 2).to_pretty_json();
    half.truncate(half.len() / 2);
    assert!(matches!(
        FlagFile::parse(half.as_bytes()),
        Err(FlagError::Malformed(_))
    ));
}

#[test]
fn a_correctly_sealed_document_with_bad_values_is_malformed() {
    let mut doc = flag("shadow-read", 5);
    doc.routing.shadow_read = Some(ShadowRead {
        sample_rate: 2.0,
        timeout_ms: 50,
    });
    doc.seal();
    let err = FlagFile::parse(doc.to_pretty_json().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("sample_rate"), "{err}");

    let mut doc = flag("backfill", 0);
    doc.seal();
    assert!(matches!(
        FlagFile::parse(doc.to_pretty_json().as_bytes()),
        Err(FlagError::Malformed(_))
    ));
}

#[test]
fn diff_lists_routing_changes_and_ignores_time_and_checksum() {
    let old = flag("sync-dual-write", 4);
    let new = flag("shadow-read", 5);
    let changes = diff(Some(&old), &new);
    let summary: Vec<(&str, Option<&str>, &str)> = changes
        .iter()
        .map(|c| (c.field.as_str(), c.old.as_deref(), c.new.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("generation", Some("4"), "5"),
            ("phase", Some("sync-dual-write"), "shadow-read"),
            (
                "routing.shadow_read",
                Some("off"),
                "sample_rate=0.05,timeout_ms=50"
            ),
        ]
    );
    let mut later = old.clone();
    later.written_at = "2099-01-01T00:00:00Z".into();
    later.seal();
    assert!(diff(Some(&old), &later).is_empty());
}

#[test]
fn diff_against_nothing_lists_every_field() {
    let new = flag("backfill", 1);
    let changes = diff(None, &new);
    assert_eq!(changes.len(), 10);
    assert!(changes.iter().all(|c| c.old.is_none()));
    assert_eq!(changes[6].field, "routing.mirror");
    assert_eq!(changes[6].new, "off");
    let json = serde_json::to_string(&changes[0]).unwrap();
    assert_eq!(json, r#"{"field":"format","old":null,"new":"1"}"#);
}

#[test]
fn planned_routing_serves_everything_from_old() {
    let r = FlagRouting::planned();
    assert_eq!(
        (r.read, r.write, r.mirror, r.shadow_read, r.fence),
        (Side::Old, Side::Old, MirrorMode::Off, None, false)
    );
    assert_eq!(r.mirror_to(), None);
}
