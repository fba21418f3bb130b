//! `tls_*` keys of `[source]` and `[target]`: resolved against the plan's folder and read once
//! at load, so a missing file, a certificate without its key or a key with a `redis://` URL is
//! reported at its line rather than at the first connection.

use std::ops::Range;
use std::path::Path;

use url::Url;

use super::ctx::Ctx;
use crate::plan::ProxySettings;
use crate::plan::error::PlanError;
use crate::plan::raw::{RawTls, SpannedStr};
use crate::tls::{TlsError, TlsSettings, read_certs, read_key, server_config};

/// The side's TLS settings: `Some` exactly when its URLs are `rediss://`. `urls` are the side's
/// URLs with the span each was written at.
pub(super) fn side_tls(
    cx: &Ctx,
    base: &Path,
    raw: RawTls,
    urls: &[(Url, Range<usize>)],
    role: &str,
) -> Result<Option<TlsSettings>, PlanError> {
    let tls = urls.iter().filter(|(u, _)| u.scheme() == "rediss").count();
    if tls != 0 && tls != urls.len() {
        let (_, span) = urls
            .iter()
            .find(|(u, _)| u.scheme() == "redis")
            .expect("a plain URL");
        return Err(cx.err(
            span.clone(),
            format!("the {role} mixes redis:// and rediss:// URLs"),
            "every node of a side speaks TLS or none does: write them all as rediss:// (or all as redis://)",
        ));
    }
    let first_key = [raw.ca_file, raw.cert_file, raw.key_file]
        .into_iter()
        .flatten()
        .map(|v| v.span())
        .chain(raw.insecure_skip_verify.as_ref().map(|v| v.span()))
        .next();
    if tls == 0 {
        return match first_key {
            Some(span) => Err(cx.err(span, format!("a TLS key is set but the {role} URL is redis:// (no TLS)"), format!("write the {role} URL as rediss://host:port to connect with TLS, or remove the tls_* keys from [{role}]"))),
            None => Ok(None),
        };
    }
    let path = |v: &Option<SpannedStr>| v.as_ref().map(|v| base.join(v.get_ref()));
    let settings = TlsSettings {
        ca_file: path(raw.ca_file),
        cert_file: path(raw.cert_file),
        key_file: path(raw.key_file),
        insecure_skip_verify: raw.insecure_skip_verify.as_ref().is_some_and(|v| *v.get_ref()),
    };
    match (raw.cert_file, raw.key_file) {
        (Some(cert), None) => return Err(cx.err(cert.span(), format!("[{role}] tls_cert_file is set without tls_key_file"), "a client certificate needs its private key: add `tls_key_file = \"…\"` (or remove tls_cert_file)")),
        (None, Some(key)) => return Err(cx.err(key.span(), format!("[{role}] tls_key_file is set without tls_cert_file"), "a private key needs its client certificate: add `tls_cert_file = \"…\"` (or remove tls_key_file)")),
        _ => {}
    }
    let file_error = |v: &Option<SpannedStr>, e: TlsError| {
        let span = v.as_ref().map_or(0..0, |v| v.span());
        cx.err(
            span,
            format!("[{role}] {e}"),
            "the path is relative to the plan file's folder; give a readable PEM file",
        )
    };
    if let Some(ca) = &settings.ca_file {
        read_certs("CA file", ca).map_err(|e| file_error(raw.ca_file, e))?;
    }
    if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
        read_certs("certificate file", cert).map_err(|e| file_error(raw.cert_file, e))?;
        read_key(key).map_err(|e| file_error(raw.key_file, e))?;
    }
    // The pair itself (a key that is not the certificate's).
    settings.check().map_err(|e| file_error(raw.cert_file, e))?;
    Ok(Some(settings))
}

/// `[proxies] tls_cert_file` and `tls_key_file`: both or neither, readable, and a matching pair.
pub(super) fn listen_tls(
    cx: &Ctx,
    base: &Path,
    cert: &Option<SpannedStr>,
    key: &Option<SpannedStr>,
    settings: ProxySettings,
) -> Result<ProxySettings, PlanError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(settings),
        (Some(c), Some(k)) => (c, k),
        (Some(v), None) | (None, Some(v)) => {
            return Err(cx.err(v.span(), "[proxies] needs both tls_cert_file and tls_key_file", "the proxy presents a certificate and proves it with its key: give both, or neither for plain TCP"));
        }
    };
    let (cert_path, key_path) = (base.join(cert.get_ref()), base.join(key.get_ref()));
    let hint = "the path is relative to the plan file's folder; give a readable PEM file";
    read_certs("certificate file", &cert_path)
        .map_err(|e| cx.err(cert.span(), format!("[proxies] {e}"), hint))?;
    read_key(&key_path).map_err(|e| cx.err(key.span(), format!("[proxies] {e}"), hint))?;
    server_config(&cert_path, &key_path).map_err(|e| {
        cx.err(
            cert.span(),
            format!("[proxies] {e}"),
            "tls_key_file must be the key of tls_cert_file's first certificate",
        )
    })?;
    Ok(ProxySettings {
        tls_cert_file: Some(cert_path),
        tls_key_file: Some(key_path),
        ..settings
    })
}
