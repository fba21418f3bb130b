//! Issue 12, item 5: the server-facts table (`src/server/facts.rs`) against every server binary
//! the test command installs — Debian's Redis 7.0, Valkey 8.1 and Redis 6.2: the family and
//! version INFO reports, the RDB version of a real `DUMP`, and each command the table says the
//! server has (or lacks).

mod common;

use std::collections::HashMap;

use cachemig::inspect::rdb_version_from_dump;
use cachemig::server::{Family, ServerVersion};
use common::{Flavor, RedisServer};

/// INFO server as a map.
fn info(server: &RedisServer) -> HashMap<String, String> {
    let text: String = server.query(&["INFO", "server"]);
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Whether the server knows `command` (`COMMAND INFO` answers nil for an unknown one).
fn has_command(server: &RedisServer, command: &str) -> bool {
    let reply: Vec<redis::Value> = server.query(&["COMMAND", "INFO", command]);
    !matches!(reply.as_slice(), [redis::Value::Nil] | [])
}

/// Whether `args` runs without an error on a fresh connection.
fn runs(server: &RedisServer, args: &[&str]) -> bool {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut server.conn()).is_ok()
}

#[test]
fn the_version_table_matches_every_installed_server() {
    for flavor in Flavor::ALL {
        let server = RedisServer::start_flavor(flavor, &[]);
        let version = ServerVersion::from_info(&info(&server)).expect("INFO names a version");
        let family = match version.family {
            Family::Redis => "redis",
            Family::Valkey => "valkey",
        };
        assert_eq!(family, flavor.family(), "{flavor:?}: family");
        let facts = version
            .facts()
            .unwrap_or_else(|| panic!("{flavor:?}: the table knows {version}"));
        let shown = format!("{}.{}.", version.major, version.minor);
        assert_eq!(shown, flavor.version_prefix(), "{flavor:?}: version");

        server.query::<()>(&["SET", "probe", "value"]);
        let payload: Vec<u8> = server.query(&["DUMP", "probe"]);
        assert_eq!(
            rdb_version_from_dump(&payload),
            Some(facts.rdb_version),
            "{flavor:?}: RDB version of a DUMP"
        );

        let checks = [
            ("FUNCTION", has_command(&server, "function"), facts.function),
            ("EXPIRETIME", has_command(&server, "expiretime"), facts.expiretime),
            ("LMPOP", has_command(&server, "lmpop"), facts.lmpop),
            (
                "ACL DRYRUN",
                runs(&server, &["ACL", "DRYRUN", "default", "PING"]),
                facts.acl_dryrun,
            ),
            ("HEXPIRE", has_command(&server, "hexpire"), facts.hash_field_ttl),
        ];
        for (what, found, table) in checks {
            assert_eq!(
                found, table,
                "{flavor:?}: {what} present on the server vs the table"
            );
        }
        server.query::<String>(&["XADD", "s", "5-1", "f", "v"]);
        let counters = runs(
            &server,
            &["XSETID", "s", "5-1", "ENTRIESADDED", "1", "MAXDELETEDID", "0-0"],
        );
        assert_eq!(counters, facts.stream_counters, "{flavor:?}: XSETID ENTRIESADDED");
    }
}
