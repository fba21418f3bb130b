//! One look at a batch of keys: source → target, existence, TTL, type and value of each key
//! (small strings from the first round trip, other small values by DUMP and, when the payloads
//! differ, by reading them whole; big ones by canonical digest in chunks); target → source,
//! whether each key exists on the source.

use std::collections::BTreeMap;

use futures::StreamExt;
use redis::{RedisResult, Value};

use super::chunked::canonical;
use super::digest::{
    Canonical, canonical_from_whole, has_whole_value, payload_type, same_payload, whole_value_command,
};
use super::engine::Engine;
use super::side::{command, take};
use super::verdict::{Meta, Verdict, canonical_pair_verdict, first, meta_cmds, ttl_verdict};
use super::{BUDGET_BYTES, INLINE_STRING, Kind, Pass, ROUND_KEYS, SLOW_CONCURRENCY, SUB_BATCH_BYTES};
use crate::batch::by_bytes;

impl Engine {
    /// One look at `keys` in this pass; also returns the payload bytes compared.
    pub(super) async fn check(&self, pass: Pass, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        match pass {
            Pass::SourceToTarget => self.compare(keys).await,
            Pass::TargetToSource => (self.extras(keys).await, 0),
        }
    }

    /// Source → target: existence, TTL, type and value of each key.
    async fn compare(&self, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for chunk in keys.chunks(ROUND_KEYS) {
            let (v, b) = self.compare_round(chunk).await;
            verdicts.extend(v);
            bytes += b;
        }
        (verdicts, bytes)
    }

    /// [`Engine::compare`] for at most [`ROUND_KEYS`] keys. Small strings are compared from the
    /// first round trip; other small values by DUMP; big ones by canonical digest in chunks.
    async fn compare_round(&self, keys: &[Vec<u8>]) -> (Vec<Verdict>, u64) {
        let (src, dst) = tokio::join!(
            self.source.per_key(keys, meta_cmds),
            self.target.per_key(keys, meta_cmds)
        );
        let mut bytes = 0;
        let mut verdicts: Vec<Option<Verdict>> = vec![None; keys.len()];
        let mut metas: Vec<(Meta, Meta)> = vec![(Meta::Absent, Meta::Absent); keys.len()];
        let mut dumps: Vec<(usize, u64)> = Vec::new();
        let mut slow: Vec<usize> = Vec::new();
        for (i, (s, d)) in src.into_iter().zip(dst).enumerate() {
            let ((s, s_prefix), (d, d_prefix)) = match (Meta::decode(s), Meta::decode(d)) {
                (Err(e), _) => {
                    verdicts[i] = Some(Verdict::differs(Kind::Error, format!("source: {e}"), None));
                    continue;
                }
                (Ok((s, _)), Err(e)) => {
                    verdicts[i] = Some(Verdict::differs(Kind::Error, format!("target: {e}"), s.size()));
                    continue;
                }
                (Ok(s), Ok(d)) => (s, d),
            };
            metas[i] = (s, d);
            if let (Meta::Present { .. }, Meta::Present { .. }, Some(a), Some(b)) =
                (s, d, &s_prefix, &d_prefix)
                && a.len() < INLINE_STRING
                && b.len() < INLINE_STRING
            {
                // Two small strings, read whole already.
                bytes += (a.len() + b.len()) as u64;
                verdicts[i] = Some(if a == b {
                    ttl_verdict(s, d)
                } else {
                    Verdict::differs(
                        Kind::Value,
                        format!(
                            "source string of {} bytes, target string of {} bytes: contents differ",
                            a.len(),
                            b.len()
                        ),
                        s.size(),
                    )
                });
                continue;
            }
            match (s, d) {
                (Meta::Absent, _) => verdicts[i] = Some(Verdict::Gone),
                (Meta::Present { size, .. }, Meta::Absent) => {
                    verdicts[i] = Some(Verdict::differs(
                        Kind::Missing,
                        format!("not in target (source: {size} bytes)"),
                        Some(size),
                    ))
                }
                (Meta::Present { size: a, .. }, Meta::Present { size: b, .. }) => {
                    if a > self.big_key_bytes || b > self.big_key_bytes {
                        slow.push(i);
                    } else {
                        dumps.push((i, a + b));
                    }
                }
            }
        }

        for group in by_bytes(dumps, SUB_BATCH_BYTES) {
            let (found, unsettled, compared) = self.compare_dumps(keys, &metas, group).await;
            for (i, verdict) in found {
                verdicts[i] = Some(verdict);
            }
            slow.extend(unsettled);
            bytes += compared;
        }

        let slow_results: Vec<(usize, RedisResult<Canonical>, RedisResult<Canonical>)> =
            futures::stream::iter(slow)
                .map(|i| {
                    let key = keys[i].as_slice();
                    let (ms, md) = metas[i];
                    async move {
                        let (a, b) = tokio::join!(
                            canonical(&self.source, key, ms.size().unwrap_or(0)),
                            canonical(&self.target, key, md.size().unwrap_or(0))
                        );
                        (i, a, b)
                    }
                })
                .buffer_unordered(SLOW_CONCURRENCY)
                .collect()
                .await;
        for (i, a, b) in slow_results {
            let (ms, md) = metas[i];
            verdicts[i] = Some(canonical_pair_verdict(a, b, ms, md));
        }
        let verdicts = verdicts.into_iter().map(|v| v.unwrap_or(Verdict::Gone)).collect();
        (verdicts, bytes)
    }

