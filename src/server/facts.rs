//! The table: server family and version → RDB version and what the server has.
//!
//! Sources: the Redis and Valkey release notes. Each row is checked against a real binary by
//! `tests/servers.rs` (Redis 6.2, Redis 7.0, Valkey 8.1: the RDB version from a `DUMP`
//! trailer, each command's presence from `COMMAND INFO`).

use std::collections::HashMap;

use serde::Serialize;

/// A server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Redis (INFO has no `server_name`, or `server_name:redis`).
    Redis,
    /// Valkey (`server_name:valkey`, `valkey_version`).
    Valkey,
}

/// A server's family and version, as INFO server tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerVersion {
    /// Redis or Valkey.
    pub family: Family,
    /// Major version.
    pub major: u32,
    /// Minor version (an odd Redis minor is a pre-release of the next even one).
    pub minor: u32,
}

/// What a server has, beyond what every supported version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The RDB version of its DUMP payloads (RESTORE refuses a higher one).
    pub rdb_version: u16,
    /// `FUNCTION` (libraries; Redis 7.0+, every Valkey).
    pub function: bool,
    /// `EXPIRETIME` / `PEXPIRETIME` (Redis 7.0+).
    pub expiretime: bool,
    /// `LMPOP`, `ZMPOP`, `BLMPOP`, `BZMPOP` (Redis 7.0+).
    pub lmpop: bool,
    /// `ACL DRYRUN` (Redis 7.0+).
    pub acl_dryrun: bool,
    /// Stream counters: `XSETID … ENTRIESADDED … MAXDELETEDID` and `XGROUP CREATE … ENTRIESREAD`
    /// (Redis 7.0+).
    pub stream_counters: bool,
    /// Hash-field TTLs: `HEXPIRE`, `HTTL`, … (Redis 7.4+, Valkey 9.0+). A by-type copy does not
    /// carry them.
    pub hash_field_ttl: bool,
}

impl ServerVersion {
    /// Parses INFO's fields: `server_name` (Valkey says `valkey`), `valkey_version` (Valkey's own
    /// version; its `redis_version` is a fixed 7.2.4), else `redis_version`. `None` when no
    /// version can be read.
    pub fn from_info(info: &HashMap<String, String>) -> Option<ServerVersion> {
        let valkey = info
            .get("server_name")
            .is_some_and(|n| n.eq_ignore_ascii_case("valkey"))
            || info.contains_key("valkey_version");
        let version = match valkey {
            true => info.get("valkey_version").or_else(|| info.get("redis_version")),
            false => info.get("redis_version"),
        }?;
        ServerVersion::parse(if valkey { "valkey" } else { "redis" }, version)
    }

