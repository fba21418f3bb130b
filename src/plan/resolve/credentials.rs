//! Credentials, each named by an environment variable and never written in the plan:
//! `password_env` (checked to be set, read only where cachemig connects) and `username_env`, a
//! side's ACL user.
//!
//! A user name is not a secret, so it is read when the plan loads and written into every URL of
//! its side: each connection cachemig makes (the CLI's, and every one of the proxy's, including
//! the nodes a cluster names) already takes its user from the side's URLs, so none can miss it.

use std::ops::Range;

use url::Url;

use super::ctx::Ctx;
use crate::plan::error::PlanError;
use crate::plan::raw::SpannedStr;

impl Ctx<'_> {
    /// An optional `password_env` of `[section]`: a valid variable name that is set in the
    /// environment (offline, an unset one is a note).
    pub(super) fn password_env(
        &self,
        v: &Option<SpannedStr>,
        section: &str,
    ) -> Result<Option<String>, PlanError> {
        let name = self.env_name(v)?;
        if let (Some(name), Some(v)) = (&name, v)
            && std::env::var_os(name).is_none()
        {
            let unset = self.err(v.span(), format!("[{section}] password_env names ${name}, which is not set"), format!("export {name}=<password> before running cachemig, or remove `password_env` if the server has no password"));
            self.unset_secret(unset)?;
        }
        Ok(name)
    }

    /// A variable the plan names is not set: an error, or offline a note (CI checks plans
    /// without the secrets).
    fn unset_secret(&self, unset: PlanError) -> Result<(), PlanError> {
        if !self.offline {
            return Err(unset);
        }
        self.notes.borrow_mut().push(format!(
            "{} (fine offline: set it where cachemig connects)",
            unset.headline()
        ));
        Ok(())
    }

    /// An optional `password_env` that only has to be a valid variable name: `[proxies]
    /// password_env` is read by `cachemig proxy` alone, which checks that it is set.
    pub(super) fn env_name(&self, v: &Option<SpannedStr>) -> Result<Option<String>, PlanError> {
        self.variable(v, "password_env", "name the variable that holds the password, e.g. `password_env = \"OLD_REDIS_PASSWORD\"` (never the password itself)")
    }

    /// An optional key `key` naming an environment variable: a valid name, or an error with
    /// `hint`.
    fn variable(&self, v: &Option<SpannedStr>, key: &str, hint: &str) -> Result<Option<String>, PlanError> {
        let Some(v) = v else { return Ok(None) };
        let name = v.get_ref();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(self.err(
                v.span(),
                format!("`{key}` \"{name}\" is not an environment variable name"),
                hint,
            ));
        }
        Ok(Some(name.clone()))
    }
}

/// Sets the user named by `var` (the side's `username_env`) on every URL of `section`;
/// `url_spans[i]` is where `urls[i]` is written. A user in a URL as well is an error naming both;
/// an unset variable is an error, or a note offline (the URLs then keep no user).
pub(super) fn apply_user(
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
