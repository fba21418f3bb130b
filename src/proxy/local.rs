//! Commands the proxy answers itself: connection handshake and housekeeping.

use std::net::SocketAddr;

use bytes::Bytes;

use super::blocking::Pinned;
use super::pubsub::{Mailbox, PubSub, subscriber_mode};
use super::resp::{Proto, Reply};
use super::tx::{Multi, Watch};
use super::wait::Written;
use super::{Proxy, cluster_view};

/// Per-connection state.
#[derive(Default)]
pub struct Session {
    /// Whether the client authenticated (or no password is required).
    pub authed: bool,
    /// The client asked to close the connection (QUIT).
    pub quit: bool,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// A number for CLIENT ID.
    pub id: u64,
    /// The protocol the client chose with HELLO.
    pub proto: Proto,
    /// The transaction being queued, between MULTI and EXEC.
    pub multi: Option<Multi>,
    /// The keys WATCHed, on the connection that watches them.
    pub watch: Option<Watch>,
    /// The proxy address this client connected to (what CLUSTER SLOTS announces).
    pub local_addr: Option<SocketAddr>,
    /// The connection the client's blocking commands use.
    pub blocking: Option<Pinned>,
    /// The client's subscriptions.
    pub pubsub: Option<PubSub>,
    /// Where the subscriber connections deliver messages for this client.
    pub mailbox: Mailbox,
    /// CLIENT REPLY: which replies the client gets.
    pub replies: Replies,
    /// Where the client's writes went since its last WAIT.
    pub written: Written,
}

/// `CLIENT REPLY ON|OFF|SKIP`, as Redis keeps it: `OFF` drops every reply (its own too) until
/// `ON`, `SKIP` drops its own reply and the next command's.
#[derive(Default)]
pub struct Replies {
    off: bool,
    /// The command being handled is the one after a `SKIP`.
    skip: bool,
    /// A `SKIP` was just handled: the next command is skipped.
    skip_next: bool,
    /// The command being handled is `CLIENT REPLY OFF|SKIP`, which never answers.
    silent: bool,
}

impl Replies {
    /// Called once after each command: whether its reply is dropped.
    pub fn muted(&mut self) -> bool {
        let muted = self.off || self.skip || self.silent;
        self.skip = std::mem::take(&mut self.skip_next);
        self.silent = false;
        muted
    }

    fn set(&mut self, mode: &[u8]) -> Reply {
        match mode.to_ascii_uppercase().as_slice() {
            b"ON" => {
                self.off = false;
                self.skip = false;
            }
            b"OFF" => {
                self.off = true;
                self.silent = true;
            }
            b"SKIP" => {
                self.skip_next = !self.off;
                self.silent = true;
            }
            _ => return Reply::error("ERR syntax error"),
        }
        Reply::ok()
    }
}

/// Answers a local command.
pub fn answer(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let arg = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    };
    match name.as_str() {
        // In subscriber mode Redis answers PING as a message-shaped pair.
        "PING" if subscriber_mode(session) => Reply::push(
            Proto::Resp2,
            [
                Reply::bulk("pong"),
                Reply::bulk(args.get(1).cloned().unwrap_or_default()),
            ],
        ),
        "PING" => match args.get(1) {
            Some(msg) => Reply::bulk(msg.clone()),
            None => Reply::simple("PONG"),
        },
        "ECHO" => args
            .get(1)
            .map_or_else(|| wrong_args("echo"), |m| Reply::bulk(m.clone())),
        "QUIT" => {
            session.quit = true;
            Reply::ok()
        }
        "AUTH" => auth(proxy, session, &args[1..]),
        "HELLO" => hello(proxy, session, args),
        "SELECT" => match arg(1).as_deref() {
            Some("0") => Reply::ok(),
            Some(_) => Reply::error(
                "ERR cachemig: SELECT with a database other than 0 is not supported (a Redis Cluster has only database 0)",
            ),
            None => wrong_args("select"),
        },
        "CLIENT" => client(session, arg(1).as_deref(), args),
        "INFO" => info(proxy, session.proto),
        "RESET" => reset(proxy, session),
        "CLUSTER" => cluster_view::answer(proxy, session, args),
        // A cluster client's per-connection switches: the proxy is one node owning every slot.
        "READONLY" | "READWRITE" | "ASKING" => Reply::ok(),
        other => Reply::error(format!("ERR cachemig: {other} is not served by the proxy")),
    }
}

