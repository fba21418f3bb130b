//! Command-line arguments (design §7). Parsing only: validation happens when the plan loads.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Move a live Redis keyspace into a Redis Cluster in six gated, reversible phases.
#[derive(Debug, Parser)]
#[command(name = "cachemig", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human tables.
    #[default]
    Table,
    /// Stable JSON (documented in docs/cli.md).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the plan, inspect source and target, and show the next step with its gates.
    Plan {
        /// The plan file.
        plan: PathBuf,
        /// Validate only; do not connect to Redis.
        #[arg(long)]
        offline: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Exit 4 when the next step is ready to apply, 3 when a gate blocks it, 0 when there is
        /// no next step.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Show the phase in force, the generation, overrides and any drift.
    Status {
        /// The plan file.
        plan: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Rewrite the state record and the flag file from the journal if they disagree.
        #[arg(long, conflicts_with = "watch")]
        repair: bool,
        /// Refresh every `--interval` until Ctrl-C: in place on a terminal, else one frame per
        /// interval (JSON: one report per line).
        #[arg(long)]
        watch: bool,
        /// Seconds between frames of `--watch`.
        #[arg(long, value_name = "SECS", default_value_t = 2.0, requires = "watch", value_parser = positive_seconds)]
        interval: f64,
    },
    /// Move one phase forward when its gates pass.
    Advance {
        /// The plan file.
        plan: PathBuf,
        /// The phase to enter; must be the next one.
        #[arg(long)]
        phase: Option<String>,
        /// Evaluate everything and show what would change, but change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Skip this gate (journaled and shown by `status` forever after). Repeatable.
        #[arg(long = "skip-gate", value_name = "NAME", requires = "reason")]
        skip_gate: Vec<String>,
        /// Why the gate is skipped (journaled; must say something).
        #[arg(long, value_name = "TEXT", value_parser = non_empty_reason)]
        reason: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Re-run the current phase's entry action from its checkpoint (e.g. after kill -9).
    Resume {
        /// The plan file.
        plan: PathBuf,
    },
    /// Compare source and target key by key (both directions) and optionally repair.
    Verify {
        /// The plan file.
        plan: PathBuf,
        /// Check about N keys on each side (random sample) instead of every key.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        /// Key-sync every difference from the source (the source wins).
        #[arg(long)]
        repair: bool,
        /// Write every difference to this CSV file (key, kind, details).
        #[arg(long, value_name = "FILE.csv")]
        report: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Move one phase back. Never gated.
    Rollback {
        /// The plan file.
        plan: PathBuf,
        /// The phase to return to; must be the previous one.
        #[arg(long)]
        phase: Option<String>,
        /// Show what would change, but change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Out of write-stop only, when the proxies cannot ack the fence (down, or their reports
        /// unreadable): switch the primary back without it. Journaled, shown by `status`; see
        /// docs/runbook.md for what it risks.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why `--force` (journaled; must say something).
        #[arg(long, value_name = "TEXT", value_parser = non_empty_reason, requires = "force")]
        reason: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The one irreversible step, only from write-stop: new serves everything, the reverse
    /// mirror stops, and no command changes the migration afterwards.
    Finalize {
        /// The plan file.
        plan: PathBuf,
        /// The migration's name, typed out (required unless --dry-run).
        #[arg(long, value_name = "NAME")]
        confirm: Option<String>,
        /// Why (journaled with the step; must say something).
        #[arg(long, value_name = "TEXT", value_parser = non_empty_reason)]
        reason: Option<String>,
        /// Evaluate the gates and show what would change, but change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Watch a whole migration on this machine: a local old Redis and a 3-master cluster, keys
    /// loaded, two proxies under a reader/writer load, and every phase walked with its real
    /// gates, ending in a verify and a per-phase summary (docs/demo.md).
    Demo {
        /// How many keys to load into the old Redis before the walk.
        #[arg(long, value_name = "N", default_value_t = 200_000)]
        keys: u64,
        /// Leave the sandbox running at the end and print how to connect to it.
        #[arg(long)]
        keep: bool,
        /// Shorter soaks and fewer shadow samples (a quicker walk, for tests and a first look).
        #[arg(long)]
        fast: bool,
        /// First port of the cluster (P, P+1, P+2; bus ports P+10000..); default: free ports
        /// found by trying.
        #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1024..=55533))]
        cluster_port: Option<u16>,
        /// Put the sandbox in DIR (absent or empty; left in place at the end) instead of a
        /// temporary directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the RESP proxy: applications connect here instead of the old Redis for the length of
    /// the migration; every command is routed by the phase in the flag file (hot-reloaded).
    Proxy {
        /// The plan file.
        plan: PathBuf,
        /// Address to listen on for clients.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6400")]
        listen: String,
        /// This proxy's id in reports (default: hostname:port).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Address for /metrics (Prometheus) and /status (JSON); off unless given.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Worker threads; 1 runs everything on one thread (no cross-thread wake-ups, the
        /// cheapest per request), 0 means one per CPU.
        #[arg(long, value_name = "N", default_value_t = 1)]
        threads: usize,
        /// Start even when the flag file is missing or invalid while the migration is past
        /// `planned` (writes are then refused until the flag file appears).
        #[arg(long)]
        allow_missing_flag_file: bool,
        /// On SIGTERM, how long open client connections may take to reach a request boundary
        /// (an open transaction's EXEC, a request in progress) before the proxy exits anyway.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
    },
}

/// A `--interval` the watch can sleep: positive and finite.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a positive number of seconds (e.g. 2 or 0.5)"
        )),
    }
}

/// A `--reason` that says something: the journal keeps it forever as the why of an override.
fn non_empty_reason(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "the reason is empty; say why, e.g. --reason \"shadow mismatches are TTL rounding, see INC-123\""
                .into(),
        );
    }
    Ok(text.to_string())
}
