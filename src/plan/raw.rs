//! The plan exactly as written: serde structures that keep the source span of every value that
//! is validated after parsing, so errors can point at it.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string value with its place in the file.
pub type SpannedStr = Spanned<String>;

/// The whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub migration: RawMigration,
    pub source: RawSource,
    pub target: RawTarget,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub backfill: RawBackfill,
    #[serde(default)]
    pub dual_write: RawDualWrite,
    #[serde(default)]
    pub shadow_read: RawShadowRead,
    #[serde(default)]
    pub verify: RawVerify,
    /// `soak = "10m"` plus one `[gates.<phase>]` table per phase; validated by hand because the
    /// allowed keys come from the phase catalog.
    #[serde(default)]
    pub gates: BTreeMap<SpannedStr, Spanned<toml::Value>>,
    /// Required: `expected` has no safe default.
    pub proxies: Option<Spanned<RawProxies>>,
}

/// `[migration]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    pub name: SpannedStr,
    pub state_dir: Option<SpannedStr>,
    pub flag_file: Option<SpannedStr>,
}

/// Declares a side's table, `[source]` or `[target]`: its own URL key `$url`, then the keys both
/// sides take (credentials and TLS), listed once here so the two tables cannot drift apart, and
/// the `tls()` view of them.
macro_rules! side_table {
    ($(#[$doc:meta])* $name:ident { $url:ident: $url_type:ty }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub $url: $url_type,
            pub username_env: Option<SpannedStr>,
            pub password_env: Option<SpannedStr>,
            pub tls_ca_file: Option<SpannedStr>,
            pub tls_cert_file: Option<SpannedStr>,
            pub tls_key_file: Option<SpannedStr>,
            pub tls_insecure_skip_verify: Option<Spanned<bool>>,
        }

        impl $name {
            /// The side's TLS keys, borrowed.
            pub fn tls(&self) -> RawTls<'_> {
                RawTls {
                    ca_file: &self.tls_ca_file,
                    cert_file: &self.tls_cert_file,
                    key_file: &self.tls_key_file,
                    insecure_skip_verify: &self.tls_insecure_skip_verify,
                }
            }
        }
    };
}

side_table! {
    /// `[source]`
    RawSource { url: SpannedStr }
}

side_table! {
    /// `[target]`
    RawTarget { urls: Spanned<Vec<SpannedStr>> }
}

/// The TLS keys of `[source]` or `[target]`, borrowed.
pub struct RawTls<'a> {
    pub ca_file: &'a Option<SpannedStr>,
    pub cert_file: &'a Option<SpannedStr>,
    pub key_file: &'a Option<SpannedStr>,
    pub insecure_skip_verify: &'a Option<Spanned<bool>>,
}

/// `[keys]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    #[serde(default)]
    pub include: Vec<SpannedStr>,
    #[serde(default)]
    pub exclude: Vec<SpannedStr>,
}

/// What the backfill does when the target already holds a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExisting {
    /// Leave the target's key alone (it may be newer).
    #[default]
    Skip,
    /// Overwrite the target's key with the source's.
    Replace,
}

/// `[backfill]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackfill {
    pub scan_count: Option<Spanned<i64>>,
    pub workers: Option<Spanned<i64>>,
    pub max_keys_per_sec: Option<Spanned<i64>>,
    pub max_source_latency_ms: Option<Spanned<i64>>,
    pub big_key_bytes: Option<SpannedStr>,
    pub on_existing: Option<OnExisting>,
    pub copy_mode: Option<crate::server::CopySetting>,
}

/// `[dual_write]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDualWrite {
    pub queue_capacity: Option<Spanned<i64>>,
    pub sync_timeout_ms: Option<Spanned<i64>>,
    pub reverse_mirror: Option<bool>,
}

/// `[shadow_read]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadowRead {
    pub sample_rate: Option<Spanned<f64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub min_samples: Option<Spanned<i64>>,
    pub max_mismatch_ratio: Option<Spanned<f64>>,
}

/// `[verify]`: what a verify must cover to open the gates into read-cutover and write-stop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub gate_sample: Option<Spanned<i64>>,
    pub gate_sample_ratio: Option<Spanned<f64>>,
}

/// `[proxies]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxies {
    pub expected: Option<Spanned<i64>>,
    pub heartbeat_timeout: Option<SpannedStr>,
    pub max_write_pause: Option<SpannedStr>,
    pub password_env: Option<SpannedStr>,
    pub allow_flush: Option<bool>,
    pub tls_cert_file: Option<SpannedStr>,
    pub tls_key_file: Option<SpannedStr>,
}

/// Every key a plan may contain, with an example, for "did you mean" and type hints.
pub const KEY_EXAMPLES: &[(&str, &str)] = &[
    ("migration", "[migration]"),
    ("source", "[source]"),
    ("target", "[target]"),
    ("keys", "[keys]"),
    ("backfill", "[backfill]"),
    ("dual_write", "[dual_write]"),
    ("shadow_read", "[shadow_read]"),
    ("gates", "[gates]"),
    ("proxies", "[proxies]"),
    ("verify", "[verify]"),
    ("gate_sample", "gate_sample = 0"),
    ("gate_sample_ratio", "gate_sample_ratio = 0.0"),
    ("name", "name = \"tokens\""),
    ("state_dir", "state_dir = \".cachemig/tokens\""),
    ("flag_file", "flag_file = \"flags/tokens.json\""),
    ("url", "url = \"redis://127.0.0.1:6379/0\""),
    (
        "urls",
        "urls = [\"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]",
    ),
    ("password_env", "password_env = \"OLD_REDIS_PASSWORD\""),
    ("username_env", "username_env = \"OLD_REDIS_USER\""),
    ("tls_ca_file", "tls_ca_file = \"tls/ca.pem\""),
    ("tls_cert_file", "tls_cert_file = \"tls/client.pem\""),
    ("tls_key_file", "tls_key_file = \"tls/client.key\""),
    ("tls_insecure_skip_verify", "tls_insecure_skip_verify = false"),
    ("include", "include = [\"token:*\"]"),
    ("exclude", "exclude = [\"tmp:*\"]"),
    ("scan_count", "scan_count = 1000"),
    ("workers", "workers = 8"),
    ("max_keys_per_sec", "max_keys_per_sec = 0"),
    ("max_source_latency_ms", "max_source_latency_ms = 5"),
    ("big_key_bytes", "big_key_bytes = \"8MiB\""),
    ("on_existing", "on_existing = \"skip\""),
    ("copy_mode", "copy_mode = \"auto\""),
    ("queue_capacity", "queue_capacity = 100000"),
    ("sync_timeout_ms", "sync_timeout_ms = 100"),
    ("reverse_mirror", "reverse_mirror = true"),
    ("sample_rate", "sample_rate = 0.05"),
    ("timeout_ms", "timeout_ms = 50"),
    ("min_samples", "min_samples = 10000"),
    ("max_mismatch_ratio", "max_mismatch_ratio = 0.0001"),
    ("soak", "soak = \"10m\""),
    ("expected", "expected = 2"),
    ("heartbeat_timeout", "heartbeat_timeout = \"10s\""),
    ("max_write_pause", "max_write_pause = \"5s\""),
    ("allow_flush", "allow_flush = false"),
];

/// The example line for `key`, if it is a known plan key.
pub fn example_for(key: &str) -> Option<&'static str> {
    KEY_EXAMPLES.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
}
