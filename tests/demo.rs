//! Issue 11, item 1: `cachemig demo`, the README's main command, end to end: two demos at the
//! same time (their ports must not collide), each walking every phase with real gates under its
//! load, ending with a final verify table of zero differences, exit 0 and nothing left running.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Cachemig, Run};

/// A hang guard only: a `--fast` demo of 2000 keys walks in well under a minute.
const TIMEOUT: Duration = Duration::from_secs(400);

fn demo() -> Run {
    Cachemig::new()
        .args(["demo", "--keys", "2000", "--fast"])
        .timeout(TIMEOUT)
        .run()
}

/// The value of row `name` in the table printed after the line starting with `heading`.
fn row_after(stdout: &str, heading: &str, name: &str) -> Option<String> {
    let (_, after) = stdout.split_once(heading)?;
    let line = after
        .lines()
        .find(|l| l.trim_start_matches('│').trim().starts_with(name))?;
    let cells: Vec<&str> = line.split('┆').collect();
    Some(
        cells
            .get(1)?
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .to_string(),
    )
}

/// The number in `line` after `prefix` (e.g. the port in "old Redis on 127.0.0.1:PORT").
fn number_after(stdout: &str, prefix: &str) -> u16 {
    let (_, rest) = stdout
        .split_once(prefix)
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{stdout}"));
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Everything a successful demo must show, and what it must leave behind: nothing.
fn check(run: &Run) {
    let out = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status, 0, "the demo failed:\n{out}");
    let heading = "══ final verify";
    for row in ["differences", "unresolved", "missing", "value"] {
        assert_eq!(
            row_after(&run.stdout, heading, row).as_deref(),
            Some("0"),
            "final verify `{row}`:\n{out}"
        );
    }
    let checked = row_after(&run.stdout, heading, "checked source → target").unwrap();
    assert!(
        checked.parse::<u64>().unwrap() >= 2000,
        "the verify checked the loaded keys:\n{out}"
    );
    // Every phase `advance` steps into: the catalog's, but the first and the terminal one.
    let catalog = cachemig::phase::Catalog::builtin();
    for phase in catalog.phases().iter().skip(1).filter(|p| !p.terminal) {
        let wrote = format!("({}) to ", phase.name);
        assert!(run.stdout.contains(&wrote), "no step into {}:\n{out}", phase.name);
    }
    assert!(
        run.stdout
            .contains("every acknowledged write is on old and on new; the clients saw no error"),
        "{out}"
    );
    // Torn down: the temporary directory is gone and the old Redis no longer answers.
    let dir = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("sandbox: "))
        .expect("the sandbox line");
    assert!(!Path::new(dir).exists(), "{dir} was not removed");
    let old = number_after(&run.stdout, "old Redis on 127.0.0.1:");
    assert!(
        TcpStream::connect(("127.0.0.1", old)).is_err(),
        "the old Redis on {old} still runs"
    );
}

#[test]
fn demo_walks_every_phase_to_zero_differences_twice_at_once() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(demo);
        let b = s.spawn(demo);
        (a.join().unwrap(), b.join().unwrap())
    });
    check(&a);
    check(&b);
    let cluster = |r: &Run| number_after(&r.stdout, "cluster masters on [");
    assert_ne!(cluster(&a), cluster(&b), "two demos on the same cluster ports");
    assert!(
        cluster(&a) + 2 <= 55_535 && cluster(&b) + 2 <= 55_535,
        "cluster ports above 55535"
    );
}

#[test]
fn demo_without_redis_on_path_names_the_install_script() {
    let empty = tempfile::tempdir().unwrap();
    let run = Cachemig::new()
        .args(["demo", "--fast"])
        .env("PATH", empty.path())
        .run();
    assert_eq!(run.status, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("`redis-server` is not on PATH"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("scripts/install-deps"), "{}", run.stderr);
}
