//! Connections to the old and new Redis.
//!
//! Every error names the side ("source"/"target"), the URL with any password replaced by `***`,
//! and what to check. A password never appears in a message: it is read from the environment at
//! connect time and scrubbed from anything the server or the driver says.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError};
use url::Url;

use crate::tls::TlsSettings;

mod redact;

pub use redact::redacted;
use redact::scrub;

/// How long to wait for a TCP connection (and the handshake) to one node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for the reply to one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// TLS settings: `Some` exactly when the URLs are `rediss://`.
    pub tls: Option<TlsSettings>,
}

impl Endpoint {
    /// The password from the variable named by `password_env`; `None` when no variable is named.
    /// A named but unset (or non-UTF-8) variable is an error naming the variable, never a value.
    pub fn password(&self) -> Result<Option<String>, EndpointError> {
        let Some(var) = &self.password_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(_) => Err(EndpointError::PasswordEnvUnset {
                role: self.role,
                var: var.clone(),
            }),
        }
    }

    /// Connects to one node of this side (`url` need not be one of `urls`: a discovered master),
    /// with the password from the environment; errors are labelled with this side's role.
    pub async fn connect_node(&self, url: &Url) -> Result<MultiplexedConnection, EndpointError> {
        let password = self.password()?;
        connect_node(url, password.as_deref(), self.tls.as_ref())
            .await
            .map_err(|e| e.for_endpoint(self))
    }

    /// Connects to this side as a cluster through its seed `urls`.
    pub async fn connect_cluster(&self) -> Result<ClusterConnection, EndpointError> {
        let password = self.password()?;
        connect_cluster(&self.urls, password.as_deref(), self.tls.as_ref())
            .await
            .map_err(|e| e.for_endpoint(self))
    }
}

/// Why a side could not be used. `role` is `None` when the free functions were called without an
/// [`Endpoint`]; [`EndpointError::with_role`] fills it in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// `password_env` names a variable that is not set.
    #[error(
        "[{role}] password_env names the environment variable {var}, but it is not set (or not \
         valid UTF-8); export {var} before running cachemig, or remove password_env from the plan"
    )]
    PasswordEnvUnset {
        /// "source" or "target".
        role: &'static str,
        /// The variable's name.
        var: String,
    },
    /// The URL cannot be turned into a connection.
    #[error("{} URL {url} is not usable: {reason}; check {}", who(.role), hint(.role))]
    InvalidUrl {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Nothing answered, or the connection broke.
    #[error(
        "cannot reach {} {url}: {reason}; is redis-server running and reachable from here? check {}",
        who(.role), hint(.role)
    )]
    Unreachable {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The URL(s), password redacted.
        url: String,
        /// The driver's or server's words, password scrubbed.
        reason: String,
    },
    /// The server refused our credentials, or wants some we did not give.
    #[error(
        "authentication to {} {url} failed: {reason}; {}",
        who(.role), auth_hint(.role, url, .password_env)
    )]
    Auth {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The URL, password redacted.
        url: String,
        /// The server's words, password scrubbed.
        reason: String,
        /// The variable the password came from (`password_env`), when known.
        password_env: Option<String>,
    },
    /// Something answered on the port, but not in RESP: not a Redis port (an HTTP server, a
    /// database, a typo in the port).
    #[error(
        "{} {} answered but does not speak RESP — is it a Redis port? ({url} replied with \
         something other than a Redis reply); check {}",
        who(.role), addresses(url), hint(.role)
    )]
    NotResp {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The URL(s), password redacted.
        url: String,
        /// What the driver could not parse (its parser's words, kept out of the message: they
        /// quote the foreign bytes, not the mistake).
        reason: String,
    },
    /// The TLS settings cannot be used, or the TLS handshake failed (wrong CA, a server that
    /// does not speak TLS on that port, a refused client certificate).
    #[error(
        "TLS to {} {url} failed: {reason}; check the tls_* keys{} (tls_ca_file must name the CA \
         that signed the server's certificate) and that the server speaks TLS on this port",
        who(.role), in_section(.role)
    )]
    Tls {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The URL(s), password redacted.
        url: String,
        /// What rustls or the server said, password scrubbed.
        reason: String,
    },
    /// A read command failed on a reachable node (ACL, renamed command, loading, …).
    #[error("{command} failed on {} {url}: {reason}", who(.role))]
    Command {
        /// "source" or "target", when known.
        role: Option<&'static str>,
        /// The node's URL, password redacted.
        url: String,
        /// The command that failed, e.g. "CLUSTER NODES".
        command: String,
        /// The server's words, password scrubbed.
        reason: String,
    },
}

