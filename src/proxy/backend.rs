//! One side of the migration as the proxy talks to it: a standalone node or a cluster.
//!
//! On a cluster every unit of work carries the slot of its keys; units are grouped per master and
//! sent in one batch per master. Redirections are handled here (design §6): `MOVED` refreshes the
//! slot map and resends, `ASK` sends `ASKING` and the request to the named node, `TRYAGAIN` and
//! `CLUSTERDOWN` back off and resend. After [`ATTEMPTS`] the last reply goes to the client.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::sync::{Mutex, RwLock};

use super::dial::Tls;
use super::node::{ErrorSink, Login, NodeConn, REPLY_TIMEOUT, Requests};
use super::resp::{Proto, Reply};
use crate::endpoint::Endpoint;

mod cluster;

use cluster::{Cluster, SlotMap};

/// How many times a redirected or refused unit is sent before its last reply is final.
pub const ATTEMPTS: u32 = 6;

/// Work for one node: encoded requests that produce `count` replies, all for `slot` (`None`: no
/// key, any node will do).
#[derive(Debug, Clone)]
pub struct Unit {
    /// One encoded request, or a packed pipeline of several (`count` says how many).
    pub raw: Bytes,
    /// One more request sent right behind `raw`, in the same batch (a read of the key a write
    /// just changed); counted in `count`.
    pub then: Option<Bytes>,
    /// How many replies `raw` and `then` produce.
    pub count: usize,
    /// The slot of their keys on a cluster.
    pub slot: Option<u16>,
}

impl Unit {
    /// One request.
    pub fn one(raw: Bytes, slot: Option<u16>) -> Unit {
        Unit {
            raw,
            then: None,
            count: 1,
            slot,
        }
    }

    /// The encoded requests, in order.
    fn requests(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.raw).chain(self.then)
    }
}

/// A side: standalone or cluster.
pub struct Backend {
    label: &'static str,
    kind: Kind,
    /// How connections to this side introduce themselves (RESP2, shared).
    login: Login,
    errors: Arc<dyn ErrorSink>,
}

enum Kind {
    Node(Node),
    Cluster(Box<Cluster>),
}

/// The shared connections to one node, one per protocol: a RESP3 client's requests go to the
/// RESP3 one, so its replies pass through unchanged. The RESP3 connection is opened on first use
/// (a side without RESP3 clients, or a server older than `HELLO`, never gets one).
#[derive(Clone)]
pub(super) struct Node(Arc<NodeInner>);

pub(super) struct NodeInner {
    resp2: NodeConn,
    resp3: OnceLock<NodeConn>,
    label: &'static str,
    login: Login,
    errors: Arc<dyn ErrorSink>,
}

impl Node {
    fn spawn(label: &'static str, addr: &str, login: &Login, errors: &Arc<dyn ErrorSink>) -> Node {
        Node(Arc::new(NodeInner {
            resp2: NodeConn::spawn(label, addr, login.clone(), errors.clone()),
            resp3: OnceLock::new(),
            label,
            login: login.clone(),
            errors: errors.clone(),
        }))
    }

    fn conn(&self, proto: Proto) -> &NodeConn {
        let n = &self.0;
        match proto {
            Proto::Resp2 => &n.resp2,
            Proto::Resp3 => n.resp3.get_or_init(|| {
                let login = Login {
                    proto,
                    ..n.login.clone()
                };
                NodeConn::spawn(n.label, n.resp2.addr(), login, n.errors.clone())
            }),
        }
    }

    fn addr(&self) -> &str {
        self.0.resp2.addr()
    }
}

/// The side's TLS for the proxy's own connections, built once (a `rediss://` side).
fn backend_tls(label: &str, endpoint: &Endpoint) -> Result<Option<Tls>> {
    let Some(settings) = &endpoint.tls else {
        return Ok(None);
    };
    if settings.insecure_skip_verify {
        tracing::warn!(
            "{label} ({}): tls_insecure_skip_verify is on; its certificate is NOT checked",
            endpoint.role
        );
    }
    let tls =
        Tls::new(settings).with_context(|| format!("TLS to {label} ([{}] tls_* keys)", endpoint.role))?;
    Ok(Some(tls))
}

impl Backend {
    /// Connects to `endpoint`: a cluster when `cluster` is true, else its one node.
    pub async fn connect(
        label: &'static str,
        endpoint: &Endpoint,
        cluster: bool,
        errors: Arc<dyn ErrorSink>,
        name: &str,
    ) -> Result<Backend> {
        let first = endpoint.urls.first().context("no URL")?;
        let login = Login {
            user: Some(first.username())
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            password: endpoint.password()?,
            db: first.path().trim_start_matches('/').parse().unwrap_or(0),
            proto: Proto::Resp2,
            name: Some(name.to_string()),
            hung_after: Some(REPLY_TIMEOUT),
            tls: backend_tls(label, endpoint)?,
        };
        let seeds = endpoint
            .urls
            .iter()
            .map(|u| {
                let host = u.host_str().context("URL without a host")?;
                Ok(format!("{host}:{}", u.port().unwrap_or(6379)))
            })
            .collect::<Result<Vec<_>>>()?;
        let kind = if cluster {
            let cluster = Cluster {
                label,
                seeds,
                login: login.clone(),
                errors: errors.clone(),
                map: RwLock::new(Arc::new(SlotMap::empty())),
                conns: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(()),
            };
            cluster.refresh(Instant::now()).await?;
            Kind::Cluster(Box::new(cluster))
        } else {
            Kind::Node(Node::spawn(label, &seeds[0], &login, &errors))
        };
        Ok(Backend {
            label,
            kind,
            login,
            errors,
        })
    }

