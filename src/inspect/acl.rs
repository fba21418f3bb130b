//! ACL preflight: may the side's user run what each phase needs ([`super::acl_needs`])?
//!
//! Two ways to ask without running anything:
//! - `ACL DRYRUN user cmd args…` (Redis 7.0+, Valkey) answers whether the user may run the
//!   command with these arguments (keys included). It needs the `acl|dryrun` permission itself.
//! - Otherwise (an older server, or a user without `acl|dryrun`): open `MULTI` and queue each
//!   command. Redis checks the ACL before it queues, so a refused command answers `NOPERM` and an
//!   allowed one `QUEUED`; then `EXEC` of a transaction spoiled on purpose (a command with too
//!   few arguments) answers `EXECABORT` if `EXEC` is allowed, and nothing ever runs. Refusals are
//!   logged in the server's `ACL LOG`, as any refused command is.
//!
//! When neither works (no `MULTI` either), the check says it could not be done.

use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use url::Url;

use super::acl_needs::{self, Need, Sample, When, command_name};
use crate::endpoint::connect_node;
use crate::tls::TlsSettings;

/// How the permissions were checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AclMethod {
    /// `ACL DRYRUN`.
    AclDryrun,
    /// Commands queued in a `MULTI` that never runs.
    MultiProbe,
    /// Neither could be used.
    #[default]
    NotChecked,
}

/// One command the user may not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingPermission {
    /// The command as ACL rules name it (`DUMP`, `MEMORY USAGE`).
    pub command: String,
    /// What needs it ("backfill, verify: read a key").
    pub needed_for: String,
    /// What the server said.
    pub server_says: String,
}

/// The outcome on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AclCheck {
    /// The user checked (`default` when the plan names none).
    pub user: String,
    /// How.
    pub method: AclMethod,
    /// Why it could not be checked (`method` is `not-checked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
    /// Every command needed and refused, in the order of the needs.
    pub missing: Vec<MissingPermission>,
}

/// What the node answered about one argv.
enum Answer {
    Allowed,
    Refused(String),
}

/// Checks, on the node at `url`, every need of `role` ("source" or "target") that applies.
/// Opens a connection of its own (a probe leaves it inside a transaction when `EXEC` is refused).
pub async fn check(
    role: &str,
    url: &Url,
    password: Option<&str>,
    tls: Option<&TlsSettings>,
    cluster: bool,
    filter: &crate::keys::KeyFilter,
) -> AclCheck {
    let user = Some(url.username())
        .filter(|u| !u.is_empty())
        .unwrap_or("default");
    let mut out = AclCheck {
        user: user.to_string(),
        ..AclCheck::default()
    };
    let mut conn = match connect_node(url, password, tls).await {
        Ok(conn) => conn,
        Err(e) => {
            out.not_checked = Some(format!("cannot connect: {e}"));
            return out;
        }
    };
    let needs = if role == "source" {
        acl_needs::SOURCE
    } else {
        acl_needs::TARGET
    };
    let applies = |n: &&Need| match n.when {
        When::Always => true,
        When::Cluster => cluster,
    };
    let needs: Vec<&Need> = needs.iter().filter(applies).collect();
    let sample = Sample::new(filter);
    out.method = choose_method(&mut conn, user).await;
    let mut asker = match out.method {
        AclMethod::AclDryrun => Asker::Dryrun(user.to_string()),
        AclMethod::MultiProbe => Asker::Multi,
        AclMethod::NotChecked => {
            out.not_checked = Some(
                "neither `ACL DRYRUN` (Redis 7.0+, and the user needs `+acl|dryrun`) nor `MULTI` is \
                 allowed to this user"
                    .into(),
            );
            return out;
        }
    };
    for need in needs {
        out.missing
            .extend(check_need(&mut conn, &mut asker, need, &sample).await);
    }
    if let Asker::Multi = asker
        && let Answer::Refused(text) = end_probe(&mut conn).await
    {
        out.missing.push(MissingPermission {
            command: "EXEC".into(),
            needed_for: "backfill: MULTI/EXEC reads where scripts are refused".into(),
            server_says: text,
        });
    }
    out
}

