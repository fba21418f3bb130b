//! Replies: the exact wire bytes a backend sent (forwarded unchanged), and the replies the proxy
//! builds itself, in the protocol of the client they are for.
//!
//! The protocol is per client connection (design §10): a client that sent `HELLO 3` talks RESP3
//! and its requests go to backend connections opened with `HELLO 3`, so their replies pass through
//! byte for byte. Replies the proxy makes up (HELLO's map, a null, CLUSTER INFO's text) are built
//! here for either protocol.

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::decode::{decode_bytes, decode_range};
use redis_protocol::resp2::types::BytesFrame;

use super::ProtocolError;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Proto {
    /// RESP2, what a connection speaks until it sends `HELLO 3`.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

impl Proto {
    /// The number `HELLO` takes and answers with.
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }

    /// Index for per-protocol tables (`[resp2, resp3]`).
    pub fn index(self) -> usize {
        self.version() as usize - 2
    }
}

/// A reply from a backend, as its exact wire bytes (forwarded unchanged). Most replies are only
/// forwarded, so the frame is decoded on demand ([`Reply::frame`]), not for every reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Its exact wire bytes: one complete RESP2 or RESP3 frame.
    pub raw: Bytes,
}

/// The length of the complete frame at the front of `buf` in `proto`; `Ok(None)` when more bytes
/// are needed.
pub fn frame_len(buf: &[u8], proto: Proto) -> Result<Option<usize>, ProtocolError> {
    let fail = |e: redis_protocol::error::RedisProtocolError| ProtocolError(e.details().to_string());
    match proto {
        Proto::Resp2 => Ok(decode_range(buf).map_err(fail)?.map(|(_, amt)| amt)),
        Proto::Resp3 => super::scan::resp3_frame_len(buf),
    }
}

