//! RESP2 framing for the proxy: client requests in, replies out.
//!
//! Decoding uses the `redis-protocol` crate. Before it runs, [`check_sizes`] reads the length
//! headers of the next frame so a client announcing a 2 GB bulk is refused at once instead of
//! the proxy buffering until the bytes arrive (the crate has no size cap of its own).

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

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

/// Takes the next complete request off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed. Empty arrays (`*0`) are skipped, as Redis does.
pub fn next_request(buf: &mut BytesMut, max_bulk: usize) -> Result<Option<Request>, ProtocolError> {
    Framer::default().next(buf, max_bulk)
}

/// Splits requests off a connection's input buffer, remembering how many bytes the request at
/// the front needs, so a large request arriving in many reads is checked once per read rather
/// than decoded from the start each time.
#[derive(Debug, Default)]
pub struct Framer {
    need: usize,
}

impl Framer {
    /// Takes the next complete request off the front of `buf`; `Ok(None)` means more bytes are
    /// needed.
    pub fn next(&mut self, buf: &mut BytesMut, max_bulk: usize) -> Result<Option<Request>, ProtocolError> {
        loop {
            if buf.is_empty() || buf.len() < self.need {
                return Ok(None);
            }
            match check_sizes(buf, max_bulk)? {
                Some(end) if end <= buf.len() => self.need = 0,
                Some(end) => {
                    self.need = end;
                    return Ok(None);
                }
                None => return Ok(None),
            }
            let Some((frame, _, raw)) =
                decode_bytes_mut(buf).map_err(|e| ProtocolError(e.details().to_string()))?
            else {
                return Ok(None);
            };
            let BytesFrame::Array(items) = frame else {
                return Err(ProtocolError("expected '*', got a reply-type frame".into()));
            };
            if items.is_empty() {
                continue;
            }
            let args = items
                .into_iter()
                .map(|item| match item {
                    BytesFrame::BulkString(b) => Ok(b),
                    _ => Err(ProtocolError("expected '$' inside a request".into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(Request { args, raw }));
        }
    }
}

/// Reads the headers of the request at the front of `buf` (only lengths; the frame itself is
/// decoded by `redis-protocol`) and refuses one that announces too much or holds anything but
/// bulk strings (a nested array would make the decoder recurse once per level).
///
/// Returns the request's total length once every header is known (it may be more than `buf`
/// holds), or `None` when a header is still incomplete.
pub fn check_sizes(buf: &[u8], max_bulk: usize) -> Result<Option<usize>, ProtocolError> {
    if buf[0] != b'*' {
        return Err(ProtocolError(format!(
            "expected '*', got '{}' (inline commands are not supported; send RESP arrays)",
            (buf[0] as char).escape_default()
        )));
    }
    let Some((count, mut pos)) = header(buf, 0)? else {
        return Ok(None);
    };
    if count > MAX_ARGS as i64 {
        return Err(ProtocolError(format!("invalid multibulk length {count}")));
    }
    for _ in 0..count.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                (buf[pos] as char).escape_default()
            )));
        }
        let Some((len, next)) = header(buf, pos)? else {
            return Ok(None);
        };
        if len > max_bulk as i64 {
            return Err(ProtocolError(format!(
                "invalid bulk length {len} (the limit is {max_bulk} bytes)"
            )));
        }
        if len < 0 {
            return Err(ProtocolError(format!("invalid bulk length {len}")));
        }
        pos = next + len as usize + 2;
    }
    Ok(Some(pos))
}

/// Parses the `<type><integer>\r\n` header at `at`: the integer and the position after the CRLF.
/// `Ok(None)` when the line is not complete yet.
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
    let text = std::str::from_utf8(&line[..end]).ok();
    let n = text.and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
        ProtocolError(format!(
            "invalid length {:?}",
            String::from_utf8_lossy(&line[..end])
        ))
    })?;
    Ok(Some((n, at + 1 + end + 2)))
}

/// A reply from a backend: the decoded frame (to inspect or merge) and its wire bytes (to forward
/// unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The decoded reply.
    pub frame: BytesFrame,
    /// Its exact wire bytes.
    pub raw: Bytes,
}

impl Reply {
    /// Takes the next complete reply off the front of `buf`; `Ok(None)` means more bytes are needed.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        match decode_bytes_mut(buf) {
            Ok(Some((frame, _, raw))) => Ok(Some(Reply { frame, raw })),
            Ok(None) => Ok(None),
            Err(e) => Err(ProtocolError(e.details().to_string())),
        }
    }

    /// A reply built by the proxy.
    pub fn from_frame(frame: BytesFrame) -> Reply {
        let mut buf = BytesMut::new();
        // Encoding into a growing buffer cannot run out of room; the frame types are plain RESP2.
        let _ = redis_protocol::resp2::encode::extend_encode(&mut buf, &frame, false);
        Reply {
            frame,
            raw: buf.freeze(),
        }
    }

    /// An error reply; `text` is the whole line after `-` (e.g. `ERR cachemig: ...`). CR and LF
    /// in it are replaced so the reply stays one line.
    pub fn error(text: impl AsRef<str>) -> Reply {
        let clean: String = text
            .as_ref()
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        Reply::from_frame(BytesFrame::Error(clean.into()))
    }

    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::simple("OK")
    }

    /// A simple-string reply.
    pub fn simple(text: &str) -> Reply {
        Reply::from_frame(BytesFrame::SimpleString(Bytes::copy_from_slice(text.as_bytes())))
    }

    /// An integer reply.
    pub fn integer(n: i64) -> Reply {
        Reply::from_frame(BytesFrame::Integer(n))
    }

    /// The error text when this is an error reply.
    pub fn error_text(&self) -> Option<&str> {
        match &self.frame {
            BytesFrame::Error(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self.frame, BytesFrame::Error(_))
    }
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

#[cfg(test)]
mod tests;
