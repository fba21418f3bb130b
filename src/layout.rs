//! Fitting a report to the operator's terminal: the width to fit, prose wrapped at word
//! boundaries, and tables that wrap their cells when they can and stack their columns as
//! `key: value` rows when even one word per column would not fit.
//!
//! Words are never split across lines: a reader greps for a key or a gate name and must find it
//! whole. A single word wider than the whole screen is cut short with `…` instead; the full text
//! is always in `--format json`.

use std::io::IsTerminal;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

/// The width used when neither the terminal nor `COLUMNS` says (the classic 80 is too narrow
/// for the proxy table, and wider than this rarely helps a log reader).
pub const DEFAULT_WIDTH: usize = 100;
/// Below this nothing is readable anyway; a smaller `COLUMNS` is raised to it.
pub const MIN_WIDTH: usize = 20;
/// A table column `UTF8_FULL_CONDENSED` draws costs its content plus one space each side and one
/// border; the table one more border.
const COLUMN_OVERHEAD: usize = 3;

/// The width to fit: the terminal's when stdout is one, else `COLUMNS`, else [`DEFAULT_WIDTH`].
pub fn detect_width() -> usize {
    let tty = std::io::stdout().is_terminal();
    let terminal = tty.then(|| Table::new().width()).flatten().map(usize::from);
    let columns = || std::env::var("COLUMNS").ok()?.trim().parse::<usize>().ok();
    terminal.or_else(columns).unwrap_or(DEFAULT_WIDTH).max(MIN_WIDTH)
}

/// Display width of `s` (one column per `char`: the reports hold no wide characters).
fn cols(s: &str) -> usize {
    s.chars().count()
}

