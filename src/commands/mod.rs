//! One file per subcommand; [`execute`] is the single dispatch point.

mod action;
mod advance;
mod fence;
pub mod finalize;
mod plan;
mod proxy;
mod rollback;
mod status;
mod step;
mod verify;
mod watch;

use std::io::IsTerminal;
use std::path::Path;

use crate::cli::Command;
use crate::error::{Error, Result};
use crate::gate::{GateResult, Inspection};
use crate::phase::PhaseSpec;

/// Runs one subcommand and returns the exit code for success paths.
pub fn execute(command: Command) -> Result<u8> {
    match command {
        Command::Plan {
            plan,
            offline,
            format,
            detailed_exitcode,
        } => plan::run(&plan, offline, format, detailed_exitcode),
        Command::Status {
            plan,
            format,
            repair,
            watch,
            interval,
        } => status::run(
            &plan,
            format,
            repair,
            watch.then(|| std::time::Duration::from_secs_f64(interval)),
        ),
        Command::Advance {
            plan,
            phase,
            dry_run,
            yes,
            skip_gate,
            reason,
            format,
        } => advance::run(
            &plan,
            advance::Options {
                phase,
                dry_run,
                yes,
                skip_gates: skip_gate,
                reason,
                format,
            },
        ),
        Command::Resume { plan } => action::resume(&plan),
        Command::Verify {
            plan,
            sample,
            repair,
            report,
            format,
        } => verify::run(
            &plan,
            verify::Options {
                sample,
                repair,
                report,
                format,
            },
        ),
        Command::Rollback {
            plan,
            phase,
            dry_run,
            yes,
            force,
            reason,
            format,
        } => rollback::run(
            &plan,
            rollback::Options {
                phase,
                dry_run,
                yes,
                force: reason.filter(|_| force),
                format,
            },
        ),
        Command::Finalize {
            plan,
            confirm,
            reason,
            dry_run,
            format,
        } => finalize::run(
            &plan,
            &finalize::Options {
                confirm,
                reason,
                dry_run,
            },
            format,
        ),
        Command::Demo {
            keys,
            keep,
            fast,
            cluster_port,
            dir,
        } => crate::demo::run(crate::demo::Options {
            keys,
            keep,
            fast,
            cluster_port,
            dir,
        }),
        Command::Proxy {
            plan,
            listen,
            id,
            metrics,
            threads,
            allow_missing_flag_file,
            drain_timeout,
        } => proxy::run(
            &plan,
            crate::proxy::Options {
                listen,
                id,
                metrics,
                password: None,
                allow_missing_flag_file,
                drain_timeout,
            },
            threads,
        ),
    }
}

/// The next phase after the one in force and its gates, measured now exactly as `plan` and
/// `advance` measure them (read-only; `None` at the last phase). For callers that wait until a
/// step may run, such as `cachemig demo`, without printing a report at every look.
pub fn next_step_gates(plan: &Path) -> Result<Option<(&'static PhaseSpec, Vec<GateResult>)>> {
    let session = crate::session::Session::open(crate::plan::Plan::load(plan)?)?;
    let Some(next) = crate::phase::Catalog::builtin().next(&session.state.phase) else {
        return Ok(None);
    };
    Ok(Some((next, advance::evaluate_step(&session, next)?)))
}

/// Inspects source and target concurrently (read-only).
fn inspect(plan: &crate::plan::Plan) -> Result<Inspection> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let (source, target) = tokio::join!(
            crate::inspect::inspect_source(&plan.source, &plan.keys),
            crate::inspect::inspect_target(&plan.target, &plan.keys, 1000),
        );
        let clients = match &source {
            Ok(report) => {
                let masters: Vec<String> = report.masters.iter().map(|m| m.addr.clone()).collect();
                crate::gate::scan_clients(&plan.source, &masters).await
            }
            Err(_) => Err("source not inspected (see source-reachable)".to_string()),
        };
        // Labelled by what went wrong (an authentication failure is not "unreachable").
        let labelled = |e: crate::endpoint::EndpointError| format!("{}: {e}", e.label());
        Inspection {
            source: source.map_err(labelled),
            target: target.map_err(labelled),
            clients,
        }
    }))
}

/// A mutation needs `--yes` when nobody is at a terminal to answer the prompt.
fn require_yes_or_terminal(yes: bool) -> Result<()> {
    if yes || std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(Error::Usage(
            "refusing to change anything without --yes when stdin is not a terminal".into(),
        ))
    }
}

/// Asks the operator to confirm a mutation (skipped with `--yes`).
fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    require_yes_or_terminal(yes)?;
    eprint!("{question}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::Usage("aborted by the operator; nothing changed".into()))
    }
}
