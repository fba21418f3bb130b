//! The sandbox's plan: the real plan format, with soaks and thresholds small enough that the
//! walk takes a minute or two instead of hours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// The migration's name (and the `--confirm` a finalize would need).
pub const NAME: &str = "demo";

/// Soak and shadow-sample thresholds of a walk.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Every `soak` gate.
    pub soak: Duration,
    /// The `shadow-samples` gate.
    pub min_samples: u64,
}

impl Pace {
    /// `--fast`: the shortest walk whose gates still measure something.
    pub const FAST: Pace = Pace {
        soak: Duration::from_secs(2),
        min_samples: 50,
    };
    /// The default: long enough to watch each phase on the live line.
    pub const NORMAL: Pace = Pace {
        soak: Duration::from_secs(10),
        min_samples: 500,
    };
}

/// Writes `dir/demo.toml` moving `demo:*` from the old Redis on `old` to the cluster on
/// `cluster`, with two proxies expected; its path.
pub fn write(dir: &Path, old: u16, cluster: &[u16], pace: Pace) -> anyhow::Result<PathBuf> {
    let urls: Vec<String> = cluster
        .iter()
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .collect();
    let body = format!(
        r#"# Written by `cachemig demo`: a real plan, with short soaks.
[migration]
name = "{NAME}"
state_dir = "state"
flag_file = "flags/{NAME}.json"

[source]
url = "redis://127.0.0.1:{old}"

[target]
urls = [{urls}]

[keys]
include = ["demo:*"]

[backfill]
# The machine also runs the servers, the proxies and the load: a PING may take a while.
max_source_latency_ms = 500

[dual_write]
sync_timeout_ms = 5000

[shadow_read]
sample_rate = 0.2
min_samples = {samples}
max_mismatch_ratio = 0.001

[gates]
soak = "{soak}s"

[proxies]
expected = 2
heartbeat_timeout = "5s"
max_write_pause = "5s"
"#,
        urls = urls.join(", "),
        samples = pace.min_samples,
        soak = pace.soak.as_secs(),
    );
    let path = dir.join(format!("{NAME}.toml"));
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
