//! TLS on the proxy's listen side (`[proxies] tls_cert_file` / `tls_key_file`).
//!
//! The certificate is re-read when either file changes (size or modification time), checked at
//! each new connection: a renewed certificate is served to the next client, connections already
//! open keep their session and are not dropped. Files that do not load (a half-written renewal)
//! keep the previous certificate in service, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::plan::ProxySettings;
use crate::tls::{TlsError, server_config};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What identifies one version of a file: its size and modification time.
type Stamp = Option<(u64, SystemTime)>;

/// The listen side's certificate, reloaded on change.
pub struct ListenTls {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<([Stamp; 2], Arc<ServerConfig>)>,
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl ListenTls {
    /// Loads the certificate chain and key (the plan checked them already).
    pub fn new(cert: &Path, key: &Path) -> Result<ListenTls, TlsError> {
        let stamps = [stamp(cert), stamp(key)];
        Ok(ListenTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new((stamps, server_config(cert, key)?)),
        })
    }

    /// The listen side the plan asks for: `None` for plain TCP.
    pub fn from_plan(proxies: &ProxySettings) -> Result<Option<Arc<ListenTls>>, TlsError> {
        match (&proxies.tls_cert_file, &proxies.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(Arc::new(ListenTls::new(cert, key)?))),
            _ => Ok(None),
        }
    }

    /// The configuration for a new connection, re-read first if a file changed.
    fn config(&self) -> Arc<ServerConfig> {
        let stamps = [stamp(&self.cert), stamp(&self.key)];
        let mut current = self.current.lock().expect("listen TLS");
        if current.0 != stamps {
            match server_config(&self.cert, &self.key) {
                Ok(config) => {
                    tracing::info!("listen TLS: reloaded {}", self.cert.display());
                    *current = (stamps, config);
                }
                Err(e) => tracing::warn!("listen TLS: keeping the previous certificate: {e}"),
            }
        }
        current.1.clone()
    }

    /// The TLS handshake with a client that just connected.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("TLS handshake timed out")))
    }
}
