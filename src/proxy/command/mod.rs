//! The proxy's static command table: for every Redis 7.x command a client may send, whether it is a read,
//! a write, answered locally or refused; where its keys are; how a multi-key command split per slot is
//! merged back; and which replies a shadow read must not compare literally.
//!
//! The table is static on purpose: asking the servers with `COMMAND` would make routing depend on which
//! server answered, and the old and new servers may run different versions during a migration.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use bytes::Bytes;

use table::TABLE;

pub mod needs;
mod table;

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads data: served by the read side of the routing.
    Read,
    /// Changes data: applied on the write side, then its keys are mirrored.
    Write,
    /// Answered by the proxy itself (PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT, INFO, CLUSTER...).
    Local,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the proxy queues transactions itself.
    Transaction,
    /// SCAN, KEYS, DBSIZE, RANDOMKEY: answered from every master of the side holding the keys.
    Keyspace,
    /// SUBSCRIBE, PSUBSCRIBE and their unsubscribes: subscriptions held on both sides.
    PubSub,
    /// FUNCTION: libraries changed on every master of both sides.
    Function,
    /// WAIT: on connections of its own to the write primary's nodes the client wrote.
    Wait,
    /// FLUSHDB, FLUSHALL: refused unless the plan allows them; then every key of both sides but
    /// cachemig's own is deleted.
    Flush,
    /// Refused with `-ERR cachemig: <CMD> <reason>`; the &'static str is the reason.
    Reject(&'static str),
}

/// How the replies of a multi-key command split per slot are put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Not split: the command goes to one node as it is.
    None,
    /// One reply element per key, in key order (MGET).
    Array,
    /// Every part must reply OK; the merged reply is OK (MSET).
    AllOk,
    /// Integer replies are summed (DEL, UNLINK, EXISTS, TOUCH).
    Sum,
}

/// Whether a command may block its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    /// Never.
    Never,
    /// Always (BLPOP and the other blocking pops).
    Always,
    /// With a `BLOCK` option before `STREAMS` (XREAD, XREADGROUP).
    WithOption,
}

/// Where a command's keys are in its argument vector (argv[0] is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys.
    None,
    /// Keys at argv[first], argv[first+step], ... up to argv[last] (last < 0 counts from the end: -1 = last arg).
    Range {
        /// Index of the first key.
        first: usize,
        /// Index of the last key; negative counts from the end.
        last: isize,
        /// Distance between two keys (2 for MSET's key value pairs).
        step: usize,
    },
    /// argv[numkeys_at] holds a count N; the keys are the N args that follow it. If `dest` is true,
    /// argv[1] is also a key (destination), e.g. ZUNIONSTORE dest numkeys k1 k2.
    NumKeys {
        /// Index of the key count.
        numkeys_at: usize,
        /// Whether argv[1] is a destination key.
        dest: bool,
    },
    /// XREAD / XREADGROUP: after the `STREAMS` keyword, the first half of the remaining args.
    Streams,
}

/// One command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Upper-case name.
    pub name: &'static str,
    /// Read, write, local or rejected.
    pub class: Class,
    /// Minimum argc including the name; negative = at least -arity (like Redis COMMAND arity).
    pub arity: i32,
    /// Key positions.
    pub keys: KeySpec,
    /// How per-slot parts are merged on a cluster (non-None only for MGET, MSET, DEL, UNLINK, EXISTS, TOUCH).
    pub merge: Merge,
    /// For MSET: how many args per key (2: key value). 1 for the others.
    pub key_stride: usize,
    /// Reply is random (RANDOMKEY, SRANDMEMBER, SPOP, HRANDFIELD, ZRANDMEMBER...): never shadow-compared.
    pub random: bool,
    /// Reply order carries no meaning (SMEMBERS, SINTER, SUNION, SDIFF, HGETALL, HKEYS, HVALS...):
    /// a shadow compare sorts before comparing. HGETALL/HRANDFIELD WITHVALUES are field/value pairs: sort pairs.
    pub unordered: bool,
    /// Reply is a TTL that drifts with time (only TTL and PTTL): compare with tolerance.
    pub ttl: bool,
    /// Whether it may block its connection.
    pub blocks: Blocks,
}

