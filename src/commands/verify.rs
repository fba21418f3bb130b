//! `cachemig verify PLAN [--sample N] [--repair] [--report FILE.csv]` (being implemented).

use std::path::{Path, PathBuf};

use crate::cli::Format;
use crate::error::{Error, Result};

/// Options of `verify`.
pub struct Options {
    /// `--sample N`.
    pub sample: Option<u64>,
    /// `--repair`.
    pub repair: bool,
    /// `--report FILE.csv`.
    pub report: Option<PathBuf>,
    /// `--format`.
    pub format: Format,
}

/// Runs `verify`.
pub fn run(_path: &Path, _options: Options) -> Result<u8> {
    Err(Error::Usage("verify is not implemented yet".into()))
}
