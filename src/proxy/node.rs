//! One multiplexed connection to one Redis node.
//!
//! Every client connection of the proxy shares it: requests from many clients are written in one
//! batch and their replies read back in order, which is what lets a proxy cost the server fewer
//! system calls than direct clients do. Requests and replies stay wire bytes end to end (the
//! `redis` crate's connections would decode every reply into a `Value` and the proxy would have to
//! encode it again), which is why this is not a `redis::aio::MultiplexedConnection`.
//!
//! A broken connection fails the requests in flight with an error reply (they may or may not
//! have been applied) and is re-established with back-off; while it is down, requests fail at
//! once rather than wait.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::dial::{BackendStream, Tls};
use super::resp::{Proto, Reply, encode_request};

/// Largest write buffer assembled from queued batches before it is flushed.
const WRITE_CHUNK: usize = 256 * 1024;
/// How long connecting (and authenticating) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A node that owes a reply this long on a shared connection is taken for hung: the connection
/// is dropped (its requests fail as "may or may not have been applied") and re-established.
/// Blocking commands never use a shared connection (see [`Login::hung_after`]), so no
/// legitimate request waits this long on one.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// How a connection introduces itself to its node, and how long a reply may take.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// The ACL user (`AUTH user pass`); `None` is the default user.
    pub user: Option<String>,
    /// The password, if the node wants one. Never printed.
    pub password: Option<String>,
    /// The database to `SELECT` (the source URL's path); 0 needs no SELECT.
    pub db: u32,
    /// The protocol of the connection: RESP3 connections open with `HELLO 3`.
    pub proto: Proto,
    /// `CLIENT SETNAME`, so operators (and the bypass check) can tell the proxy's connections.
    pub name: Option<String>,
    /// A reply owed this long means a hung node; `None` for a connection that carries blocking
    /// commands, which may wait as long as their client asked.
    pub hung_after: Option<Duration>,
    /// TLS to the node (a `rediss://` side); `None` is plain TCP.
    pub tls: Option<Tls>,
}

impl Login {
    /// The requests that open a connection, in order.
    fn handshake(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        let user = self.user.as_deref().unwrap_or("default");
        match (self.proto, &self.password) {
            (Proto::Resp3, Some(p)) => out.push(encode_request(&["HELLO", "3", "AUTH", user, p])),
            (Proto::Resp3, None) => out.push(encode_request(&["HELLO", "3"])),
            (Proto::Resp2, Some(p)) => out.push(encode_request(&["AUTH", user, p])),
            (Proto::Resp2, None) => {}
        }
        if self.db != 0 {
            out.push(encode_request(&["SELECT", &self.db.to_string()]));
        }
        if let Some(name) = &self.name {
            out.push(encode_request(&["CLIENT", "SETNAME", name]));
        }
        out
    }
}

/// Encoded requests for one node, in order.
#[derive(Debug)]
pub enum Requests {
    /// One piece of bytes (most often a single request): no vector needed.
    One(Bytes),
    /// Several pieces, written one after the other.
    Many(Vec<Bytes>),
}

impl Requests {
    fn pieces(&self) -> &[Bytes] {
        match self {
            Requests::One(raw) => std::slice::from_ref(raw),
            Requests::Many(raw) => raw,
        }
    }
}

/// A batch of requests and where its replies go.
struct Job {
    requests: Requests,
    count: usize,
    reply: oneshot::Sender<Vec<Reply>>,
}

/// Replies still owed to a job whose requests were written.
struct Pending {
    since: tokio::time::Instant,
    count: usize,
    replies: Vec<Reply>,
    reply: oneshot::Sender<Vec<Reply>>,
}

/// Something that went wrong talking to a backend, reported to whoever keeps count.
pub trait ErrorSink: Send + Sync + 'static {
    /// Records a connection-level error (the text never contains a secret).
    fn backend_error(&self, text: &str);
}

