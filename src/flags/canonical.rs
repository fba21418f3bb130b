//! The checksum of a flag document: lowercase hex SHA-256 of its RFC 8785 (JSON Canonicalization
//! Scheme, JCS) form without the top-level `checksum` key.
//!
//! JCS is done by `serde_jcs`, which sorts keys itself (by UTF-16 code units) and writes every
//! number through `f64` in ECMAScript form, so serde_json's `preserve_order` and
//! `arbitrary_precision` features, if feature unification switches them on, change nothing.
//! What is left here is reading: strict JSON that rejects a repeated key (RFC 8785 requires
//! I-JSON, which forbids them), because `serde_json::Value` would silently keep the last one while
//! another client's parser may keep the first, and the two would then route differently under
//! one valid checksum.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::FlagError;

/// The top-level key that holds the checksum, and the only key left out of the checksummed form.
pub(crate) const CHECKSUM_KEY: &str = "checksum";

/// Parses strict JSON (RFC 8259, as serde_json reads it) into a value, rejecting any object that
/// repeats a key.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, FlagError> {
    let malformed = |e: serde_json::Error| FlagError::Malformed(format!("not valid JSON: {e}"));
    serde_json::from_slice::<NoRepeatedKeys>(bytes).map_err(malformed)?;
    serde_json::from_slice(bytes).map_err(malformed)
}

/// The JCS form of a parsed document, without its top-level `checksum` key (only that key, only
/// at the top level).
pub(crate) fn canonical_value(value: &Value) -> Result<String, FlagError> {
    let jcs = match value {
        Value::Object(object) if object.contains_key(CHECKSUM_KEY) => {
            let mut body: Map<String, Value> = object.clone();
            body.remove(CHECKSUM_KEY);
            serde_jcs::to_string(&body)
        }
        _ => serde_jcs::to_string(value),
    };
    jcs.map_err(|e| FlagError::Malformed(format!("cannot canonicalize: {e}")))
}

/// The checksum of a parsed document: lowercase hex SHA-256 of [`canonical_value`].
pub(crate) fn checksum_of_value(value: &Value) -> Result<String, FlagError> {
    Ok(hex::encode(Sha256::digest(canonical_value(value)?)))
}

/// The canonical form of a JSON document without its top-level `checksum` key: its RFC 8785
/// (JCS) serialization, the string the checksum is computed over.
pub fn canonical_json(bytes: &[u8]) -> Result<String, FlagError> {
    canonical_value(&parse_json(bytes)?)
}

/// The checksum of a JSON document: lowercase hex SHA-256 of the UTF-8 bytes of
/// [`canonical_json`].
pub fn checksum_of(bytes: &[u8]) -> Result<String, FlagError> {
    checksum_of_value(&parse_json(bytes)?)
}

/// Accepts any JSON value in which no object repeats a key (compared after unescaping).
struct NoRepeatedKeys;

impl<'de> Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoRepeatedKeys)
    }
}

impl<'de> Visitor<'de> for NoRepeatedKeys {
    type Value = NoRepeatedKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoRepeatedKeys>()?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonical_json(s.as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_sorted_recursively_and_whitespace_dropped() {
        let doc = r#" { "b" : [ 1 , { "z" : true , "a" : null } ] , "a" : -0 , "checksum" : "x" } "#;
        assert_eq!(canon(doc), r#"{"a":0,"b":[1,{"a":null,"z":true}]}"#);
    }

    #[test]
    fn the_checksum_key_is_only_skipped_at_the_top_level() {
        assert_eq!(canon(r#"{"o":{"checksum":1}}"#), r#"{"o":{"checksum":1}}"#);
    }

    #[test]
    fn numbers_strings_and_key_order_follow_rfc_8785() {
        // Expected output from Python's `jcs` package (jcs.canonicalize of the same document).
        let doc = "{\"\\uffff\":2,\"\\ud83d\\ude00\":1,\"n\":[0.05,1e-7,100.0,1e21,-0.0,\
                   9007199254740993],\"s\":\"\\u00e9\\u2028\\u007f\\u0001\\\"\\\\\\/\\n\"}";
        assert_eq!(
            canon(doc),
            "{\"n\":[0.05,1e-7,100,1e+21,0,9007199254740992],\
             \"s\":\"é\u{2028}\u{7f}\\u0001\\\"\\\\/\\n\",\"😀\":1,\"\u{ffff}\":2}"
        );
    }

    #[test]
    fn a_repeated_key_is_rejected_at_any_depth() {
        for doc in [r#"{"a":1,"a":2}"#, r#"{"o":[{"b":1,"\u0062":1}]}"#] {
            let err = canonical_json(doc.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("duplicate key"), "{doc}: {err}");
        }
        // The same key in different objects is not a repeat.
        let distinct = r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#;
        assert_eq!(canon(distinct), distinct);
    }

    #[test]
    fn invalid_json_is_rejected() {
        for bad in [
            "",
            "{",
            "{\"a\":1,}",
            "[01]",
            "[1.]",
            "[.5]",
            "{\"a\" 1}",
            "[1] x",
            "\"\\ud800\"",
            "[1e999]",
            "\"a\nb\"",
            "[tru]",
            "[NaN]",
        ] {
            assert!(
                matches!(canonical_json(bad.as_bytes()), Err(FlagError::Malformed(_))),
                "accepted {bad:?}"
            );
        }
    }
}
