//! One chunk of a big key: read from the source, written into the temporary key on the target.

use super::Target;
use redis::{ErrorKind, RedisError, RedisResult};

use super::stream::next_id;
use super::{ATTEMPTS, CHUNK_BYTES, MAX_COUNT, SAFETY_TTL_MS, backoff, query, transient};

/// The types that can be copied in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    String,
    Hash,
    Set,
    Zset,
    List,
    Stream,
}

impl Kind {
    /// The kind named by a `TYPE` reply, if it is one of ours (module types are not).
    pub(super) fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "string" => Kind::String,
            "hash" => Kind::Hash,
            "set" => Kind::Set,
            "zset" => Kind::Zset,
            "list" => Kind::List,
            "stream" => Kind::Stream,
            _ => return None,
        })
    }
}

/// Where the next chunk starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Position {
    /// A byte offset (strings).
    Offset(u64),
    /// A SCAN-family cursor (hashes, sets, sorted sets).
    Cursor(u64),
    /// A list index.
    Index(i64),
    /// The first stream ID to read, inclusive.
    From(String),
}

impl Position {
    /// The start of a key of `kind`.
    pub(super) fn start(kind: Kind) -> Position {
        match kind {
            Kind::String => Position::Offset(0),
            Kind::Hash | Kind::Set | Kind::Zset => Position::Cursor(0),
            Kind::List => Position::Index(0),
            Kind::Stream => Position::From("-".into()),
        }
    }
}

/// A stream entry: its ID and its field/value pairs, flat.
pub(super) type Entry = (String, Vec<Vec<u8>>);

/// The values of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Data {
    /// Bytes of a string at `offset`.
    Str { offset: u64, value: Vec<u8> },
    /// Hash fields and values, flat.
    Hash(Vec<Vec<u8>>),
    /// Set members.
    Set(Vec<Vec<u8>>),
    /// Sorted-set members and scores, flat, in ZSCAN order (member, score).
    Zset(Vec<Vec<u8>>),
    /// List elements, in order.
    List(Vec<Vec<u8>>),
    /// Stream entries, in ID order.
    Stream(Vec<Entry>),
}

impl Data {
    /// Elements in the chunk (bytes for a string), as counted by the target's length command.
    pub(super) fn len(&self) -> usize {
        match self {
            Data::Str { value, .. } => value.len(),
            Data::Hash(flat) | Data::Zset(flat) => flat.len() / 2,
            Data::Set(items) | Data::List(items) => items.len(),
            Data::Stream(entries) => entries.len(),
        }
    }

    /// Whether the chunk holds nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether writing it twice leaves the same value (list and stream appends do not).
    fn idempotent(&self) -> bool {
        !matches!(self, Data::List(_) | Data::Stream(_))
    }
}

/// One chunk read from the source.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The values.
    pub data: Data,
    /// Value bytes in it.
    pub bytes: u64,
    /// Where the next chunk starts; `None` when this one was the last.
    pub next: Option<Position>,
}

/// The element count for the next chunk: about [`CHUNK_BYTES`] at the average element size seen
/// in the last chunk, between 1 and [`MAX_COUNT`].
pub(super) fn adapt_count(count: usize, elements: usize, bytes: u64) -> usize {
    if elements == 0 || bytes == 0 {
        return count;
    }
    let per_element = (bytes / elements as u64).max(1);
    (CHUNK_BYTES / per_element).clamp(1, MAX_COUNT as u64) as usize
}