/// RESET: back to a fresh connection's state (RESP2, no transaction, no name), as Redis does.
fn reset(proxy: &Proxy, session: &mut Session) -> Reply {
    *session = Session {
        authed: proxy.password.is_none(),
        id: session.id,
        local_addr: session.local_addr,
        mailbox: std::mem::take(&mut session.mailbox),
        ..Session::default()
    };
    Reply::simple("RESET")
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

/// AUTH [username] password. Only the default user exists on the proxy.
fn auth(proxy: &Proxy, session: &mut Session, rest: &[Bytes]) -> Reply {
    let Some(expected) = &proxy.password else {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    };
    let (user, given) = match rest {
        [p] => (None, p),
        [u, p] => (Some(u), p),
        _ => return wrong_args("auth"),
    };
    let user_ok = user.is_none_or(|u| u.as_ref() == b"default");
    if user_ok && constant_time_eq(given, expected.as_bytes()) {
        session.authed = true;
        Reply::ok()
    } else {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: switches the connection to RESP2 or RESP3
/// and answers with the fields Redis answers with.
fn hello(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Reply {
    let proto = match args.get(1).map(|v| v.as_ref()) {
        None => session.proto,
        Some(b"2") => Proto::Resp2,
        Some(b"3") => Proto::Resp3,
        Some(v) if v.iter().all(u8::is_ascii_digit) => {
            return Reply::error("NOPROTO unsupported protocol version");
        }
        Some(_) => return Reply::error("ERR Protocol version is not an integer or out of range"),
    };
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        let word = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match word.as_str() {
            "AUTH" if i + 2 < args.len() => {
                let reply = auth(proxy, session, &args[i + 1..i + 3]);
                if reply.is_error() {
                    return reply;
                }
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return Reply::error(format!("ERR Syntax error in HELLO option '{word}'")),
        }
    }
    if !session.authed {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if name.is_some() {
        session.name = name;
    }
    session.proto = proto;
    let text = |s: &str| Reply::bulk(Bytes::copy_from_slice(s.as_bytes()));
    Reply::map(
        proto,
        [
            (text("server"), text("redis")),
            (text("version"), text(&proxy.server_version)),
            (text("proto"), Reply::integer(proto.version())),
            (text("id"), Reply::integer(session.id as i64)),
            (text("mode"), text("standalone")),
            (text("role"), text("master")),
            (text("modules"), Reply::array([])),
        ],
    )
}

/// CLIENT subcommands: the connection's own state lives in the proxy.
fn client(session: &mut Session, sub: Option<&str>, args: &[Bytes]) -> Reply {
    match sub {
        Some("SETNAME") if args.len() == 3 => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = Some(args[2].clone()).filter(|n| !n.is_empty());
            Reply::ok()
        }
        Some("SETINFO") if args.len() == 4 => Reply::ok(),
        Some("GETNAME") => session
            .name
            .clone()
            .map_or_else(|| Reply::null(session.proto), Reply::bulk),
        Some("ID") => Reply::integer(session.id as i64),
        Some("NO-EVICT" | "NO-TOUCH") => match args.get(2).map(|a| a.to_ascii_uppercase()) {
            Some(v) if v == b"ON" || v == b"OFF" => Reply::ok(),
            _ => Reply::error("ERR syntax error"),
        },
        // Invalidation messages would come from whichever side serves reads and stop at every
        // switch; refused clearly instead (RESP3 clients treat it as "no client-side caching").
        Some("TRACKING" | "CACHING" | "GETREDIR" | "TRACKINGINFO") => Reply::error(format!(
            "ERR cachemig: CLIENT {} is not supported by the proxy (no client-side caching through it)",
            sub.unwrap_or_default()
        )),
        Some("REPLY") if args.len() == 3 => session.replies.set(&args[2]),
        Some("REPLY") => wrong_args("client|reply"),
        Some("LIST" | "INFO" | "KILL" | "PAUSE" | "UNPAUSE" | "UNBLOCK") => Reply::error(format!(
            "ERR cachemig: CLIENT {} is not supported by the proxy",
            sub.unwrap_or_default()
        )),
        // As Redis 7.0 answers a subcommand it does not know (e.g. MAINT_NOTIFICATIONS).
        Some(_) => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[1])
                .chars()
                .take(128)
                .collect::<String>()
        )),
        None => wrong_args("client"),
    }
}

/// INFO: the proxy's own view, so a client poking at it sees where it is (with the fields that
/// client libraries read: the server version, `loading`, `redis_mode`).
fn info(proxy: &Proxy, proto: Proto) -> Reply {
    let applied = proxy.applied();
    let body = format!(
        "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\nloading:0\r\n\r\n# Proxy\r\nserver:cachemig\r\nversion:{}\r\nproxy_id:{}\r\nmigration:{}\r\ngeneration:{}\r\nphase:{}\r\nread:{}\r\nwrite:{}\r\nmirror:{}\r\nfence:{}\r\n",
        proxy.server_version,
        env!("CARGO_PKG_VERSION"),
        proxy.id,
        proxy.migration,
        applied.generation,
        applied.phase,
        applied.routing.read,
        applied.routing.write,
        applied.routing.mirror,
        applied.routing.fence,
    );
    Reply::verbatim(proto, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `CLIENT REPLY <mode>` (or, for `None`, another command) and says which were muted.
    fn replies(script: &[Option<&str>]) -> Vec<bool> {
        let mut r = Replies::default();
        script
            .iter()
            .map(|mode| {
                if let Some(mode) = mode {
                    assert!(!r.set(mode.as_bytes()).is_error());
                }
                r.muted()
            })
            .collect()
    }

    #[test]
    fn client_reply_mutes_as_redis_does() {
        // SKIP: itself and the next command; then replies again.
        assert_eq!(replies(&[Some("skip"), None, None]), [true, true, false]);
        // OFF until ON; ON itself answers.
        assert_eq!(
            replies(&[Some("OFF"), None, Some("ON"), None]),
            [true, true, false, false]
        );
        // SKIP while OFF changes nothing; SKIP twice skips the second SKIP and the next one.
        assert_eq!(
            replies(&[Some("OFF"), Some("SKIP"), Some("ON"), None]),
            [true, true, false, false]
        );
        assert_eq!(
            replies(&[Some("SKIP"), Some("SKIP"), None, None]),
            [true, true, true, false]
        );
        assert!(Replies::default().set(b"MAYBE").is_error());
    }

    #[test]
    fn password_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
