//! `[source]` and `[target]`: their URLs (scheme, host, no password, the target's seeds once
//! each on database 0), and each side assembled into an [`Endpoint`] with its user, TLS settings
//! and password variable.

use std::collections::HashSet;
use std::path::Path;

use toml::Spanned;
use url::Url;

use super::credentials::apply_user;
use super::ctx::Ctx;
use super::tls::side_tls;
use crate::endpoint::Endpoint;
use crate::plan::error::PlanError;
use crate::plan::raw::{RawSource, RawTarget, SpannedStr};

/// `[source]`: one URL; TLS paths are resolved against `base`, the plan's folder.
pub(super) fn source(cx: &Ctx, base: &Path, raw: &RawSource) -> Result<Endpoint, PlanError> {
    let mut url = redis_url(cx, &raw.url, "source")?;
    let span = raw.url.span();
    apply_user(
        cx,
        "source",
        &raw.username_env,
        std::slice::from_mut(&mut url),
        std::slice::from_ref(&span),
    )?;
    Ok(Endpoint {
        role: "source",
        tls: side_tls(cx, base, raw.tls(), &[(url.clone(), span)], "source")?,
        urls: vec![url],
        password_env: cx.password_env(&raw.password_env, "source")?,
    })
}

/// `[target]`: the cluster's seed URLs; TLS paths are resolved against `base`.
pub(super) fn target(cx: &Ctx, base: &Path, raw: &RawTarget) -> Result<Endpoint, PlanError> {
    let mut seeds = target_urls(cx, &raw.urls)?;
    let spans: Vec<_> = raw.urls.get_ref().iter().map(|v| v.span()).collect();
    apply_user(cx, "target", &raw.username_env, &mut seeds, &spans)?;
    let spanned: Vec<_> = seeds.iter().cloned().zip(spans).collect();
    Ok(Endpoint {
        role: "target",
        tls: side_tls(cx, base, raw.tls(), &spanned, "target")?,
        urls: seeds,
        password_env: cx.password_env(&raw.password_env, "target")?,
    })
}

/// A `redis://` or `rediss://` URL without a password in it.
fn redis_url(cx: &Ctx, v: &SpannedStr, role: &str) -> Result<Url, PlanError> {
    let url = Url::parse(v.get_ref()).map_err(|e| {
        cx.err(
            v.span(),
            format!("\"{}\" is not a valid URL: {e}", redact_str(v.get_ref())),
            "write it like `redis://127.0.0.1:6379/0`",
        )
    })?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(cx.err(
            v.span(),
            format!("the {role} URL has scheme `{}`", url.scheme()),
            "use redis:// or rediss:// (TLS)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(cx.err(
            v.span(),
            format!("the {role} URL has no host"),
            "write it like `redis://127.0.0.1:6379`",
        ));
    }
    if url.password().is_some() {
        return Err(cx.err(v.span(), format!("the {role} URL contains a password"), "secrets never go in the plan: remove it from the URL and name an environment variable with `password_env`"));
    }
    Ok(url)
}

/// Hides anything between `://` and `@` so a mistyped URL with a password is not echoed back.
fn redact_str(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &s[..a + 3], &s[b..]),
        _ => s.to_string(),
    }
}

/// The target's seeds: at least one, each endpoint once, none selecting a database but 0.
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
        let url = redis_url(cx, v, "target")?;
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