/// Reads the chunk of `key` at `position` (at most `count` elements), retrying transient errors.
pub(super) async fn read(
    source: &impl Target,
    key: &[u8],
    kind: Kind,
    position: &Position,
    count: usize,
) -> RedisResult<Chunk> {
    let count = count.clamp(1, MAX_COUNT);
    match (kind, position) {
        (Kind::String, Position::Offset(offset)) => {
            let end = offset + CHUNK_BYTES - 1;
            let value: Vec<u8> = query(source, redis::cmd("GETRANGE").arg(key).arg(offset).arg(end)).await?;
            let len = value.len() as u64;
            let next = (len == CHUNK_BYTES).then(|| Position::Offset(offset + len));
            Ok(Chunk {
                data: Data::Str {
                    offset: *offset,
                    value,
                },
                bytes: len,
                next,
            })
        }
        (Kind::Hash | Kind::Set | Kind::Zset, Position::Cursor(cursor)) => {
            let command = match kind {
                Kind::Hash => "HSCAN",
                Kind::Set => "SSCAN",
                _ => "ZSCAN",
            };
            let (next, items): (u64, Vec<Vec<u8>>) = query(
                source,
                redis::cmd(command).arg(key).arg(cursor).arg("COUNT").arg(count),
            )
            .await?;
            if kind != Kind::Set && items.len() % 2 != 0 {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "malformed reply",
                    format!("{command} returned an odd number of items"),
                )));
            }
            let bytes = items.iter().map(|i| i.len() as u64).sum();
            let data = match kind {
                Kind::Hash => Data::Hash(items),
                Kind::Set => Data::Set(items),
                _ => Data::Zset(items),
            };
            Ok(Chunk {
                data,
                bytes,
                next: (next != 0).then_some(Position::Cursor(next)),
            })
        }
        (Kind::List, Position::Index(start)) => {
            let stop = start + count as i64 - 1;
            let items: Vec<Vec<u8>> =
                query(source, redis::cmd("LRANGE").arg(key).arg(start).arg(stop)).await?;
            let bytes = items.iter().map(|i| i.len() as u64).sum();
            let next = (items.len() == count).then(|| Position::Index(start + count as i64));
            Ok(Chunk {
                data: Data::List(items),
                bytes,
                next,
            })
        }
        (Kind::Stream, Position::From(from)) => {
            let entries: Vec<Entry> = query(
                source,
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(from.as_str())
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
            let bytes = entries
                .iter()
                .map(|(id, fields)| id.len() as u64 + fields.iter().map(|f| f.len() as u64).sum::<u64>())
                .sum();
            let next = match entries.last() {
                Some((last, _)) if entries.len() == count => next_id(last).map(Position::From),
                _ => None,
            };
            Ok(Chunk {
                data: Data::Stream(entries),
                bytes,
                next,
            })
        }
        _ => Err(RedisError::from((
            ErrorKind::Client,
            "internal error: chunk position does not match the key type",
            format!("{kind:?} at {position:?}"),
        ))),
    }
}

/// The pipeline that writes `data` (without its first `skip` elements) into `temp` and
/// refreshes the temporary key's safety TTL.
fn pipeline(temp: &[u8], data: &Data, skip: usize) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    match data {
        Data::Str { offset: 0, value } if value.is_empty() => {
            pipe.cmd("SET").arg(temp).arg("").ignore();
        }
        Data::Str { offset, value } => {
            pipe.cmd("SETRANGE")
                .arg(temp)
                .arg(offset)
                .arg(value.as_slice())
                .ignore();
        }
        Data::Hash(flat) => {
            pipe.cmd("HSET").arg(temp).arg(flat).ignore();
        }
        Data::Set(members) => {
            pipe.cmd("SADD").arg(temp).arg(members).ignore();
        }
        Data::Zset(flat) => {
            let cmd = pipe.cmd("ZADD").arg(temp);
            for pair in flat.chunks_exact(2) {
                // The score exactly as ZSCAN printed it (%.17g): it parses back to the same double.
                cmd.arg(pair[1].as_slice()).arg(pair[0].as_slice());
            }
            cmd.ignore();
        }
        Data::List(items) => {
            pipe.cmd("RPUSH").arg(temp).arg(&items[skip..]).ignore();
        }
        Data::Stream(entries) => {
            for (id, fields) in &entries[skip..] {
                pipe.cmd("XADD").arg(temp).arg(id.as_str()).arg(fields).ignore();
            }
        }
    }
    pipe.cmd("PEXPIRE").arg(temp).arg(SAFETY_TTL_MS).ignore();
    pipe
}

