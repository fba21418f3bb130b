//! Talking RESP to a proxy by hand (exact bytes), and putting a phase in force.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::proxy::{ProxyProcess, set_phase};
use super::sandbox::Sandbox;

/// Puts `phase` in force at `generation` and waits until the proxy applied it.
pub fn phase(sb: &Sandbox, proxy: &ProxyProcess, name: &str, generation: u64) {
    set_phase(&sb.flag_path(), name, generation, false, 0.0);
    proxy.wait_generation(generation);
}

/// Sends raw RESP and reads until `want` replies' worth of bytes stop arriving (the proxy
/// answers a pipeline in one write, so a short quiet period ends it).
pub fn exchange(stream: &mut TcpStream, request: &[u8], expect_end: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(expect_end) {
        let n = stream.read(&mut buf).expect("a reply within the read timeout");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

pub fn raw(proxy: &ProxyProcess) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub fn resp(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}