/// `ACL DRYRUN` when the server has it and lets this user run it, else the `MULTI` probe.
async fn choose_method(conn: &mut MultiplexedConnection, user: &str) -> AclMethod {
    let dryrun = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg("PING")
        .query_async::<Value>(conn)
        .await;
    if matches!(dryrun, Ok(Value::Okay)) {
        return AclMethod::AclDryrun;
    }
    match redis::cmd("MULTI").query_async::<Value>(conn).await {
        Ok(_) => AclMethod::MultiProbe,
        Err(_) => AclMethod::NotChecked,
    }
}

/// How one argv is asked about.
enum Asker {
    Dryrun(String),
    Multi,
}

impl Asker {
    async fn ask(&mut self, conn: &mut MultiplexedConnection, argv: &[String]) -> Answer {
        match self {
            Asker::Dryrun(user) => {
                let reply = redis::cmd("ACL")
                    .arg("DRYRUN")
                    .arg(user.as_str())
                    .arg(argv)
                    .query_async::<Value>(conn)
                    .await;
                match reply {
                    Ok(Value::Okay) => Answer::Allowed,
                    Ok(Value::BulkString(text)) => Answer::Refused(String::from_utf8_lossy(&text).into()),
                    Ok(Value::SimpleString(text)) if text != "OK" => Answer::Refused(text),
                    // An error is about the command (unknown to this server), not the user.
                    _ => Answer::Allowed,
                }
            }
            // MULTI and EXEC are the probe itself (EXEC is asked at its end).
            Asker::Multi if matches!(argv.first().map(String::as_str), Some("MULTI" | "EXEC")) => {
                Answer::Allowed
            }
            Asker::Multi => match redis::cmd(&argv[0])
                .arg(&argv[1..])
                .query_async::<Value>(conn)
                .await
            {
                Err(e) if e.code() == Some("NOPERM") => Answer::Refused(e.to_string()),
                // QUEUED; or an error Redis gives before its ACL check (unknown command, not
                // allowed in a transaction): not the user's permissions.
                _ => Answer::Allowed,
            },
        }
    }
}

/// The commands of `need` the user may not run; none when one alternative is wholly allowed.
async fn check_need(
    conn: &mut MultiplexedConnection,
    asker: &mut Asker,
    need: &Need,
    sample: &Sample,
) -> Vec<MissingPermission> {
    let mut refused = Vec::new();
    for alternative in need.any_of {
        let mut this = Vec::new();
        for template in *alternative {
            let argv = sample.fill(template);
            if let Answer::Refused(text) = asker.ask(conn, &argv).await {
                this.push((command_name(&argv), text));
            }
        }
        if this.is_empty() {
            return Vec::new();
        }
        refused.extend(this);
    }
    let purpose = match need.any_of.len() {
        1 => need.purpose.to_string(),
        _ => format!("{} — one of the ways is enough", need.purpose),
    };
    refused
        .into_iter()
        .map(|(command, server_says)| MissingPermission {
            command,
            needed_for: purpose.clone(),
            server_says,
        })
        .collect()
}

/// Ends the `MULTI` probe without running anything: a command with too few arguments spoils the
/// transaction, so an allowed `EXEC` answers `EXECABORT`; a refused one leaves the transaction
/// open, which `DISCARD` closes (the connection is dropped anyway).
async fn end_probe(conn: &mut MultiplexedConnection) -> Answer {
    let _ = redis::cmd("GET").query_async::<Value>(conn).await;
    let exec = redis::cmd("EXEC").query_async::<Value>(conn).await;
    match exec {
        Err(e) if e.code() == Some("NOPERM") => {
            let _ = redis::cmd("DISCARD").query_async::<Value>(conn).await;
            Answer::Refused(e.to_string())
        }
        _ => Answer::Allowed,
    }
}
