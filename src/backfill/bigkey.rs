//! Copying keys larger than `big_key_bytes` in chunks by type (placeholder until implemented).

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;

/// What a chunked copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BigCopy {
    /// Copied; `bytes` of values moved.
    Copied {
        /// Bytes moved.
        bytes: u64,
    },
    /// The target already had the key and `replace` was off.
    KeptExisting,
    /// The key was gone from the source.
    Vanished,
}

/// Copies `key` from `source` to `target` in chunks.
pub async fn copy(
    _source: &mut MultiplexedConnection,
    _target: &mut ClusterConnection,
    _key: &[u8],
    _replace: bool,
) -> RedisResult<BigCopy> {
    Err(redis::RedisError::from((redis::ErrorKind::Client, "big-key copy not implemented yet")))
}