/// `word` cut to `width` columns, the last one `…`, when it is wider.
fn fit_word(word: &str, width: usize) -> String {
    if cols(word) <= width {
        return word.to_string();
    }
    let mut cut: String = word.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` wrapped to lines of at most `width` columns at whitespace, keeping its own line
/// breaks; a word wider than `width` is cut short (see the module documentation).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let word = fit_word(word, width);
            if !line.is_empty() && cols(&line) + 1 + cols(&word) > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

/// The widest word of `text`.
fn longest_word(text: &str) -> usize {
    text.split_whitespace().map(cols).max().unwrap_or(0)
}

/// The widest line of `text`.
fn longest_line(text: &str) -> usize {
    text.split('\n').map(cols).max().unwrap_or(0)
}

/// A table's text before it is laid out: a header and rows of plain strings, and the colour of
/// some cells (shown on a terminal only, as comfy-table decides).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    colors: Vec<(usize, usize, Color)>,
}

impl Grid {
    /// An empty table with these column names.
    pub fn new(header: &[&str]) -> Grid {
        Grid {
            header: header.iter().map(|h| h.to_string()).collect(),
            ..Grid::default()
        }
    }

    /// Adds a row (as many cells as the header has columns).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Grid {
        self.rows.push(cells);
        self
    }

    /// Colours the cell in `column` of the last row added.
    pub fn color_last(&mut self, column: usize, color: Color) {
        if let Some(row) = self.rows.len().checked_sub(1) {
            self.colors.push((row, column, color));
        }
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table in the house style, wrapped by comfy-table to the terminal (for commands whose
    /// output is not fitted by a [`Screen`]).
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(self.header.iter());
        for (r, row) in self.rows.iter().enumerate() {
            t.add_row(
                row.iter()
                    .enumerate()
                    .map(|(c, text)| self.cell(r, c, text.clone())),
            );
        }
        t
    }

    fn cell(&self, row: usize, column: usize, text: String) -> Cell {
        let cell = Cell::new(text);
        match self.colors.iter().find(|(r, c, _)| *r == row && *c == column) {
            Some((_, _, color)) => cell.fg(*color),
            None => cell,
        }
    }

    fn column_texts(&self, i: usize) -> impl Iterator<Item = &str> {
        std::iter::once(self.header[i].as_str())
            .chain(self.rows.iter().map(move |r| r.get(i).map_or("", String::as_str)))
    }

    /// Column widths that fit `width` without splitting a word, if there are any: each column
    /// gets its widest word, then the room left goes one column at a time to the columns that
    /// would still wrap.
    fn widths(&self, width: usize) -> Option<Vec<usize>> {
        let n = self.header.len();
        let room = width.checked_sub(n * COLUMN_OVERHEAD + 1)?;
        let natural: Vec<usize> = (0..n)
            .map(|i| self.column_texts(i).map(longest_line).max().unwrap_or(0).max(1))
            .collect();
        let mut widths: Vec<usize> = (0..n)
            .map(|i| self.column_texts(i).map(longest_word).max().unwrap_or(0).max(1))
            .collect();
        let mut spare = room.checked_sub(widths.iter().sum())?;
        while spare > 0 {
            let mut grew = false;
            for (w, nat) in widths.iter_mut().zip(&natural) {
                if spare > 0 && *w < *nat {
                    *w += 1;
                    spare -= 1;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        Some(widths)
    }

    /// The table laid out for `width` columns: a bordered table whose cells wrap at words, or,
    /// when that cannot fit, one `key: value` block per row.
    pub fn render(&self, width: usize) -> String {
        match self.widths(width) {
            Some(widths) => self.bordered(&widths),
            None => self.stacked(width),
        }
    }

    fn bordered(&self, widths: &[usize]) -> String {
        let cell = |text: &str, w: usize| wrap(text, w).join("\n");
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(self.header.iter().zip(widths).map(|(h, w)| cell(h, *w)));
        for (r, row) in self.rows.iter().enumerate() {
            t.add_row(
                row.iter()
                    .zip(widths)
                    .enumerate()
                    .map(|(c, (text, w))| self.cell(r, c, cell(text, *w))),
            );
        }
        t.to_string()
    }

    /// Each row as `key: value` lines, values wrapped with their key's indent (or below the key,
    /// indented, when the keys leave too little room), rows separated by a rule.
    fn stacked(&self, width: usize) -> String {
        let key_width = self.header.iter().map(|h| cols(h)).max().unwrap_or(0);
        let beside = width.saturating_sub(key_width + 2);
        let mut out = Vec::new();
        for row in &self.rows {
            out.push("─".repeat(width.min(40)));
            for (key, value) in self.header.iter().zip(row) {
                if beside >= width / 2 {
                    let indent = " ".repeat(key_width + 2);
                    for (i, line) in wrap(value, beside).into_iter().enumerate() {
                        let lead = if i == 0 {
                            format!("{key:<key_width$}: ")
                        } else {
                            indent.clone()
                        };
                        out.push(format!("{lead}{line}").trim_end().to_string());
                    }
                } else {
                    out.extend(wrap(&format!("{key}:"), width));
                    out.extend(wrap(value, width - 2).into_iter().map(|l| format!("  {l}")));
                }
            }
        }
        out.join("\n")
    }
}

/// A report being written for one width: prose lines wrapped, tables laid out.
#[derive(Debug, Clone)]
pub struct Screen {
    width: usize,
    out: String,
}

impl Screen {
    /// An empty report for `width` columns.
    pub fn new(width: usize) -> Screen {
        Screen {
            width: width.max(MIN_WIDTH),
            out: String::new(),
        }
    }

    /// The width this report fits.
    pub fn width(&self) -> usize {
        self.width
    }

    /// A paragraph, wrapped; continuation lines are indented two spaces so a reader sees where
    /// one message ends.
    pub fn line(&mut self, text: impl AsRef<str>) {
        for (i, l) in wrap(text.as_ref(), self.width - 2).into_iter().enumerate() {
            let indent = if i == 0 { "" } else { "  " };
            self.out.push_str(indent);
            self.out.push_str(&l);
            self.out.push('\n');
        }
    }

    /// A title line (none when empty) and a table under it.
    pub fn table(&mut self, title: impl AsRef<str>, grid: &Grid) {
        if !title.as_ref().is_empty() {
            self.line(title);
        }
        self.out.push_str(&grid.render(self.width));
        self.out.push('\n');
    }

    /// The report's text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widest(text: &str) -> usize {
        text.lines().map(cols).max().unwrap_or(0)
    }

    fn grid() -> Grid {
        let mut g = Grid::new(&["seq", "event"]);
        g.row(vec![
            "1".into(),
            "skipped gate target-empty into backfill: the keys were loaded by hand".into(),
        ]);
        g
    }

    #[test]
    fn wrap_keeps_words_whole_and_cuts_only_what_cannot_fit() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh x", 4), vec!["abc…", "x"]);
        assert_eq!(wrap("a\nb", 10), vec!["a", "b"]);
    }

    #[test]
    fn a_wide_screen_keeps_one_line_per_row() {
        let text = grid().render(200);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("loaded by hand"), "{text}");
    }

    #[test]
    fn a_narrower_screen_wraps_cells_at_words() {
        let text = grid().render(40);
        assert!(widest(&text) <= 40, "{text}");
        assert!(
            text.contains("target-empty") && text.contains("backfill:"),
            "{text}"
        );
    }

    #[test]
    fn a_screen_too_narrow_for_the_columns_stacks_them() {
        let mut g = grid();
        g.row(vec!["2".into(), "a-very-long-gate-name-that-needs-room".into()]);
        let text = g.render(30);
        assert!(widest(&text) <= 30, "{text}");
        assert!(text.contains("seq  : 2"), "{text}");
    }
}
