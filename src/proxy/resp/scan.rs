//! The extent of one RESP3 reply frame, found without decoding it.
//!
//! `redis-protocol`'s RESP3 decoder builds every map and set it meets (hashing their keys) just to
//! report a frame's length, and refuses legal frames whose map keys or set members are aggregates
//! (a Lua script answering in RESP3 can send one). On a shared backend connection a refused frame
//! would desynchronise every client behind it, so RESP3 replies are measured here: one pass over
//! the headers, no allocation but a small stack, no recursion (any nesting depth is safe).

use super::ProtocolError;

/// Deepest nesting accepted (Redis replies nest a few levels; this only bounds the stack).
const MAX_DEPTH: usize = 1024;

/// The length of the complete RESP3 frame at the front of `buf` (RESP2 frames are RESP3 frames
/// too, nulls `$-1` and `*-1` included); `Ok(None)` when more bytes are needed.
pub fn resp3_frame_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    // Elements still owed by each open aggregate, innermost last.
    let mut owed: Vec<usize> = Vec::new();
    let mut at = 0;
    loop {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[at + 1..at + eol];
        let next = at + eol + 2;
        let children = match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                at = next;
                0
            }
            b'$' | b'!' | b'=' => match length(line)? {
                None => {
                    at = next; // `$-1`, a RESP2 null
                    0
                }
                Some(len) => {
                    let end = next.checked_add(len).and_then(|e| e.checked_add(2));
                    match end {
                        Some(end) if end <= buf.len() => {
                            at = end;
                            0
                        }
                        Some(_) => return Ok(None),
                        None => return Err(ProtocolError("bulk length overflows".into())),
                    }
                }
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                at = next;
                match (kind, length(line)?) {
                    (_, None) => 0, // `*-1`, a RESP2 null array
                    (b'%', Some(n)) => n.saturating_mul(2),
                    // An attribute map, then the frame it describes.
                    (b'|', Some(n)) => n.saturating_mul(2).saturating_add(1),
                    (_, Some(n)) => n,
                }
            }
            other => {
                return Err(ProtocolError(format!(
                    "unexpected reply type '{}'",
                    (other as char).escape_default()
                )));
            }
        };
        if children > 0 {
            if owed.len() == MAX_DEPTH {
                return Err(ProtocolError("reply nested too deeply".into()));
            }
            owed.push(children);
            continue;
        }
        // One element finished: close every aggregate it completes.
        loop {
            match owed.last_mut() {
                None => return Ok(Some(at)),
                Some(n) => {
                    *n -= 1;
                    if *n > 0 {
                        break;
                    }
                    owed.pop();
                }
            }
        }
    }
}

/// A length header: `None` for `-1`, the length otherwise.
fn length(line: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if line == b"-1" {
        return Ok(None);
    }
    std::str::from_utf8(line)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| ProtocolError(format!("invalid length {:?}", String::from_utf8_lossy(line))))
}
