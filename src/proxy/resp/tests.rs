//! RESP framing: exact cases, then properties over random input (design: the RESP path never
//! panics and never desynchronises a pipeline).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn requests_of(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(r) = next_request(&mut buf, MAX_BULK)? {
        out.push(r.args);
    }
    Ok(out)
}

#[test]
fn decodes_pipelined_requests_and_keeps_their_bytes() {
    let one = encode_request(&["SET", "k", "v"]);
    let two = encode_request(&["GET", "k"]);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&one);
    buf.extend_from_slice(&two);
    let a = next_request(&mut buf, MAX_BULK).unwrap().unwrap();
    let b = next_request(&mut buf, MAX_BULK).unwrap().unwrap();
    assert_eq!(a.raw, one);
    assert_eq!(b.args, vec![Bytes::from("GET"), Bytes::from("k")]);
    assert!(next_request(&mut buf, MAX_BULK).unwrap().is_none());
}

#[test]
fn oversized_bulk_is_refused_before_its_bytes_arrive() {
    let err = requests_of(b"*2\r\n$3\r\nSET\r\n$536870913\r\nabc").unwrap_err();
    assert!(err.0.contains("invalid bulk length 536870913"), "{err}");
    // a small cap applies the same way
    let mut buf = BytesMut::from(&b"*1\r\n$11\r\nhello world\r\n"[..]);
    assert!(next_request(&mut buf, 10).is_err());
}

