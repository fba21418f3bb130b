//! The plan: one TOML file that describes one migration (design §2).
//!
//! Loading goes in two steps, as in ripgrep: [`raw`] is the file exactly as written (with the
//! source span of every value), and [`resolve`] turns it into a validated [`Plan`] whose fields
//! can be trusted by the rest of the program. Every error is a [`PlanError`] naming
//! file:line:column, what is wrong and how to fix it.

mod error;
mod parse;
mod raw;
mod resolve;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use error::{PlanError, did_you_mean, line_column};
pub use raw::OnExisting;

use crate::endpoint::Endpoint;
use crate::keys::KeyFilter;
use crate::phase::{Catalog, Threshold};

/// How late a Kubernetes ConfigMap may reach a pod: the kubelet's sync period (1 min by default)
/// plus its ConfigMap cache's propagation. `plan` warns when `heartbeat_timeout` is shorter
/// (docs/design.md, "A fleet, not a lab").
pub const CONFIGMAP_DELIVERY: Duration = Duration::from_secs(90);

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file as given on the command line.
    pub path: PathBuf,
    /// SHA-256 of the plan file's bytes, recorded in the journal and the flag file.
    pub sha256: String,
    /// The migration name: `[a-z0-9-]+`, also the confirm word.
    pub name: String,
    /// Journal, state, lock and reports (resolved against the plan's directory).
    pub state_dir: PathBuf,
    /// The flag file proxies read (resolved against the plan's directory).
    pub flag_file: PathBuf,
    /// The old Redis.
    pub source: Endpoint,
    /// The new Redis Cluster.
    pub target: Endpoint,
    /// Which keys migrate.
    pub keys: KeyFilter,
    /// `[backfill]` settings.
    pub backfill: BackfillSettings,
    /// `[dual_write]` settings.
    pub dual_write: DualWriteSettings,
    /// `[shadow_read]` settings.
    pub shadow_read: ShadowReadSettings,
    /// `[verify]`
    pub verify: VerifySettings,
    /// `[gates]` settings.
    pub gates: GateSettings,
    /// `[proxies]` settings.
    pub proxies: ProxySettings,
}

/// `[backfill]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillSettings {
    /// SCAN COUNT hint.
    pub scan_count: u32,
    /// Parallel copy pipelines.
    pub workers: u32,
    /// Rate limit; 0 means unlimited.
    pub max_keys_per_sec: u64,
    /// Back off when a PING of the source takes longer than this.
    pub max_source_latency_ms: u64,
    /// Keys larger than this are copied in chunks by type.
    pub big_key_bytes: u64,
    /// What to do when the target already has a key.
    pub on_existing: OnExisting,
    /// How keys are copied: `auto` (DUMP/RESTORE when the target restores the source's
    /// payloads, else by type), or forced `dump` / `by-type`.
    pub copy_mode: crate::server::CopySetting,
}

/// `[dual_write]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DualWriteSettings {
    /// Bound of a proxy's mirror queue.
    pub queue_capacity: u64,
    /// How long a sync mirror may take before the key is marked dirty.
    pub sync_timeout_ms: u64,
    /// Mirror new→old during write-stop so rollback stays possible.
    pub reverse_mirror: bool,
}

/// `[shadow_read]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReadSettings {
    /// Fraction of reads also sent to new.
    pub sample_rate: f64,
    /// Timeout of one shadow read.
    pub timeout_ms: u64,
    /// Samples needed before read-cutover.
    pub min_samples: u64,
    /// Largest mismatch ratio allowed for read-cutover.
    pub max_mismatch_ratio: f64,
}

/// `[verify]`, with defaults applied: which recorded verify opens the `verified` gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VerifySettings {
    /// 0 (the default): only a full verify counts. N > 0: a `verify --sample M` with M >= N
    /// counts too (if it also meets [`VerifySettings::gate_sample_ratio`]).
    pub gate_sample: u64,
    /// The share of the source keys a sampled verify must have checked, 0.0 – 1.0.
    pub gate_sample_ratio: f64,
}

/// `[gates]`: the default soak and per-phase threshold overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateSettings {
    /// `[gates] soak`, overriding the catalog's soak for every phase.
    pub soak: Option<Duration>,
    /// `[gates.<phase>] <gate> = value`.
    pub overrides: BTreeMap<String, BTreeMap<String, Threshold>>,
}