impl EndpointError {
    /// Labels the error with the side it happened on (kept if already labelled).
    pub fn with_role(mut self, role: &'static str) -> Self {
        match &mut self {
            Self::PasswordEnvUnset { .. } => {}
            Self::InvalidUrl { role: r, .. }
            | Self::Unreachable { role: r, .. }
            | Self::Auth { role: r, .. }
            | Self::NotResp { role: r, .. }
            | Self::Tls { role: r, .. }
            | Self::Command { role: r, .. } => {
                r.get_or_insert(role);
            }
        }
        self
    }

    /// Labels the error with `ep`'s side and, for an authentication failure, the variable its
    /// password came from (so the message names what to check).
    pub fn for_endpoint(mut self, ep: &Endpoint) -> Self {
        if let Self::Auth { password_env, .. } = &mut self {
            password_env.clone_from(&ep.password_env);
        }
        self.with_role(ep.role)
    }

    /// A short label of what went wrong, for a line that names the side first
    /// (`source: AUTHENTICATION FAILED: …`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::PasswordEnvUnset { .. } => "PASSWORD NOT SET",
            Self::InvalidUrl { .. } => "INVALID URL",
            Self::Unreachable { .. } => "UNREACHABLE",
            Self::Auth { .. } => "AUTHENTICATION FAILED",
            Self::NotResp { .. } => "NOT REDIS",
            Self::Tls { .. } => "TLS FAILED",
            Self::Command { .. } => "COMMAND FAILED",
        }
    }

    /// The side the error happened on, when known.
    pub fn role(&self) -> Option<&'static str> {
        match self {
            Self::PasswordEnvUnset { role, .. } => Some(role),
            Self::InvalidUrl { role, .. }
            | Self::Unreachable { role, .. }
            | Self::Auth { role, .. }
            | Self::NotResp { role, .. }
            | Self::Tls { role, .. }
            | Self::Command { role, .. } => *role,
        }
    }

    /// Wraps a failed read command on a connected node.
    pub fn command(url: &Url, command: &str, err: &RedisError, password: Option<&str>) -> Self {
        Self::Command {
            role: None,
            url: redacted(url),
            command: command.to_string(),
            reason: scrub(&err.to_string(), password),
        }
    }
}

