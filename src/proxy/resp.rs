//! RESP2 framing for the proxy: client requests in, replies out.
//!
//! [`Framer`] reads the length headers of the next request as Redis reads them, so a client
//! announcing a 2 GB bulk is refused at once instead of the proxy buffering until the bytes
//! arrive, and takes the arguments straight from the positions that scan found: one pass over
//! the bytes, no intermediate frame (replies are framed with `redis-protocol`, see [`reply`]).

use bytes::{BufMut, Bytes, BytesMut};

/// Largest bulk string a client may send, like Redis's default `proto-max-bulk-len`.
pub const MAX_BULK: usize = 512 * 1024 * 1024;

/// Most arguments one request may have (Redis allows more; this cap keeps the argument vector of
/// one request, and the work of checking its headers, bounded).
pub const MAX_ARGS: usize = 1024 * 1024;

/// One client request: its arguments and the exact bytes it arrived as (forwarded unchanged when
/// the request goes to one node as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `argv[0]` is the command name.
    pub args: Vec<Bytes>,
    /// The request's wire bytes.
    pub raw: Bytes,
}

/// A client sent something that is not a RESP2 request; the connection must be closed after the
/// error is sent, because the proxy cannot know where the next request starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Takes the next complete request off the front of `buf` with a fresh [`Framer`] (a connection
/// keeps its own, so a request arriving in pieces is scanned once).
///
/// `Ok(None)` means more bytes are needed. Empty arrays (`*0`) are skipped, as Redis does.
pub fn next_request(buf: &mut BytesMut, max_bulk: usize) -> Result<Option<Request>, ProtocolError> {
    let limits = Limits {
        max_bulk,
        max_args: MAX_ARGS,
    };
    Framer::default().next(buf, limits)
}

/// Splits requests off a connection's input buffer.
///
/// The length headers of the request at the front are read first, by [`Framer`] itself and
/// exactly as Redis reads them (so the proxy never forwards bytes a server would split
/// differently), and refused when they announce too much or anything but bulk strings (a nested
/// array would make the decoder recurse once per level). The scan resumes where it stopped, so a
/// request arriving in many reads is read once. A complete request's arguments are slices of
/// its bytes at the positions the scan recorded.
#[derive(Debug, Default)]
pub struct Framer {
    /// The headers read so far of the request at the front of the buffer.
    scan: Option<Scan>,
    /// Where each argument read so far starts, and its length (kept between requests so a
    /// connection reuses one vector).
    bulks: Vec<(usize, usize)>,
}

/// Progress through the headers of one request.
#[derive(Debug, Clone, Copy)]
struct Scan {
    /// Where the next bulk's header starts.
    pos: usize,
    /// Bulks whose header has not been read yet.
    left: i64,
}

/// How much one request may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string.
    pub max_bulk: usize,
    /// Most arguments.
    pub max_args: usize,
}

impl Limits {
    /// For an authenticated client (or when no password is required).
    pub const AUTHENTICATED: Limits = Limits {
        max_bulk: MAX_BULK,
        max_args: MAX_ARGS,
    };
    /// Before AUTH, what Redis allows an unauthenticated client: enough for AUTH and HELLO, too
    /// little to make the proxy buffer much for a stranger.
    pub const UNAUTHENTICATED: Limits = Limits {
        max_bulk: 16 * 1024,
        max_args: 10,
    };
}

/// Largest request, all arguments together (Redis's `client-query-buffer-limit` default).
pub const MAX_REQUEST: usize = 1024 * 1024 * 1024;

