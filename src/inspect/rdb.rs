//! Which RDB (DUMP payload) version a server writes: measured from a DUMP, or looked up.

use serde::Serialize;

/// How a node's RDB version was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RdbVersionSource {
    /// Read from the trailer of a `DUMP` of an existing key (exact).
    Dump,
    /// Looked up from the server's name and version with [`rdb_version_for`].
    VersionTable,
}

/// The RDB version a server writes, from its name (`"redis"` or `"valkey"`, as in INFO's
/// `server_name`; empty means Redis) and version (`redis_version`, or Valkey's `valkey_version`).
/// `None` for unknown servers and versions (a gate then blocks rather than guesses). The table
/// is [`crate::server::ServerVersion::rdb_version`].
pub fn rdb_version_for(server: &str, version: &str) -> Option<u16> {
    crate::server::ServerVersion::parse(server, version)?.rdb_version()
}

/// The RDB version in a `DUMP` payload: the 2-byte little-endian number just before the 8-byte
/// CRC64 trailer. `None` if the payload is too short to hold the trailer.
pub fn rdb_version_from_dump(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    if n < 11 {
        return None;
    }
    let version = u16::from_le_bytes([payload[n - 10], payload[n - 9]]);
    (version > 0).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_table() {
        assert_eq!(rdb_version_for("redis", "5.0.14"), Some(9));
        assert_eq!(rdb_version_for("redis", "6.2.6"), Some(9));
        assert_eq!(rdb_version_for("", "7.0.15"), Some(10));
        assert_eq!(rdb_version_for("redis", "7.2.4"), Some(11));
        assert_eq!(rdb_version_for("redis", "7.4.1"), Some(12));
        assert_eq!(rdb_version_for("redis", "8.0.2"), Some(12));
        assert_eq!(rdb_version_for("redis", "8.2.1"), Some(12));
        assert_eq!(rdb_version_for("redis", "8.6.0"), Some(13));
        assert_eq!(rdb_version_for("redis", "6.9.240"), Some(10)); // 7.0 release candidate
        assert_eq!(rdb_version_for("redis", "7.3.240"), Some(12)); // 7.4 release candidate
        assert_eq!(rdb_version_for("Valkey", "7.2.5"), Some(11));
        assert_eq!(rdb_version_for("valkey", "8.1.0"), Some(11));
        assert_eq!(rdb_version_for("valkey", "9.0.0"), Some(80));
        assert_eq!(rdb_version_for("redis", "255.255.255"), None);
        assert_eq!(rdb_version_for("redis", "garbage"), None);
        assert_eq!(rdb_version_for("keydb", "6.3.4"), None);
    }

    #[test]
    fn dump_trailer() {
        // `DUMP foo` after `SET foo bar` on Redis 7.0.15: type 0, len 3, "bar", RDB 10, CRC64.
        let payload = b"\x00\x03bar\x0a\x00\xe6\xbe\x49\x60\xee\x66\xfd\x17";
        assert_eq!(rdb_version_from_dump(payload), Some(10));
        let mut v80 = b"\x00\x01x".to_vec();
        v80.extend_from_slice(&80u16.to_le_bytes());
        v80.extend_from_slice(&[0; 8]);
        assert_eq!(rdb_version_from_dump(&v80), Some(80));
        assert_eq!(rdb_version_from_dump(b"short"), None);
    }
}
