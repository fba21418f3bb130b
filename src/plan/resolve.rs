//! Raw plan → validated [`Plan`]: every check that TOML types alone cannot express.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Spanned;
use url::Url;

use super::error::{PlanError, did_you_mean};
use super::raw::{RawPlan, RawProxies, SpannedStr};
use super::tls::{listen_tls, side_tls};
use super::units::{parse_duration, parse_size};
use super::{
    BackfillSettings, DualWriteSettings, GateSettings, Plan, ProxySettings, ShadowReadSettings,
    VerifySettings,
};
use crate::endpoint::Endpoint;
use crate::keys::KeyFilter;
use crate::phase::{Catalog, Threshold};

/// Where errors point: the plan's path and text.
pub(super) struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    /// Validating without connecting (`plan --offline`): a secret's variable may be unset, which
    /// becomes a note instead of an error (CI checks plans without the secrets).
    offline: bool,
    notes: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PlanError {
        PlanError::at(self.path, self.text, span, message, hint)
    }

    /// An integer within `min..=max`.
    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, PlanError> {
        let Some(v) = v else { return Ok(default) };
        let n = *v.get_ref();
        if n < min || n > max {
            return Err(self.err(
                v.span(),
                format!("`{key}` is {n}, outside {min}..={max}"),
                format!("use a value between {min} and {max}, e.g. `{key} = {default}`"),
            ));
        }
        Ok(n)
    }

    /// A ratio within `0.0..=1.0`.
    fn ratio(&self, v: &Option<Spanned<f64>>, key: &str, default: f64) -> Result<f64, PlanError> {
        let Some(v) = v else { return Ok(default) };
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.err(
                v.span(),
                format!("`{key}` is {x}, outside 0.0..=1.0"),
                format!("a ratio is between 0 and 1, e.g. `{key} = {default}`"),
            ));
        }
        Ok(x)
    }

    fn duration(
        &self,
        v: &Option<SpannedStr>,
        key: &str,
        default: &str,
    ) -> Result<std::time::Duration, PlanError> {
        let text = v.as_ref().map_or(default, |v| v.get_ref().as_str());
        parse_duration(text).map_err(|e| {
            let span = v.as_ref().map_or(0..0, |v| v.span());
            self.err(
                span,
                format!("`{key}` is not a duration: {e}"),
                format!("write it like `{key} = \"{default}\"` (units: ms, s, m, h)"),
            )
        })
    }

    /// A duration that must be longer than zero.
    fn positive_duration(
        &self,
        v: &Option<SpannedStr>,
        key: &str,
        default: &str,
    ) -> Result<std::time::Duration, PlanError> {
        let d = self.duration(v, key, default)?;
        match v {
            Some(v) if d.is_zero() => Err(self.err(
                v.span(),
                format!("`{key}` is zero"),
                format!("use a duration longer than zero, e.g. `{key} = \"{default}\"`"),
            )),
            _ => Ok(d),
        }
    }

    /// An optional `*_env` key: a valid variable name that is set in the environment.
    fn password_env(&self, v: &Option<SpannedStr>, section: &str) -> Result<Option<String>, PlanError> {
        let name = self.env_name(v)?;
        if let (Some(name), Some(v)) = (&name, v)
            && std::env::var_os(name).is_none()
        {
            let unset = self.err(v.span(), format!("[{section}] password_env names ${name}, which is not set"), format!("export {name}=<password> before running cachemig, or remove `password_env` if the server has no password"));
            self.unset_secret(unset)?;
        }
        Ok(name)
    }

    /// A variable the plan names is not set: an error, or offline a note (CI checks plans
    /// without the secrets).
    pub(super) fn unset_secret(&self, unset: PlanError) -> Result<(), PlanError> {
        if !self.offline {
            return Err(unset);
        }
        self.notes.borrow_mut().push(format!(
            "{} (fine offline: set it where cachemig connects)",
            unset.headline()
        ));
        Ok(())
    }

    /// An optional `*_env` key that only has to be a valid variable name: `[proxies]
    /// password_env` is read by `cachemig proxy` alone, which checks that it is set.
    fn env_name(&self, v: &Option<SpannedStr>) -> Result<Option<String>, PlanError> {
        self.variable(v, "password_env", "name the variable that holds the password, e.g. `password_env = \"OLD_REDIS_PASSWORD\"` (never the password itself)")
    }

    /// An optional key `key` naming an environment variable: a valid name, or an error with
    /// `hint`.
    pub(super) fn variable(
        &self,
        v: &Option<SpannedStr>,
        key: &str,
        hint: &str,
    ) -> Result<Option<String>, PlanError> {
        let Some(v) = v else { return Ok(None) };
        let name = v.get_ref();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(self.err(
                v.span(),
                format!("`{key}` \"{name}\" is not an environment variable name"),
                hint,
            ));
        }
        Ok(Some(name.clone()))
    }

    /// A `redis://` or `rediss://` URL without a password in it.
    fn redis_url(&self, v: &SpannedStr, role: &str) -> Result<Url, PlanError> {
        let url = Url::parse(v.get_ref()).map_err(|e| {
            self.err(
                v.span(),
                format!("\"{}\" is not a valid URL: {e}", redact_str(v.get_ref())),
                "write it like `redis://127.0.0.1:6379/0`",
            )
        })?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(self.err(
                v.span(),
                format!("the {role} URL has scheme `{}`", url.scheme()),
                "use redis:// or rediss:// (TLS)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.err(
                v.span(),
                format!("the {role} URL has no host"),
                "write it like `redis://127.0.0.1:6379`",
            ));
        }
        if url.password().is_some() {
            return Err(self.err(v.span(), format!("the {role} URL contains a password"), "secrets never go in the plan: remove it from the URL and name an environment variable with `password_env`"));
        }
        Ok(url)
    }
}

