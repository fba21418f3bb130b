//! The sections of plain settings — `[migration]`'s name and paths, `[keys]`, `[backfill]`,
//! `[dual_write]`, `[shadow_read]`, `[verify]` and `[proxies]` — with their defaults and the range
//! each value must be in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::tls::listen_tls;
use crate::keys::KeyFilter;
use crate::plan::error::PlanError;
use crate::plan::raw::{
    RawBackfill, RawDualWrite, RawKeys, RawMigration, RawProxies, RawShadowRead, RawVerify, SpannedStr,
};
use crate::plan::units::parse_size;
use crate::plan::{BackfillSettings, DualWriteSettings, ProxySettings, ShadowReadSettings, VerifySettings};

/// `[migration] name`: also the confirm word and part of default paths, so a short slug.
pub(super) fn migration_name(cx: &Ctx, v: &SpannedStr) -> Result<String, PlanError> {
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

/// `[migration] state_dir` and `flag_file`, resolved against `base` (the plan's folder), with
/// defaults named after the migration `name`.
pub(super) fn state_paths(
    cx: &Ctx,
    raw: &RawMigration,
    base: &Path,
    name: &str,
) -> Result<(PathBuf, PathBuf), PlanError> {
    if let Some(d) = &raw.state_dir
        && d.get_ref().trim().is_empty()
    {
        return Err(cx.err(
            d.span(),
            "`state_dir` is empty",
            "write it like `state_dir = \".cachemig/tokens\"`, or remove it for the default",
        ));
    }
    if let Some(f) = &raw.flag_file
        && (f.get_ref().ends_with('/') || f.get_ref().is_empty())
    {
        return Err(cx.err(
            f.span(),
            "`flag_file` must name a file, not a directory",
            "write it like `flag_file = \"flags/tokens.json\"`",
        ));
    }
    let relative = |v: &Option<SpannedStr>, default: String| {
        base.join(v.as_ref().map_or(default, |v| v.get_ref().clone()))
    };
    Ok((
        relative(&raw.state_dir, format!(".cachemig/{name}")),
        relative(&raw.flag_file, format!("flags/{name}.json")),
    ))
}

/// `[keys]`: the include and exclude globs.
pub(super) fn keys(cx: &Ctx, raw: &RawKeys) -> Result<KeyFilter, PlanError> {
    Ok(KeyFilter {
        include: patterns(cx, &raw.include, "include")?,
        exclude: patterns(cx, &raw.exclude, "exclude")?,
    })
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

/// `[backfill]`.
pub(super) fn backfill(cx: &Ctx, b: &RawBackfill) -> Result<BackfillSettings, PlanError> {
    Ok(BackfillSettings {
        scan_count: cx.int(&b.scan_count, "scan_count", 1000, 1, 1_000_000)? as u32,
        workers: cx.int(&b.workers, "workers", 8, 1, 256)? as u32,
        max_keys_per_sec: cx.int(&b.max_keys_per_sec, "max_keys_per_sec", 0, 0, i64::MAX)? as u64,
        max_source_latency_ms: cx.int(&b.max_source_latency_ms, "max_source_latency_ms", 5, 1, 60_000)?
            as u64,
        big_key_bytes: big_key_bytes(cx, &b.big_key_bytes)?,
        on_existing: b.on_existing.unwrap_or_default(),
        copy_mode: b.copy_mode.unwrap_or_default(),
    })
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

/// `[dual_write]`.
pub(super) fn dual_write(cx: &Ctx, d: &RawDualWrite) -> Result<DualWriteSettings, PlanError> {
    Ok(DualWriteSettings {
        queue_capacity: cx.int(&d.queue_capacity, "queue_capacity", 100_000, 1, 100_000_000)? as u64,
        sync_timeout_ms: cx.int(&d.sync_timeout_ms, "sync_timeout_ms", 100, 1, 60_000)? as u64,
        reverse_mirror: d.reverse_mirror.unwrap_or(true),
    })
}

/// `[shadow_read]`.
pub(super) fn shadow_read(cx: &Ctx, s: &RawShadowRead) -> Result<ShadowReadSettings, PlanError> {
    Ok(ShadowReadSettings {
        sample_rate: cx.ratio(&s.sample_rate, "sample_rate", 0.05)?,
        timeout_ms: cx.int(&s.timeout_ms, "timeout_ms", 50, 1, 60_000)? as u64,
        min_samples: cx.int(&s.min_samples, "min_samples", 10_000, 0, i64::MAX)? as u64,
        max_mismatch_ratio: cx.ratio(&s.max_mismatch_ratio, "max_mismatch_ratio", 0.0001)?,
    })
}

/// `[verify]`: a sample ratio only means something with a sample size.
pub(super) fn verify(cx: &Ctx, v: &RawVerify) -> Result<VerifySettings, PlanError> {
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
    Ok(verify)
}

/// `[proxies]` (required); listener TLS paths are resolved against `base`.
pub(super) fn proxies(
    cx: &Ctx,
    base: &Path,
    raw: Option<&Spanned<RawProxies>>,
) -> Result<ProxySettings, PlanError> {
    let expected = proxies_expected(cx, raw)?;
    let absent = RawProxies::default();
    let p = raw.map_or(&absent, Spanned::get_ref);
    let settings = ProxySettings {
        expected,
        // A proxy writes its report every second: a shorter timeout would count live proxies as
        // missing between two reports, and make one a step behind refuse writes at once.
        heartbeat_timeout: cx.duration_at_least(
            &p.heartbeat_timeout,
            "heartbeat_timeout",
            "10s",
            crate::proxy::heartbeat::INTERVAL,
            "proxies report every second, so live ones would count as missing between reports",
        )?,
        max_write_pause: cx.duration_at_least(
            &p.max_write_pause,
            "max_write_pause",
            "5s",
            Duration::from_millis(1),
            "the fence would give up before any proxy could ack it",
        )?,
        password_env: cx.env_name(&p.password_env)?,
        allow_flush: p.allow_flush.unwrap_or(false),
        tls_cert_file: None,
        tls_key_file: None,
    };
    listen_tls(cx, base, &p.tls_cert_file, &p.tls_key_file, settings)
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
