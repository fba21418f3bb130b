//! What a stream has besides its entries: the ID counter and the consumer groups.

use super::Target;
use redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, Value};

use super::{MAX_COUNT, SAFETY_TTL_MS, query, transient};

/// The ID right after `id` (`ms-seq`), or `None` after the largest possible ID.
pub fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    match seq.checked_add(1) {
        Some(seq) => Some(format!("{ms}-{seq}")),
        None => Some(format!("{}-0", ms.checked_add(1)?)),
    }
}

/// Copies the stream's metadata and consumer groups from `key` on the source to `temp` (whose
/// entries are already copied; `has_entries` false means it does not exist yet).
///
/// - `XSETID temp last-generated-id [ENTRIESADDED n MAXDELETEDID id]` (the extras exist since
///   Redis 7.0; if the target refuses them, the plain form is used);
/// - per group `XGROUP CREATE temp group last-delivered-id [ENTRIESREAD n]` (plain on a target
///   that refuses `ENTRIESREAD`, older than 7.0);
/// - its consumers with no pending entries: `XGROUP CREATECONSUMER`;
/// - its pending entries, in pages: `XCLAIM temp group consumer 0 id IDLE ms RETRYCOUNT n FORCE
///   JUSTID`, which recreates the entry with its owner, idle time and delivery count (and the
///   consumer). Pending entries whose message is no longer in the stream are skipped by XCLAIM.
///
/// Consumers' seen/active times are not copied.
pub(super) async fn copy_meta(
    source: &impl Target,
    target: &impl Target,
    key: &[u8],
    temp: &[u8],
    has_entries: bool,
) -> RedisResult<()> {
    let info = fields(query(source, redis::cmd("XINFO").arg("STREAM").arg(key)).await?)?;
    if !has_entries {
        // An empty stream exists in Redis; create one without side effects on its metadata.
        let mut pipe = redis::pipe();
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(temp)
            .arg("__cachemig:init")
            .arg("0")
            .arg("MKSTREAM")
            .ignore();
        pipe.cmd("XGROUP")
            .arg("DESTROY")
            .arg(temp)
            .arg("__cachemig:init")
            .ignore();
        pipe.cmd("PEXPIRE").arg(temp).arg(SAFETY_TTL_MS).ignore();
        run(target, &pipe).await?;
    }

    let last_id: String = required(&info, "last-generated-id")?;
    let entries_added: Option<u64> = optional(&info, "entries-added")?;
    let max_deleted: Option<String> = optional(&info, "max-deleted-entry-id")?;
    let mut setid = redis::cmd("XSETID");
    setid.arg(temp).arg(last_id.as_str());
    if let (Some(added), Some(deleted)) = (entries_added, &max_deleted) {
        let mut extended = setid.clone();
        extended
            .arg("ENTRIESADDED")
            .arg(added)
            .arg("MAXDELETEDID")
            .arg(deleted.as_str());
        match query::<(), _>(target, &extended).await {
            Ok(()) => {}
            Err(e) if !transient(&e) => query::<(), _>(target, &setid).await?,
            Err(e) => return Err(e),
        }
    } else {
        query::<(), _>(target, &setid).await?;
    }

    let groups: Vec<Value> = query(source, redis::cmd("XINFO").arg("GROUPS").arg(key)).await?;
    for group in groups {
        let group = fields(group)?;
        let name: Vec<u8> = required(&group, "name")?;
        let delivered: String = required(&group, "last-delivered-id")?;
        let entries_read: Option<i64> = optional(&group, "entries-read")?;
        let consumers: u64 = optional(&group, "consumers")?.unwrap_or(0);
        let pending: u64 = optional(&group, "pending")?.unwrap_or(0);

        create_group(target, temp, &name, &delivered, entries_read).await?;
        if consumers > 0 {
            copy_idle_consumers(source, target, key, temp, &name).await?;
        }
        if pending > 0 {
            copy_pending(source, target, key, temp, &name).await?;
        }
    }
    Ok(())
}

