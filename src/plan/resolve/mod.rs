//! Raw plan → validated [`Plan`]: every check that TOML types alone cannot express. This file
//! assembles the plan, section by section; each concept's checks live in a submodule.

mod credentials;
mod ctx;
mod endpoints;
mod gates;
mod sections;
mod tls;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Plan;
use super::error::PlanError;
use super::raw::RawPlan;
use crate::phase::Catalog;
use ctx::Ctx;

/// Validates `raw` (parsed from `text` at `path`) into a [`Plan`].
pub fn resolve(path: &Path, text: &str, raw: RawPlan, catalog: &Catalog) -> Result<Plan, PlanError> {
    resolve_with(path, text, raw, catalog, false).map(|(plan, _)| plan)
}

/// [`resolve`]; `offline` turns an unset secret variable into a note (returned beside the plan).
pub fn resolve_with(
    path: &Path,
    text: &str,
    raw: RawPlan,
    catalog: &Catalog,
    offline: bool,
) -> Result<(Plan, Vec<String>), PlanError> {
    let cx = Ctx {
        path,
        text,
        offline,
        notes: Default::default(),
    };
    let plan = resolve_in(&cx, raw, catalog)?;
    Ok((plan, cx.notes.into_inner()))
}

/// Section by section, in a fixed order: the first problem found is the one reported.
fn resolve_in(cx: &Ctx, raw: RawPlan, catalog: &Catalog) -> Result<Plan, PlanError> {
    let name = sections::migration_name(cx, &raw.migration.name)?;
    // Relative paths in the plan are relative to the plan's folder.
    let base = cx.path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let (state_dir, flag_file) = sections::state_paths(cx, &raw.migration, &base, &name)?;
    let source = endpoints::source(cx, &base, &raw.source)?;
    let target = endpoints::target(cx, &base, &raw.target)?;
    let keys = sections::keys(cx, &raw.keys)?;
    let backfill = sections::backfill(cx, &raw.backfill)?;
    let dual_write = sections::dual_write(cx, &raw.dual_write)?;
    let shadow_read = sections::shadow_read(cx, &raw.shadow_read)?;
    let verify = sections::verify(cx, &raw.verify)?;
    let gates = gates::gate_settings(cx, &raw.gates, catalog)?;
    let proxies = sections::proxies(cx, &base, raw.proxies.as_ref())?;
    Ok(Plan {
        path: cx.path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(cx.text.as_bytes())),
        name,
        state_dir,
        flag_file,
        source,
        target,
        keys,
        backfill,
        dual_write,
        shadow_read,
        verify,
        gates,
        proxies,
    })
}
