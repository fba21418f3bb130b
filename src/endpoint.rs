//! Connections to the old and new Redis.

use url::Url;

/// One side of the migration as the plan describes it, already validated.
///
/// `urls` never carry a password: the password is read from the environment variable named by
/// `password_env` at connect time, so it never reaches a log line, a report or the flag file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// "source" or "target", for messages.
    pub role: &'static str,
    /// `redis://` or `rediss://` URLs: the one source URL, or the target cluster's seed nodes.
    pub urls: Vec<Url>,
    /// The environment variable holding the password, if any.
    pub password_env: Option<String>,
}
