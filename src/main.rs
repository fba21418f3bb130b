//! The `cachemig` binary: parse arguments, run the command, map the error to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cachemig::cli::Cli::parse();
    match cachemig::commands::execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", render(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

/// One error, printed once, with its chain of context.
fn render(err: &cachemig::error::Error) -> String {
    match err {
        cachemig::error::Error::Runtime(e) => format!("{e:#}"),
        other => other.to_string(),
    }
}