impl Reply {
    /// Takes the next complete RESP2 reply off the front of `buf`; `Ok(None)` means more bytes
    /// are needed. Only the frame's extent is worked out here.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        Reply::decode_as(buf, Proto::Resp2)
    }

    /// The same in `proto`.
    pub fn decode_as(buf: &mut BytesMut, proto: Proto) -> Result<Option<Reply>, ProtocolError> {
        Ok(frame_len(buf, proto)?.map(|amt| Reply {
            raw: buf.split_to(amt).freeze(),
        }))
    }

    /// The decoded RESP2 frame (for merging split replies and comparing shadow reads, which use
    /// RESP2 connections).
    pub fn frame(&self) -> BytesFrame {
        match decode_bytes(&self.raw) {
            Ok(Some((frame, _))) => frame,
            // `raw` always holds one complete frame (from `decode` or `from_frame`).
            _ => BytesFrame::Error("ERR cachemig: undecodable reply".into()),
        }
    }

    /// A reply built by the proxy from a RESP2 frame (the same bytes in RESP3 for every type
    /// but null; see [`Reply::null`]).
    pub fn from_frame(frame: BytesFrame) -> Reply {
        let mut buf = BytesMut::new();
        // Encoding into a growing buffer cannot run out of room; the frame types are plain RESP2.
        let _ = redis_protocol::resp2::encode::extend_encode(&mut buf, &frame, false);
        Reply { raw: buf.freeze() }
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

    /// A bulk-string reply.
    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::from_frame(BytesFrame::BulkString(data.into()))
    }

    /// The null that stands for a missing string: `$-1` in RESP2, `_` in RESP3.
    pub fn null(proto: Proto) -> Reply {
        match proto {
            Proto::Resp2 => Reply::from_frame(BytesFrame::Null),
            Proto::Resp3 => Reply::static_bytes(b"_\r\n"),
        }
    }

    /// The null that stands for a missing array (an aborted EXEC): `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(proto: Proto) -> Reply {
        match proto {
            Proto::Resp2 => Reply::static_bytes(b"*-1\r\n"),
            Proto::Resp3 => Reply::static_bytes(b"_\r\n"),
        }
    }

    /// An array of replies.
    pub fn array(items: impl IntoIterator<Item = Reply>) -> Reply {
        Reply::aggregate(b'*', 1, items)
    }

    /// Out-of-band data (a pub/sub message or confirmation): a push frame in RESP3, an array in
    /// RESP2.
    pub fn push(proto: Proto, items: impl IntoIterator<Item = Reply>) -> Reply {
        match proto {
            Proto::Resp2 => Reply::aggregate(b'*', 1, items),
            Proto::Resp3 => Reply::aggregate(b'>', 1, items),
        }
    }

    /// A map: `%` in RESP3, a flat key, value, ... array in RESP2 (what Redis sends).
    pub fn map(proto: Proto, pairs: impl IntoIterator<Item = (Reply, Reply)>) -> Reply {
        let flat = pairs.into_iter().flat_map(|(k, v)| [k, v]);
        match proto {
            Proto::Resp2 => Reply::aggregate(b'*', 1, flat),
            Proto::Resp3 => Reply::aggregate(b'%', 2, flat),
        }
    }

    /// Text meant for people (INFO, CLUSTER INFO): a verbatim string in RESP3, a bulk in RESP2.
    pub fn verbatim(proto: Proto, text: &str) -> Reply {
        match proto {
            Proto::Resp2 => Reply::bulk(Bytes::copy_from_slice(text.as_bytes())),
            Proto::Resp3 => {
                let mut buf = BytesMut::with_capacity(text.len() + 16);
                buf.put_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
                buf.put_slice(text.as_bytes());
                buf.put_slice(b"\r\n");
                Reply { raw: buf.freeze() }
            }
        }
    }

    /// `kind` header with `len / per` elements, then every item's bytes.
    fn aggregate(kind: u8, per: usize, items: impl IntoIterator<Item = Reply>) -> Reply {
        let items: Vec<Reply> = items.into_iter().collect();
        let mut buf = BytesMut::with_capacity(16 + items.iter().map(|r| r.raw.len()).sum::<usize>());
        buf.put_u8(kind);
        buf.put_slice((items.len() / per).to_string().as_bytes());
        buf.put_slice(b"\r\n");
        for item in &items {
            buf.put_slice(&item.raw);
        }
        Reply { raw: buf.freeze() }
    }

    fn static_bytes(raw: &'static [u8]) -> Reply {
        Reply {
            raw: Bytes::from_static(raw),
        }
    }

    /// The elements of an array reply (`*` or RESP3 `~`/`>`), each as its own reply; `None` for
    /// anything else.
    pub fn elements(&self, proto: Proto) -> Option<Vec<Reply>> {
        if !matches!(self.raw.first(), Some(b'*' | b'~' | b'>')) {
            return None;
        }
        let header_end = self.raw.windows(2).position(|w| w == b"\r\n")?;
        let count: i64 = std::str::from_utf8(&self.raw[1..header_end]).ok()?.parse().ok()?;
        let mut at = header_end + 2;
        let mut out = Vec::with_capacity(usize::try_from(count).ok()?);
        for _ in 0..count {
            let len = frame_len(&self.raw[at..], proto).ok()??;
            out.push(Reply {
                raw: self.raw.slice(at..at + len),
            });
            at += len;
        }
        Some(out)
    }

    /// The error text when this is an error reply (the line after `-`).
    pub fn error_text(&self) -> Option<&str> {
        if !self.is_error() {
            return None;
        }
        let line = self.raw.get(1..self.raw.len().saturating_sub(2))?;
        std::str::from_utf8(line).ok()
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        self.raw.first() == Some(&b'-')
    }

    /// Whether this is a RESP3 push frame (out-of-band data, never the answer to a request).
    pub fn is_push(&self) -> bool {
        self.raw.first() == Some(&b'>')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_replies_in_each_protocol() {
        let pairs = || vec![(Reply::bulk("a"), Reply::integer(1))];
        assert_eq!(
            &Reply::map(Proto::Resp2, pairs()).raw[..],
            b"*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            &Reply::map(Proto::Resp3, pairs()).raw[..],
            b"%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(&Reply::null(Proto::Resp2).raw[..], b"$-1\r\n");
        assert_eq!(&Reply::null_array(Proto::Resp2).raw[..], b"*-1\r\n");
        assert_eq!(&Reply::null(Proto::Resp3).raw[..], b"_\r\n");
        assert_eq!(&Reply::verbatim(Proto::Resp3, "hi").raw[..], b"=6\r\ntxt:hi\r\n");
        assert_eq!(&Reply::verbatim(Proto::Resp2, "hi").raw[..], b"$2\r\nhi\r\n");
    }

    #[test]
    fn resp3_frames_the_crate_refuses_or_nests_deeply_are_measured() {
        let len = |b: &[u8]| frame_len(b, Proto::Resp3);
        // A set of arrays and a map with an array key: legal RESP3 a Lua script can send.
        assert_eq!(len(b"~1\r\n*1\r\n:1\r\n+x").unwrap(), Some(12));
        assert_eq!(len(b"%1\r\n*0\r\n_\r\n").unwrap(), Some(11));
        assert_eq!(len(b"|1\r\n+a\r\n:1\r\n$1\r\nv\r\n").unwrap(), Some(19));
        assert_eq!(len(b"$-1\r\n*-1\r\n").unwrap(), Some(5));
        let deep = b"*1\r\n".repeat(100_000);
        assert!(len(&deep).is_err(), "refused, without recursing");
        assert_eq!(len(&b"*1\r\n".repeat(100)).unwrap(), None);
        assert!(len(b"?x\r\n").is_err());
        assert!(len(b"$99999999999999999999999\r\n").is_err());
    }

    #[test]
    fn elements_split_an_array_in_either_protocol() {
        let mut buf = BytesMut::from(&b"*3\r\n$1\r\na\r\n_\r\n%1\r\n+k\r\n,1.5\r\n+tail"[..]);
        let reply = Reply::decode_as(&mut buf, Proto::Resp3).unwrap().unwrap();
        let items = reply.elements(Proto::Resp3).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(&items[1].raw[..], b"_\r\n");
        assert_eq!(&items[2].raw[..], b"%1\r\n+k\r\n,1.5\r\n");
        assert_eq!(&buf[..], b"+tail");
        let two = Reply::array([Reply::null(Proto::Resp2), Reply::bulk("x")]);
        assert_eq!(two.elements(Proto::Resp2).unwrap()[1], Reply::bulk("x"));
        assert!(Reply::ok().elements(Proto::Resp2).is_none());
    }
}