/// Longest name `lookup` accepts; the longest real one, GEORADIUSBYMEMBER_RO, has 20 bytes.
const MAX_NAME: usize = 24;

/// Looks `name` up case-insensitively (no allocation on the hot path: compare ASCII case-insensitively
/// or uppercase into a small stack buffer). Subcommand containers (CLIENT, CONFIG, OBJECT, MEMORY,
/// XINFO, COMMAND, SCRIPT, ...) are looked up by the first word only.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    let upper = &mut buf[..name.len()];
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    BY_NAME.get(&*upper).copied()
}

impl Spec {
    /// Indices into `argv` of this command's keys, in order. Out-of-range positions are ignored;
    /// a NumKeys count that does not parse or runs past the end yields what is there.
    pub fn key_indices(&self, argv_len: usize, argv: &[Bytes]) -> Vec<usize> {
        // Trust the shorter of the two so a caller passing a stale length cannot make us index past argv.
        let len = argv_len.min(argv.len());
        match self.keys {
            KeySpec::None => Vec::new(),
            KeySpec::Range { first, last, step } => {
                let last = if last < 0 {
                    len as isize + last
                } else {
                    last.min(len as isize - 1)
                };
                if last < first as isize || step == 0 {
                    return Vec::new();
                }
                // Sized up front so the common one-key case costs exactly one small allocation.
                let count = (last as usize - first) / step + 1;
                let mut out = Vec::with_capacity(count);
                out.extend((first..=last as usize).step_by(step));
                out
            }
            KeySpec::Streams => match streams_at(&argv[..len]) {
                Some(at) => {
                    let rest = len - at - 1;
                    (at + 1..at + 1 + rest / 2).collect()
                }
                None => Vec::new(),
            },
            KeySpec::NumKeys { numkeys_at, dest } => {
                let declared = argv
                    .get(numkeys_at)
                    .filter(|_| numkeys_at < len)
                    .and_then(|n| parse_count(n));
                let first = numkeys_at + 1;
                let end = first.saturating_add(declared.unwrap_or(0)).min(len);
                let mut out = Vec::with_capacity(usize::from(dest) + end.saturating_sub(first));
                if dest && len > 1 {
                    out.push(1);
                }
                out.extend(first..end);
                out
            }
        }
    }

    /// Whether this request blocks its connection (a blocking pop, or XREAD with BLOCK).
    pub fn blocks_with(&self, argv: &[Bytes]) -> bool {
        match self.blocks {
            Blocks::Never => false,
            Blocks::Always => true,
            Blocks::WithOption => {
                let end = streams_at(argv).unwrap_or(argv.len());
                argv[1..end].iter().any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
            }
        }
    }

    /// Whether `argc` satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let want = self.arity.unsigned_abs() as usize;
        if self.arity < 0 {
            argc >= want
        } else {
            argc == want
        }
    }
}