fn who(role: &Option<&'static str>) -> &'static str {
    role.unwrap_or("Redis")
}

fn in_section(role: &Option<&'static str>) -> String {
    role.map(|r| format!(" in [{r}]")).unwrap_or_default()
}

/// What to check after an authentication failure: the password's variable and the URL's user.
fn auth_hint(role: &Option<&'static str>, url: &str, password_env: &Option<String>) -> String {
    let section = in_section(role);
    let password = match password_env {
        Some(var) => format!("the password in the environment variable {var} (password_env{section})"),
        None => format!("the password: the plan names no password_env{section}, so none was sent"),
    };
    let user = match Url::parse(url).map(|u| u.username().to_string()) {
        Ok(user) if !user.is_empty() => {
            format!("the user `{user}` (from the URL, or the variable username_env names)")
        }
        _ => "the user: the URL names none, so Redis's `default` user was used (set username_env \
              to name one)"
            .to_string(),
    };
    format!("check {password}, and {user}")
}

/// `host:port` of each comma-separated URL in `urls` (the text itself when one does not parse).
fn addresses(urls: &str) -> String {
    urls.split(", ")
        .map(|u| match Url::parse(u) {
            Ok(p) => match (p.host_str(), p.port()) {
                (Some(h), Some(port)) => format!("{h}:{port}"),
                (Some(h), None) => format!("{h}:6379"),
                _ => u.to_string(),
            },
            Err(_) => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hint(role: &Option<&'static str>) -> String {
    match *role {
        Some("source") => "`url` in [source] of the plan".into(),
        Some("target") => "`urls` in [target] of the plan".into(),
        Some(other) => format!("[{other}] in the plan"),
        None => "the URL".into(),
    }
}

/// The connection settings for `url`, with `password` (if given) replacing any in the URL, and
/// certificate checks off when `tls` says to skip them (the driver's `#insecure`).
fn connection_info(
    url: &Url,
    password: Option<&str>,
    tls: Option<&TlsSettings>,
) -> Result<ConnectionInfo, EndpointError> {
    let mut url_for_driver = url.clone();
    if tls.is_some_and(|t| t.insecure_skip_verify) {
        url_for_driver.set_fragment(Some("insecure"));
    }
    let info = url_for_driver
        .into_connection_info()
        .map_err(|e| EndpointError::InvalidUrl {
            role: None,
            url: redacted(url),
            reason: scrub(&e.to_string(), url.password()),
        })?;
    Ok(match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

/// Sorts a driver error into unreachable / authentication, with secrets scrubbed.
fn classify(url: String, err: &RedisError, password: Option<&str>) -> EndpointError {
    let reason = scrub(&err.to_string(), password);
    // Before the TLS check: a parse error is a port that answered, in another protocol.
    if err.kind() == redis::ErrorKind::Parse {
        return EndpointError::NotResp {
            role: None,
            url,
            reason,
        };
    }
    if is_tls_failure(&reason) {
        return EndpointError::Tls {
            role: None,
            url,
            reason,
        };
    }
    let code = err.code().unwrap_or_default();
    let auth = err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code, "NOAUTH" | "WRONGPASS")
        || reason.contains("NOAUTH")
        || reason.contains("WRONGPASS");
    if auth {
        let reason = if code == "NOAUTH" || reason.contains("NOAUTH") {
            format!("the server requires a password and none was given ({reason})")
        } else {
            reason
        };
        EndpointError::Auth {
            role: None,
            url,
            reason,
            password_env: None,
        }
    } else {
        EndpointError::Unreachable {
            role: None,
            url,
            reason,
        }
    }
}

/// Whether a driver's message is about the TLS handshake (rustls' words for a certificate it
/// refuses, or the garbage a plain-text port answers a handshake with).
fn is_tls_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    ["certificate", "handshake", "tls", "corrupt message", "alert"]
        .iter()
        .any(|w| r.contains(w))
}

/// The `redis` crate's client for one node, with the side's certificates when it has any.
fn client(
    info: ConnectionInfo,
    tls: Option<&TlsSettings>,
    url: &Url,
) -> Result<redis::Client, EndpointError> {
    let tls_error = |reason: String| EndpointError::Tls {
        role: None,
        url: redacted(url),
        reason,
    };
    let certs = tls
        .map(TlsSettings::redis_certificates)
        .transpose()
        .map_err(|e| tls_error(e.to_string()))?;
    match certs.flatten() {
        Some(certs) => redis::Client::build_with_tls(info, certs).map_err(|e| tls_error(e.to_string())),
        None => redis::Client::open(info).map_err(|e| classify(redacted(url), &e, url.password())),
    }
}

fn timed_out(url: String, after: Duration) -> EndpointError {
    EndpointError::Unreachable {
        role: None,
        url,
        reason: format!("no answer within {after:?}"),
    }
}

/// Opens a multiplexed connection to one node and checks it with `PING`, with
/// [`CONNECT_TIMEOUT`] and [`RESPONSE_TIMEOUT`]. `password`, when given, overrides one in the URL.
/// `tls` applies to a `rediss://` URL.
pub async fn connect_node(
    url: &Url,
    password: Option<&str>,
    tls: Option<&TlsSettings>,
) -> Result<MultiplexedConnection, EndpointError> {
    // Scrub the URL's own (percent-encoded) password too; the driver decodes it itself.
    let secret = password.or(url.password());
    let info = connection_info(url, password, tls)?;
    let client = client(info, tls, url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let limit = CONNECT_TIMEOUT + RESPONSE_TIMEOUT;
    let mut conn = tokio::time::timeout(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| timed_out(redacted(url), limit))?
    .map_err(|e| classify(redacted(url), &e, secret))?;
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| classify(redacted(url), &e, secret))?;
    // Named so the bypass check (and an operator reading CLIENT LIST) can tell cachemig's own
    // connections; a server that refuses CLIENT SETNAME (an ACL without it) is no reason to fail.
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(client_name())
        .query_async::<()>(&mut conn)
        .await;
    Ok(conn)
}

/// The name of this process's connections opened by [`connect_node`].
static CLIENT_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names every connection [`connect_node`] opens from now on (default `cachemig-cli`); a proxy
/// sets `cachemig-proxy:<id>`. The first call wins. The name must start with `cachemig-` (the
/// bypass check skips such connections) and hold no space.
pub fn set_client_name(name: &str) {
    let _ = CLIENT_NAME.set(name.to_string());
}

fn client_name() -> &'static str {
    CLIENT_NAME.get().map_or("cachemig-cli", String::as_str)
}

/// Connects to a cluster through any of its seed `urls`, with [`CONNECT_TIMEOUT`] and
/// [`RESPONSE_TIMEOUT`]. `password`, when given, applies to every node; `tls` to every node
/// of a `rediss://` cluster, including the ones its slot map and redirections name.
pub async fn connect_cluster(
    urls: &[Url],
    password: Option<&str>,
    tls: Option<&TlsSettings>,
) -> Result<ClusterConnection, EndpointError> {
    let all = urls.iter().map(redacted).collect::<Vec<_>>().join(", ");
    if urls.is_empty() {
        return Err(EndpointError::InvalidUrl {
            role: None,
            url: all,
            reason: "no URL given".into(),
        });
    }
    let secret = password.or(urls[0].password());
    let infos = urls
        .iter()
        .map(|u| connection_info(u, password, tls))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = ClusterClientBuilder::new(infos)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(p) = password {
        builder = builder.password(p);
    }
    if let Some(tls) = tls {
        builder = tls.cluster_builder(builder).map_err(|e| EndpointError::Tls {
            role: None,
            url: all.clone(),
            reason: e.to_string(),
        })?;
    }
    let client = builder.build().map_err(|e| EndpointError::InvalidUrl {
        role: None,
        url: all.clone(),
        reason: scrub(&e.to_string(), secret),
    })?;
    let limit = CONNECT_TIMEOUT * (urls.len() as u32 + 1) + RESPONSE_TIMEOUT;
    tokio::time::timeout(limit, client.get_async_connection())
        .await
        .map_err(|_| timed_out(all.clone(), limit))?
        .map_err(|e| classify(all, &e, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn password_env_unset_names_the_variable_only() {
        let ep = Endpoint {
            role: "source",
            urls: vec![url("redis://127.0.0.1:1")],
            password_env: Some("CACHEMIG_TEST_SURELY_UNSET_VAR_4711".into()),
            tls: None,
        };
        let msg = ep.password().unwrap_err().to_string();
        assert!(
            msg.contains("[source]") && msg.contains("CACHEMIG_TEST_SURELY_UNSET_VAR_4711"),
            "{msg}"
        );
        let none = Endpoint {
            password_env: None,
            ..ep
        };
        assert_eq!(none.password().unwrap(), None);
    }

    #[test]
    fn errors_name_role_and_hint() {
        let e = EndpointError::Unreachable {
            role: None,
            url: "redis://h:1".into(),
            reason: "refused".into(),
        }
        .with_role("target");
        let msg = e.to_string();
        assert!(
            msg.contains("target redis://h:1") && msg.contains("[target]"),
            "{msg}"
        );
        assert_eq!(
            scrub("WRONGPASS for hunter2", Some("hunter2")),
            "WRONGPASS for ***"
        );
    }

    #[tokio::test]
    async fn unreachable_node_is_reported_without_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let u = url(&format!("redis://me:topsecret@127.0.0.1:{port}"));
        let err = connect_node(&u, None, None).await.unwrap_err();
        let msg = err.with_role("source").to_string();
        assert!(
            msg.contains("cannot reach source") && msg.contains("me:***@"),
            "{msg}"
        );
        assert!(!msg.contains("topsecret"), "{msg}");
    }
}