impl Framer {
    /// Takes the next complete request off the front of `buf`; `Ok(None)` means more bytes are
    /// needed. Empty and null arrays are skipped, as Redis does.
    pub fn next(&mut self, buf: &mut BytesMut, limits: Limits) -> Result<Option<Request>, ProtocolError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            let Some(end) = self.complete(buf, limits)? else {
                return Ok(None);
            };
            self.scan = None;
            // Like Redis, the two bytes after each bulk are skipped unchecked: the server that
            // gets the raw bytes frames them the same way.
            let raw = buf.split_to(end).freeze();
            if self.bulks.is_empty() {
                continue; // an empty or null array: skipped, as Redis does
            }
            let args = self
                .bulks
                .drain(..)
                .map(|(at, len)| raw.slice(at..at + len))
                .collect();
            return Ok(Some(Request { args, raw }));
        }
    }

    /// The front request's total length once all of it is in `buf`.
    fn complete(&mut self, buf: &[u8], limits: Limits) -> Result<Option<usize>, ProtocolError> {
        let mut scan = match self.scan {
            Some(scan) => scan,
            None => {
                if buf[0] != b'*' {
                    return Err(ProtocolError(format!(
                        "expected '*', got '{}' (inline commands are not supported; send RESP arrays)",
                        (buf[0] as char).escape_default()
                    )));
                }
                let Some((count, pos)) = header(buf, 0)? else {
                    return Ok(None);
                };
                if count > limits.max_args as i64 {
                    return Err(ProtocolError(format!("invalid multibulk length {count}")));
                }
                self.bulks.clear();
                Scan {
                    pos,
                    left: count.max(0),
                }
            }
        };
        let outcome = scan_bulks(buf, &mut scan, limits.max_bulk, &mut self.bulks);
        self.scan = Some(scan);
        outcome?;
        Ok((scan.left == 0 && scan.pos <= buf.len()).then_some(scan.pos))
    }
}

/// Reads bulk headers from where `scan` stopped, as far as `buf` goes; each bulk's data position
/// and length go to `bulks`.
fn scan_bulks(
    buf: &[u8],
    scan: &mut Scan,
    max_bulk: usize,
    bulks: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    while scan.left > 0 && scan.pos < buf.len() {
        if buf[scan.pos] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                (buf[scan.pos] as char).escape_default()
            )));
        }
        let Some((len, next)) = header(buf, scan.pos)? else {
            return Ok(());
        };
        if len < 0 || len > max_bulk as i64 {
            return Err(ProtocolError(format!(
                "invalid bulk length {len} (the limit is {max_bulk} bytes)"
            )));
        }
        bulks.push((next, len as usize));
        scan.pos = next + len as usize + 2;
        scan.left -= 1;
        if scan.pos > MAX_REQUEST {
            return Err(ProtocolError(format!("request larger than {MAX_REQUEST} bytes")));
        }
    }
    Ok(())
}

/// Parses the `<type><integer>\r\n` header at `at` the way Redis does (`string2ll`: an optional
/// `-`, then `0` or digits without a leading zero; nothing else): the integer and the position
/// after the CRLF. `Ok(None)` when the line is not complete yet.
fn header(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    const LONGEST: usize = 24;
    let line = &buf[at + 1..buf.len().min(at + 1 + LONGEST)];
    let Some(end) = line.iter().position(|&b| b == b'\r') else {
        return if line.len() >= LONGEST {
            Err(ProtocolError("length header too long".into()))
        } else {
            Ok(None)
        };
    };
    match buf.get(at + 1 + end + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProtocolError("expected CRLF after a length".into())),
    }
    let digits = &line[..end];
    let negative = digits.starts_with(b"-");
    let unsigned = if negative { &digits[1..] } else { digits };
    let canonical = unsigned.iter().all(u8::is_ascii_digit)
        && (unsigned == b"0" || unsigned.first().is_some_and(|&d| d != b'0'))
        && !(negative && unsigned == b"0");
    let n = canonical
        .then(|| decimal(unsigned, negative))
        .flatten()
        .ok_or_else(|| ProtocolError(format!("invalid length {:?}", String::from_utf8_lossy(digits))))?;
    Ok(Some((n, at + 1 + end + 2)))
}

/// The value of ASCII `digits` (checked to be digits), negated when `negative`; `None` when it
/// does not fit an `i64`. Accumulated on the side of its sign, so `i64::MIN` fits too. (Every
/// header of every request goes through here: no UTF-8 check and no `str::parse`.)
fn decimal(digits: &[u8], negative: bool) -> Option<i64> {
    digits.iter().try_fold(0i64, |n, &d| {
        let d = i64::from(d - b'0');
        let n = n.checked_mul(10)?;
        if negative {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
    })
}

/// Encodes `args` as a RESP2 request.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    buf.put_u8(b'*');
    buf.put_slice(args.len().to_string().as_bytes());
    buf.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        buf.put_u8(b'$');
        buf.put_slice(arg.len().to_string().as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(arg);
        buf.put_slice(b"\r\n");
    }
    buf.freeze()
}

mod reply;
mod scan;

pub use reply::{Proto, Reply};

#[cfg(test)]
mod tests;
