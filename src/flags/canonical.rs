//! The canonical form of a flag document: the exact bytes the checksum is computed over.
//!
//! The canonical form is what Python produces with
//! `json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`: object keys
//! sorted by code point at every level, no whitespace, strings escaped the way Python escapes them,
//! integers as written, floats as Python's `repr` writes them (`1e-05`, `0.05`, `1.0`, `1e+16`).
//!
//! It is computed by this small parser rather than by re-serializing a `serde_json::Value`
//! because it is a cross-language contract, and serde_json's output is not fixed: Cargo feature
//! unification lets any crate in the build switch on `preserve_order` (insertion order instead of
//! sorted keys) or `arbitrary_precision` (numbers kept as written); without `float_roundtrip` its
//! float parsing may be one unit in the last place off; and its float formatting differs from
//! Python's (`1e-5` where Python writes `1e-05`). Owning these ~200 lines keeps the checksum stable.

use std::collections::BTreeMap;

/// Nesting deeper than this is rejected (as serde_json does), so hostile input cannot overflow
/// the stack of the thread that reads flag files.
const MAX_DEPTH: usize = 128;

/// Returns the canonical form of the JSON document `bytes`, leaving out the top-level key
/// `skip_key` (the checksum itself). Errors describe why the input is not strict JSON.
pub(crate) fn canonical_form(bytes: &[u8], skip_key: &str) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut parser = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    let mut out = String::with_capacity(text.len());
    parser.skip_whitespace();
    parser.value(&mut out, Some(skip_key))?;
    parser.skip_whitespace();
    if parser.pos != text.len() {
        return Err(parser.error("trailing characters after the document"));
    }
    Ok(out)
}

/// A strict JSON (RFC 8259) reader that writes the canonical form as it goes.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() != Some(byte) {
            return Err(self.error(&format!("expected '{}'", byte as char)));
        }
        self.pos += 1;
        Ok(())
    }

    /// One value. `skip_key` is only passed for the top level: the checksum key is left out there
    /// and nowhere else.
    fn value(&mut self, out: &mut String, skip_key: Option<&str>) -> Result<(), String> {
        match self.peek() {
            Some(b'{') => self.nested(|p| p.object(out, skip_key)),
            Some(b'[') => self.nested(|p| p.array(out)),
            Some(b'"') => {
                let s = self.string()?;
                write_string(out, &s);
                Ok(())
            }
            Some(b't') => self.literal("true", out),
            Some(b'f') => self.literal("false", out),
            Some(b'n') => self.literal("null", out),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            _ => Err(self.error("expected a JSON value")),
        }
    }

    fn nested(&mut self, body: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        let result = body(self);
        self.depth -= 1;
        result
    }

    fn object(&mut self, out: &mut String, skip_key: Option<&str>) -> Result<(), String> {
        self.expect(b'{')?;
        // A BTreeMap<String, _> orders keys by UTF-8 bytes, which is code point order, which is
        // what Python's sort_keys uses. A repeated key keeps its last value, as in Python.
        let mut members: BTreeMap<String, String> = BTreeMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push_str("{}");
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            let mut value = String::new();
            self.value(&mut value, None)?;
            if skip_key != Some(key.as_str()) {
                members.insert(key, value);
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
        self.pos += 1;
        out.push('{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(out, key);
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        Ok(())
    }

    fn array(&mut self, out: &mut String) -> Result<(), String> {
        self.expect(b'[')?;
        out.push('[');
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            out.push(']');
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            self.value(out, None)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    out.push(',');
                }
                Some(b']') => break,
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
        self.pos += 1;
        out.push(']');
        Ok(())
    }

    fn literal(&mut self, word: &str, out: &mut String) -> Result<(), String> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.error("invalid literal"));
        }
        self.pos += word.len();
        out.push_str(word);
        Ok(())
    }

    /// A string, with its escapes decoded.
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut decoded = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let c = rest
                .chars()
                .next()
                .ok_or_else(|| self.error("unterminated string"))?;
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(decoded),
                '\\' => decoded.push(self.escape()?),
                c if (c as u32) < 0x20 => return Err(self.error("raw control character in string")),
                c => decoded.push(c),
            }
        }
    }

    /// The character an escape sequence (after its backslash) stands for.
    fn escape(&mut self) -> Result<char, String> {
        let byte = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return Err(self.error("invalid escape")),
        })
    }

    /// `\uXXXX`, combining a surrogate pair. A lone surrogate is rejected: it is not a character,
    /// cannot be written as UTF-8, and serde_json rejects it too.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return char::from_u32(first).ok_or_else(|| self.error("lone surrogate"));
        }
        if !self.text[self.pos..].starts_with("\\u") {
            return Err(self.error("lone surrogate"));
        }
        self.pos += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            return Err(self.error("lone surrogate"));
        }
        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        char::from_u32(code).ok_or_else(|| self.error("invalid surrogate pair"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("invalid \\u escape"));
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))
    }

    /// A number: integers are kept exactly as written (Python keeps integers exact at any size),
    /// fractions and exponents go through `f64` and come out the way Python's `repr` writes them.
    fn number(&mut self, out: &mut String) -> Result<(), String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            is_float = true;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        let lexeme = &self.text[start..self.pos];
        if !is_float {
            // Python reads "-0" as the integer 0.
            out.push_str(if lexeme == "-0" { "0" } else { lexeme });
            return Ok(());
        }
        // Rust's float parsing is correctly rounded, like Python's.
        let value: f64 = lexeme.parse().map_err(|_| self.error("invalid number"))?;
        if !value.is_finite() {
            return Err(self.error("number out of range"));
        }
        out.push_str(&python_float_repr(value));
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), String> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.error("invalid number"));
        }
        self.digits();
        Ok(())
    }
}

