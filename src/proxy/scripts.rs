//! Lua scripts through the proxy (design §10).
//!
//! `EVAL` and `EVALSHA` are writes on their declared keys: they run on the write primary and their
//! keys are key-synced afterwards, like any write. What needs care is the script cache: a script
//! loaded on old is unknown to new, so after the cutover an `EVALSHA` would answer `NOSCRIPT`.
//! The proxy remembers every script body it sees (`EVAL`, `SCRIPT LOAD`) and answers a `NOSCRIPT`
//! by running the body with `EVAL` once (which loads it on that node too), so `EVALSHA` keeps
//! working across every switch. Inside a transaction the `EVALSHA` is sent as `EVAL` from the
//! start, since a queued command cannot be retried alone.
//!
//! A script that writes keys it does not declare is unsafe through the proxy: those writes are
//! not mirrored (Redis Cluster forbids such scripts too).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::backend::Backend;
use super::call::Call;
use super::command::{self, Spec};
use super::resp::{Proto, Reply, encode_request};

/// Most script bodies remembered; past it the cache starts over (scripts are few in practice,
/// and a forgotten one only costs the client its own NOSCRIPT fallback).
const CAPACITY: usize = 4096;

/// Script bodies by SHA1 (lower-case hex).
#[derive(Default)]
pub struct Scripts {
    bodies: Mutex<HashMap<String, Bytes>>,
}

impl Scripts {
    /// Remembers what a request teaches: the body of `EVAL`/`EVAL_RO` and `SCRIPT LOAD`; forgets
    /// everything on `SCRIPT FLUSH`. Other commands cost one comparison.
    pub fn learn_from(&self, spec: &Spec, args: &[Bytes]) {
        if !matches!(spec.name, "EVAL" | "EVAL_RO" | "SCRIPT") {
            return;
        }
        let sub = args.get(1).map(|a| a.to_ascii_uppercase());
        let body = match (spec.name, sub.as_deref()) {
            ("EVAL" | "EVAL_RO", _) => args.get(1),
            ("SCRIPT", Some(b"LOAD")) => args.get(2),
            ("SCRIPT", Some(b"FLUSH")) => {
                self.lock().clear();
                return;
            }
            _ => None,
        };
        if let Some(body) = body {
            let sha = sha1_smol::Sha1::from(body.as_ref()).digest().to_string();
            let mut bodies = self.lock();
            if bodies.len() >= CAPACITY && !bodies.contains_key(&sha) {
                bodies.clear();
            }
            bodies.insert(sha, body.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `EVALSHA`/`EVALSHA_RO sha ...` as `EVAL`/`EVAL_RO body ...` when the body is known.
    pub fn as_eval(&self, call: &Call) -> Option<Call> {
        let eval: &[u8] = match call.spec.name {
            "EVALSHA" => b"EVAL",
            "EVALSHA_RO" => b"EVAL_RO",
            _ => return None,
        };
        let sha = String::from_utf8_lossy(call.args.get(1)?).to_ascii_lowercase();
        let body = self.lock().get(&sha)?.clone();
        let mut args = call.args.clone();
        args[0] = Bytes::from_static(eval);
        args[1] = body;
        Some(Call {
            raw: encode_request(&args),
            args,
            spec: command::lookup(eval)?,
            keys: call.keys.clone(),
            migrates: call.migrates,
            on_primary: call.on_primary,
        })
    }

    /// Answers a `NOSCRIPT` reply to `call` by running the known body once on the same side.
    pub async fn retry_noscript(&self, backend: &Backend, proto: Proto, call: &Call, reply: Reply) -> Reply {
        let noscript = reply.error_text().is_some_and(|e| e.starts_with("NOSCRIPT"));
        let Some(eval) = noscript.then(|| self.as_eval(call)).flatten() else {
            return reply;
        };
        let (units, shape) = eval.units(backend.is_cluster());
        eval.merge(
            &shape,
            &mut backend.send_as(units, proto).await.into_iter(),
            proto,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn learns_bodies_and_rewrites_evalsha() {
        let scripts = Scripts::default();
        let learn = |argv: &[&str]| {
            let argv = args(argv);
            scripts.learn_from(command::lookup(&argv[0]).unwrap(), &argv)
        };
        learn(&["eval", "return 1", "0"]);
        // SHA1("return 1"), as Redis computes it.
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        let argv = args(&["EVALSHA", &sha.to_ascii_uppercase(), "1", "k"]);
        let spec = command::lookup(b"EVALSHA").unwrap();
        let call = Call {
            raw: encode_request(&argv),
            keys: spec.key_indices(argv.len(), &argv),
            args: argv,
            spec,
            migrates: true,
            on_primary: false,
        };
        let eval = scripts.as_eval(&call).expect("known body");
        assert_eq!(eval.args, args(&["EVAL", "return 1", "1", "k"]));
        assert_eq!(eval.keys, vec![3]);
        learn(&["SCRIPT", "flush"]);
        assert!(scripts.as_eval(&call).is_none());
    }
}
