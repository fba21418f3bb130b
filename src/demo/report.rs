//! The summary at the end: latency and throughput per phase, as a table and a bar chart.

use super::stats::PhaseStats;
use crate::output;

/// Width of the longest bar.
const BAR: usize = 40;

/// The `q` quantile (0–1) of sorted latencies, in milliseconds.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// A bar of `value` out of `max`, [`BAR`] characters at most.
fn bar(value: f64, max: f64) -> String {
    let eighths = if max > 0.0 {
        (value / max * (BAR * 8) as f64).round() as usize
    } else {
        0
    };
    let partial = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][eighths % 8];
    format!("{}{partial}", "█".repeat(eighths / 8))
}

/// Prints the per-phase table and the charts of throughput and p99 latency.
pub fn print(phases: &[PhaseStats]) {
    let mut t = output::table(&[
        "phase", "time", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "lag ms",
    ]);
    let mut rows = Vec::new();
    for p in phases {
        let mut lat = p.latencies_us.clone();
        lat.sort_unstable();
        let (rate, p99) = (p.ops_per_sec(), quantile(&lat, 0.99));
        t.add_row(vec![
            p.name.clone(),
            format!("{:.1}s", p.elapsed().as_secs_f64()),
            p.ops.to_string(),
            format!("{rate:.0}"),
            format!("{:.2}", quantile(&lat, 0.5)),
            format!("{p99:.2}"),
            format!("{:.1}", quantile(&lat, 1.0)),
            p.errors.to_string(),
            p.max_mirror_lag_ms.to_string(),
        ]);
        rows.push((p.name.as_str(), rate, p99));
    }
    println!("{t}");
    chart(
        "requests per second, by phase",
        rows.iter().map(|(n, r, _)| (*n, *r)),
        "",
    );
    chart(
        "p99 latency, by phase",
        rows.iter().map(|(n, _, l)| (*n, *l)),
        " ms",
    );
}

/// One horizontal bar chart.
fn chart<'a>(title: &str, rows: impl Iterator<Item = (&'a str, f64)> + Clone, unit: &str) {
    let max = rows.clone().map(|(_, v)| v).fold(0.0, f64::max);
    println!("{title}");
    for (name, value) in rows {
        println!(
            "  {name:>16} {:<width$} {value:.1}{unit}",
            bar(value, max),
            width = BAR + 1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        assert_eq!(bar(10.0, 10.0).chars().count(), BAR);
        assert_eq!(bar(0.0, 10.0), "");
        assert_eq!(bar(5.0, 10.0).chars().count(), BAR / 2);
        assert_eq!(bar(1.0, 0.0), "");
    }

    #[test]
    fn quantiles_of_sorted_latencies() {
        let lat: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile(&lat, 0.5), 51.0);
        assert_eq!(quantile(&lat, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.99), 0.0);
    }
}