/// `XGROUP CREATE temp name delivered [ENTRIESREAD n]`; a target older than Redis 7.0 refuses
/// `ENTRIESREAD` (the group's lag is then unknown there), so the plain form follows a refusal.
async fn create_group(
    target: &impl Target,
    temp: &[u8],
    name: &[u8],
    delivered: &str,
    entries_read: Option<i64>,
) -> RedisResult<()> {
    let mut create = redis::cmd("XGROUP");
    create.arg("CREATE").arg(temp).arg(name).arg(delivered);
    let plain = create.clone();
    if let Some(read) = entries_read {
        create.arg("ENTRIESREAD").arg(read);
    }
    let created = match query::<(), _>(target, &create).await {
        Err(e) if entries_read.is_some() && !transient(&e) && e.code() != Some("BUSYGROUP") => {
            query::<(), _>(target, &plain).await
        }
        other => other,
    };
    match created {
        // Only our own earlier, retried attempt can have created it in a fresh key.
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Creates the group's consumers that own no pending entry (the others come with XCLAIM).
async fn copy_idle_consumers(
    source: &impl Target,
    target: &impl Target,
    key: &[u8],
    temp: &[u8],
    group: &[u8],
) -> RedisResult<()> {
    let consumers: Vec<Value> =
        query(source, redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(group)).await?;
    let mut pipe = redis::pipe();
    for consumer in consumers {
        let consumer = fields(consumer)?;
        let pending: u64 = optional(&consumer, "pending")?.unwrap_or(0);
        if pending == 0 {
            let name: Vec<u8> = required(&consumer, "name")?;
            pipe.cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(temp)
                .arg(group)
                .arg(name)
                .ignore();
        }
    }
    if !pipe.is_empty() {
        run(target, &pipe).await?;
    }
    Ok(())
}

/// Copies the group's pending entries list in pages of [`MAX_COUNT`].
async fn copy_pending(
    source: &impl Target,
    target: &impl Target,
    key: &[u8],
    temp: &[u8],
    group: &[u8],
) -> RedisResult<()> {
    let mut start = "-".to_string();
    loop {
        let rows: Vec<(String, Vec<u8>, u64, u64)> = query(
            source,
            redis::cmd("XPENDING")
                .arg(key)
                .arg(group)
                .arg(start.as_str())
                .arg("+")
                .arg(MAX_COUNT),
        )
        .await?;
        let mut pipe = redis::pipe();
        for (id, consumer, idle_ms, deliveries) in &rows {
            pipe.cmd("XCLAIM")
                .arg(temp)
                .arg(group)
                .arg(consumer.as_slice())
                .arg(0)
                .arg(id.as_str())
                .arg("IDLE")
                .arg(idle_ms)
                .arg("RETRYCOUNT")
                .arg(deliveries)
                .arg("FORCE")
                .arg("JUSTID")
                .ignore();
        }
        if !pipe.is_empty() {
            pipe.cmd("PEXPIRE").arg(temp).arg(SAFETY_TTL_MS).ignore();
            run(target, &pipe).await?;
        }
        match rows.last() {
            Some((last, ..)) if rows.len() == MAX_COUNT => match next_id(last) {
                Some(next) => start = next,
                None => return Ok(()),
            },
            _ => return Ok(()),
        }
    }
}

/// Runs an idempotent pipeline on the target, retrying transient errors.
async fn run(target: &impl Target, pipe: &redis::Pipeline) -> RedisResult<()> {
    super::with_retries(|| {
        let mut conn = target.clone();
        async move { pipe.query_async::<()>(&mut conn).await }
    })
    .await
}

/// The name/value pairs of an XINFO reply (a flat array in RESP2, a map in RESP3).
fn fields(value: Value) -> RedisResult<Vec<(String, Value)>> {
    let pairs = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        other => return Err(unexpected(format!("expected a map, got {other:?}"))),
    };
    pairs
        .into_iter()
        .map(|(name, value)| Ok((redis::from_redis_value::<String>(name)?, value)))
        .collect()
}

/// A field that may be missing (older servers) or nil.
fn optional<T: FromRedisValue>(fields: &[(String, Value)], name: &str) -> RedisResult<Option<T>> {
    match fields.iter().find(|(n, _)| n == name) {
        None | Some((_, Value::Nil)) => Ok(None),
        Some((_, value)) => Ok(Some(redis::from_redis_value_ref(value)?)),
    }
}

/// A field that must be there.
fn required<T: FromRedisValue>(fields: &[(String, Value)], name: &str) -> RedisResult<T> {
    optional(fields, name)?.ok_or_else(|| unexpected(format!("XINFO reply without {name:?}")))
}

fn unexpected(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Client, "unexpected XINFO reply", detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increment() {
        assert_eq!(next_id("5-3").as_deref(), Some("5-4"));
        assert_eq!(next_id(&format!("5-{}", u64::MAX)).as_deref(), Some("6-0"));
        assert_eq!(next_id(&format!("{0}-{0}", u64::MAX)), None);
        assert_eq!(next_id("garbage"), None);
    }

    #[test]
    fn xinfo_replies_parse_in_both_protocols() {
        let flat = Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"g1".to_vec()),
            Value::BulkString(b"entries-read".to_vec()),
            Value::Nil,
            Value::BulkString(b"pending".to_vec()),
            Value::Int(3),
        ]);
        let f = fields(flat).unwrap();
        assert_eq!(required::<Vec<u8>>(&f, "name").unwrap(), b"g1".to_vec());
        assert_eq!(optional::<i64>(&f, "entries-read").unwrap(), None);
        assert_eq!(optional::<u64>(&f, "pending").unwrap(), Some(3));
        assert!(required::<String>(&f, "missing").is_err());
        let map = Value::Map(vec![(Value::SimpleString("lag".into()), Value::Int(0))]);
        assert_eq!(optional::<u64>(&fields(map).unwrap(), "lag").unwrap(), Some(0));
    }
}