/// Hides anything between `://` and `@` so a mistyped URL with a password is not echoed back.
fn redact_str(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &s[..a + 3], &s[b..]),
        _ => s.to_string(),
    }
}

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

fn resolve_in(cx: &Ctx, raw: RawPlan, catalog: &Catalog) -> Result<Plan, PlanError> {
    let (path, text) = (cx.path, cx.text);
    let name = migration_name(cx, &raw.migration.name)?;
    let base = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let relative = |v: &Option<SpannedStr>, default: String| {
        base.join(v.as_ref().map_or(default, |v| v.get_ref().clone()))
    };
    let state_dir = relative(&raw.migration.state_dir, format!(".cachemig/{name}"));
    let flag_file = relative(&raw.migration.flag_file, format!("flags/{name}.json"));
    if let Some(d) = &raw.migration.state_dir
        && d.get_ref().trim().is_empty()
    {
        return Err(cx.err(
            d.span(),
            "`state_dir` is empty",
            "write it like `state_dir = \".cachemig/tokens\"`, or remove it for the default",
        ));
    }
    if let Some(f) = &raw.migration.flag_file
        && (f.get_ref().ends_with('/') || f.get_ref().is_empty())
    {
        return Err(cx.err(
            f.span(),
            "`flag_file` must name a file, not a directory",
            "write it like `flag_file = \"flags/tokens.json\"`",
        ));
    }

    let mut source_url = cx.redis_url(&raw.source.url, "source")?;
    super::user::apply(
        cx,
        "source",
        &raw.source.username_env,
        std::slice::from_mut(&mut source_url),
        &[raw.source.url.span()],
    )?;
    let source = Endpoint {
        role: "source",
        tls: side_tls(
            cx,
            &base,
            raw.source.tls(),
            &[(source_url.clone(), raw.source.url.span())],
            "source",
        )?,
        urls: vec![source_url],
        password_env: cx.password_env(&raw.source.password_env, "source")?,
    };
    let mut seeds = target_urls(cx, &raw.target.urls)?;
    let spans: Vec<_> = raw.target.urls.get_ref().iter().map(|v| v.span()).collect();
    super::user::apply(cx, "target", &raw.target.username_env, &mut seeds, &spans)?;
    let spanned: Vec<_> = seeds.iter().cloned().zip(spans).collect();
    let target = Endpoint {
        role: "target",
        tls: side_tls(cx, &base, raw.target.tls(), &spanned, "target")?,
        urls: seeds,
        password_env: cx.password_env(&raw.target.password_env, "target")?,
    };
    let keys = KeyFilter {
        include: patterns(cx, &raw.keys.include, "include")?,
        exclude: patterns(cx, &raw.keys.exclude, "exclude")?,
    };

    let b = &raw.backfill;
    let backfill = BackfillSettings {
        scan_count: cx.int(&b.scan_count, "scan_count", 1000, 1, 1_000_000)? as u32,
        workers: cx.int(&b.workers, "workers", 8, 1, 256)? as u32,
        max_keys_per_sec: cx.int(&b.max_keys_per_sec, "max_keys_per_sec", 0, 0, i64::MAX)? as u64,
        max_source_latency_ms: cx.int(&b.max_source_latency_ms, "max_source_latency_ms", 5, 1, 60_000)?
            as u64,
        big_key_bytes: big_key_bytes(cx, &b.big_key_bytes)?,
        on_existing: b.on_existing.unwrap_or_default(),
        copy_mode: b.copy_mode.unwrap_or_default(),
    };
    let d = &raw.dual_write;
    let dual_write = DualWriteSettings {
        queue_capacity: cx.int(&d.queue_capacity, "queue_capacity", 100_000, 1, 100_000_000)? as u64,
        sync_timeout_ms: cx.int(&d.sync_timeout_ms, "sync_timeout_ms", 100, 1, 60_000)? as u64,
        reverse_mirror: d.reverse_mirror.unwrap_or(true),
    };
    let s = &raw.shadow_read;
    let shadow_read = ShadowReadSettings {
        sample_rate: cx.ratio(&s.sample_rate, "sample_rate", 0.05)?,
        timeout_ms: cx.int(&s.timeout_ms, "timeout_ms", 50, 1, 60_000)? as u64,
        min_samples: cx.int(&s.min_samples, "min_samples", 10_000, 0, i64::MAX)? as u64,
        max_mismatch_ratio: cx.ratio(&s.max_mismatch_ratio, "max_mismatch_ratio", 0.0001)?,
    };
    let v = &raw.verify;
    let verify = VerifySettings {
        gate_sample: cx.int(&v.gate_sample, "gate_sample", 0, 0, i64::MAX)? as u64,
        gate_sample_ratio: cx.ratio(&v.gate_sample_ratio, "gate_sample_ratio", 0.0)?,
    };
    if verify.gate_sample == 0
        && let Some(r) = &v.gate_sample_ratio
    {
        return Err(cx.err(
            r.span(),
            "`gate_sample_ratio` is set but `gate_sample` is 0, so only a full verify counts",
            "add `gate_sample = N` (the smallest `verify --sample N` the gates accept), or remove the line",
        ));
    }
    let gates = gate_settings(cx, &raw.gates, catalog)?;
    let raw_proxies = raw.proxies.as_ref().map(Spanned::get_ref);
    let proxies = ProxySettings {
        expected: proxies_expected(cx, raw.proxies.as_ref())?,
        heartbeat_timeout: cx.duration(
            &raw_proxies.and_then(|p| p.heartbeat_timeout.clone()),
            "heartbeat_timeout",
            "10s",
        )?,
        max_write_pause: cx.positive_duration(
            &raw_proxies.and_then(|p| p.max_write_pause.clone()),
            "max_write_pause",
            "5s",
        )?,
        password_env: cx.env_name(&raw_proxies.and_then(|p| p.password_env.clone()))?,
        allow_flush: raw_proxies.and_then(|p| p.allow_flush).unwrap_or(false),
        tls_cert_file: None,
        tls_key_file: None,
    };
    let proxies = match raw_proxies {
        Some(p) => listen_tls(cx, &base, &p.tls_cert_file, &p.tls_key_file, proxies)?,
        None => proxies,
    };

    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(Plan {
        path: path.to_path_buf(),
        sha256,
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

/// `[proxies] expected` has no default: 0 would let every proxy-ack gate pass, so the plan must
/// say it.
fn proxies_expected(cx: &Ctx, proxies: Option<&Spanned<RawProxies>>) -> Result<u32, PlanError> {
    let hint = "add `expected = N` under [proxies]: how many cachemig proxies must ack each step (0 if none)";
    match proxies {
        None => {
            let end = cx.text.len();
            Err(cx.err(end..end, "the plan has no [proxies] table", hint))
        }
        Some(p) if p.get_ref().expected.is_none() => {
            Err(cx.err(p.span(), "`expected` is missing from [proxies]", hint))
        }
        Some(p) => Ok(cx.int(&p.get_ref().expected, "expected", 0, 0, 10_000)? as u32),
    }
}

fn migration_name(cx: &Ctx, v: &SpannedStr) -> Result<String, PlanError> {
    let name = v.get_ref();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(cx.err(
            v.span(),
            format!("migration name \"{name}\" is not allowed"),
            "use 1-64 characters from a-z, 0-9 and -, e.g. `name = \"tokens\"`",
        ));
    }
    Ok(name.clone())
}

fn target_urls(cx: &Ctx, urls: &Spanned<Vec<SpannedStr>>) -> Result<Vec<Url>, PlanError> {
    if urls.get_ref().is_empty() {
        return Err(cx.err(
            urls.span(),
            "`urls` is empty",
            "list at least one master of the target cluster as a seed",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for v in urls.get_ref() {
        let url = cx.redis_url(v, "target")?;
        let endpoint = (
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default(),
        );
        if !seen.insert(endpoint.clone()) {
            return Err(cx.err(
                v.span(),
                format!(
                    "target seed {}:{} is listed twice",
                    endpoint.0,
                    endpoint.1.unwrap_or(6379)
                ),
                "remove the duplicate seed",
            ));
        }
        if !matches!(url.path(), "" | "/" | "/0") {
            return Err(cx.err(
                v.span(),
                format!(
                    "target URL selects database {}",
                    url.path().trim_start_matches('/')
                ),
                "a Redis Cluster has only database 0: drop the /N from the URL",
            ));
        }
        out.push(url);
    }
    Ok(out)
}

fn patterns(cx: &Ctx, v: &[SpannedStr], key: &str) -> Result<Vec<String>, PlanError> {
    v.iter()
        .map(|p| {
            if p.get_ref().is_empty() {
                Err(cx.err(
                    p.span(),
                    format!("empty pattern in `{key}`"),
                    "remove it, or write a Redis glob such as \"token:*\"",
                ))
            } else {
                Ok(p.get_ref().clone())
            }
        })
        .collect()
}

fn big_key_bytes(cx: &Ctx, v: &Option<SpannedStr>) -> Result<u64, PlanError> {
    let Some(v) = v else { return Ok(8 * 1024 * 1024) };
    match parse_size(v.get_ref()) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(cx.err(v.span(), "`big_key_bytes` is zero", "use a size such as \"8MiB\"")),
        Err(e) => Err(cx.err(
            v.span(),
            format!("`big_key_bytes` is not a size: {e}"),
            "write it like `big_key_bytes = \"8MiB\"` (B, KiB, MiB, GiB, KB, MB, GB)",
        )),
    }
}

/// `[gates]`: `soak = "10m"` and `[gates.<phase>]` tables whose keys are that phase's gate names.
fn gate_settings(
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
        let phase = catalog
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
            })?;
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
            let spec = phase.gates.iter().find(|g| &g.name == gate).ok_or_else(|| {
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
            let threshold = match (&spec.threshold, v) {
                (Some(Threshold::Duration(_)), toml::Value::String(s)) if parse_duration(s).is_ok() => {
                    Threshold::Duration(s.clone())
                }
                (Some(Threshold::Number(_)), toml::Value::Integer(n)) if in_range(gate, *n as f64) => {
                    Threshold::Number(*n as f64)
                }
                (Some(Threshold::Number(_)), toml::Value::Float(x)) if in_range(gate, *x) => {
                    Threshold::Number(*x)
                }
                (None, _) => return Err(cx.err(
                    span,
                    format!("gate `{gate}` has no threshold to override"),
                    "remove the line; to bypass this gate once use `advance --skip-gate NAME --reason TEXT`",
                )),
                (Some(Threshold::Duration(d)), _) => {
                    return Err(cx.err(
                        span,
                        format!("gate `{gate}` takes a duration"),
                        format!("write it like `{gate} = \"{d}\"`"),
                    ));
                }
                (Some(Threshold::Number(n)), _) => {
                    let what = if gate.ends_with("-ratio") {
                        "a ratio between 0 and 1"
                    } else {
                        "a non-negative number"
                    };
                    return Err(cx.err(
                        span,
                        format!("gate `{gate}` takes {what}"),
                        format!("write it like `{gate} = {n}`"),
                    ));
                }
            };
            overrides.insert(gate.clone(), threshold);
        }
        settings.overrides.insert(phase.name.clone(), overrides);
    }
    Ok(settings)
}

/// Numeric thresholds are non-negative; ratios are also at most 1.
fn in_range(gate: &str, x: f64) -> bool {
    x >= 0.0 && (!gate.ends_with("-ratio") || x <= 1.0)
}

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
