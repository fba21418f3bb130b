//! Plan errors that point at file, line and column and say how to fix the problem.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem in a plan file, located precisely enough to jump to it in an editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The plan file.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is not tied to a place (the file cannot be read).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl PlanError {
    /// An error at byte range `span` of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(source, span.start);
        PlanError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An error about the file as a whole (unreadable, not UTF-8).
    pub fn whole_file(file: &Path, message: impl Into<String>, hint: impl Into<String>) -> Self {
        PlanError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl PlanError {
    /// `file:line:column: message`, without the hint.
    pub fn headline(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file.display(), self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  hint: {}", self.headline(), self.hint)
    }
}

impl std::error::Error for PlanError {}

/// 1-based line and column (counted in characters) of byte offset `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, 11), (2, 6));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("scan_cont", ["scan_count", "workers"]),
            Some("scan_count")
        );
        assert_eq!(did_you_mean("zzz", ["scan_count", "workers"]), None);
    }
}
