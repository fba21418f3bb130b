//! Peak memory of the chunked big-key copy, measured by hand (not a test: no thresholds).
//!
//! ```text
//! # a source server and a 3-master target cluster, e.g. on ports 7000 and 7001-7003
//! cargo run --release --example bigkey_rss -- populate redis://127.0.0.1:7000 bighash 2000000 100
//! cargo run --release --example bigkey_rss -- copy redis://127.0.0.1:7000 bighash \
//!     redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003
//! ```
//!
//! `populate` builds a hash of FIELDS fields with VALUE_BYTES-byte values (in pipelines of 1000;
//! run it as its own process so it does not count). `copy` copies the key with
//! `cachemig::backfill::bigkey::copy` (replace on), checks that the target's HLEN/XLEN/… matches
//! the source's, and prints the process's VmHWM (peak RSS) and VmRSS from `/proc/self/status`
//! before and after, with the elapsed time.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use cachemig::backfill::bigkey;
use cachemig::endpoint::{connect_cluster, connect_node};
use url::Url;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("populate") if args.len() == 5 => {
            populate(&args[1], &args[2], args[3].parse()?, args[4].parse()?)
        }
        Some("copy") if args.len() >= 4 => copy(&args[1], &args[2], &args[3..]).await,
        _ => bail!(
            "usage: bigkey_rss populate SOURCE_URL KEY FIELDS VALUE_BYTES\n       \
             bigkey_rss copy SOURCE_URL KEY TARGET_URL..."
        ),
    }
}

fn populate(url: &str, key: &str, fields: u64, value_bytes: usize) -> Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    redis::cmd("DEL").arg(key).query::<()>(&mut conn)?;
    let mut i = 0;
    while i < fields {
        let mut pipe = redis::pipe();
        for n in i..(i + 1000).min(fields) {
            let mut value = format!("{n:020}").into_bytes();
            value.resize(value_bytes, b'v');
            pipe.cmd("HSET")
                .arg(key)
                .arg(format!("field:{n:012}"))
                .arg(value)
                .ignore();
        }
        pipe.query::<()>(&mut conn)?;
        i += 1000;
    }
    let usage: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(&mut conn)?;
    println!("{key}: {fields} fields, MEMORY USAGE {} MB", usage / 1_000_000);
    Ok(())
}

async fn copy(source: &str, key: &str, targets: &[String]) -> Result<()> {
    let before = memory()?;
    let mut src = connect_node(&Url::parse(source)?, None, None).await?;
    let urls = targets
        .iter()
        .map(|u| Url::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dst = connect_cluster(&urls, None, None).await?;
    let connected = memory()?;
    let started = Instant::now();
    let outcome = bigkey::copy(&mut src, &mut dst, key.as_bytes(), true).await?;
    let elapsed = started.elapsed();
    let after = memory()?;

    let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut src).await?;
    let len_cmd = match kind.as_str() {
        "hash" => "HLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "list" => "LLEN",
        "stream" => "XLEN",
        _ => "STRLEN",
    };
    let a: u64 = redis::cmd(len_cmd).arg(key).query_async(&mut src).await?;
    let b: u64 = redis::cmd(len_cmd).arg(key).query_async(&mut dst).await?;
    println!("outcome: {outcome:?} in {:.1} s", elapsed.as_secs_f64());
    println!("{len_cmd}: source {a}, target {b}");
    println!("before:    VmHWM {:>7} kB, VmRSS {:>7} kB", before.0, before.1);
    println!(
        "connected: VmHWM {:>7} kB, VmRSS {:>7} kB",
        connected.0, connected.1
    );
    println!("after:     VmHWM {:>7} kB, VmRSS {:>7} kB", after.0, after.1);
    if a != b {
        bail!("lengths differ");
    }
    Ok(())
}

/// (VmHWM, VmRSS) in kB.
fn memory() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        Ok(line.split_whitespace().nth(1).context("malformed")?.parse()?)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}
