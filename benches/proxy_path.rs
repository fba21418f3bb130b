//! Micro-benchmarks of the proxy's per-request work, so a regression on the request path shows
//! as a number: framing client requests, looking commands up, decoding and reshaping replies,
//! turning calls into units for a node, and recording their latency.
//!
//! Run with `cargo bench --bench proxy_path` (docs/proxy-bench.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cachemig::proxy::call::Call;
use cachemig::proxy::command;
use cachemig::proxy::metrics::Latency;
use cachemig::proxy::resp::{Framer, Limits, Proto, Reply, encode_request};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// A pipeline of `n` requests, as a client sends it.
fn pipeline(n: usize, args: &[&str]) -> Bytes {
    let one = encode_request(args);
    let mut out = BytesMut::new();
    for _ in 0..n {
        out.extend_from_slice(&one);
    }
    out.freeze()
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    for (name, args) in [
        ("GET", vec!["GET", "key:000000012345"]),
        ("SET", vec!["SET", "key:000000012345", "xxx"]),
    ] {
        let wire = pipeline(16, &args);
        group.throughput(Throughput::Elements(16));
        group.bench_function(format!("16 x {name}"), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let mut framer = Framer::default();
                let mut n = 0;
                while let Some(request) = framer.next(&mut buf, Limits::AUTHENTICATED).unwrap() {
                    n += black_box(request).args.len();
                }
                n
            })
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let names: Vec<&[u8]> = vec![b"GET", b"set", b"HGETALL", b"xreadgroup", b"EVALSHA", b"NOSUCH"];
    c.bench_function("command lookup (6 names)", |b| {
        b.iter(|| {
            names
                .iter()
                .filter(|n| command::lookup(black_box(n)).is_some())
                .count()
        })
    });
    let spec = command::lookup(b"MSET").expect("MSET is in the table");
    let args: Vec<Bytes> = ["MSET", "a", "1", "b", "2", "c", "3"]
        .iter()
        .map(|a| Bytes::from(*a))
        .collect();
    c.bench_function("key indices (MSET, 3 keys)", |b| {
        b.iter(|| spec.key_indices(args.len(), black_box(&args)).len())
    });
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("replies");
    let bulk = Bytes::from_static(b"$16\r\nvalue:0000012345\r\n");
    group.bench_function("decode RESP2 bulk", |b| {
        b.iter(|| Reply::decode_as(&mut BytesMut::from(&bulk[..]), Proto::Resp2).unwrap())
    });
    let map = Bytes::from_static(b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n,2.5\r\n");
    group.bench_function("decode RESP3 map", |b| {
        b.iter(|| Reply::decode_as(&mut BytesMut::from(&map[..]), Proto::Resp3).unwrap())
    });
    let array = Reply::array((0..16).map(|i| Reply::bulk(format!("value:{i}"))));
    group.bench_function("elements of a 16-item array (split MGET merge)", |b| {
        b.iter(|| black_box(&array).elements(Proto::Resp2).map(|e| e.len()))
    });
    group.finish();
}

/// A resolved call of `args`, as the batch makes it.
fn call(args: &[&str]) -> Call {
    let args: Vec<Bytes> = args
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
    let spec = command::lookup(&args[0]).expect("in the table");
    Call {
        keys: spec.key_indices(args.len(), &args),
        raw: encode_request(&args),
        args,
        spec,
        migrates: true,
        on_primary: false,
    }
}

fn units(c: &mut Criterion) {
    let mut group = c.benchmark_group("units");
    let calls: Vec<Call> = (0..16).map(|i| call(&["GET", &format!("key:{i:012}")])).collect();
    group.throughput(Throughput::Elements(16));
    let mut reused = Vec::new();
    group.bench_function("16 GETs into one reused vector", |b| {
        b.iter(|| {
            reused.clear();
            for call in &calls {
                black_box(call.units_into(false, &mut reused));
            }
            reused.len()
        })
    });
    group.bench_function("16 GETs, a vector per call (before)", |b| {
        b.iter(|| {
            let mut all = Vec::new();
            for call in &calls {
                let (mut units, shape) = call.units(false);
                black_box(shape);
                all.append(&mut units);
            }
            all.len()
        })
    });
    group.finish();
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency histogram");
    let took = Duration::from_micros(180);
    let atomic = Latency::new(exponential_buckets(50e-6, 2.0, 16));
    group.throughput(Throughput::Elements(16));
    group.bench_function("16 replies of a batch, one observe_many", |b| {
        b.iter(|| atomic.observe_many(black_box(took), 16))
    });
    group.bench_function("16 replies, one atomic observe each", |b| {
        b.iter(|| (0..16).for_each(|_| atomic.observe(black_box(took))))
    });
    let locked = Histogram::new(exponential_buckets(50e-6, 2.0, 16));
    group.bench_function("16 replies, prometheus-client Histogram (before)", |b| {
        b.iter(|| (0..16).for_each(|_| locked.observe(black_box(took.as_secs_f64()))))
    });
    group.finish();
}

criterion_group!(benches, framing, lookup, replies, units, latency);
criterion_main!(benches);
