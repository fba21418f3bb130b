//! TOML parsing, with serde's messages turned into located errors with a fix hint.

use std::path::Path;

use super::error::{PlanError, did_you_mean};
use super::raw::{RawPlan, example_for};

/// Parses `text` into the raw plan, or a located error.
pub fn parse(path: &Path, text: &str) -> Result<RawPlan, PlanError> {
    toml::from_str::<RawPlan>(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (message, hint) = explain(e.message(), key_on_line(text, span.start));
        PlanError::at(path, text, span, message, hint)
    })
}

/// Turns a serde/toml message into (message, hint); `key` is the key written on the error's line.
fn explain(message: &str, key: &str) -> (String, String) {
    let message = message.trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = split_backticked(rest);
        let hint = match did_you_mean(&field, expected.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("allowed here: {}", expected.join(", ")),
        };
        return (format!("unknown key `{field}`"), hint);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = split_backticked(rest);
        let hint = match did_you_mean(&value, expected.iter().map(String::as_str)) {
            Some(best) => format!("did you mean \"{best}\"? allowed: {}", expected.join(", ")),
            None => format!("allowed: {}", expected.join(", ")),
        };
        return (format!("unknown value \"{value}\""), hint);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let example = example_for(field).unwrap_or(field);
        return (
            format!("missing required key `{field}`"),
            format!("add `{example}` to this table"),
        );
    }
    if message.starts_with("invalid type") {
        let hint = example_for(key).map_or_else(
            || "check the value's type against docs/plan.md".to_string(),
            |e| format!("write it like `{e}`"),
        );
        return (message, hint);
    }
    if message.contains("duplicate key") {
        return (
            message,
            "each key may appear once per table: remove one of them".into(),
        );
    }
    (
        message,
        "fix the TOML syntax at this place (see docs/plan.md for the plan format)".into(),
    )
}

/// From "name`, expected one of `a`, `b`" returns ("name", ["a", "b"]).
fn split_backticked(rest: &str) -> (String, Vec<String>) {
    let mut parts = rest.split('`');
    let first = parts.next().unwrap_or_default().to_string();
    // After the first name, every other piece is a quoted candidate.
    let expected = parts.skip(1).step_by(2).map(str::to_string).collect();
    (first, expected)
}

/// The key of a `key = value` line containing byte `offset` (serde's type errors point at the
/// value, and the hint wants the key), or "" when the line has no `=`.
fn key_on_line(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or_default();
    line.split_once('=')
        .map_or("", |(k, _)| k.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_suggests_the_closest() {
        let (m, h) = explain(
            "unknown field `scan_cont`, expected one of `scan_count`, `workers`",
            "",
        );
        assert_eq!(m, "unknown key `scan_cont`");
        assert_eq!(h, "did you mean `scan_count`?");
    }

    #[test]
    fn unknown_variant_lists_allowed_values() {
        let (m, h) = explain("unknown variant `replase`, expected `skip` or `replace`", "");
        assert_eq!(m, "unknown value \"replase\"");
        assert!(h.contains("did you mean \"replace\""), "{h}");
    }
}
