//! TLS to the old and new Redis: the plan's settings for one side, checked once when the plan
//! loads, and what they become for the two kinds of connection cachemig makes — the `redis`
//! crate's (the CLI, and the proxy's WATCH connections) and the proxy's own wire connections
//! (tokio-rustls, see `proxy::dial`).
//!
//! Errors name the file and what it should hold, never its contents: a key file is a secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// TLS for one side, as the plan gives it (paths already resolved against the plan's folder).
/// Present on an [`crate::endpoint::Endpoint`] exactly when its URLs are `rediss://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS); always together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate. Its contents are never printed.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate: encryption without authentication. `plan` warns loudly.
    pub insecure_skip_verify: bool,
}

/// Why a side's TLS settings cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read the {what} {}: {reason}", .path.display())]
    Read {
        /// "CA file", "certificate file" or "key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's words.
        reason: String,
    },
    /// A file holds nothing usable.
    #[error("the {what} {} holds no {expected}", .path.display())]
    Pem {
        /// "CA file", "certificate file" or "key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold, e.g. "PEM certificate (-----BEGIN CERTIFICATE-----)".
        expected: &'static str,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("the TLS settings are not usable: {0}")]
    Config(String),
}

const CERT_PEM: &str = "PEM certificate (-----BEGIN CERTIFICATE-----)";
const KEY_PEM: &str = "PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY)";

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            expected: CERT_PEM,
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`. The parser's own error is not passed on: it may
/// quote a line of the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        what: "key file",
        path: path.to_path_buf(),
        expected: KEY_PEM,
    })
}

/// The crypto provider of every TLS connection cachemig makes (ring: no C toolchain beyond cc).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// Reads and parses every file named, so a bad path or a key in the certificate's place is
    /// reported when the plan loads rather than at the first connection.
    pub fn check(&self) -> Result<(), TlsError> {
        self.client_config().map(|_| ())
    }

    /// The certificates as the `redis` crate takes them; `None` when no file is named (the
    /// system's roots, no client certificate).
    pub fn redis_certificates(&self) -> Result<Option<redis::TlsCertificates>, TlsError> {
        let root_cert = match &self.ca_file {
            Some(path) => {
                read_certs("CA file", path)?;
                Some(read("CA file", path)?)
            }
            None => None,
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("certificate file", cert)?,
                client_key: read("key file", key)?,
            }),
            _ => None,
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }

    /// A cluster client with these settings: the mode (every node, discovered or redirected to,
    /// is dialled with it) and the certificates.
    pub fn cluster_builder(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<redis::cluster::ClusterClientBuilder, TlsError> {
        let builder = builder.tls(if self.insecure_skip_verify {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        });
        Ok(match self.redis_certificates()? {
            Some(certs) => builder.certs(certs),
            None => builder,
        })
    }

    /// A rustls client configuration for the proxy's own connections: the same trust as the
    /// `redis` crate builds from these settings (CA file, else the system's roots; the client
    /// certificate if any; no verification at all when skipped).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs("certificate file", cert)?, read_key(key)?)
                .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certs("CA file", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Config(format!("CA file {}: {e}", path.display())))?;
                }
            }
            None => {
                // Unreadable system certificates are skipped, as the redis crate would fail on
                // them only when no CA file is given either.
                let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        Ok(roots)
    }
}

/// The proxy's listen side: the certificate chain and key it presents to clients (no client
/// certificates asked for).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(read_certs("certificate file", cert)?, read_key(key)?)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Config(format!("{host} is neither an IP address nor a DNS name")))
}

/// `tls_insecure_skip_verify`: any certificate is accepted, signatures are still checked so the
/// handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_files_are_named_without_contents() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "-----BEGIN NOTHING-----\nc2VjcmV0\n-----END NOTHING-----\n").unwrap();
        let settings = TlsSettings {
            key_file: Some(key.clone()),
            cert_file: Some(key.clone()),
            ..TlsSettings::default()
        };
        let msg = settings.check().unwrap_err().to_string();
        assert!(
            msg.contains("certificate file") && msg.contains("client.key"),
            "{msg}"
        );
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
        let msg = read_key(&key).unwrap_err().to_string();
        assert!(
            msg.contains("holds no PEM private key") && !msg.contains("c2VjcmV0"),
            "{msg}"
        );
        let gone = TlsSettings {
            ca_file: Some(dir.path().join("nope.pem")),
            ..TlsSettings::default()
        };
        let msg = gone.check().unwrap_err().to_string();
        assert!(
            msg.contains("cannot read the CA file") && msg.contains("nope.pem"),
            "{msg}"
        );
    }

    #[test]
    fn server_names_take_ips_and_hosts() {
        assert!(matches!(server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("redis.example.com"),
            Ok(ServerName::DnsName(_))
        ));
    }
}