/// A handle to a node connection; cheap to clone.
#[derive(Clone)]
pub struct NodeConn {
    addr: Arc<str>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl NodeConn {
    /// Starts the connection task for `addr` (`host:port`), introducing itself with `login`.
    /// `label` names the side in errors.
    pub fn spawn(label: &'static str, addr: &str, login: Login, errors: Arc<dyn ErrorSink>) -> NodeConn {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            label,
            addr: addr.to_string(),
            login,
            errors,
        };
        tokio::spawn(task.run(rx));
        NodeConn {
            addr: addr.into(),
            jobs: tx,
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `requests` (encoded RESP) in order and returns exactly one reply per request.
    pub async fn send(&self, requests: Vec<Bytes>) -> Vec<Reply> {
        let count = requests.len();
        self.send_counted(requests, count).await
    }

    /// Sends encoded bytes that hold `count` requests in all (e.g. a packed pipeline) and returns
    /// `count` replies.
    pub async fn send_counted(&self, requests: Vec<Bytes>, count: usize) -> Vec<Reply> {
        self.send_requests(Requests::Many(requests), count).await
    }

    /// The same for requests in either shape.
    pub async fn send_requests(&self, requests: Requests, count: usize) -> Vec<Reply> {
        let (tx, rx) = oneshot::channel();
        if self
            .jobs
            .send(Job {
                requests,
                count,
                reply: tx,
            })
            .is_err()
        {
            return failed(count, NOT_SENT, "the proxy is shutting down");
        }
        rx.await.unwrap_or_else(|_| {
            failed(
                count,
                IN_DOUBT,
                &format!(
                    "connection to {} lost; the command may or may not have been applied",
                    self.addr
                ),
            )
        })
    }
}

/// How a request failed that never got a reply from its node: the error begins with one of
/// these, so callers can tell what is safe to resend.
///
/// The request was never written (the node is unreachable): resending it is safe.
pub const NOT_SENT: &str = "ERR cachemig: not sent:";
/// The connection broke with the request in flight: it may or may not have been applied.
pub const IN_DOUBT: &str = "ERR cachemig: in doubt:";

/// `count` copies of a proxy error reply of `kind` ([`NOT_SENT`] or [`IN_DOUBT`]).
fn failed(count: usize, kind: &str, why: &str) -> Vec<Reply> {
    vec![Reply::error(format!("{kind} {why}")); count]
}

/// The task that owns the socket.
struct Task {
    label: &'static str,
    addr: String,
    login: Login,
    errors: Arc<dyn ErrorSink>,
}

impl Task {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut attempt = 0u32;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    attempt = 0;
                    let why = serve(stream, &mut jobs, &self.login).await;
                    match why {
                        None => return, // every handle is gone
                        Some(e) => self.report(&format!("connection lost: {e}")),
                    }
                }
                Err(e) => {
                    attempt += 1;
                    let why = format!("{} {} unreachable: {e}", self.label, self.addr);
                    self.report(&why);
                    // Fail what arrives while waiting, so clients get an answer now, not later.
                    let pause = backoff(attempt);
                    let deadline = tokio::time::Instant::now() + pause;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            job = jobs.recv() => match job {
                                Some(job) => { let _ = job.reply.send(failed(job.count, NOT_SENT, &why)); }
                                None => return,
                            },
                        }
                    }
                }
            }
        }
    }

    fn report(&self, text: &str) {
        tracing::warn!("{} {}: {text}", self.label, self.addr);
        self.errors.backend_error(text);
    }

    async fn connect(&self) -> std::io::Result<BackendStream> {
        tokio::time::timeout(CONNECT_TIMEOUT, super::dial::connect(&self.addr, &self.login))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
    }
}