    /// "old" or "new".
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Whether this side is a cluster (multi-key commands must then be split per slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// Sends every unit and returns all their replies in one vector, unit by unit, in order
    /// (`count` replies per unit).
    pub async fn send(&self, units: Vec<Unit>) -> Vec<Reply> {
        self.send_as(units, Proto::Resp2).await
    }

    /// The same on the connections that speak `proto`.
    pub async fn send_as(&self, mut units: Vec<Unit>, proto: Proto) -> Vec<Reply> {
        self.send_from(&mut units, proto).await
    }

    /// The same, taking the units out of `units`, which is left empty (its room is kept for the
    /// caller's next batch).
    pub async fn send_from(&self, units: &mut Vec<Unit>, proto: Proto) -> Vec<Reply> {
        match &self.kind {
            Kind::Node(node) => send_node(node.conn(proto), units).await,
            Kind::Cluster(cluster) => cluster.send(std::mem::take(units), proto).await,
        }
    }

    /// A connection of its own to the node serving `slot`, for state a shared connection cannot
    /// hold (WATCH) or waits it must not impose on others (blocking commands). It closes when
    /// the last handle is dropped.
    pub async fn dedicated(&self, slot: Option<u16>, proto: Proto) -> NodeConn {
        let addr = self.owner(slot).await;
        self.dedicated_at(&addr, proto)
    }

    /// A connection of its own to the node at `addr` (see [`Backend::dedicated`]).
    pub fn dedicated_at(&self, addr: &str, proto: Proto) -> NodeConn {
        let login = Login {
            proto,
            hung_after: None,
            ..self.login.clone()
        };
        NodeConn::spawn(self.label, addr, login, self.errors.clone())
    }

    /// The address of the node serving `slot` (`None`: any master; a standalone side's node).
    pub async fn owner(&self, slot: Option<u16>) -> String {
        match &self.kind {
            Kind::Node(node) => node.addr().to_string(),
            Kind::Cluster(cluster) => cluster.owner(slot).await,
        }
    }

    /// One shared RESP2 connection to every master, in slot-map order (a standalone side has
    /// one): what a keyspace walk visits.
    pub async fn masters(&self) -> Vec<NodeConn> {
        self.masters_as(Proto::Resp2).await
    }

    /// The same, on the connections that speak `proto`.
    pub async fn masters_as(&self, proto: Proto) -> Vec<NodeConn> {
        match &self.kind {
            Kind::Node(node) => vec![node.conn(proto).clone()],
            Kind::Cluster(cluster) => {
                let map = cluster.map.read().await.clone();
                map.nodes.iter().map(|n| n.conn(proto).clone()).collect()
            }
        }
    }

    /// Where a subscriber connection goes, and how it introduces itself (RESP3, so messages are
    /// push frames, and no hung-node timeout: a quiet channel is not a hung node). On a cluster
    /// any master will do: `PUBLISH` reaches every node.
    pub async fn subscriber(&self) -> (String, Login) {
        self.subscriber_for(None).await
    }

    /// The same for a shard channel (`SSUBSCRIBE`) of `slot`, which lives on its slot's owner.
    pub async fn subscriber_for(&self, slot: Option<u16>) -> (String, Login) {
        let addr = self.owner(slot).await;
        let login = Login {
            proto: Proto::Resp3,
            hung_after: None,
            ..self.login.clone()
        };
        (addr, login)
    }

    /// Reloads a cluster's slot map (after a redirection seen outside [`Backend::send`]).
    pub async fn refresh_map(&self) {
        if let Kind::Cluster(cluster) = &self.kind {
            let seen = cluster.map.read().await.loaded_at;
            if let Err(e) = cluster.refresh(seen).await {
                self.errors.backend_error(&format!("{e:#}"));
            }
        }
    }

    /// Sends one request for `slot` and returns its reply.
    pub async fn request(&self, raw: Bytes, slot: Option<u16>) -> Reply {
        let mut replies = self.send(vec![Unit::one(raw, slot)]).await;
        replies
            .pop()
            .unwrap_or_else(|| Reply::error("ERR cachemig: no reply"))
    }
}

/// A standalone node gets every unit in one batch (the units are taken out of `units`).
pub(super) async fn send_node(conn: &NodeConn, units: &mut Vec<Unit>) -> Vec<Reply> {
    let total = units.iter().map(|u| u.count).sum();
    let requests = match units.pop() {
        // One plain request (every non-pipelined client's): no vector to hold it.
        Some(Unit { raw, then: None, .. }) if units.is_empty() => Requests::One(raw),
        last => {
            let mut raw: Vec<Bytes> = units.drain(..).flat_map(Unit::requests).collect();
            raw.extend(last.into_iter().flat_map(Unit::requests));
            Requests::Many(raw)
        }
    };
    conn.send_requests(requests, total).await
}
