//! Commands the proxy answers itself: connection handshake and housekeeping.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::Proxy;
use super::resp::Reply;

/// Per-connection state the local commands change.
#[derive(Debug, Default)]
pub struct Session {
    /// Whether the client authenticated (or no password is required).
    pub authed: bool,
    /// The client asked to close the connection (QUIT).
    pub quit: bool,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// A number for CLIENT ID.
    pub id: u64,
}

/// Answers a local command.
pub fn answer(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let arg = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    };
    match name.as_str() {
        "PING" => match args.get(1) {
            Some(msg) => bulk(msg.clone()),
            None => Reply::simple("PONG"),
        },
        "ECHO" => args
            .get(1)
            .map_or_else(|| wrong_args("echo"), |m| bulk(m.clone())),
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
        "INFO" => info(proxy),
        other => Reply::error(format!("ERR cachemig: {other} is not served by the proxy")),
    }
}

fn bulk(b: Bytes) -> Reply {
    Reply::from_frame(BytesFrame::BulkString(b))
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

/// HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only.
fn hello(proxy: &Proxy, session: &mut Session, args: &[Bytes]) -> Reply {
    if let Some(v) = args.get(1) {
        match v.as_ref() {
            b"2" => {}
            b"3" => {
                return Reply::error(
                    "NOPROTO cachemig: the proxy speaks RESP2 only; use HELLO 2 or no HELLO (RESP3 is not supported)",
                );
            }
            _ => return Reply::error("NOPROTO unsupported protocol version"),
        }
    }
    let mut i = 2;
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
                session.name = Some(args[i + 1].clone());
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
    let pairs: Vec<(&str, BytesFrame)> = vec![
        ("server", text("cachemig")),
        ("version", text(env!("CARGO_PKG_VERSION"))),
        ("proto", BytesFrame::Integer(2)),
        ("id", BytesFrame::Integer(session.id as i64)),
        ("mode", text("proxy")),
        ("role", text("master")),
        ("modules", BytesFrame::Array(Vec::new())),
    ];
    let items = pairs.into_iter().flat_map(|(k, v)| [text(k), v]).collect();
    Reply::from_frame(BytesFrame::Array(items))
}

fn text(s: &str) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
}

fn client(session: &mut Session, sub: Option<&str>, args: &[Bytes]) -> Reply {
    match sub {
        Some("SETNAME") if args.len() == 3 => {
            session.name = Some(args[2].clone());
            Reply::ok()
        }
        Some("SETINFO") => Reply::ok(),
        Some("GETNAME") => session
            .name
            .clone()
            .map_or_else(|| Reply::from_frame(BytesFrame::Null), bulk),
        Some("ID") => Reply::integer(session.id as i64),
        Some(other) => Reply::error(format!(
            "ERR cachemig: CLIENT {other} is not supported by the proxy"
        )),
        None => wrong_args("client"),
    }
}

/// INFO: the proxy's own view, so a client poking at it sees where it is.
fn info(proxy: &Proxy) -> Reply {
    let applied = proxy.applied();
    let body = format!(
        "# Proxy\r\nserver:cachemig\r\nversion:{}\r\nproxy_id:{}\r\nmigration:{}\r\ngeneration:{}\r\nphase:{}\r\nread:{}\r\nwrite:{}\r\nmirror:{}\r\nfence:{}\r\n",
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
    bulk(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
