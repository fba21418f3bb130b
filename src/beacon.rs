//! The generation beacon (design §11): with every flag-file write the CLI also publishes the
//! generation and phase in the new cluster, under the reserved prefix. A proxy compares its
//! applied generation with it, so a proxy whose flag file is missing, stale or unreadable (a
//! replacement pod with a wrong path, a ConfigMap not yet mounted or lagging) knows it, refuses
//! writes instead of becoming a second primary, and says so.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::Router;
use crate::keys::RESERVED_PREFIX;
use crate::plan::Plan;

/// How long publishing or reading the beacon may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// What the beacon says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The generation of the flag file the CLI wrote last.
    pub generation: u64,
    /// Its phase.
    pub phase: String,
}

/// The key of `migration`'s beacon (same slot as its proxy reports).
pub fn beacon_key(migration: &str) -> String {
    format!(
        "{}{{{migration}}}:beacon",
        String::from_utf8_lossy(RESERVED_PREFIX)
    )
}

/// Publishes `beacon` for `plan`'s migration, never lowering a higher generation already there
/// (two CLI runs racing cannot move it back).
pub async fn publish(router: &Router, migration: &str, beacon: &Beacon) -> redis::RedisResult<()> {
    let key = beacon_key(migration);
    let json = serde_json::to_string(beacon).unwrap_or_default();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(
        "local cur = redis.call('GET', KEYS[1]) \
         if cur then local g = cjson.decode(cur).generation \
           if g and g > tonumber(ARGV[2]) then return 0 end end \
         redis.call('SET', KEYS[1], ARGV[1]) return 1",
    )
    .arg(1)
    .arg(&key)
    .arg(json)
    .arg(beacon.generation);
    router.query(key.as_bytes(), cmd).await.map(|_| ())
}

/// Reads `migration`'s beacon; `None` when none was published yet.
pub async fn read(router: &Router, migration: &str) -> redis::RedisResult<Option<Beacon>> {
    let key = beacon_key(migration);
    let mut cmd = redis::cmd("GET");
    cmd.arg(&key);
    let value: Option<String> =
        redis::FromRedisValue::from_redis_value(router.query(key.as_bytes(), cmd).await?)?;
    Ok(value.and_then(|json| serde_json::from_str(&json).ok()))
}

/// Publishes from synchronous code (the CLI's commit path), bounded by a timeout. A failure is
/// returned for a warning: the flag file (the commit) is already written, and a beacon left
/// behind only makes proxies ahead of it look current, never a current one look stale.
pub fn publish_blocking(plan: &Plan, beacon: &Beacon) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let work = async {
            let router = Router::connect(&plan.target).await?;
            publish(&router, &plan.name, beacon).await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| anyhow::anyhow!("the target did not answer within {TIMEOUT:?}"))?
    })
}
