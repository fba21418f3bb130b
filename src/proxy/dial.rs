//! The one way the proxy opens a wire connection to a backend node: TCP, then TLS when the side
//! is `rediss://`, then the [`Login`] handshake. Shared connections, dedicated ones (blocking
//! commands, transactions) and subscriber feeds all dial here, so a node a cluster's slot map or
//! a redirection names is reached over TLS exactly like a seed.
//!
//! [`BackendStream`] hides which of the two it is behind `AsyncRead + AsyncWrite`; its
//! [`BackendStream::into_split`] keeps a plain TCP connection on tokio's lock-free owned halves
//! and only a TLS one (one session state for both directions) on `tokio::io::split`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::node::{Login, introduce};
use crate::tls::{TlsError, TlsSettings, server_name};

/// A side's TLS, ready to dial with: the plan's settings and the rustls configuration built
/// from them once. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    connector: TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The settings are paths and a flag; the configuration (keys) is never printed.
        f.debug_struct("Tls").field("settings", &self.settings).finish()
    }
}

impl Tls {
    /// Reads the side's files and builds its client configuration.
    pub fn new(settings: &TlsSettings) -> Result<Tls, TlsError> {
        Ok(Tls {
            settings: settings.clone(),
            connector: TlsConnector::from(settings.client_config()?),
        })
    }

    /// The plan's settings (for connections made through the `redis` crate).
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// A connection to a backend node, plain or TLS.
pub enum BackendStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a connection to `addr` (`host:port`) as `login` says: TCP (no Nagle), TLS when
/// `login.tls` is set (the certificate must name `host`), then the handshake (AUTH, HELLO,
/// SELECT, SETNAME). The caller bounds the time it may take.
pub async fn connect(addr: &str, login: &Login) -> io::Result<BackendStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream = match &login.tls {
        None => BackendStream::Plain(tcp),
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let name = server_name(host).map_err(io::Error::other)?;
            let stream = tls
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
            BackendStream::Tls(Box::new(stream))
        }
    };
    introduce(&mut stream, login).await?;
    Ok(stream)
}

impl BackendStream {
    /// Separate read and write halves, for a task that reads replies while it writes requests.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            BackendStream::Plain(tcp) => {
                let (rd, wr) = tcp.into_split();
                (ReadHalf::Plain(rd), WriteHalf::Plain(wr))
            }
            BackendStream::Tls(tls) => {
                let (rd, wr) = tokio::io::split(*tls);
                (ReadHalf::Tls(rd), WriteHalf::Tls(wr))
            }
        }
    }
}

/// The read half of a [`BackendStream`].
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a [`BackendStream`].
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// Forwards `AsyncRead` to whichever variant `$self` holds.
macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards `AsyncWrite` to whichever variant `$self` holds.
macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(BackendStream);
delegate_write!(BackendStream);
delegate_read!(ReadHalf);
delegate_write!(WriteHalf);
