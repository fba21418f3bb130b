//! Writes the flag file for one catalog phase, as `cachemig advance` would after its gates passed,
//! without a plan, gates or state: for benchmarks and hand tests of the proxy.
//!
//! ```text
//! cargo run --release --example set_phase -- FLAG_PATH MIGRATION PHASE GENERATION [SAMPLE_RATE]
//! cargo run --release --example set_phase -- /tmp/flags/bench.json bench sync-dual-write 3
//! cargo run --release --example set_phase -- /tmp/flags/bench.json bench shadow-read 4 0.05
//! ```
//!
//! `MIGRATION` must be the plan's `[migration] name` (proxies refuse a file for another
//! migration). `GENERATION` must be higher than the one in force each time the phase changes:
//! readers apply only higher generations. `SAMPLE_RATE` (default 0.05) is the shadow-read
//! fraction, used only by phases that shadow reads; the shadow timeout is 50 ms. The file is
//! written atomically with `cachemig::flags::write_atomic`; `plan_sha256` is `"bench"`.

use std::path::PathBuf;
use std::process::ExitCode;

use cachemig::flags::{FlagFile, ShadowRead, write_atomic};
use cachemig::phase::Catalog;

const USAGE: &str = "usage: set_phase FLAG_PATH MIGRATION PHASE GENERATION [SAMPLE_RATE]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("set_phase: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (path, migration, phase, generation, rate) = match args.as_slice() {
        [path, migration, phase, generation] => (path, migration, phase, generation, None),
        [path, migration, phase, generation, rate] => (path, migration, phase, generation, Some(rate)),
        _ => return Err(USAGE.to_string()),
    };
    let catalog = Catalog::builtin();
    let spec = catalog.get(phase).ok_or_else(|| {
        format!(
            "unknown phase {phase:?}; the catalog has {}",
            catalog.names().join(", ")
        )
    })?;
    let generation: u64 = generation
        .parse()
        .map_err(|e| format!("GENERATION {generation:?}: {e}"))?;
    let sample_rate: f64 = match rate {
        Some(r) => r.parse().map_err(|e| format!("SAMPLE_RATE {r:?}: {e}"))?,
        None => 0.05,
    };
    let shadow = ShadowRead {
        sample_rate,
        timeout_ms: 50,
    };
    let flag = FlagFile::new(migration, generation, spec, shadow, "bench", false);
    let path = PathBuf::from(path);
    write_atomic(&path, &flag).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!(
        "{}: phase {} generation {}",
        path.display(),
        flag.phase,
        flag.generation
    );
    Ok(())
}