    /// Compares a group of small values (at most [`SUB_BATCH_BYTES`] of payload, within the
    /// budget) by DUMP payload. Returns the verdicts reached, the keys only a canonical digest
    /// can settle (a module type, or an RDB type this build does not know), and the payload
    /// bytes compared.
    async fn compare_dumps(
        &self,
        keys: &[Vec<u8>],
        metas: &[(Meta, Meta)],
        group: Vec<(usize, u64)>,
    ) -> (Vec<(usize, Verdict)>, Vec<usize>, u64) {
        let weight: u64 = group.iter().map(|(_, w)| *w).sum();
        let permits = weight.clamp(1, BUDGET_BYTES) as u32;
        let _permit = self
            .budget
            .acquire_many(permits)
            .await
            .expect("budget semaphore closed");
        let group_keys: Vec<&[u8]> = group.iter().map(|(i, _)| keys[*i].as_slice()).collect();
        let dump = |k: &[u8]| [command("DUMP", k)];
        let (src, dst) = tokio::join!(
            self.source.per_key(&group_keys, dump),
            self.target.per_key(&group_keys, dump)
        );
        let (mut verdicts, mut slow, mut bytes) = (Vec::new(), Vec::new(), 0);
        // Payloads that differ with the same known type: read the whole (small) values,
        // pipelined per type, and compare canonical forms.
        let mut whole: Vec<(usize, &'static str)> = Vec::new();
        for (((i, _), s), d) in group.iter().zip(src).zip(dst) {
            let (ms, md) = metas[*i];
            let verdict = match (s, d) {
                (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
                (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
                (Ok(s), Ok(d)) => match (first::<Option<Vec<u8>>>(s), first::<Option<Vec<u8>>>(d)) {
                    (Err(e), _) => Verdict::differs(Kind::Error, format!("source: {e}"), ms.size()),
                    (_, Err(e)) => Verdict::differs(Kind::Error, format!("target: {e}"), ms.size()),
                    (Ok(None), _) => Verdict::Gone,
                    (Ok(Some(_)), Ok(None)) => Verdict::differs(Kind::Missing, "not in target", ms.size()),
                    (Ok(Some(a)), Ok(Some(b))) => {
                        bytes += (a.len() + b.len()) as u64;
                        let (ta, tb) = (payload_type(&a), payload_type(&b));
                        if same_payload(&a, &b) {
                            ttl_verdict(ms, md)
                        } else if ta != tb && has_whole_value(ta) && has_whole_value(tb) {
                            Verdict::differs(Kind::Type, format!("source {ta}, target {tb}"), ms.size())
                        } else if ta == tb && has_whole_value(ta) {
                            whole.push((*i, ta));
                            continue;
                        } else {
                            // A module type, or an RDB type this build does not know.
                            slow.push(*i);
                            continue;
                        }
                    }
                },
            };
            verdicts.push((*i, verdict));
        }
        verdicts.extend(self.compare_whole(keys, metas, whole).await);
        (verdicts, slow, bytes)
    }

    /// Compares small values whose DUMP payloads differ by reading them whole (one pipelined
    /// read per type and side) and comparing canonical forms.
    async fn compare_whole(
        &self,
        keys: &[Vec<u8>],
        metas: &[(Meta, Meta)],
        whole: Vec<(usize, &'static str)>,
    ) -> Vec<(usize, Verdict)> {
        let mut by_type: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for (i, kind) in whole {
            by_type.entry(kind).or_default().push(i);
        }
        let reads = by_type.into_iter().map(|(kind, indexes)| async move {
            let type_keys: Vec<&[u8]> = indexes.iter().map(|i| keys[*i].as_slice()).collect();
            let read = |k: &[u8]| [whole_value_command(kind, k)];
            let (src, dst) = tokio::join!(
                self.source.per_key(&type_keys, read),
                self.target.per_key(&type_keys, read)
            );
            let decode = |r: RedisResult<Vec<Value>>| {
                r.and_then(|v| canonical_from_whole(kind, take(v.into_iter().next().unwrap_or_default())?))
            };
            indexes
                .into_iter()
                .zip(src.into_iter().zip(dst))
                .map(|(i, (s, d))| {
                    let (ms, md) = metas[i];
                    (i, canonical_pair_verdict(decode(s), decode(d), ms, md))
                })
                .collect::<Vec<_>>()
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Target → source: each key must exist on the source.
    async fn extras(&self, keys: &[Vec<u8>]) -> Vec<Verdict> {
        let exists = |k: &[u8]| [command("EXISTS", k)];
        if self.source.is_standalone() && self.source.all_exist(keys).await {
            return vec![Verdict::Same; keys.len()];
        }
        let src = self.source.per_key(keys, exists).await;
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut absent = Vec::new();
        for (i, s) in src.into_iter().enumerate() {
            verdicts.push(match s.and_then(first::<i64>) {
                Err(e) => Verdict::differs(Kind::Error, format!("source: {e}"), None),
                Ok(0) => {
                    absent.push(i);
                    Verdict::Same
                }
                Ok(_) => Verdict::Same,
            });
        }
        if absent.is_empty() {
            return verdicts;
        }
        let absent_keys: Vec<&[u8]> = absent.iter().map(|i| keys[*i].as_slice()).collect();
        let dst = self
            .target
            .per_key(&absent_keys, |k| [command("TYPE", k), command("PTTL", k)])
            .await;
        for (i, d) in absent.into_iter().zip(dst) {
            let decoded = d.and_then(|v| {
                let mut v = v.into_iter();
                let ty: String = take(v.next().unwrap_or_default())?;
                let pttl: i64 = take(v.next().unwrap_or_default())?;
                Ok((ty, pttl))
            });
            verdicts[i] = match decoded {
                Err(e) => Verdict::differs(Kind::Error, format!("target: {e}"), None),
                Ok((ty, _)) if ty == "none" => Verdict::Gone,
                Ok((ty, pttl)) => {
                    let ttl = if pttl >= 0 {
                        format!(", expires in {pttl} ms")
                    } else {
                        String::new()
                    };
                    Verdict::differs(Kind::Extra, format!("not in source (target: {ty}{ttl})"), None)
                }
            };
        }
        verdicts
    }
}