/// `[proxies]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxySettings {
    /// How many proxies must ack a generation.
    pub expected: u32,
    /// A proxy whose report is older than this is missing.
    #[serde(with = "humantime_serde_secs")]
    pub heartbeat_timeout: Duration,
    /// How long the primary-switch fence may hold writes before the CLI gives up and releases
    /// them on the old primary.
    #[serde(with = "humantime_serde_secs")]
    pub max_write_pause: Duration,
    /// The variable holding the password clients must AUTH with at the proxy (`cachemig proxy`
    /// refuses to start when it is named but unset).
    pub password_env: Option<String>,
    /// Whether `FLUSHDB`/`FLUSHALL` through a proxy are applied (to both sides, sparing
    /// cachemig's own keys) instead of refused.
    pub allow_flush: bool,
    /// The certificate chain the proxy presents to TLS clients (with `tls_key_file`); `None`:
    /// clients speak plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

mod humantime_serde_secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::units::format_duration(*d))
    }
}

impl Plan {
    /// Reads, parses and validates the plan at `path`.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let text = Self::read(path)?;
        let raw = parse::parse(path, &text)?;
        resolve::resolve(path, &text, raw, Catalog::builtin())
    }

    /// The plan file's text.
    fn read(path: &Path) -> Result<String, PlanError> {
        let bytes = std::fs::read(path).map_err(|e| {
            PlanError::whole_file(
                path,
                format!("cannot read the plan: {e}"),
                "check the path; every command takes the plan file as its first argument",
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            PlanError::whole_file(path, "the plan is not valid UTF-8", "save the file as UTF-8")
        })?;
        Ok(text)
    }

    /// [`Plan::load`] for validating without connecting (`plan --offline`): a secret's variable
    /// that is not set is returned as a note instead of failing the load.
    pub fn load_offline(path: &Path) -> Result<(Plan, Vec<String>), PlanError> {
        let text = Self::read(path)?;
        let raw = parse::parse(path, &text)?;
        resolve::resolve_with(path, &text, raw, Catalog::builtin(), true)
    }

    /// What the plan allows that an operator must not miss: a side whose TLS certificate is not
    /// checked (`tls_insecure_skip_verify`), a heartbeat shorter than a ConfigMap's delivery.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.tls_warnings();
        warnings.extend(self.heartbeat_warning());
        warnings
    }

    /// A side whose TLS certificate is not checked.
    fn tls_warnings(&self) -> Vec<String> {
        [&self.source, &self.target]
            .into_iter()
            .filter(|ep| ep.tls.as_ref().is_some_and(|t| t.insecure_skip_verify))
            .map(|ep| {
                format!(
                    "WARNING: [{0}] tls_insecure_skip_verify = true: the {0}'s certificate is NOT \
                     checked, so anyone between cachemig and the {0} can read and change the \
                     migrated data; name the server's CA with tls_ca_file instead",
                    ep.role
                )
            })
            .collect()
    }

    /// `heartbeat_timeout` below [`CONFIGMAP_DELIVERY`] with proxies expected: right for a flag
    /// file copied directly, wrong for one a ConfigMap delivers (the plan cannot tell which), where
    /// a proxy the file reaches late refuses writes and the catch-up stops waiting for its ack.
    fn heartbeat_warning(&self) -> Option<String> {
        let timeout = self.proxies.heartbeat_timeout;
        if self.proxies.expected == 0 || timeout >= CONFIGMAP_DELIVERY {
            return None;
        }
        let (timeout, delivery) = (
            units::format_duration(timeout),
            units::format_duration(CONFIGMAP_DELIVERY),
        );
        Some(format!(
            "note: [proxies] heartbeat_timeout = \"{timeout}\" is shorter than a Kubernetes \
             ConfigMap may take to reach a pod (up to {delivery}): if a ConfigMap delivers the flag \
             file, a proxy it reaches late refuses writes and the catch-up stops waiting for its \
             ack; write `heartbeat_timeout = \"2m\"` there. A delivery that always lands within \
             {timeout} (a direct copy) needs no change"
        ))
    }

    /// The threshold in force for `gate` when entering `phase`: the plan's `[gates.<phase>]`
    /// override, then the plan's section that owns it (`[shadow_read]`, `[gates] soak`), then
    /// the catalog default.
    pub fn threshold(&self, phase: &str, gate: &str) -> Option<Threshold> {
        if let Some(t) = self.gates.overrides.get(phase).and_then(|g| g.get(gate)) {
            return Some(t.clone());
        }
        match gate {
            "shadow-samples" => return Some(Threshold::Number(self.shadow_read.min_samples as f64)),
            "shadow-mismatch-ratio" => return Some(Threshold::Number(self.shadow_read.max_mismatch_ratio)),
            "soak" => {
                if let Some(soak) = self.gates.soak {
                    return Some(Threshold::Duration(units::format_duration(soak)));
                }
            }
            _ => {}
        }
        Catalog::builtin()
            .get(phase)?
            .gates
            .iter()
            .find(|g| g.name == gate)?
            .threshold
            .clone()
    }
}
