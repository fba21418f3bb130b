//! `cachemig proxy PLAN [--listen ADDR] [--id ID] [--metrics ADDR]`.

use std::io::IsTerminal;
use std::path::Path;

use crate::error::{EXIT_OK, Error, Result};
use crate::plan::Plan;
use crate::proxy::{self, Options};

/// Loads the plan and runs the proxy until Ctrl-C (or SIGTERM via the service manager).
/// `options.password` is filled in here, from the plan's `[proxies] password_env`.
pub fn run(path: &Path, mut options: Options, threads: usize) -> Result<u8> {
    let plan = Plan::load(path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    options.password = match &plan.proxies.password_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            Error::Usage(format!(
                "[proxies] password_env names ${var}, which is not set; export it before starting the proxy"
            ))
        })?),
        None => None,
    };
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(proxy::run(plan, options))?;
    Ok(EXIT_OK)
}
