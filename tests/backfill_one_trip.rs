//! Issue 10, "backfill near the source's limit": each key is read in one trip (its size and, when
//! small, its atomic PTTL/DUMP in one script call), a key above `big_key_bytes` is never DUMPed
//! but copied in chunks, a mid-sized key is read on its own under the byte budget, and the
//! batches of one source node spread over several connections copy every key exactly once.
//!
//! The witness is the source's own `MONITOR` stream (commands a script runs show as `[0 lua]`),
//! and the data ends compared key by key, type by type, between old and new.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;

use cachemig::backfill::BackfillDir;
use common::compare;
use common::sandbox::Sandbox;
use redis::Commands;

/// The text a sentinel `ECHO` carries, so the reader knows it has seen everything before it.
const END: &str = "cachemig-test-monitor-end";

/// One command seen by `MONITOR`: who ran it (`lua` for a script's own calls) and its words.
#[derive(Debug)]
struct Seen {
    client: String,
    words: Vec<String>,
}

/// A `MONITOR` connection read on its own thread until the sentinel.
struct Monitor {
    port: u16,
    reader: JoinHandle<Vec<Seen>>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut lines = BufReader::new(stream);
        let mut ok = String::new();
        lines.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim_end(), "+OK", "MONITOR refused");
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in lines.lines() {
                let line = line.unwrap();
                if line.contains(END) {
                    break;
                }
                seen.extend(parse(&line));
            }
            seen
        });
        Monitor { port, reader }
    }

    /// Everything seen until now.
    fn finish(self) -> Vec<Seen> {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let _: String = redis::cmd("ECHO").arg(END).query(&mut conn).unwrap();
        self.reader.join().unwrap()
    }
}

/// `+1700000000.123 [0 127.0.0.1:5555] "EVALSHA" "ab…" "1" "token:1"` → client and words (the
/// test's key names need no unescaping).
fn parse(line: &str) -> Option<Seen> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let client = line[open + 1..close].split(' ').nth(1)?.to_string();
    let rest = line[close + 1..].trim();
    let words = rest
        .trim_matches('"')
        .split("\" \"")
        .map(str::to_string)
        .collect();
    Some(Seen { client, words })
}

/// Small keys of every common type (some with a TTL), mid-sized strings and two big keys;
/// returns the names of all of them.
fn plant(sb: &Sandbox) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut src = sb.source.conn();
    let mut pipe = redis::pipe();
    let mut small = Vec::new();
    for i in 0..2000 {
        let key = format!("token:s:{i}");
        match i % 4 {
            0 => pipe.set(&key, format!("value-{i}")).ignore(),
            1 => pipe.hset_multiple(&key, &[("a", i), ("b", i + 1)]).ignore(),
            2 => pipe.rpush(&key, &["x", "y", "x"]).ignore(),
            _ => pipe.zadd(&key, "m", i).ignore(),
        };
        if i % 3 == 0 {
            pipe.expire(&key, 3600).ignore();
        }
        small.push(key);
    }
    let mut medium = Vec::new();
    for i in 0..20 {
        let key = format!("token:m:{i}");
        pipe.set(&key, format!("{i:0>10240}")).ignore();
        medium.push(key);
    }
    pipe.set("token:big:str", "s".repeat(200 * 1024)).ignore();
    let fields: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("f{i}"), format!("{i:0>40}")))
        .collect();
    pipe.hset_multiple("token:big:hash", &fields).ignore();
    pipe.expire("token:big:hash", 3600).ignore();
    pipe.exec(&mut src).unwrap();
    let big = vec!["token:big:str".to_string(), "token:big:hash".to_string()];
    (small, medium, big)
}

#[test]
fn one_trip_reads_divert_big_keys_and_several_connections_copy_each_key_once() {
    let mut sb = Sandbox::start();
    sb.set_plan_extra("[backfill]\nscan_count = 100\nbig_key_bytes = \"64KiB\"\n");
    let (small, medium, big) = plant(&sb);
    let monitor = Monitor::start(sb.source.port());
    sb.cachemig(&["advance", "--yes"]).assert_code(0);
    let seen = monitor.finish();

    // The data: every key, old and new equal type by type, each written once.
    let all: Vec<String> = small.iter().chain(&medium).chain(&big).cloned().collect();
    let mut src = sb.source.conn();
    for key in &all {
        assert!(src.exists::<_, bool>(key).unwrap(), "{key} is on the source");
    }
    assert_eq!(compare::differences(&sb, &all), Vec::<String>::new());
    let counters = BackfillDir::new(&sb.state_dir())
        .progress()
        .unwrap()
        .unwrap()
        .counters;
    assert_eq!(counters.copied, all.len() as u64, "{counters:?}");
    assert_eq!(counters.big_keys, 2, "{counters:?}");
    assert_eq!(
        (counters.skipped_existing, counters.vanished, counters.failed),
        (0, 0, 0),
        "no key copied twice, lost or failed: {counters:?}"
    );

    // The reads: one script call per key, on several connections, and no separate sizing trip.
    let backfill: BTreeSet<&str> = seen
        .iter()
        .filter(|s| s.words[0].eq_ignore_ascii_case("EVALSHA"))
        .map(|s| s.client.as_str())
        .collect();
    assert!(
        backfill.len() >= 2,
        "batches on several connections: {backfill:?}"
    );
    let sized: Vec<&Seen> = seen
        .iter()
        .filter(|s| backfill.contains(s.client.as_str()) && s.words[0].eq_ignore_ascii_case("MEMORY"))
        .collect();
    assert!(sized.is_empty(), "no MEMORY USAGE round trip: {sized:?}");
    let mut dumps: BTreeMap<&str, usize> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.words[0].eq_ignore_ascii_case("DUMP")) {
        // (`plan`'s inspection DUMPs one small key on a connection of its own.)
        assert!(
            !backfill.contains(s.client.as_str()),
            "DUMP only inside the atomic read: {s:?}"
        );
        if s.client == "lua" {
            *dumps.entry(s.words[1].as_str()).or_default() += 1;
        }
        assert!(!big.contains(&s.words[1]), "big key never DUMPed: {s:?}");
    }
    for key in small.iter().chain(&medium) {
        assert_eq!(dumps.get(key.as_str()), Some(&1), "{key} DUMPed exactly once");
    }
}
