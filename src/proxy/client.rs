//! One client connection: reading requests in batches (whatever a pipelining client has sent),
//! handing each batch to [`batch::handle`](super::batch::handle), writing the replies back in
//! order, and closing the connection on a protocol error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Proxy;
use super::batch::{Scratch, handle, trim};
use super::drain;
use super::listen_tls::ListenTls;
use super::local::Session;
use super::resp::{Framer, Limits, Reply};

/// Most requests handled as one batch (the rest of a long pipeline waits for the next round).
const MAX_BATCH: usize = 512;
/// The first read's room: enough for most requests, and small, because an idle connection keeps
/// its buffer (10,000 idle clients should cost little memory).
const FIRST_READ: usize = 512;
/// The most a read asks for; the room doubles up to this while reads keep filling it (a
/// pipelining client), so a busy connection needs few reads.
const LARGEST_READ: usize = 64 * 1024;
/// A buffer larger than this is given back once everything in it was handled: one big request
/// should not keep its memory for the rest of the connection's life.
const KEEP_AT_MOST: usize = 256 * 1024;

/// Serves one client until it disconnects, sends QUIT, or breaks the protocol; over TLS when
/// `tls` is given.
pub async fn serve(proxy: Arc<Proxy>, stream: TcpStream, id: u64, tls: Option<Arc<ListenTls>>) {
    proxy.metrics.connections.inc();
    if let Err(e) = open(&proxy, stream, id, tls).await {
        tracing::debug!("client {id}: {e}");
    }
    proxy.metrics.connections.dec();
}

/// Plain TCP keeps tokio's owned halves; TLS (one session for both directions) is split.
async fn open(
    proxy: &Arc<Proxy>,
    stream: TcpStream,
    id: u64,
    tls: Option<Arc<ListenTls>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let local_addr = stream.local_addr().ok();
    match tls {
        None => {
            let (rd, wr) = stream.into_split();
            run(proxy, rd, wr, local_addr, id).await
        }
        Some(tls) => {
            let (rd, wr) = tokio::io::split(tls.accept(stream).await?);
            run(proxy, rd, wr, local_addr, id).await
        }
    }
}

async fn run<R, W>(
    proxy: &Arc<Proxy>,
    mut rd: R,
    mut wr: W,
    local_addr: Option<std::net::SocketAddr>,
    id: u64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inbuf = BytesMut::new();
    let mut room = FIRST_READ;
    let mut out = BytesMut::new();
    let mut framer = Framer::default();
    let mut session = Session {
        authed: proxy.password.is_none(),
        id,
        local_addr,
        ..Session::default()
    };
    // One wait for the drain per connection, polled whenever the client is idle: a fresh
    // `changed()` at every read would add and remove a waiter on the channel for each request.
    // (Draining only ever turns on, so once seen it stays.)
    let mut draining = proxy.draining.subscribe();
    let drain_signal = async move {
        let _ = draining.wait_for(|on| *on).await;
    };
    tokio::pin!(drain_signal);
    let mut stopping = false;
    // Kept from batch to batch (each is empty in between), so a request allocates less.
    let mut batch = Vec::new();
    let mut scratch = Scratch::default();
    let mut replies = Vec::new();
    loop {
        let mut fatal = None;
        // Until it authenticates, a client's requests are taken one at a time, so an AUTH takes
        // effect (and lifts the small limits) before the next request is read, as in Redis.
        let most = if session.authed { MAX_BATCH } else { 1 };
        while batch.len() < most {
            let limits = if session.authed {
                Limits::AUTHENTICATED
            } else {
                Limits::UNAUTHENTICATED
            };
            match framer.next(&mut inbuf, limits) {
                Ok(Some(request)) => batch.push(request),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() && fatal.is_none() {
            if stopping && drain::at_boundary(&session, &inbuf) {
                // A restart: every reply is written, nothing is pending (see `drain`).
                return drain::close(rd, wr).await;
            }
            // Waiting for requests, a subscribed client also gets its messages.
            if inbuf.capacity() > KEEP_AT_MOST && inbuf.is_empty() {
                inbuf = BytesMut::new();
                room = FIRST_READ;
            }
            if inbuf.capacity() - inbuf.len() < room {
                inbuf.reserve(room);
            }
            let spare = inbuf.capacity() - inbuf.len();
            tokio::select! {
                read = rd.read_buf(&mut inbuf) => match read? {
                    0 => return Ok(()),
                    n if n == spare => room = (room * 2).min(LARGEST_READ),
                    _ => {}
                },
                Some(message) = session.mailbox.recv() => {
                    wr.write_all(&message.to_reply(session.proto).raw).await?;
                    wr.flush().await?; // TLS may hold the record until asked
                }
                _ = &mut drain_signal, if !stopping => stopping = true,
            }
            continue;
        }
        let started = Instant::now();
        handle(proxy, &mut session, &mut batch, &mut scratch, &mut replies).await;
        account(proxy, &replies, started.elapsed());
        for reply in &replies {
            out.extend_from_slice(&reply.raw);
        }
        trim(&mut replies);
        trim(&mut batch);
        if let Some(e) = fatal {
            // The stream cannot be resynchronised: answer, then close (the proxy goes on).
            proxy.metrics.errors.inc();
            out.extend_from_slice(&Reply::error(format!("ERR cachemig: {e}; closing the connection")).raw);
            wr.write_all(&out).await?;
            wr.flush().await?;
            return Ok(());
        }
        wr.write_all(&out).await?;
        wr.flush().await?;
        out.clear();
        if out.capacity() > KEEP_AT_MOST {
            out = BytesMut::new();
        }
        if session.quit {
            return Ok(());
        }
    }
}

fn account(proxy: &Proxy, replies: &[Reply], took: Duration) {
    let m = &proxy.metrics;
    m.requests.inc_by(replies.len() as u64);
    let errors = replies.iter().filter(|r| r.is_error()).count();
    if errors > 0 {
        m.errors.inc_by(errors as u64);
    }
    // Every reply of a batch waited as long: one observation of that many.
    m.latency.observe_many(took, replies.len() as u64);
}
