//! Progress of a long copy: indicatif bars on a terminal, one log line every few seconds
//! elsewhere (design §7), and a summary table at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::checkpoint::Counters;
use crate::output;

/// How often the log line is printed when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The live counters of every node, shared by the copy tasks and the reporter.
#[derive(Debug, Default)]
pub struct Board {
    nodes: Mutex<Vec<NodeLine>>,
}

#[derive(Debug, Clone)]
struct NodeLine {
    node: String,
    /// DBSIZE at start: the scan's expected length (an estimate; keys come and go).
    estimate: u64,
    /// The counters when this run started (a resume's checkpoint): rates count only the rest.
    initial: Counters,
    counters: Counters,
    done: bool,
}

impl Board {
    /// Registers a node with its estimated key count; returns its index.
    pub fn add_node(&self, node: &str, estimate: u64, counters: Counters, done: bool) -> usize {
        let mut nodes = self.nodes.lock().expect("board lock");
        nodes.push(NodeLine {
            node: node.to_string(),
            estimate,
            initial: counters,
            counters,
            done,
        });
        nodes.len() - 1
    }

    /// Replaces a node's counters.
    pub fn update(&self, index: usize, counters: Counters, done: bool) {
        let mut nodes = self.nodes.lock().expect("board lock");
        nodes[index].counters = counters;
        nodes[index].done = done;
    }

    fn snapshot(&self) -> Vec<NodeLine> {
        self.nodes.lock().expect("board lock").clone()
    }

    /// Counters summed over nodes.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for n in self.snapshot() {
            total.add(&n.counters);
        }
        total
    }

    /// What this run counted, summed over nodes.
    fn this_run(&self) -> Counters {
        let mut total = Counters::default();
        for n in self.snapshot() {
            total.add(&n.counters.since(&n.initial));
        }
        total
    }
}

/// Draws the board until dropped.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Starts drawing `board`; `throttled` tells why the copy is held back, if it is.
    pub fn start(
        label: &'static str,
        board: Arc<Board>,
        throttled: impl Fn() -> Option<String> + Send + 'static,
    ) -> Reporter {
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(draw_bars(label, board, throttled))
        } else {
            tokio::spawn(log_lines(label, board, throttled))
        };
        Reporter { task }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keys per second of this run (`this_run` keys in its time), and the time left for the
/// `done` of `estimate` keys at that rate.
fn rate_and_eta(this_run: u64, done: u64, estimate: u64, started: Instant) -> (f64, String) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = this_run as f64 / secs;
    let eta = if rate > 0.0 && estimate > done {
        format!("{}s", ((estimate - done) as f64 / rate).ceil() as u64)
    } else {
        "-".into()
    };
    (rate, eta)
}

async fn log_lines(label: &'static str, board: Arc<Board>, throttled: impl Fn() -> Option<String>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(LOG_EVERY).await;
        let nodes = board.snapshot();
        let total = board.total();
        let estimate: u64 = nodes.iter().map(|n| n.estimate).sum();
        let (rate, eta) = rate_and_eta(board.this_run().scanned, total.scanned, estimate, started);
        let done = nodes.iter().filter(|n| n.done).count();
        let throttle = throttled().map_or(String::new(), |r| format!(", throttled: {r}"));
        eprintln!(
            "{label}: {}/{} keys scanned ({} copied, {:.1} MB), {rate:.0} keys/s, ETA {eta}, {done}/{} nodes done{throttle}",
            total.scanned,
            estimate,
            total.copied,
            total.bytes as f64 / 1e6,
            nodes.len()
        );
    }
}

async fn draw_bars(label: &'static str, board: Arc<Board>, throttled: impl Fn() -> Option<String>) {
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} keys {per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut bars: Vec<ProgressBar> = Vec::new();
    let total_bar = multi.add(
        ProgressBar::new(0)
            .with_style(style.clone())
            .with_prefix(format!("{label} total")),
    );
    loop {
        let nodes = board.snapshot();
        while bars.len() < nodes.len() {
            let n = &nodes[bars.len()];
            let bar = multi.insert_before(&total_bar, ProgressBar::new(n.estimate).with_style(style.clone()));
            bar.set_prefix(n.node.clone());
            bars.push(bar);
        }
        for (bar, n) in bars.iter().zip(&nodes) {
            bar.set_length(n.estimate.max(n.counters.scanned));
            bar.set_position(n.counters.scanned);
            bar.set_message(format!(
                "{:.1} MB{}",
                n.counters.bytes as f64 / 1e6,
                if n.done { " done" } else { "" }
            ));
        }
        let total = board.total();
        total_bar.set_length(nodes.iter().map(|n| n.estimate.max(n.counters.scanned)).sum());
        total_bar.set_position(total.scanned);
        total_bar.set_message(throttled().map_or(String::new(), |r| format!("throttled: {r}")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The summary table printed when a copy ends; `earlier` holds what earlier runs had counted per
/// node, so keys/s is this run's keys over this run's time.
pub fn summary_table(
    rows: &[(String, Counters, bool)],
    earlier: &BTreeMap<String, Counters>,
    elapsed: Duration,
) -> comfy_table::Table {
    let mut t = output::table(&[
        "source node",
        "scanned",
        "matched",
        "copied",
        "big",
        "skipped",
        "vanished",
        "failed",
        "MB",
        "keys/s",
        "done",
    ]);
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut total = Counters::default();
    let mut total_earlier = Counters::default();
    let push = |t: &mut comfy_table::Table, name: &str, c: &Counters, before: &Counters, done: String| {
        t.add_row(vec![
            name.to_string(),
            c.scanned.to_string(),
            c.matched.to_string(),
            c.copied.to_string(),
            c.big_keys.to_string(),
            c.skipped_existing.to_string(),
            c.vanished.to_string(),
            c.failed.to_string(),
            format!("{:.1}", c.bytes as f64 / 1e6),
            format!("{:.0}", c.since(before).matched as f64 / secs),
            done,
        ]);
    };
    for (node, c, done) in rows {
        let before = earlier.get(node).copied().unwrap_or_default();
        total.add(c);
        total_earlier.add(&before);
        push(
            &mut t,
            node,
            c,
            &before,
            if *done { "yes".into() } else { "no".into() },
        );
    }
    let all_done = rows.iter().all(|r| r.2);
    push(
        &mut t,
        "total",
        &total,
        &total_earlier,
        if all_done { "yes".into() } else { "no".into() },
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(n: u64) -> Counters {
        Counters {
            matched: n,
            ..Counters::default()
        }
    }

    /// The regression: a resume that copied 100 keys in 1 s after earlier runs copied 900 said
    /// 1000 keys/s; this run's rate is 100.
    #[test]
    fn resume_keys_per_second_counts_only_this_runs_keys() {
        let rows = vec![("n1:6379".to_string(), matched(1000), true)];
        let earlier = BTreeMap::from([("n1:6379".to_string(), matched(900))]);
        let text = summary_table(&rows, &earlier, Duration::from_secs(1)).to_string();
        let node_line = text.lines().find(|l| l.contains("n1:6379")).unwrap();
        let cells: Vec<&str> = node_line.split(['│', '┆']).map(str::trim).collect();
        assert_eq!(cells[10], "100", "{text}");
        let (rate, _) = rate_and_eta(100, 1000, 2000, Instant::now() - Duration::from_secs(1));
        assert!((90.0..=100.0).contains(&rate), "{rate}");
    }
}
