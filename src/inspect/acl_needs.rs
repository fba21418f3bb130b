//! What each side's user must be allowed to run, command by command, and what for: the list the
//! ACL preflight ([`super::acl`]) checks. Taken from the code that runs on each side: the
//! inspection, the backfill (reads, `RESTORE`, the by-type writer), `verify` and the catch-up,
//! key-sync leases, the proxies' reports and the generation beacon. The commands applications send
//! through a proxy are theirs to grant and are not listed.
//!
//! Not listed: `FUNCTION LIST`/`DUMP`/`RESTORE`, which the backfill runs only when the source
//! has libraries (a refused `FUNCTION LIST` reads as "none", `src/backfill/functions.rs`); and
//! the target's `EVAL` of the by-type writer's rename (big keys, copies across versions) and of
//! the generation beacon (a warning when refused): a target that refuses scripts still takes a
//! DUMP/RESTORE backfill of small keys, which the preflight must not block.
//!
//! Each argv is written with placeholders ([`Sample::fill`]), so key patterns (`~token:*`,
//! `~__cachemig:*`) are checked as well as commands.

/// When a need applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    /// Always.
    Always,
    /// On a cluster only (slot maps, node lists).
    Cluster,
}

/// One thing a phase does on a side: every command of one alternative must be allowed.
pub(super) struct Need {
    /// When it applies.
    pub when: When,
    /// What it is for, for the report ("backfill: read a key").
    pub purpose: &'static str,
    /// Alternatives (a script, or MULTI/EXEC when scripts are refused); each a list of argvs.
    pub any_of: &'static [&'static [&'static str]],
}

const fn need(when: When, purpose: &'static str, any_of: &'static [&'static [&'static str]]) -> Need {
    Need {
        when,
        purpose,
        any_of,
    }
}

/// Reading one key's value and TTL (backfill, verify, the catch-up, repairs).
const READ_KEY: &[&str] = &[
    "PTTL {key}",
    "DUMP {key}",
    "MEMORY USAGE {key}",
    "TYPE {key}",
    "EXISTS {key}",
];
/// Reading a key atomically: the snapshot script, or MULTI/EXEC where scripts are refused.
const ATOMIC_READ: &[&[&str]] = &[
    &["EVALSHA {sha} 1 {key}", "SCRIPT LOAD {script}"],
    &["MULTI", "EXEC"],
];
/// Reading a big key in chunks, by type (backfill, chunked verify).
const READ_CHUNKS: &[&str] = &[
    "HSCAN {key} 0",
    "SSCAN {key} 0",
    "ZSCAN {key} 0",
    "LRANGE {key} 0 1",
    "GETRANGE {key} 0 1",
    "XRANGE {key} - +",
    "XINFO STREAM {key}",
    "XINFO GROUPS {key}",
    "XINFO CONSUMERS {key} g",
    "XPENDING {key} g",
    "ZRANGE {key} 0 1",
    "SMEMBERS {key}",
    "STRLEN {key}",
    "HLEN {key}",
    "LLEN {key}",
    "SCARD {key}",
    "ZCARD {key}",
    "XLEN {key}",
];
/// Writing a key whole (`RESTORE`) or deleting it.
const WRITE_KEY: &[&str] = &["RESTORE {key} 0 {payload} REPLACE", "DEL {key}"];
/// Writing a key by type into a temporary key in its slot, then renaming it onto the key.
const WRITE_CHUNKS: &[&str] = &[
    "SET {tmp} x",
    "SETRANGE {tmp} 0 x",
    "HSET {tmp} f v",
    "SADD {tmp} m",
    "ZADD {tmp} 1 m",
    "RPUSH {tmp} x",
    "XADD {tmp} * f v",
    "XGROUP CREATE {tmp} g $",
    "XGROUP CREATECONSUMER {tmp} g c",
    "XSETID {tmp} 0-1",
    "XCLAIM {tmp} g c 0 0-1",
    "PEXPIRE {tmp} 1000",
    "DEL {tmp}",
    "RENAME {tmp} {key}",
    "RENAMENX {tmp} {key}",
    "PEXPIRE {key} 1000",
    "PERSIST {key}",
];
/// A key-sync lease on the receiving side: the commands, and the script or WATCH transaction.
const LEASE: &[&str] = &[
    "GET {lock}",
    "SET {lock} x PX 1000",
    "PEXPIRE {lock} 1000",
    "DEL {lock}",
    "HMGET {wait} n",
    "HSET {wait} n 0",
    "HINCRBY {wait} n 1",
    "EXISTS {wait}",
    "PEXPIRE {wait} 1000",
    "DEL {wait}",
];
const LEASE_ATOMIC: &[&[&str]] = &[
    &["EVALSHA {sha} 2 {lock} {wait}"],
    &["WATCH {lock}", "UNWATCH", "MULTI", "EXEC"],
];

