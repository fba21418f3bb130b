//! `docs/plan-reference.md` checked against the code (issue 11, item 5): the keys of every
//! section are exactly the ones the parser accepts, every gate key is a gate with a threshold,
//! every documented default, range, list of values and `required` is what loading a plan does.
//!
//! The keys the code accepts are not listed by hand here: they come from the parser's own
//! "unknown key" error (serde lists a struct's fields) and from the phase catalog, so a key
//! added to `src/plan/raw.rs` or `phases/*.toml` fails this test until the reference has it.
//! No Redis is needed: loading a plan never connects.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cachemig::phase::Catalog;
use cachemig::plan::{GateSettings, Plan, PlanError};

/// Every section header present (so a key can be put under it), `rediss://` so the `tls_*`
/// keys may be set, and the four required keys.
const BASE: &str = r#"[migration]
name = "tokens"

[source]
url = "rediss://127.0.0.1:6379/0"

[target]
urls = ["rediss://127.0.0.1:7001"]

[keys]

[backfill]

[dual_write]

[shadow_read]

[verify]

[gates]

[proxies]
expected = 2
"#;

/// A key no section has.
const PROBE: &str = "zz_probe";

/// One row of the reference's table.
#[derive(Debug)]
struct Row {
    /// `migration`, `gates.read-cutover`, … (without brackets).
    section: String,
    key: String,
    ty: String,
    /// The default as a TOML literal; `None` for `required` and `none`.
    default: Option<String>,
    required: bool,
    allowed: String,
}

/// The rows of `docs/plan-reference.md`'s key table.
fn rows() -> Vec<Row> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/plan-reference.md");
    let text = std::fs::read_to_string(&path).expect("docs/plan-reference.md");
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| l.starts_with("| `["))
        .map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 6, "a row has six cells: {line}");
            let code = |c: &str| c.trim_matches('`').to_string();
            Row {
                section: code(cells[0]).trim_matches(['[', ']']).to_string(),
                key: code(cells[1]),
                ty: cells[2].to_string(),
                default: cells[3].starts_with('`').then(|| code(cells[3])),
                required: cells[3] == "required",
                allowed: cells[4].to_string(),
            }
        })
        .collect();
    assert!(rows.len() > 40, "the table was not found in {}", path.display());
    rows
}

/// `text` with `key = value` under `[section]`: replacing the key's line if there is one,
/// appending the table if there is none.
fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    edit(text, section, key, Some(&format!("{key} = {value}")))
}

/// `text` without `key`'s line under `[section]`.
fn remove(text: &str, section: &str, key: &str) -> String {
    edit(text, section, key, None)
}

fn edit(text: &str, section: &str, key: &str, line: Option<&str>) -> String {
    let header = format!("[{section}]");
    let mut out: Vec<String> = text.lines().map(str::to_string).collect();
    let Some(start) = out.iter().position(|l| l.trim() == header) else {
        let line = line.expect("removing from a table the plan does not have");
        return format!("{text}\n{header}\n{line}\n");
    };
    let end = (start + 1..out.len())
        .find(|&i| out[i].starts_with('['))
        .unwrap_or(out.len());
    let existing = (start + 1..end).find(|&i| out[i].split('=').next().unwrap().trim() == key);
    match (existing, line) {
        (Some(i), Some(line)) => out[i] = line.to_string(),
        (Some(i), None) => {
            out.remove(i);
        }
        (None, Some(line)) => out.insert(start + 1, line.to_string()),
        (None, None) => panic!("`{key}` is not under {header}"),
    }
    out.join("\n") + "\n"
}

/// The plan a row is tried in: `gate_sample_ratio` is refused while `gate_sample` is 0 (only a
/// full verify counts then), so it is tried with `gate_sample = 1`.
fn base_for(row: &Row) -> String {
    match row.key.as_str() {
        "gate_sample_ratio" => set(BASE, "verify", "gate_sample", "1"),
        _ => BASE.to_string(),
    }
}

/// Writes plans into one folder and loads them.
struct Loader(tempfile::TempDir);

impl Loader {
    fn new() -> Self {
        Loader(tempfile::tempdir().unwrap())
    }

