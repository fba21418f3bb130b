//! The `acl-permissions` gate: before the backfill starts, the users of both sides may run what
//! every phase needs on every master (the inspection's ACL preflight, `crate::inspect::acl`).

use super::Verdict;
use super::eval::Inspection;
use crate::inspect::NodeSetReport;
use crate::inspect::acl::AclMethod;

/// The gate's measured value and verdict: blocked naming each refused command per side, no data
/// when a side could not be inspected or checked.
pub fn measure(inspection: Option<&Inspection>) -> (String, Verdict) {
    let Some(i) = inspection else {
        return ("no data: offline (not inspected)".into(), Verdict::NoData);
    };
    let (Ok(s), Ok(t)) = (&i.source, &i.target) else {
        return (
            "no data: source or target not inspected (see the -reachable gates)".into(),
            Verdict::NoData,
        );
    };
    let missing: Vec<String> = [s, t].into_iter().filter_map(missing).collect();
    if !missing.is_empty() {
        return (
            format!(
                "{}; grant them to the user (`ACL SETUSER <user> +<command> ~<pattern>`, see \
                 docs/plan.md, \"ACL users\"), then `cachemig plan` again",
                missing.join("; ")
            ),
            Verdict::Blocked,
        );
    }
    let unchecked: Vec<String> = [s, t].into_iter().filter_map(unchecked).collect();
    if !unchecked.is_empty() {
        return (
            format!(
                "no data: {}; grant `+acl|dryrun` (Redis 7.0+) or `+multi` to let cachemig check, or \
                 `--skip-gate acl-permissions --reason TEXT` once you checked by hand",
                unchecked.join("; ")
            ),
            Verdict::NoData,
        );
    }
    (
        format!("every command allowed: {}, {}", allowed(s), allowed(t)),
        Verdict::Pass,
    )
}

/// `source (user app): DUMP (backfill, verify: read a key) on 127.0.0.1:6379, …`, or `None`.
fn missing(side: &NodeSetReport) -> Option<String> {
    let mut commands: Vec<(String, String, Vec<&str>)> = Vec::new();
    for m in &side.masters {
        for p in &m.acl.missing {
            match commands.iter_mut().find(|(c, _, _)| *c == p.command) {
                Some((_, _, nodes)) => nodes.push(&m.addr),
                None => commands.push((p.command.clone(), p.needed_for.clone(), vec![&m.addr])),
            }
        }
    }
    if commands.is_empty() {
        return None;
    }
    let listed: Vec<String> = commands
        .into_iter()
        .map(|(command, why, nodes)| format!("{command} ({why}) on {}", nodes.join(", ")))
        .collect();
    Some(format!(
        "{} (user {}) may not run {}",
        side.role,
        user(side),
        listed.join(", ")
    ))
}

/// Why a side's masters could not be checked, or `None`.
fn unchecked(side: &NodeSetReport) -> Option<String> {
    let why: Vec<String> = side
        .masters
        .iter()
        .filter(|m| m.acl.method == AclMethod::NotChecked)
        .map(|m| {
            let reason = m.acl.not_checked.as_deref().unwrap_or("not checked");
            format!("{} {}: {reason}", side.role, m.addr)
        })
        .collect();
    (!why.is_empty()).then(|| format!("could not be checked: {}", why.join(", ")))
}

fn allowed(side: &NodeSetReport) -> String {
    let how = match side.masters.first().map(|m| m.acl.method) {
        Some(AclMethod::AclDryrun) => "ACL DRYRUN",
        _ => "MULTI probe",
    };
    format!("{} user {} ({how})", side.role, user(side))
}

fn user(side: &NodeSetReport) -> &str {
    side.masters.first().map_or("default", |m| m.acl.user.as_str())
}
