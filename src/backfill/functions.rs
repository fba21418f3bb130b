//! Function libraries (Redis 7 `FUNCTION`) are not keys: the backfill copies them whole, once,
//! from the source to every master of the target (`FUNCTION DUMP`, then `FUNCTION RESTORE …
//! REPLACE`), so `FCALL` finds its library on new after the cutover.

use anyhow::{Context, Result};
use redis::Value;

use crate::cluster::Router;
use crate::plan::Plan;

/// Copies the source's function libraries to every target master; the number of masters written
/// (0 when the source has no libraries, or predates functions).
pub async fn copy(plan: &Plan, target: &Router) -> Result<usize> {
    let url = plan.source.urls.first().context("the source has no URL")?;
    let mut source = plan.source.connect_node(url).await?;
    let listed: redis::RedisResult<Vec<Value>> =
        redis::cmd("FUNCTION").arg("LIST").query_async(&mut source).await;
    match listed {
        Ok(libraries) if !libraries.is_empty() => {}
        // No library, or a source older than 7.0 (no FUNCTION command): nothing to copy.
        _ => return Ok(0),
    }
    let payload: Vec<u8> = redis::cmd("FUNCTION")
        .arg("DUMP")
        .query_async(&mut source)
        .await
        .context("FUNCTION DUMP on the source")?;
    let masters = target.masters().await;
    for (addr, mut conn) in masters.clone() {
        let _: () = redis::cmd("FUNCTION")
            .arg("RESTORE")
            .arg(&payload)
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("FUNCTION RESTORE on target master {addr}"))?;
    }
    Ok(masters.len())
}