/// What the source's user needs.
pub(super) const SOURCE: &[Need] = &[
    need(
        When::Always,
        "plan: inspect the source",
        &[&["PING", "INFO", "DBSIZE"]],
    ),
    need(
        When::Cluster,
        "plan, backfill: find the masters",
        &[&["CLUSTER INFO", "CLUSTER NODES"]],
    ),
    need(
        When::Always,
        "backfill, verify: list keys",
        &[&["SCAN 0 COUNT 10"]],
    ),
    need(When::Always, "backfill, verify: read a key", &[READ_KEY]),
    need(
        When::Always,
        "backfill: read a key atomically (a script, or MULTI/EXEC)",
        ATOMIC_READ,
    ),
    need(
        When::Always,
        "backfill, verify: read a big key in chunks",
        &[READ_CHUNKS],
    ),
    need(
        When::Always,
        "bypass-writers gate: list old's clients",
        &[&["CLIENT LIST"]],
    ),
    need(
        When::Always,
        "write-stop: repairs and the reverse mirror write old",
        &[WRITE_KEY],
    ),
    need(When::Always, "write-stop: key-sync leases on old", &[LEASE]),
    need(
        When::Always,
        "write-stop: a key-sync lease atomically (a script, or WATCH/MULTI/EXEC)",
        LEASE_ATOMIC,
    ),
];

/// What the target's user needs.
pub(super) const TARGET: &[Need] = &[
    need(
        When::Always,
        "plan: inspect the target",
        &[&["PING", "INFO", "DBSIZE", "SCAN 0 COUNT 10"]],
    ),
    need(
        When::Cluster,
        "every command: the slot map",
        &[&["CLUSTER INFO", "CLUSTER NODES", "CLUSTER SLOTS", "ASKING"]],
    ),
    need(
        When::Always,
        "backfill, catch-up, repairs: write a key",
        &[WRITE_KEY],
    ),
    need(When::Always, "backfill: copy a key by type", &[WRITE_CHUNKS]),
    need(When::Always, "verify, catch-up: read a key", &[READ_KEY]),
    need(
        When::Always,
        "verify: read a key atomically (a script, or MULTI/EXEC)",
        ATOMIC_READ,
    ),
    need(When::Always, "verify: read a big key in chunks", &[READ_CHUNKS]),
    need(
        When::Always,
        "catch-up, repairs, mirror: key-sync leases",
        &[LEASE],
    ),
    need(
        When::Always,
        "key-sync: a lease atomically (a script, or WATCH/MULTI/EXEC)",
        LEASE_ATOMIC,
    ),
    need(
        When::Always,
        "gates, proxies: reports and the generation beacon",
        &[&[
            "HSET {reports} p x",
            "HGET {reports} p",
            "HGETALL {reports}",
            "HDEL {reports} p",
            "GET {beacon}",
            "SET {beacon} 1",
            "TIME",
        ]],
    ),
    need(
        When::Always,
        "proxies: the crash-safe mirror backlog",
        &[&[
            "SADD {backlog} k",
            "SREM {backlog} k",
            "SCARD {backlog}",
            "SSCAN {backlog} 0",
            "SUNIONSTORE {backlog} {backlog}",
            "EXPIRE {backlog} 60",
            "DEL {backlog}",
        ]],
    ),
];

/// The values the placeholders stand for.
pub(super) struct Sample {
    /// A key the plan migrates.
    pub key: String,
}

impl Sample {
    /// A key the plan's filter selects: its first `include` pattern with the glob characters
    /// filled in (`token:*` → `token:`), or `cachemig-acl-check` when there is none or it is
    /// not a simple glob.
    pub fn new(filter: &crate::keys::KeyFilter) -> Sample {
        let key = filter
            .include
            .first()
            .filter(|p| !p.contains(['[', '\\']))
            .map(|p| p.replace('*', "").replace('?', "x"))
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "cachemig-acl-check".to_string());
        Sample { key }
    }

    /// `template`'s argv with the placeholders filled in.
    pub fn fill(&self, template: &str) -> Vec<String> {
        let lock = format!("__cachemig:lock:{{{}}}", self.key);
        let wait = format!("__cachemig:wait:{{{}}}", self.key);
        let tmp = format!("__cachemig:tmp:{{{}}}", self.key);
        template
            .split_whitespace()
            .map(|word| match word {
                "{key}" => self.key.clone(),
                "{lock}" => lock.clone(),
                "{wait}" => wait.clone(),
                "{tmp}" => tmp.clone(),
                "{sha}" => "0".repeat(40),
                "{script}" => "return 1".to_string(),
                "{payload}" => "x".to_string(),
                "{reports}" => "__cachemig:{acl-check}:proxies".to_string(),
                "{beacon}" => "__cachemig:{acl-check}:beacon".to_string(),
                "{backlog}" => "__cachemig:{acl-check}:backlog:acl-check".to_string(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// The command's name as ACL rules spell it: `DUMP`, or `MEMORY USAGE` for a container command.
pub(super) fn command_name(argv: &[String]) -> String {
    const CONTAINERS: &[&str] = &[
        "CLUSTER", "CLIENT", "SCRIPT", "FUNCTION", "MEMORY", "XINFO", "XGROUP", "ACL",
    ];
    match argv {
        [first, second, ..] if CONTAINERS.contains(&first.as_str()) => format!("{first} {second}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_name_keys_the_plan_selects_and_cachemigs_own() {
        let filter = crate::keys::KeyFilter {
            include: vec!["token:*".into()],
            exclude: vec![],
        };
        let s = Sample::new(&filter);
        assert_eq!(s.fill("DUMP {key}"), ["DUMP", "token:"]);
        assert_eq!(s.fill("GET {lock}"), ["GET", "__cachemig:lock:{token:}"]);
        assert_eq!(command_name(&s.fill("MEMORY USAGE {key}")), "MEMORY USAGE");
        assert_eq!(
            command_name(&s.fill("RESTORE {key} 0 {payload} REPLACE")),
            "RESTORE"
        );
        assert_eq!(
            Sample::new(&crate::keys::KeyFilter::default()).key,
            "cachemig-acl-check"
        );
    }
}