    fn load(&self, text: &str) -> Result<Plan, PlanError> {
        let path = self.0.path().join("plan.toml");
        std::fs::write(&path, text).unwrap();
        Plan::load(&path)
    }

    fn refused(&self, text: &str) -> PlanError {
        match self.load(text) {
            Ok(_) => panic!("this plan loaded, but should not have:\n{text}"),
            Err(e) => e,
        }
    }

    /// Everything a plan decides: the loaded plan without its hash, and the threshold in force
    /// for every gate (`[gates]` overrides and the catalog's defaults resolve into these).
    fn fingerprint(&self, text: &str) -> String {
        let mut plan = self.load(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let thresholds: Vec<String> = Catalog::builtin()
            .phases()
            .iter()
            .flat_map(|p| p.gates.iter().map(move |g| (&p.name, &g.name)))
            .map(|(phase, gate)| format!("{phase}.{gate}={:?}", plan.threshold(phase, gate)))
            .collect();
        plan.sha256.clear();
        plan.gates = GateSettings::default();
        format!("{plan:?}\n{}", thresholds.join("\n"))
    }
}

/// The list after "allowed here: " (unknown key) or "allowed: " (unknown value) in a hint.
fn allowed_list(hint: &str, marker: &str) -> BTreeSet<String> {
    let (_, list) = hint
        .split_once(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in the hint `{hint}`"));
    list.split(", ").map(str::to_string).collect()
}

fn documented_keys(rows: &[Row], section: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r.section == section)
        .map(|r| r.key.clone())
        .collect()
}

#[test]
fn every_section_lists_exactly_the_keys_the_parser_accepts() {
    let rows = rows();
    let loader = Loader::new();
    let tables: BTreeSet<String> = rows
        .iter()
        .map(|r| r.section.split('.').next().unwrap().to_string())
        .collect();
    let top = loader.refused(&format!("{BASE}\n[{PROBE}]\n"));
    assert_eq!(
        allowed_list(&top.hint, "allowed here: "),
        tables,
        "top-level tables"
    );
    // `[gates]` is not a struct: its keys are `soak` and the catalog's phases (next test).
    for section in tables.iter().filter(|s| *s != "gates") {
        let e = loader.refused(&set(BASE, section, PROBE, "1"));
        assert!(e.message.contains(PROBE), "[{section}]: {e}");
        assert_eq!(
            allowed_list(&e.hint, "allowed here: "),
            documented_keys(&rows, section),
            "[{section}]: the parser's keys (left) and docs/plan-reference.md's (right)"
        );
    }
}

#[test]
fn every_gate_key_is_a_gate_with_a_threshold_in_the_catalog() {
    let rows = rows();
    let documented: BTreeSet<(String, String)> = rows
        .iter()
        .filter_map(|r| Some((r.section.strip_prefix("gates.")?.to_string(), r.key.clone())))
        .collect();
    let catalog: BTreeSet<(String, String)> = Catalog::builtin()
        .phases()
        .iter()
        .flat_map(|p| {
            p.gates
                .iter()
                .filter(|g| g.threshold.is_some())
                .map(move |g| (p.name.clone(), g.name.clone()))
        })
        .collect();
    assert_eq!(
        catalog, documented,
        "the catalog's gates with a threshold (left), the reference's (right)"
    );
    assert_eq!(
        documented_keys(&rows, "gates"),
        BTreeSet::from(["soak".to_string()])
    );
    // A gate without a threshold is refused, so the reference is right to leave them out.
    let loader = Loader::new();
    let e = loader.refused(&set(BASE, "gates.write-stop", "fence", "1"));
    assert!(e.message.contains("has no threshold"), "{e}");
}

#[test]
fn a_key_written_at_its_documented_default_changes_nothing() {
    let loader = Loader::new();
    for row in &rows() {
        let Some(default) = &row.default else { continue };
        let literal = default.replace("<name>", "tokens");
        check_type(row, &literal);
        let base = base_for(row);
        let with = set(&base, &row.section, &row.key, &literal);
        assert_eq!(
            loader.fingerprint(&base),
            loader.fingerprint(&with),
            "[{}] {} = {literal} is not the default",
            row.section,
            row.key
        );
    }
}

/// The default's TOML type is the one the type column names.
fn check_type(row: &Row, literal: &str) {
    let table: toml::Table = toml::from_str(&format!("v = {literal}")).unwrap();
    let ok = match (row.ty.as_str(), table.get("v").unwrap()) {
        ("string" | "path" | "duration" | "size", toml::Value::String(_)) => true,
        ("integer", toml::Value::Integer(_)) | ("boolean", toml::Value::Boolean(_)) => true,
        ("number", toml::Value::Integer(_) | toml::Value::Float(_)) => true,
        ("array of strings", toml::Value::Array(a)) => a.iter().all(toml::Value::is_str),
        _ => false,
    };
    assert!(
        ok,
        "[{}] {}: the default {literal} is not a {}",
        row.section, row.key, row.ty
    );
}

/// The range in the allowed column (`A..=B` or `A..`), as (A, B).
fn range(allowed: &str) -> Option<(String, Option<String>)> {
    let token = allowed.split('`').skip(1).step_by(2).find(|t| t.contains(".."))?;
    let (low, high) = token.split_once("..").unwrap();
    Some((low.to_string(), high.strip_prefix('=').map(str::to_string)))
}

/// (values accepted, values refused) for a documented range, as TOML literals: both ends, and
/// one step beyond each.
fn range_probes(row: &Row, low: &str, high: Option<&str>) -> (Vec<String>, Vec<String>) {
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    let mut add = |end: &str, step: f64| match row.ty.as_str() {
        "integer" => {
            let n: i64 = end.parse().unwrap();
            ok.push(n.to_string());
            refused.push((n + step as i64).to_string());
        }
        "number" => {
            let x: f64 = end.parse().unwrap();
            ok.push(format!("{x:?}"));
            refused.push(format!("{:?}", x + step));
        }
        other => panic!("[{}] {}: a range on a {other}", row.section, row.key),
    };
    add(low, -1.0);
    if let Some(high) = high {
        add(high, 1.0);
    }
    (ok, refused)
}

#[test]
fn ranges_are_exact_at_both_ends() {
    let loader = Loader::new();
    let mut checked = 0;
    for row in &rows() {
        let Some((low, high)) = range(&row.allowed) else {
            continue;
        };
        let base = base_for(row);
        let (ok, refused) = range_probes(row, &low, high.as_deref());
        for value in ok {
            let text = set(&base, &row.section, &row.key, &value);
            loader
                .load(&text)
                .unwrap_or_else(|e| panic!("[{}] {} = {value}: {e}", row.section, row.key));
        }
        for value in refused {
            let e = loader.refused(&set(&base, &row.section, &row.key, &value));
            assert!(
                e.message.contains(&format!("`{}`", row.key)),
                "[{}] {} = {value}: {e}",
                row.section,
                row.key
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} ranges found");
}

#[test]
fn value_lists_required_keys_durations_and_sizes_are_as_documented() {
    let loader = Loader::new();
    for row in &rows() {
        let base = base_for(row);
        let with = |value: &str| set(&base, &row.section, &row.key, value);
        let place = format!("[{}] {}", row.section, row.key);
        if let Some(list) = row.allowed.strip_prefix("one of ") {
            let documented: BTreeSet<String> = list
                .split(", ")
                .map(|v| v.trim_matches(['`', '"']).to_string())
                .collect();
            let e = loader.refused(&with(&format!("\"{PROBE}\"")));
            assert_eq!(allowed_list(&e.hint, "allowed: "), documented, "{place}");
        }
        if row.required {
            let e = loader.refused(&remove(&base, &row.section, &row.key));
            assert!(e.message.contains(&format!("`{}`", row.key)), "{place}: {e}");
        }
        let (zero, positive) = match row.ty.as_str() {
            "duration" => ("\"0s\"", row.allowed.contains("`> 0`")),
            "size" => ("\"0\"", row.allowed.contains("`> 0`")),
            _ => continue,
        };
        let e = loader.refused(&with(&format!("\"{PROBE}\"")));
        assert!(e.message.contains(&format!("`{}`", row.key)), "{place}: {e}");
        match loader.load(&with(zero)) {
            Err(e) if positive => assert!(e.message.contains("zero"), "{place}: {e}"),
            Ok(_) if !positive => {}
            other => panic!("{place} = {zero}: documented `> 0` is {positive}, loading gave {other:?}"),
        }
    }
}
