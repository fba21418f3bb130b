//! Which keys a migration moves: the plan's include/exclude glob patterns.

/// Keys under this prefix belong to cachemig itself (proxy reports, fences). They are never
/// copied, verified or served to clients.
pub const RESERVED_PREFIX: &[u8] = b"__cachemig:";

/// A hashtag for cachemig's own keys that puts them in `key`'s cluster slot (a big key's
/// temporary copy, a key-sync lock), so a script or a `RENAME` may take both.
///
/// Redis Cluster hashes only the content between the first `{` and the next `}` when it is not
/// empty, the whole key otherwise. So: a key with such a hashtag lends it; a key without one
/// becomes the tag itself, unless it is empty or contains a `}` (which would end the tag early),
/// in which case the tag is the shortest decimal number that hashes to the key's slot.
pub fn slot_tag(key: &[u8]) -> Vec<u8> {
    match hashtag(key) {
        Some(tag) => tag.to_vec(),
        None if !key.is_empty() && !key.contains(&b'}') => key.to_vec(),
        None => {
            let slot = crate::cluster::key_slot(key);
            (0u64..)
                .map(|n| n.to_string().into_bytes())
                .find(|candidate| crate::cluster::key_slot(candidate) == slot)
                .expect("every slot is reached by some decimal number")
        }
    }
}

/// The hashtag of `key`: the bytes between the first `{` and the next `}`, if not empty.
fn hashtag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    let tag = &key[open + 1..open + 1 + len];
    (!tag.is_empty()).then_some(tag)
}

/// The plan's key selection: a key migrates when it matches an include pattern (or there are
/// none), matches no exclude pattern, and is not under [`RESERVED_PREFIX`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Redis glob patterns (`*`, `?`, `[a-z]`, `\x`); empty means every key.
    pub include: Vec<String>,
    /// Redis glob patterns of keys to leave behind.
    pub exclude: Vec<String>,
}

impl KeyFilter {
    /// Whether `key` is part of the migration.
    pub fn matches(&self, key: &[u8]) -> bool {
        if key.starts_with(RESERVED_PREFIX) {
            return false;
        }
        let included = self.include.is_empty() || self.include.iter().any(|p| glob_match(p.as_bytes(), key));
        included && !self.exclude.iter().any(|p| glob_match(p.as_bytes(), key))
    }

    /// The pattern to pass to `SCAN … MATCH` so the server filters for us: the single include
    /// pattern when there is exactly one, otherwise `*` (the rest is filtered client-side).
    pub fn scan_pattern(&self) -> &str {
        match self.include.as_slice() {
            [one] => one,
            _ => "*",
        }
    }
}

/// Redis-compatible glob matching (the semantics of `stringmatchlen` in Redis' util.c):
/// `*` any run, `?` one byte, `[...]` a class with ranges and `^` negation, `\` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            // Collapse runs of stars, then try every suffix of the text.
            let rest = trim_leading_stars(rest);
            if rest.is_empty() {
                return true;
            }
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
        }
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => match text.split_first() {
            None => false,
            Some((&c, text_rest)) => {
                let (matched, after) = match_class(rest, c);
                matched && glob_match(after, text_rest)
            }
        },
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

fn trim_leading_stars(mut p: &[u8]) -> &[u8] {
    while let Some((b'*', rest)) = p.split_first() {
        p = rest;
    }
    p
}

/// Matches byte `c` against the class starting after `[`; returns the verdict and the pattern
/// after the closing `]` (an unterminated class runs to the end, as in Redis).
fn match_class(mut p: &[u8], c: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&c);
                p = rest;
            }
            [x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
        }
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_follow_the_cluster_rules() {
        assert_eq!(hashtag(b"a{bc}d"), Some(&b"bc"[..]));
        assert_eq!(hashtag(b"{}{x}"), None);
        assert_eq!(hashtag(b"{{x}}"), Some(&b"{x"[..]));
        assert_eq!(hashtag(b"no tag"), None);
    }

    #[test]
    fn glob_basics() {
        assert!(glob_match(b"token:*", b"token:abc"));
        assert!(!glob_match(b"token:*", b"tok:abc"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"**x", b"abx"));
    }

    #[test]
    fn filter_applies_include_exclude_and_reserved_prefix() {
        let f = KeyFilter {
            include: vec!["token:*".into()],
            exclude: vec!["token:tmp:*".into()],
        };
        assert!(f.matches(b"token:1"));
        assert!(!f.matches(b"token:tmp:1"));
        assert!(!f.matches(b"other"));
        assert!(!KeyFilter::default().matches(b"__cachemig:{x}:proxies"));
        assert!(KeyFilter::default().matches(b"anything"));
    }
}
