//! Why a flag file could not be read.

use thiserror::Error;

/// Why a flag file was rejected. Readers keep their last good routing on every one of these: an
/// empty, partial or unverifiable file is treated as a write in progress, never as new routing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlagError {
    /// The file exists but holds nothing (or only whitespace): a writer that truncates before
    /// writing is mid-way.
    #[error("flag file is empty (a write may be in progress)")]
    Empty,
    /// The bytes are not JSON, or the JSON does not have the flag-file schema.
    #[error("flag file is malformed: {0}")]
    Malformed(String),
    /// The `format` field names a version this build does not read.
    #[error("flag file format {0} is not supported (this build reads format {supported})", supported = super::FORMAT)]
    UnsupportedFormat(u32),
    /// The `checksum` field does not match the document: it was altered or is incomplete.
    #[error("flag file checksum does not match its contents (altered by hand, or a write in progress)")]
    Checksum,
    /// Reading the file failed for a reason other than its absence.
    #[error("cannot read flag file: {0}")]
    Io(String),
}