    /// From a family name (`"redis"`, `"valkey"`, empty = Redis; any case) and a version such as
    /// `"7.0.15"`. `None` for another family or an unreadable version.
    pub fn parse(family: &str, version: &str) -> Option<ServerVersion> {
        let family = match family.trim().to_ascii_lowercase().as_str() {
            "" | "redis" => Family::Redis,
            "valkey" => Family::Valkey,
            _ => return None,
        };
        let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next()??, parts.next()??);
        Some(ServerVersion { family, major, minor })
    }

    /// The release this version belongs to: an odd Redis minor is a release candidate of the next
    /// even one (6.9.x → 7.0, 7.3.x → 7.4).
    fn release(self) -> (u32, u32) {
        match (self.family, self.major, self.minor) {
            (Family::Redis, ma, mi) if mi % 2 == 1 && mi + 1 >= 10 => (ma + 1, 0),
            (Family::Redis, ma, mi) if mi % 2 == 1 => (ma, mi + 1),
            (_, ma, mi) => (ma, mi),
        }
    }

    /// The RDB version of this server's DUMP payloads; `None` for versions the table does not
    /// know (a gate then blocks rather than guesses).
    ///
    /// Redis 2.4 = 5, 2.6–3.0 = 6, 3.2 = 7, 4.0 = 8, 5.0–6.2 = 9, 7.0 = 10, 7.2 = 11,
    /// 7.4–8.4 = 12, 8.6 = 13. Valkey 7.2–8.x = 11, Valkey 9.x = 80 (Valkey's own range: it
    /// loads Redis RDB ≤ 11, not 12+).
    pub fn rdb_version(self) -> Option<u16> {
        let (major, minor) = self.release();
        match self.family {
            Family::Redis => match (major, minor) {
                (2, 4) => Some(5),
                (2, 6..=8) | (3, 0) => Some(6),
                (3, 2) => Some(7),
                (4, _) => Some(8),
                (5 | 6, _) => Some(9),
                (7, 0) => Some(10),
                (7, 2) => Some(11),
                (7, 4) | (8, 0..=4) => Some(12),
                (8, 6) => Some(13),
                _ => None,
            },
            Family::Valkey => match (major, minor) {
                (7, 2..) | (8, _) => Some(11),
                (9, _) => Some(80),
                _ => None,
            },
        }
    }

    /// Everything the table knows about this server; `None` when its RDB version is unknown.
    pub fn facts(self) -> Option<Facts> {
        let rdb_version = self.rdb_version()?;
        let at_least = |ma: u32, mi: u32| self.release() >= (ma, mi);
        // Every Valkey forked from Redis 7.2, so it has what Redis 7.0 added.
        let redis7 = self.family == Family::Valkey || at_least(7, 0);
        let hash_field_ttl = match self.family {
            Family::Redis => at_least(7, 4),
            Family::Valkey => at_least(9, 0),
        };
        Some(Facts {
            rdb_version,
            function: redis7,
            expiretime: redis7,
            lmpop: redis7,
            acl_dryrun: redis7,
            stream_counters: redis7,
            hash_field_ttl,
        })
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.family {
            Family::Redis => "Redis",
            Family::Valkey => "Valkey",
        };
        write!(f, "{name} {}.{}", self.major, self.minor)
    }
}

/// Whether a server writing RDB `dst` can RESTORE a payload of RDB `src`. RESTORE refuses newer
/// versions; Valkey 9 (RDB 80) also refuses Redis' RDB 12..=79, which Valkey reserves as
/// foreign.
pub fn restores(src: u16, dst: u16) -> bool {
    dst >= src && !(dst >= 80 && (12..80).contains(&src))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(family: &str, version: &str) -> ServerVersion {
        ServerVersion::parse(family, version).unwrap()
    }

    #[test]
    fn info_names_the_family_and_the_version() {
        let info = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let valkey = info(&[
            ("server_name", "valkey"),
            ("redis_version", "7.2.4"),
            ("valkey_version", "8.1.8"),
        ]);
        assert_eq!(ServerVersion::from_info(&valkey), Some(v("valkey", "8.1.8")));
        let redis = info(&[("redis_version", "6.2.14")]);
        assert_eq!(ServerVersion::from_info(&redis), Some(v("redis", "6.2.14")));
        assert_eq!(ServerVersion::from_info(&info(&[])), None);
        assert_eq!(ServerVersion::parse("keydb", "6.3.4"), None);
    }

    #[test]
    fn commands_by_version() {
        let r62 = v("redis", "6.2.14").facts().unwrap();
        assert!(!r62.function && !r62.expiretime && !r62.lmpop && !r62.acl_dryrun);
        assert!(!r62.stream_counters && !r62.hash_field_ttl);
        let r70 = v("redis", "7.0.15").facts().unwrap();
        assert!(r70.function && r70.expiretime && r70.lmpop && r70.acl_dryrun && !r70.hash_field_ttl);
        assert!(v("redis", "7.4.2").facts().unwrap().hash_field_ttl);
        let k81 = v("valkey", "8.1.8").facts().unwrap();
        assert!(k81.function && k81.acl_dryrun && !k81.hash_field_ttl);
        assert!(v("valkey", "9.0.0").facts().unwrap().hash_field_ttl);
        assert_eq!(v("redis", "255.0.0").facts(), None);
    }

    #[test]
    fn restore_compatibility() {
        assert!(restores(9, 10));
        assert!(!restores(11, 10));
        assert!(restores(11, 80), "Valkey 9 loads Redis 7.2 payloads");
        assert!(!restores(12, 80), "Valkey 9 refuses Redis 7.4 payloads");
    }
}
