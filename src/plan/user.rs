//! `username_env`: a side's ACL user, named by an environment variable (like `password_env`).
//!
//! A user name is not a secret, so it is read when the plan loads and written into every URL of
//! its side: each connection cachemig makes (the CLI's, and every one of the proxy's, including
//! the nodes a cluster names) already takes its user from the side's URLs, so none can miss it.

use std::ops::Range;

use url::Url;

use super::error::PlanError;
use super::raw::SpannedStr;
use super::resolve::Ctx;

/// Sets the user named by `var` (the side's `username_env`) on every URL of `section`;
/// `url_spans[i]` is where `urls[i]` is written. A user in a URL as well is an error naming both;
/// an unset variable is an error, or a note offline (the URLs then keep no user).
pub(super) fn apply(
    cx: &Ctx,
    section: &str,
    var: &Option<SpannedStr>,
    urls: &mut [Url],
    url_spans: &[Range<usize>],
) -> Result<(), PlanError> {
    let Some(v) = var else { return Ok(()) };
    let name = cx.variable(
        var,
        "username_env",
        "name the variable that holds the ACL user, e.g. `username_env = \"OLD_REDIS_USER\"`",
    )?;
    let Some(name) = name else { return Ok(()) };
    if let Some((url, span)) = urls.iter().zip(url_spans).find(|(u, _)| !u.username().is_empty()) {
        return Err(cx.err(
            span.clone(),
            format!(
                "[{section}] names its user twice: `{}` in the URL and username_env = \"{name}\"",
                url.username()
            ),
            "keep one: remove the user from the URL (`redis://host:port`), or remove `username_env`",
        ));
    }
    let user = match std::env::var(&name) {
        Ok(user) if !user.is_empty() => user,
        Ok(_) => {
            return Err(cx.err(
                v.span(),
                format!("[{section}] username_env names ${name}, which is empty"),
                format!("export {name}=<ACL user>, or remove `username_env` to use the `default` user"),
            ));
        }
        Err(_) => {
            let unset = cx.err(
                v.span(),
                format!("[{section}] username_env names ${name}, which is not set"),
                format!("export {name}=<ACL user> before running cachemig, or remove `username_env` to use the `default` user"),
            );
            return cx.unset_secret(unset);
        }
    };
    for url in urls.iter_mut() {
        // A `redis://` URL with a host always takes a user name. One the URL would have to
        // percent-encode is refused: the proxy's handshake sends the URL's user as written.
        if url.set_username(&user).is_err() || url.username() != user {
            return Err(cx.err(
                v.span(),
                format!("[{section}] username_env names ${name}, whose user name holds a character a URL must escape"),
                "use an ACL user made of letters, digits and `-_.~!$&'()*+,`",
            ));
        }
    }
    Ok(())
}
