//! `[gates]`: the default `soak` and the `[gates.<phase>]` tables of threshold overrides, checked
//! against the phase catalog (its phases, their gates, and the kind of each threshold).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::ctx::Ctx;
use crate::phase::{Catalog, PhaseSpec, Threshold};
use crate::plan::GateSettings;
use crate::plan::error::{PlanError, did_you_mean};
use crate::plan::raw::SpannedStr;
use crate::plan::units::parse_duration;

/// `[gates]`: `soak = "10m"` and `[gates.<phase>]` tables whose keys are that phase's gate names.
pub(super) fn gate_settings(
    cx: &Ctx,
    raw: &BTreeMap<SpannedStr, Spanned<toml::Value>>,
    catalog: &Catalog,
) -> Result<GateSettings, PlanError> {
    let mut settings = GateSettings::default();
    for (key, value) in raw {
        if key.get_ref() == "soak" {
            settings.soak = Some(soak_value(cx, value)?);
            continue;
        }
        let phase = gated_phase(cx, key, catalog)?;
        let toml::Value::Table(table) = value.get_ref() else {
            return Err(cx.err(
                value.span(),
                format!("`gates.{}` must be a table", phase.name),
                format!(
                    "write `[gates.{}]` followed by `soak = \"10m\"` lines",
                    phase.name
                ),
            ));
        };
        let mut overrides = BTreeMap::new();
        for (gate, v) in table {
            let span = find_key(cx.text, value.span(), gate);
            overrides.insert(gate.clone(), threshold(cx, phase, gate, v, span)?);
        }
        settings.overrides.insert(phase.name.clone(), overrides);
    }
    Ok(settings)
}

/// The phase a `[gates.<phase>]` table names: one of the catalog's phases that has gates.
fn gated_phase<'c>(cx: &Ctx, key: &SpannedStr, catalog: &'c Catalog) -> Result<&'c PhaseSpec, PlanError> {
    catalog
        .get(key.get_ref())
        .filter(|p| !p.gates.is_empty())
        .ok_or_else(|| {
            let gated: Vec<&str> = catalog
                .phases()
                .iter()
                .filter(|p| !p.gates.is_empty())
                .map(|p| p.name.as_str())
                .collect();
            let hint = match did_you_mean(key.get_ref(), gated.iter().copied().chain(["soak"])) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("[gates.<phase>] takes one of: {}", gated.join(", ")),
            };
            cx.err(
                key.span(),
                format!("unknown phase `{}` under [gates]", key.get_ref()),
                hint,
            )
        })
}

/// The override `gate = v` of `phase` (written at `span`): a gate of that phase that has a
/// threshold, and a value of the threshold's kind within its range.
fn threshold(
    cx: &Ctx,
    phase: &PhaseSpec,
    gate: &str,
    v: &toml::Value,
    span: Range<usize>,
) -> Result<Threshold, PlanError> {
    let spec = phase.gates.iter().find(|g| g.name == gate).ok_or_else(|| {
        let names = phase.gates.iter().map(|g| g.name.as_str());
        let hint = match did_you_mean(gate, names.clone()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!(
                "gates of {}: {}",
                phase.name,
                names.collect::<Vec<_>>().join(", ")
            ),
        };
        cx.err(
            span.clone(),
            format!("phase {} has no gate `{gate}`", phase.name),
            hint,
        )
    })?;
    match (&spec.threshold, v) {
        (Some(Threshold::Duration(_)), toml::Value::String(s)) if parse_duration(s).is_ok() => {
            Ok(Threshold::Duration(s.clone()))
        }
        (Some(Threshold::Number(_)), toml::Value::Integer(n)) if in_range(gate, *n as f64) => {
            Ok(Threshold::Number(*n as f64))
        }
        (Some(Threshold::Number(_)), toml::Value::Float(x)) if in_range(gate, *x) => {
            Ok(Threshold::Number(*x))
        }
        (None, _) => Err(cx.err(
            span,
            format!("gate `{gate}` has no threshold to override"),
            "remove the line; to bypass this gate once use `advance --skip-gate NAME --reason TEXT`",
        )),
        (Some(Threshold::Duration(d)), _) => Err(cx.err(
            span,
            format!("gate `{gate}` takes a duration"),
            format!("write it like `{gate} = \"{d}\"`"),
        )),
        (Some(Threshold::Number(n)), _) => {
            let what = if gate.ends_with("-ratio") {
                "a ratio between 0 and 1"
            } else {
                "a non-negative number"
            };
            Err(cx.err(
                span,
                format!("gate `{gate}` takes {what}"),
                format!("write it like `{gate} = {n}`"),
            ))
        }
    }
}

/// Numeric thresholds are non-negative; ratios are also at most 1.
fn in_range(gate: &str, x: f64) -> bool {
    x >= 0.0 && (!gate.ends_with("-ratio") || x <= 1.0)
}

/// `[gates] soak`: a duration string (zero is allowed: no soak).
fn soak_value(cx: &Ctx, value: &Spanned<toml::Value>) -> Result<std::time::Duration, PlanError> {
    match value.get_ref() {
        toml::Value::String(s) => parse_duration(s).map_err(|e| {
            cx.err(
                value.span(),
                format!("`soak` is not a duration: {e}"),
                "write it like `soak = \"10m\"`",
            )
        }),
        _ => Err(cx.err(
            value.span(),
            "`soak` must be a duration string",
            "write it like `soak = \"10m\"`",
        )),
    }
}

/// The span of `key` in the table whose header starts at `within` (toml::Value tables lose inner
/// spans, so find it textually: the first `key =` line after the header, before the next table),
/// falling back to the header.
fn find_key(text: &str, within: Range<usize>, key: &str) -> Range<usize> {
    let mut offset = within.start.min(text.len());
    for (i, line) in text[offset..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        let indent = line.len() - trimmed.len();
        if let Some((k, _)) = trimmed.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            return offset + indent..offset + indent + key.len();
        }
        offset += line.len();
    }
    within
}
