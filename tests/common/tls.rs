//! Certificates for TLS tests, made in the test with rcgen: one CA, a server certificate for
//! 127.0.0.1 and localhost, and a client certificate (the servers require one, as Redis does by
//! default with `tls-auth-clients yes`). Each [`TlsFiles`] is a fresh CA, so a second one is a
//! "wrong CA" for the first one's servers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the server and client certificates it signed, as PEM files in a temporary folder.
pub struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    /// Generates a CA, a server and a client certificate, and writes them.
    pub fn generate() -> Arc<TlsFiles> {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "cachemig test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        // A server's certificate is also its client certificate on the cluster bus and for
        // replication (`tls-client-cert-file` defaults to it): it needs both usages.
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        for (who, usages) in [("server", &both[..]), ("client", &both[1..])] {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, who);
            params.extended_key_usages = usages.to_vec();
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{who}.pem"), cert.pem());
            write(&format!("{who}.key"), key.serialize_pem());
        }
        Arc::new(TlsFiles { dir })
    }

    /// A file of this set: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis-server` arguments: TLS only on `port` (plain TCP off), TLS on the cluster bus and
    /// replication too.
    pub fn server_args(&self, port: u16) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// `redis-cli` arguments for these servers.
    pub fn cli_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ]
    }

    /// The CA and client certificate as the `redis` crate takes them.
    pub fn certificates(&self) -> redis::TlsCertificates {
        let read = |n: &str| std::fs::read(self.path(n)).unwrap();
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.pem"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.pem")),
        }
    }

    /// Plan lines naming this CA and client certificate (absolute paths).
    pub fn plan_keys(&self) -> String {
        format!(
            "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.path("ca.pem").display(),
            self.path("client.pem").display(),
            self.path("client.key").display()
        )
    }
}
