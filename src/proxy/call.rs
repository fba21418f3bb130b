//! A client request resolved against the command table: its keys, its slot, and — for the
//! multi-key commands of design §4 on a cluster — its split into one request per slot and the
//! merge of their replies.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::backend::Unit;
use super::command::{Merge, Spec};
use super::resp::{Proto, Reply, encode_request};
use crate::cluster::key_slot;

/// A request the proxy forwards.
#[derive(Debug, Clone)]
pub struct Call {
    /// `argv[0]` is the command name.
    pub args: Vec<Bytes>,
    /// The request's wire bytes.
    pub raw: Bytes,
    /// Its command-table entry.
    pub spec: &'static Spec,
    /// Indices of its keys in `args`.
    pub keys: Vec<usize>,
    /// Whether its keys migrate (the plan's `[keys]`); a keyless call follows the routing too.
    pub migrates: bool,
    /// A read made while the client WATCHes keys: it goes to the write primary, where the watch
    /// is, so the value a client's optimistic loop reads is the one its `EXEC` is checked
    /// against (reads from a lagging other side would let an increment be lost).
    pub on_primary: bool,
}

/// How the units of one call map back to its reply.
#[derive(Debug, Clone)]
pub enum Shape {
    /// One unit, forwarded as it is.
    Whole,
    /// One unit per slot; `Vec<usize>` holds the key ordinals (0-based among the keys) each
    /// unit carries, in order.
    Split(Vec<Vec<usize>>),
}

impl Call {
    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.keys.iter().map(|&i| &self.args[i])
    }

    /// The first key, if any.
    pub fn first_key(&self) -> Option<&Bytes> {
        self.keys.first().map(|&i| &self.args[i])
    }

    /// The slot of the first key (a cluster refuses keys of different slots itself, with
    /// CROSSSLOT, unless the call is split).
    pub fn slot(&self) -> Option<u16> {
        self.first_key().map(|k| key_slot(k))
    }

    /// The units to send: one per slot for a splittable command on a cluster, else one.
    pub fn units(&self, cluster: bool) -> (Vec<Unit>, Shape) {
        let mut units = Vec::with_capacity(1);
        let shape = self.units_into(cluster, &mut units);
        (units, shape)
    }

    /// The same, appended to `units` (a batch collects every call's units in one vector).
    pub fn units_into(&self, cluster: bool, units: &mut Vec<Unit>) -> Shape {
        let mut whole = || {
            units.push(Unit::one(self.raw.clone(), self.slot()));
            Shape::Whole
        };
        let stride = self.spec.key_stride.max(1);
        // An odd MSET goes as it is: the server answers the arity error.
        let well_formed = (self.args.len() - 1).is_multiple_of(stride);
        if !cluster || self.spec.merge == Merge::None || self.keys.len() < 2 || !well_formed {
            return whole();
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (ordinal, key) in self.keys().enumerate() {
            let slot = key_slot(key);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(ordinal),
                None => groups.push((slot, vec![ordinal])),
            }
        }
        if groups.len() == 1 {
            return whole();
        }
        units.extend(groups.iter().map(|(slot, members)| {
            let mut args: Vec<&[u8]> = vec![&self.args[0]];
            for &ordinal in members {
                let at = self.keys[ordinal];
                args.extend(self.args[at..at + stride].iter().map(|a| a.as_ref()));
            }
            Unit::one(encode_request(&args), Some(*slot))
        }));
        Shape::Split(groups.into_iter().map(|(_, m)| m).collect())
    }

    /// The client's reply, taken from `replies` (one per unit of `shape`, in order, in `proto`).
    pub fn merge(&self, shape: &Shape, replies: &mut impl Iterator<Item = Reply>, proto: Proto) -> Reply {
        let missing = || Reply::error("ERR cachemig: no reply");
        let Shape::Split(groups) = shape else {
            return replies.next().unwrap_or_else(missing);
        };
        let replies: Vec<Reply> = replies.take(groups.len()).collect();
        if replies.len() < groups.len() {
            return missing();
        }
        if let Some(err) = replies.iter().find(|r| r.is_error()) {
            return err.clone();
        }
        match self.spec.merge {
            Merge::Sum => Reply::integer(replies.iter().map(|r| integer(&r.frame())).sum()),
            Merge::AllOk => Reply::ok(),
            Merge::Array => merge_arrays(self.keys.len(), groups, replies, proto),
            Merge::None => Reply::error("ERR cachemig: internal error: merge of an unsplit command"),
        }
    }
}

fn integer(frame: &BytesFrame) -> i64 {
    match frame {
        BytesFrame::Integer(n) => *n,
        _ => 0,
    }
}

/// Puts each unit's array elements back at their keys' positions, as the nodes sent them.
fn merge_arrays(len: usize, groups: &[Vec<usize>], replies: Vec<Reply>, proto: Proto) -> Reply {
    let mut out = vec![Reply::null(proto); len];
    for (members, reply) in groups.iter().zip(replies) {
        let Some(items) = reply.elements(proto) else {
            return Reply::error("ERR cachemig: a node answered a split MGET with a non-array");
        };
        for (&ordinal, item) in members.iter().zip(items) {
            out[ordinal] = item;
        }
    }
    Reply::array(out)
}
