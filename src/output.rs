//! Rendering reports: comfy-table tables on a terminal or in logs, stable JSON with `--format json`.

use comfy_table::{Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::flags::FieldChange;
use crate::gate::{GateResult, Verdict};
use crate::layout::Grid;

/// A table with the house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// The gates of a step, one row each.
pub fn gates_table(results: &[GateResult]) -> Table {
    gates_grid(results).table()
}

/// [`gates_table`]'s text, for a [`crate::layout::Screen`] to fit.
pub fn gates_grid(results: &[GateResult]) -> Grid {
    let mut t = Grid::new(&["gate", "measured", "threshold", "verdict"]);
    for r in results {
        let color = match r.verdict {
            Verdict::Pass => Color::Green,
            Verdict::Skipped => Color::Yellow,
            Verdict::Blocked | Verdict::NoData => Color::Red,
        };
        let verdict = match &r.skip_reason {
            Some(reason) => format!("{} ({reason})", r.verdict),
            None => r.verdict.to_string(),
        };
        t.row(vec![
            r.gate.clone(),
            r.measured.clone(),
            r.threshold.clone(),
            verdict,
        ]);
        t.color_last(3, color);
    }
    t
}

/// The flag-file fields a step would change.
pub fn diff_table(changes: &[FieldChange]) -> Table {
    let mut t = table(&["flag-file field", "now", "after"]);
    for c in changes {
        t.add_row(vec![
            c.field.clone(),
            c.old.clone().unwrap_or_else(|| "(absent)".into()),
            c.new.clone(),
        ]);
    }
    t
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A one-line summary of blocking gates, for error messages: `gate (measured)`.
pub fn blocking_summary(results: &[GateResult]) -> String {
    results
        .iter()
        .filter(|r| !r.verdict.allows())
        .map(|r| format!("{} = {} [{}]", r.gate, r.measured, r.verdict))
        .collect::<Vec<_>>()
        .join("; ")
}