/// Writes `data` into `temp`, which already holds `before` elements. Transient errors are
/// retried; for appends (lists, streams) the target's length tells what was applied, so an
/// element is never appended twice.
pub(super) async fn write(target: &impl Target, temp: &[u8], data: &Data, before: u64) -> RedisResult<()> {
    if data.is_empty() && !matches!(data, Data::Str { offset: 0, .. }) {
        return Ok(());
    }
    let mut skip = 0;
    let mut attempt = 1;
    loop {
        let mut conn = target.clone();
        match pipeline(temp, data, skip).query_async::<()>(&mut conn).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                if !data.idempotent() {
                    let len = length(target, temp, data).await?;
                    let applied = len
                        .checked_sub(before)
                        .filter(|a| *a <= data.len() as u64)
                        .ok_or_else(|| length_mismatch(before, len))?;
                    skip = applied as usize;
                    if skip == data.len() {
                        return Ok(());
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The length of `temp` as counted by [`Data::len`].
async fn length(target: &impl Target, temp: &[u8], data: &Data) -> RedisResult<u64> {
    let command = match data {
        Data::Str { .. } => "STRLEN",
        Data::List(_) => "LLEN",
        Data::Stream(_) => "XLEN",
        Data::Hash(_) => "HLEN",
        Data::Set(_) => "SCARD",
        Data::Zset(_) => "ZCARD",
    };
    query(target, redis::cmd(command).arg(temp)).await
}

fn length_mismatch(expected: u64, found: u64) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "the temporary key on the target lost or duplicated writes",
        format!("expected {expected} elements, found {found}"),
    ))
}

/// For types whose writes are counted exactly (strings, lists, streams), checks that `temp`
/// holds `written` elements: a mismatch means a write was lost (e.g. a target failover) or
/// applied twice, and the copy must not be published.
pub(super) async fn check_length(
    target: &impl Target,
    temp: &[u8],
    kind: Kind,
    written: u64,
) -> RedisResult<()> {
    let probe = match kind {
        Kind::String => Data::Str {
            offset: 0,
            value: Vec::new(),
        },
        Kind::List => Data::List(Vec::new()),
        Kind::Stream => Data::Stream(Vec::new()),
        Kind::Hash | Kind::Set | Kind::Zset => return Ok(()),
    };
    let len = length(target, temp, &probe).await?;
    if len == written {
        Ok(())
    } else {
        Err(length_mismatch(written, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_adapt_to_element_size() {
        assert_eq!(adapt_count(1000, 0, 0), 1000);
        assert_eq!(adapt_count(1000, 1000, 100_000), MAX_COUNT);
        assert_eq!(adapt_count(1000, 10, 10 * 64 * 1024), 16);
        assert_eq!(adapt_count(16, 1, 50 * 1024 * 1024), 1);
    }

    #[test]
    fn zset_writes_put_the_score_first() {
        let data = Data::Zset(vec![b"m1".to_vec(), b"0.10000000000000001".to_vec()]);
        let pipe = pipeline(b"t", &data, 0);
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).to_string();
        assert!(
            packed.contains("ZADD\r\n$1\r\nt\r\n$19\r\n0.10000000000000001\r\n$2\r\nm1"),
            "{packed}"
        );
    }

    #[test]
    fn appends_resume_after_what_was_applied() {
        let data = Data::List(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let packed = pipeline(b"t", &data, 2).get_packed_pipeline();
        let text = String::from_utf8_lossy(&packed);
        assert!(text.contains("RPUSH\r\n$1\r\nt\r\n$1\r\nc\r\n"), "{text}");
    }
}