/// Where the `STREAMS` keyword of XREAD / XREADGROUP is, skipping option values the way Redis
/// does (so a group or consumer named "streams" is not taken for it).
fn streams_at(argv: &[Bytes]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let word = argv[i].to_ascii_uppercase();
        match word.as_slice() {
            b"STREAMS" => return Some(i),
            b"GROUP" => i += 3,
            b"COUNT" | b"BLOCK" => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// A non-negative decimal count, as Redis accepts it; anything else is `None` (the server will reject it).
fn parse_count(raw: &[u8]) -> Option<usize> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// FNV-1a: the keys are short trusted constants, so SipHash's DoS resistance buys nothing on the hot path.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

static BY_NAME: LazyLock<HashMap<&'static [u8], &'static Spec, BuildHasherDefault<Fnv>>> =
    LazyLock::new(|| TABLE.iter().map(|s| (s.name.as_bytes(), s)).collect());

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn keys(line: &str) -> Vec<usize> {
        let argv = argv(line);
        lookup(&argv[0])
            .unwrap_or_else(|| panic!("{line}: unknown"))
            .key_indices(argv.len(), &argv)
    }

    fn get(name: &str) -> &'static Spec {
        lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} missing from the table"))
    }

    #[test]
    fn lookup_ignores_case_and_rejects_unknown_or_long_names() {
        for name in ["get", "GET", "gEt"] {
            assert_eq!(get(name).name, "GET");
        }
        assert_eq!(get("georadiusbymember_ro").name, "GEORADIUSBYMEMBER_RO");
        assert!(lookup(b"NOSUCHCOMMAND").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(&[b'G'; 100]).is_none());
        assert!(lookup("gét".as_bytes()).is_none());
    }

    #[test]
    fn names_are_unique_upper_case_and_fit_the_lookup_buffer() {
        let mut seen = std::collections::HashSet::new();
        for s in TABLE {
            assert!(seen.insert(s.name), "{} twice", s.name);
            assert_eq!(s.name, s.name.to_ascii_uppercase());
            assert!(s.name.len() <= MAX_NAME, "{}", s.name);
            assert!(std::ptr::eq(get(s.name), s));
        }
    }

    #[test]
    fn key_indices_of_common_shapes() {
        assert_eq!(keys("GET k"), [1]);
        assert_eq!(keys("get k extra"), [1]);
        assert_eq!(keys("MGET a b c"), [1, 2, 3]);
        assert_eq!(keys("MSET a 1 b 2 c 3"), [1, 3, 5]);
        assert_eq!(keys("DEL a b"), [1, 2]);
        assert_eq!(keys("ZUNIONSTORE dest 2 a b WEIGHTS 1 2"), [1, 3, 4]);
        assert_eq!(keys("SINTERCARD 2 a b LIMIT 1"), [2, 3]);
        assert_eq!(keys("LMPOP 2 a b LEFT"), [2, 3]);
        assert_eq!(keys("BITOP AND dest a b"), [2, 3, 4]);
        assert_eq!(keys("XINFO STREAM s"), [2]);
        assert_eq!(keys("OBJECT ENCODING k"), [2]);
        assert_eq!(keys("RENAME a b"), [1, 2]);
        assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), [4, 5]);
        assert_eq!(keys("XREADGROUP GROUP streams c BLOCK 0 STREAMS s >"), [7]);
        assert_eq!(keys("BLPOP a b 0"), [1, 2]);
        assert_eq!(keys("BLMPOP 0 2 a b LEFT"), [3, 4]);
        let argv = argv("XREAD BLOCK 0 STREAMS block 0");
        assert!(get("XREAD").blocks_with(&argv));
        assert!(!get("XREAD").blocks_with(&self::argv("XREAD STREAMS block 0")));
        assert!(keys("OBJECT HELP").is_empty());
        assert!(keys("PING").is_empty());
        assert!(keys("PUBLISH ch msg").is_empty());
    }

    #[test]
    fn key_indices_survive_bad_or_short_argv() {
        assert!(keys("SINTERCARD x a b").is_empty());
        assert!(keys("SINTERCARD -1 a b").is_empty());
        assert!(keys("SINTERCARD 99999999999999999999999 a b").is_empty());
        assert_eq!(keys("ZUNIONSTORE dest nope a b"), [1]);
        assert_eq!(keys("SINTERCARD 5 a b"), [2, 3]);
        assert_eq!(keys("ZUNIONSTORE dest 5 a"), [1, 3]);
        assert!(keys("GET").is_empty());
        assert!(keys("MGET").is_empty());
        assert!(keys("SINTERCARD").is_empty());
        assert!(keys("BITOP AND").is_empty());
        let spec = get("ZUNIONSTORE");
        let args = argv("ZUNIONSTORE dest 2 a b");
        assert_eq!(spec.key_indices(0, &args), Vec::<usize>::new());
        // A length beyond argv is clamped to argv.
        assert_eq!(get("MGET").key_indices(10, &argv("MGET a b")), [1, 2]);
        assert_eq!(get("GET").key_indices(1, &args), Vec::<usize>::new());
    }

    #[test]
    fn arity_checks() {
        let get_ = get("GET");
        assert!(!get_.arity_ok(1) && get_.arity_ok(2) && !get_.arity_ok(3));
        let mget = get("MGET");
        assert!(!mget.arity_ok(1) && mget.arity_ok(2) && mget.arity_ok(100));
        assert!(get("PING").arity_ok(1) && get("PING").arity_ok(2));
        assert!(!get("ZUNIONSTORE").arity_ok(3) && get("ZUNIONSTORE").arity_ok(4));
        assert!(get("TIME").arity_ok(1) && !get("TIME").arity_ok(0));
    }
}
