//! Stopping for a restart without dropping clients (docs/design.md, "Restarts"; docs/proxy.md).
//!
//! On SIGTERM the proxy takes what the kernel already queued on its listener and drops it (the
//! successor, listening on the same port with `SO_REUSEPORT`, gets every new connection), then
//! closes each client connection at its next *request boundary*: after the replies to every
//! request it read, with no request partly read and no transaction or WATCH open. A blocked
//! command is released at once with the reply of its timeout (a worker calls again and lands on
//! the successor). Then the mirror drains, the report is removed, and the process exits.
//!
//! The contract with clients: a request that gets no reply on a connection a draining proxy
//! closes was not executed, so a client resends it on a new connection. The close is a
//! half-close (FIN) after the last reply, and the proxy then reads and discards whatever crossed
//! it, so a request already on the wire is never answered by a reset that could destroy replies
//! the client has not read yet.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Proxy;
use super::local::Session;
use super::succession::Succession;

/// How long a closed connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How long a stopping proxy waits for its mirror to drain.
const MIRROR_DRAIN: Duration = Duration::from_secs(10);
/// How often the stop sequence polls connections and the mirror.
const POLL: Duration = Duration::from_millis(20);

/// Whether the connection may be closed now: nothing partly read, no transaction or WATCH open
/// (closing then would abort what the client still means to EXEC).
pub fn at_boundary(session: &Session, unread: &[u8]) -> bool {
    unread.is_empty() && session.multi.is_none() && session.watch.is_none()
}

/// Closes a client connection after its last reply: FIN, then discard what the client still
/// sends until it closes its side (or [`LINGER`] passes).
pub async fn close<R, W>(mut rd: R, mut wr: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    wr.shutdown().await?;
    let mut sink = [0u8; 4096];
    let discard = async { while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, discard).await;
    Ok(())
}

/// What the stop sequence needs besides the proxy.
pub struct Stop {
    /// The client listener, dropped after its queue is taken.
    pub listener: TcpListener,
    /// Serves one more accepted connection.
    pub serve: Box<dyn Fn(TcpStream) + Send>,
    /// How long connections may take to reach a request boundary.
    pub timeout: Duration,
    /// The heartbeat task, stopped before the report is removed.
    pub heartbeat: JoinHandle<()>,
    /// The report field's owner.
    pub succession: Arc<Succession>,
}

/// Stops the proxy as the module documentation says. An error when keys could not be mirrored.
pub async fn stop(proxy: &Proxy, stop: Stop) -> Result<()> {
    let id = &proxy.id;
    // Connections the kernel completed before the listener goes are served (and closed at their
    // first boundary) rather than reset with the listener.
    while let Ok(Ok((stream, _))) = tokio::time::timeout(POLL, stop.listener.accept()).await {
        (stop.serve)(stream);
    }
    drop(stop.listener);
    proxy.draining.send_replace(true);
    let open = proxy.metrics.connections.get();
    eprintln!(
        "cachemig proxy {id}: stopping; {open} client connection(s) close at their next request boundary"
    );
    let deadline = Instant::now() + stop.timeout;
    while proxy.metrics.connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let left = proxy.metrics.connections.get();
    if left > 0 {
        eprintln!(
            "cachemig proxy {id}: {left} connection(s) still open after {:?} (a transaction never \
             ended or a request still running); they close with the process",
            stop.timeout
        );
    }
    eprintln!("cachemig proxy {id}: draining the mirror");
    let deadline = Instant::now() + MIRROR_DRAIN;
    while !proxy.mirror.drained() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let (queued, _, dirty) = proxy.mirror.depth();
    if queued + dirty > 0 {
        // The report stays (and ages out): the gates see this proxy's dirty keys until then.
        anyhow::bail!(
            "stopped with {queued} queued and {dirty} dirty key(s) not mirrored; run `cachemig verify PLAN --repair`, which copies from the write primary of the phase in force, before relying on the other side"
        );
    }
    stop.heartbeat.abort();
    let _ = stop.heartbeat.await;
    if let Err(e) = stop.succession.retire().await {
        tracing::warn!("removing this proxy's report: {e}");
    }
    eprintln!("cachemig proxy {id}: stopped");
    Ok(())
}
