//! The client listener, shared with the proxy it replaces.
//!
//! A restart starts the new process while the old one still listens: both bind the address with
//! `SO_REUSEPORT`, the kernel spreads new connections over both, and once the old one drops its
//! listener (on SIGTERM, [`super::drain`]) every new connection lands on the new process. Only
//! processes of the same user can share a port this way (a Linux rule), and [`bind`] refuses an
//! address already held unless the caller vouched for the holder (a live report of the same
//! proxy id: its predecessor), so two unrelated proxies never silently split one port's clients.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket};

/// Connections the kernel queues before the proxy accepts them.
const BACKLOG: u32 = 1024;

/// The socket address `listen` names (the first one a host name resolves to).
pub fn resolve(listen: &str) -> Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {listen}"))?
        .next()
        .with_context(|| format!("{listen} resolves to no address"))
}

/// Whether something accepts connections on `addr` now.
pub async fn in_use(addr: SocketAddr) -> bool {
    addr.port() != 0 && tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Listens on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`, for sockets of a previous process
/// still in `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("cannot listen on {addr}"))
}