/// Writes `s` as a JSON string the way Python's `json.dumps(..., ensure_ascii=False)` does:
/// only `"`, `\` and control characters are escaped; everything else is written as is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats a finite float as Python's `repr` does: the shortest digits that read back as the same
/// float, in positional notation when the decimal exponent is in [-4, 16), else in scientific
/// notation with a signed exponent of at least two digits.
pub(crate) fn python_float_repr(value: f64) -> String {
    let scientific = shortest_round_trip(value);
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} output has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Python's "decpt": the value is 0.DIGITS x 10^decpt.
    let decpt = exponent + 1;
    let body = if -4 < decpt && decpt <= 16 {
        positional(&digits, decpt)
    } else {
        scientific_python(&digits, exponent)
    };
    format!("{sign}{body}")
}

/// The shortest digits that read back as `value`, in Rust's scientific notation ("-1.25e-7",
/// "0e0"), choosing like Python when two candidates of that length are equally close: `{:e}`
/// alone breaks such ties upwards (1735861081508451.25 -> "…451.3") where Python rounds half to
/// even ("…451.2"). Formatting with an explicit precision rounds the exact value half to even.
fn shortest_round_trip(value: f64) -> String {
    let shortest = format!("{value:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    let rounded = format!("{value:.prec$e}", prec = digits.saturating_sub(1));
    // The correctly rounded string can miss the round trip only next to a power of two, where
    // the gap below a float is half the gap above it; the shortest one is then the answer.
    if rounded.parse::<f64>() == Ok(value) {
        rounded
    } else {
        shortest
    }
}

fn positional(digits: &str, decpt: i32) -> String {
    let len = digits.len() as i32;
    if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt < len {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{int}.{frac}")
    } else {
        format!("{digits}{}.0", "0".repeat((decpt - len) as usize))
    }
}

fn scientific_python(digits: &str, exponent: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let dot = if rest.is_empty() {
        String::new()
    } else {
        format!(".{rest}")
    };
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{first}{dot}e{sign}{:02}", exponent.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonical_form(s.as_bytes(), "checksum").unwrap()
    }

    #[test]
    // The tie cases below are exact binary values (…451.25 is a multiple of the 0.25 spacing
    // there); their full digits are the point of the test.
    #[allow(clippy::excessive_precision)]
    fn floats_are_written_like_python_repr() {
        // Expected strings produced by Python 3's repr().
        let cases = [
            (0.05, "0.05"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (5e-5, "5e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123.456, "123.456"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            // Ties between two shortest candidates go to the even digit, as in Python.
            (1735861081508451.25, "1735861081508451.2"),
            (175981968601.640625, "175981968601.64062"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value:e}");
        }
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
    fn strings_are_escaped_like_python_with_ensure_ascii_false() {
        // Python: json.dumps({"a": "é\u2028\x7f\x01\"\\/\n"}, ...) == '{"a":"é\u2028\x7f\\u0001\\"\\\\/\\n"}'
        let doc = "{\"a\":\"\\u00e9\u{2028}\u{7f}\\u0001\\\"\\\\\\/\\n\\ud83d\\ude00\"}";
        assert_eq!(canon(doc), "{\"a\":\"é\u{2028}\u{7f}\\u0001\\\"\\\\/\\n😀\"}");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }

    #[test]
    fn big_integers_stay_exact() {
        assert_eq!(
            canon(r#"[123456789012345678901234567890]"#),
            "[123456789012345678901234567890]"
        );
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
                canonical_form(bad.as_bytes(), "checksum").is_err(),
                "accepted {bad:?}"
            );
        }
    }
}