#[test]
fn malformed_input_is_an_error_not_a_hang() {
    for bad in [
        &b"PING\r\n"[..],
        b"*1\r\n:5\r\n",
        b"*x\r\n",
        b"*1\r\n$abc\r\n",
        b"+OK\r\n",
        b"*99999999999\r\n",
        b"*1\r\n$123456789012345678901234567890\r\n",
    ] {
        assert!(requests_of(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn empty_arrays_are_skipped() {
    assert_eq!(requests_of(b"*0\r\n*1\r\n$4\r\nPING\r\n").unwrap().len(), 1);
}

#[test]
fn replies_keep_wire_bytes_and_errors_stay_one_line() {
    let mut buf = BytesMut::from(&b"-MOVED 1 127.0.0.1:7000\r\n:3\r\n"[..]);
    let moved = Reply::decode(&mut buf).unwrap().unwrap();
    assert_eq!(moved.error_text(), Some("MOVED 1 127.0.0.1:7000"));
    assert_eq!(
        Reply::decode(&mut buf).unwrap().unwrap().raw,
        Bytes::from(":3\r\n")
    );
    assert_eq!(Reply::error("ERR a\r\nb").raw, Bytes::from("-ERR a  b\r\n"));
}

fn arb_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any pipeline of valid requests, fed in two pieces split at every byte, decodes to the same
    /// requests in the same order.
    #[test]
    fn split_at_every_byte_never_desynchronises(reqs in prop::collection::vec(arb_args(), 1..5)) {
        let wire: Vec<u8> = reqs.iter().flat_map(|r| encode_request(r).to_vec()).collect();
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(r) = next_request(&mut buf, MAX_BULK).unwrap() {
                got.push(r.args);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(r) = next_request(&mut buf, MAX_BULK).unwrap() {
                got.push(r.args);
            }
            prop_assert!(buf.is_empty());
            let want: Vec<Vec<Bytes>> =
                reqs.iter().map(|r| r.iter().map(|a| Bytes::copy_from_slice(a)).collect()).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Random bytes never panic, and whatever decodes before an error is a prefix of well-formed
    /// requests (the decoder never invents one).
    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = requests_of(&input);
    }

    /// A valid request with random bytes flipped or truncated never panics either.
    #[test]
    fn mutated_requests_never_panic(args in arb_args(), at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                    cut in any::<prop::sample::Index>()) {
        let mut wire = encode_request(&args).to_vec();
        let i = at.index(wire.len());
        wire[i] = byte;
        let _ = requests_of(&wire);
        let _ = requests_of(&wire[..cut.index(wire.len())]);
    }
}

#[test]
fn nested_arrays_are_refused_before_the_decoder_recurses() {
    let deep = b"*1\r\n".repeat(100_000);
    let err = requests_of(&deep).unwrap_err();
    assert!(err.0.contains("expected '$'"), "{err}");
}

#[test]
fn a_large_request_arriving_in_pieces_is_framed_once_complete() {
    let big = encode_request(&[&b"SET"[..], b"k", &vec![b'x'; 100_000]]);
    let mut framer = Framer::default();
    let mut buf = BytesMut::new();
    for chunk in big.chunks(4096) {
        assert!(framer.next(&mut buf, Limits::AUTHENTICATED).unwrap().is_none());
        buf.extend_from_slice(chunk);
    }
    let request = framer.next(&mut buf, Limits::AUTHENTICATED).unwrap().unwrap();
    assert_eq!(request.args[2].len(), 100_000);
    assert!(buf.is_empty());
}

#[test]
fn before_auth_only_small_requests_are_read() {
    let mut framer = Framer::default();
    let auth = encode_request(&["AUTH", "secret"]);
    let mut buf = BytesMut::from(&auth[..]);
    assert!(framer.next(&mut buf, Limits::UNAUTHENTICATED).unwrap().is_some());
    let big = encode_request(&[&b"AUTH"[..], &vec![b'x'; 20_000]]);
    let mut buf = BytesMut::from(&big[..]);
    assert!(framer.next(&mut buf, Limits::UNAUTHENTICATED).is_err());
    let many: Vec<&str> = vec!["x"; 11];
    let mut buf = BytesMut::from(&encode_request(&many)[..]);
    assert!(Framer::default().next(&mut buf, Limits::UNAUTHENTICATED).is_err());
}

#[test]
fn lengths_are_read_exactly_as_redis_reads_them() {
    for bad in [
        &b"*1\r\n$01\r\nk\r\n"[..],
        b"*1\r\n$+1\r\nk\r\n",
        b"*01\r\n$1\r\nk\r\n",
        b"*1\r\n$-0\r\n",
        b"*1\r\n$1\rAk\r\n",
        b"*1\r\n$ 1\r\nk\r\n",
        // Past i64, either way: refused, as string2ll refuses them.
        b"*1\r\n$9223372036854775808\r\n",
        b"*-9223372036854775809\r\n",
        b"*1\r\n$-\r\n",
    ] {
        assert!(requests_of(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    // A null array is skipped, as Redis does; what follows still decodes. The most negative
    // i64 is still a number (a null array too).
    assert_eq!(requests_of(b"*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap().len(), 1);
    assert_eq!(
        requests_of(b"*-9223372036854775808\r\n*1\r\n$4\r\nPING\r\n")
            .unwrap()
            .len(),
        1
    );
    let huge = requests_of(b"*1\r\n$9223372036854775807\r\n").unwrap_err();
    assert!(
        huge.0.contains("invalid bulk length 9223372036854775807"),
        "{huge}"
    );
    // Like Redis, the two bytes after a bulk's data are skipped unchecked: both frame it alike.
    assert_eq!(
        requests_of(b"*1\r\n$1\r\nkXY").unwrap(),
        vec![vec![Bytes::from("k")]]
    );
}

/// A random RESP3 reply frame as wire bytes: every type Redis sends, nested up to four levels
/// (attributes included), so the reply framing of RESP3 backend connections is exercised.
fn arb_frame3() -> impl Strategy<Value = Vec<u8>> {
    let text = "[a-zA-Z0-9 ]{0,12}";
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| {
            let mut out = format!("${}\r\n", b.len()).into_bytes();
            out.extend(b);
            out.extend(b"\r\n");
            out
        }),
        text.prop_map(|s| format!("+{s}\r\n").into_bytes()),
        text.prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        Just(b"_\r\n".to_vec()),
        any::<bool>().prop_map(|b| format!("#{}\r\n", if b { 't' } else { 'f' }).into_bytes()),
        prop_oneof![
            Just("1.5".to_string()),
            Just("-0".into()),
            Just("inf".into()),
            Just("-inf".into()),
            any::<i32>().prop_map(|n| format!("{n}.25"))
        ]
        .prop_map(|d| format!(",{d}\r\n").into_bytes()),
        "[1-9][0-9]{0,40}".prop_map(|n| format!("({n}\r\n").into_bytes()),
        text.prop_map(|s| format!("={}\r\ntxt:{s}\r\n", s.len() + 4).into_bytes()),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let aggregate = |kind: char, per: usize, items: Vec<Vec<u8>>| {
            let mut out = format!("{kind}{}\r\n", items.len() / per).into_bytes();
            out.extend(items.concat());
            out
        };
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(move |v| aggregate('*', 1, v)),
            prop::collection::vec(inner.clone(), 0..4).prop_map(move |v| aggregate('~', 1, v)),
            prop::collection::vec(inner.clone(), 0..4).prop_map(move |v| aggregate('>', 1, v)),
            prop::collection::vec(inner.clone(), 0..3).prop_map(move |v| aggregate(
                '%',
                2,
                v.iter().flat_map(|f| [f.clone(), f.clone()]).collect()
            )),
            inner.prop_map(|f| [b"|1\r\n+ttl\r\n:3600\r\n".to_vec(), f].concat()),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// RESP3 replies arriving in pieces, split at every byte, come out whole, in order, with
    /// their exact bytes: the reply stream of a RESP3 backend connection never desynchronises.
    #[test]
    fn resp3_replies_split_at_every_byte_frame_exactly(frames in prop::collection::vec(arb_frame3(), 1..5)) {
        let wire = frames.concat();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &wire {
            buf.extend_from_slice(&[byte]);
            while let Some(reply) = Reply::decode_as(&mut buf, Proto::Resp3).unwrap() {
                got.push(reply.raw.to_vec());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    /// An array's elements are found exactly, whatever they nest.
    #[test]
    fn resp3_array_elements_are_exact(items in prop::collection::vec(arb_frame3(), 0..5)) {
        let wire = [format!("*{}\r\n", items.len()).into_bytes(), items.concat()].concat();
        let mut buf = BytesMut::from(&wire[..]);
        let reply = Reply::decode_as(&mut buf, Proto::Resp3).unwrap().unwrap();
        let elements: Vec<Vec<u8>> = reply.elements(Proto::Resp3).unwrap().iter().map(|r| r.raw.to_vec()).collect();
        prop_assert_eq!(elements, items);
    }

    /// Random and truncated RESP3 input never panics; a truncated frame is never taken for a
    /// complete one.
    #[test]
    fn resp3_random_and_truncated_input_never_panics(frame in arb_frame3(), noise in prop::collection::vec(any::<u8>(), 0..64),
                                                     cut in any::<prop::sample::Index>()) {
        let _ = Reply::decode_as(&mut BytesMut::from(&noise[..]), Proto::Resp3);
        let at = cut.index(frame.len());
        let mut buf = BytesMut::from(&frame[..at]);
        prop_assert!(Reply::decode_as(&mut buf, Proto::Resp3).unwrap().is_none());
    }
}
