//! The one error type the binary maps to exit codes (design §7).

use crate::plan::PlanError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure (Redis unreachable, I/O error, …).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: invalid input (plan, arguments).
pub const EXIT_INVALID: u8 = 2;
/// Exit code: a gate blocked the step.
pub const EXIT_BLOCKED: u8 = 3;
/// Exit code (`plan --detailed-exitcode` only): a step is ready to apply.
pub const EXIT_READY: u8 = 4;

/// Everything a command can fail with, grouped by how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plan file is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The arguments are invalid for the current state (wrong phase name, missing --yes, …).
    #[error("{0}")]
    Usage(String),
    /// A gate blocked the step.
    #[error("{0}")]
    Blocked(String),
    /// Anything else.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Plan(_) | Error::Usage(_) => EXIT_INVALID,
            Error::Blocked(_) => EXIT_BLOCKED,
            Error::Runtime(_) => EXIT_FAILURE,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Runtime(e.into())
    }
}

/// Shorthand for command results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