/// Sends the handshake and checks the replies. The password never appears in an error; a
/// refused `CLIENT SETNAME` (an ACL without CLIENT) is no reason to fail.
pub(super) async fn introduce<S>(stream: &mut S, login: &Login) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let requests = login.handshake();
    if requests.is_empty() {
        return Ok(());
    }
    stream.write_all(&requests.concat()).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut answered = 0;
    while answered < requests.len() {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed during the handshake"));
        }
        while let Some(reply) = Reply::decode_as(&mut buf, login.proto).map_err(std::io::Error::other)? {
            let naming = login.name.is_some() && answered + 1 == requests.len();
            answered += 1;
            match reply.error_text() {
                Some(e) if !naming => {
                    return Err(std::io::Error::other(format!("handshake refused: {e}")));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Back-off before reconnect attempt `n`: 100 ms doubling up to 2 s.
pub(super) fn backoff(n: u32) -> Duration {
    Duration::from_millis((100u64 << n.min(5).saturating_sub(1)).min(2000))
}

/// Runs one established connection until it breaks (`Some(why)`) or every handle is dropped
/// (`None`). Pending jobs are failed by dropping their senders.
async fn serve(
    stream: BackendStream,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    login: &Login,
) -> Option<String> {
    let (mut rd, mut wr) = stream.into_split();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut out = BytesMut::with_capacity(WRITE_CHUNK);
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(limit) = login.hung_after
                    && pending.front().is_some_and(|p| p.since.elapsed() > limit)
                {
                    return Some(format!("no reply for {}s", limit.as_secs()));
                }
            }
            job = jobs.recv() => {
                let job = job?;
                // One clock read for every job of this wake-up (they were all queued by now).
                let now = tokio::time::Instant::now();
                queue(job, now, &mut out, &mut pending);
                while out.len() < WRITE_CHUNK {
                    match jobs.try_recv() {
                        Ok(job) => queue(job, now, &mut out, &mut pending),
                        Err(_) => break,
                    }
                }
                // Bounded too: a node that stops reading must not hold the writer for as long as
                // TCP takes to give up.
                // Flushed: a TLS stream may hold the last record until asked (a no-op on TCP).
                let write = async { wr.write_all(&out).await?; wr.flush().await };
                match tokio::time::timeout(REPLY_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some(format!("write blocked for {}s", REPLY_TIMEOUT.as_secs())),
                }
                out.clear();
            }
            read = rd.read_buf(&mut inbuf) => {
                match read {
                    Ok(0) => return Some("closed by the server".into()),
                    Err(e) => return Some(e.to_string()),
                    Ok(_) => {}
                }
                if let Err(e) = deliver(&mut inbuf, &mut pending, login.proto) {
                    return Some(e);
                }
            }
        }
    }
}

/// Appends a job's requests to the write buffer and remembers the replies it is owed (`now`
/// starts its hung-node clock).
fn queue(job: Job, now: tokio::time::Instant, out: &mut BytesMut, pending: &mut VecDeque<Pending>) {
    for request in job.requests.pieces() {
        out.extend_from_slice(request);
    }
    let count = job.count;
    if count == 0 {
        let _ = job.reply.send(Vec::new());
        return;
    }
    pending.push_back(Pending {
        since: now,
        count,
        replies: Vec::with_capacity(count),
        reply: job.reply,
    });
}

/// Hands every complete reply in `inbuf` to the oldest pending job.
///
/// A RESP3 push frame is not an answer: shared connections never subscribe or track, so one is
/// dropped rather than allowed to shift every later reply by one.
fn deliver(inbuf: &mut BytesMut, pending: &mut VecDeque<Pending>, proto: Proto) -> Result<(), String> {
    while let Some(reply) = Reply::decode_as(inbuf, proto).map_err(|e| e.to_string())? {
        if reply.is_push() {
            continue;
        }
        let Some(front) = pending.front_mut() else {
            return Err("a reply nobody asked for (protocol out of step)".into());
        };
        front.replies.push(reply);
        if front.replies.len() == front.count {
            let done = pending.pop_front().expect("front exists");
            let _ = done.reply.send(done.replies);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_millis(1600));
    }
}
