//! Command conformance (issue 8): every case of `tests/conformance/cases.txt` runs against a plain
//! redis-server and through `cachemig proxy` in the phases planned, sync-dual-write,
//! read-cutover and write-stop, in RESP2 and in RESP3. A case conforms when every reply through
//! the proxy equals the plain server's; after each case, old and new hold the same data for its
//! keys (in the phases that mirror). The test prints the conformance per phase and protocol and
//! requires at least 95 % everywhere, and zero differences between old and new.

mod common;

use std::time::Duration;

use common::RedisServer;
use common::compare::differences;
use common::proxy::{ProxyProcess, set_phase};
use common::sandbox::Sandbox;
use redis::Value;

/// How a reply is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    Exact,
    /// Element order ignored (`~`).
    Unordered,
    /// Only the kind of reply (`?`): random replies.
    Kind,
}

/// One command of a case: its words (keys still as `$a`) and how its reply is compared.
struct Line {
    words: Vec<String>,
    compare: Compare,
}

/// A case: its first line (for messages) and its commands.
struct Case {
    title: String,
    lines: Vec<Line>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("conformance/cases.txt");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<Line> = block
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(parse_line)
            .collect();
        if let Some(first) = lines.first() {
            out.push(Case {
                title: first.words.join(" "),
                lines,
            });
        }
    }
    out
}

/// Splits a line into words; `"..."` quotes a word with spaces.
fn parse_line(line: &str) -> Line {
    let (line, compare) = match line.trim_end() {
        l if l.ends_with(" ~") => (&l[..l.len() - 2], Compare::Unordered),
        l if l.ends_with(" ?") => (&l[..l.len() - 2], Compare::Kind),
        l => (l, Compare::Exact),
    };
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').expect("closing quote");
                (&quoted[..end], &quoted[end + 1..])
            }
            None => rest.split_at(rest.find(' ').unwrap_or(rest.len())),
        };
        words.push(word.to_string());
        rest = after.trim_start();
    }
    Line { words, compare }
}

/// The key `$x` stands for in run `tag` (one hash tag per run: a case is never cross-slot).
fn key(tag: &str, var: &str) -> String {
    format!("token:{{{tag}}}:{var}")
}

fn expand(words: &[String], tag: &str) -> Vec<String> {
    words
        .iter()
        .map(|w| match w.strip_prefix('$') {
            Some(var) if !var.is_empty() && var.chars().all(|c| c.is_ascii_lowercase()) => key(tag, var),
            _ => w.clone(),
        })
        .collect()
}

/// A reply (an error as its text), normalised for comparison.
fn reply(conn: &mut redis::Connection, words: &[String], compare: Compare) -> String {
    let mut cmd = redis::cmd(&words[0]);
    for w in &words[1..] {
        cmd.arg(w);
    }
    let value = match cmd.query::<Value>(conn) {
        Ok(v) => v,
        Err(e) => {
            return format!("error: {}", e.detail().unwrap_or_default())
                .trim()
                .to_string()
                + &format!(" [{:?}]", e.code());
        }
    };
    match compare {
        Compare::Exact => format!("{value:?}"),
        Compare::Unordered => format!("{:?}", sorted(value)),
        Compare::Kind => kind(&value).to_string(),
    }
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Array(items) | Value::Set(items) => {
            let mut items: Vec<Value> = items.into_iter().map(sorted).collect();
            items.sort_by_key(|v| format!("{v:?}"));
            Value::Array(items)
        }
        other => other,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "int",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "string",
        Value::Array(_) | Value::Set(_) => "array",
        Value::Map(_) => "map",
        Value::Double(_) => "double",
        Value::Boolean(_) => "bool",
        _ => "other",
    }
}

fn connect(port: u16, resp3: bool) -> redis::Connection {
    let query = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/{query}")).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn
}

/// Conformance of one phase and protocol: (cases, conforming, first mismatches).
struct Tally {
    cases: usize,
    conforming: usize,
    /// Commands run, and those whose reply matched.
    commands: usize,
    matching: usize,
    mismatches: Vec<String>,
}

fn run_phase(sb: &Sandbox, proxy: &ProxyProcess, reference: &RedisServer, phase: &str, resp3: bool) -> Tally {
    let (mut direct, mut through) = (connect(reference.port(), resp3), connect(proxy.port, resp3));
    let mut tally = Tally {
        cases: 0,
        conforming: 0,
        commands: 0,
        matching: 0,
        mismatches: Vec::new(),
    };
    let proto = if resp3 { 3 } else { 2 };
    for (n, case) in cases().iter().enumerate() {
        let tag = format!("c{n}{phase}{proto}");
        let mut same = true;
        for line in &case.lines {
            let words = expand(&line.words, &tag);
            let (want, got) = (
                reply(&mut direct, &words, line.compare),
                reply(&mut through, &words, line.compare),
            );
            tally.commands += 1;
            tally.matching += usize::from(want == got);
            if want != got {
                same = false;
                if tally.mismatches.len() < 40 {
                    tally.mismatches.push(format!(
                        "{} | {}: plain {want} | proxy {got}",
                        case.title,
                        words.join(" ")
                    ));
                }
            }
        }
        // A case that leaves a transaction open must not leak into the next one.
        for conn in [&mut direct, &mut through] {
            let _ = redis::cmd("DISCARD").query::<Value>(conn);
            let _ = redis::cmd("UNWATCH").query::<Value>(conn);
        }
        tally.cases += 1;
        tally.conforming += usize::from(same);
        if phase != "planned" {
            let keys: Vec<String> = ('a'..='f').map(|v| key(&tag, &v.to_string())).collect();
            common::wait_for(
                &format!("old = new after {}", case.title),
                Duration::from_secs(10),
                || differences(sb, &keys).is_empty(),
            );
        }
    }
    tally
}

#[test]
fn commands_behave_through_the_proxy_as_on_plain_redis_in_every_phase_and_protocol() {
    let sb = Sandbox::start();
    let proxy = ProxyProcess::start(&sb, "p1");
    let reference = RedisServer::start();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (generation, phase) in ["planned", "sync-dual-write", "read-cutover", "write-stop"]
        .iter()
        .enumerate()
    {
        set_phase(&sb.flag_path(), phase, generation as u64 + 1, false, 0.0);
        proxy.wait_generation(generation as u64 + 1);
        for resp3 in [false, true] {
            let tally = run_phase(&sb, &proxy, &reference, phase, resp3);
            let ratio = tally.conforming as f64 / tally.cases as f64;
            let proto = if resp3 { "RESP3" } else { "RESP2" };
            report.push(format!(
                "{phase:16} {proto}: {}/{} cases conform ({:.1} %), {}/{} replies equal",
                tally.conforming,
                tally.cases,
                100.0 * ratio,
                tally.matching,
                tally.commands
            ));
            for m in &tally.mismatches {
                report.push(format!("    {m}"));
            }
            if ratio < 0.95 {
                failures.push(format!("{phase} {proto}: {:.1} %", 100.0 * ratio));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "below 95 %: {failures:?}\n{}",
        report.join("\n")
    );
}
