//! The `cachemig` binary: parse arguments, run the command, map the error to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// The proxy allocates and frees small buffers for every request (frames, replies, key-sync
/// commands); glibc's allocator spent up to a fifth of the proxy's CPU on that in sync-dual-write
/// (docs/proxy-bench.md), mimalloc a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
