//! Keeping passwords out of messages: URLs shown with `***` for their password, and a password
//! a driver or server echoes masked where it stands as a token.

use url::Url;

/// The URL for messages: any password (in the userinfo or a `password`/`pass` query parameter)
/// replaced by `***`, e.g. `redis://user:***@host:6379`.
pub fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn is_secret_param(key: &str) -> bool {
    matches!(key, "pass" | "password")
}

/// Removes `password` from a message, in case a driver or server ever echoes it: every
/// occurrence that stands as a token of its own (not inside a longer word), so a password `x`
/// never turns "Unexpected" into "Une***pected" while `user:x@host` or `for x` are still masked.
pub(super) fn scrub(message: &str, password: Option<&str>) -> String {
    let Some(p) = password.filter(|p| !p.is_empty()) else {
        return message.to_string();
    };
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    // A password that starts (ends) with a non-word character is a token boundary itself.
    let open_start = !word(p.chars().next());
    let open_end = !word(p.chars().next_back());
    let mut out = String::with_capacity(message.len());
    let mut rest = 0;
    for (at, _) in message.match_indices(p) {
        if at < rest {
            continue; // overlaps a masked occurrence
        }
        let before = message[..at].chars().next_back();
        let after = message[at + p.len()..].chars().next();
        if (open_start || !word(before)) && (open_end || !word(after)) {
            out.push_str(&message[rest..at]);
            out.push_str("***");
            rest = at + p.len();
        }
    }
    out.push_str(&message[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redacted_hides_passwords() {
        assert_eq!(
            redacted(&url("redis://user:secret@host:6379")),
            "redis://user:***@host:6379"
        );
        assert_eq!(
            redacted(&url("redis://:secret@host:6379/0")),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redacted(&url("redis://host:6379")), "redis://host:6379");
        let q = redacted(&url("redis+unix:///tmp/r.sock?db=1&pass=secret"));
        assert!(!q.contains("secret") && q.contains("db=1"), "{q}");
    }

    #[test]
    fn redaction_masks_the_password_as_a_token_not_inside_words() {
        assert_eq!(scrub("Unexpected EOF", Some("x")), "Unexpected EOF");
        assert_eq!(scrub("user:x@host said x.", Some("x")), "user:***@host said ***.");
        assert_eq!(scrub("p@ss!p@ss! and p@ss!", Some("p@ss!")), "****** and ***");
    }
}
