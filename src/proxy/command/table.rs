//! The command table itself, one line per command, and the tests that hold it to Redis 7.0.

use super::{Blocks, Class, KeySpec, Merge, Spec};

const fn spec(name: &'static str, class: Class, arity: i32, keys: KeySpec) -> Spec {
    Spec {
        name,
        class,
        arity,
        keys,
        merge: Merge::None,
        key_stride: 1,
        random: false,
        unordered: false,
        ttl: false,
        blocks: Blocks::Never,
    }
}
const fn read(name: &'static str, arity: i32, keys: KeySpec) -> Spec {
    spec(name, Class::Read, arity, keys)
}
const fn write(name: &'static str, arity: i32, keys: KeySpec) -> Spec {
    spec(name, Class::Write, arity, keys)
}
const fn local(name: &'static str, arity: i32) -> Spec {
    spec(name, Class::Local, arity, KeySpec::None)
}
const fn tx(name: &'static str, arity: i32) -> Spec {
    spec(name, Class::Transaction, arity, KeySpec::None)
}
// Rejected commands never reach a server, so their keys are not described.
const fn reject(name: &'static str, arity: i32, why: &'static str) -> Spec {
    spec(name, Class::Reject(why), arity, KeySpec::None)
}
const fn r(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}
const fn nk(numkeys_at: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys_at,
        dest: false,
    }
}
const NO: KeySpec = KeySpec::None;
const K1: KeySpec = r(1, 1, 1);
/// Subcommand containers (OBJECT ENCODING key, XINFO STREAM key, XGROUP CREATE key ...).
const K2: KeySpec = r(2, 2, 1);
const ALL: KeySpec = r(1, -1, 1);
const K1_2: KeySpec = r(1, 2, 1);
const STORE: KeySpec = KeySpec::NumKeys {
    numkeys_at: 2,
    dest: true,
};

impl Spec {
    const fn merged(mut self, merge: Merge, key_stride: usize) -> Self {
        self.merge = merge;
        self.key_stride = key_stride;
        self
    }
    const fn rand(mut self) -> Self {
        self.random = true;
        self
    }
    const fn unord(mut self) -> Self {
        self.unordered = true;
        self
    }
    const fn keys(mut self, keys: KeySpec) -> Self {
        self.keys = keys;
        self
    }
    const fn blocking(mut self, blocks: Blocks) -> Self {
        self.blocks = blocks;
        self
    }
    const fn drifts(mut self) -> Self {
        self.ttl = true;
        self
    }
}

const BYPASS: &str = "would bypass the migration's key mirroring";
const ADMIN: &str = "admin commands go to the servers directly, not through the proxy";

/// Every command the proxy knows; anything else is unknown to `lookup`. Arity and key positions follow
/// `COMMAND INFO` of Redis 7.0 (checked against a live server by the tests).
pub(super) static TABLE: &[Spec] = &[
    // Strings.
    read("GET", 2, K1),
    read("MGET", -2, ALL).merged(Merge::Array, 1),
    read("STRLEN", 2, K1),
    read("GETRANGE", 4, K1),
    read("SUBSTR", 4, K1),
    read("LCS", -3, K1_2),
    write("SET", -3, K1),
    write("SETNX", 3, K1),
    write("SETEX", 4, K1),
    write("PSETEX", 4, K1),
    write("GETSET", 3, K1),
    write("GETDEL", 2, K1),
    write("GETEX", -2, K1),
    write("APPEND", 3, K1),
    write("INCR", 2, K1),
    write("DECR", 2, K1),
    write("INCRBY", 3, K1),
    write("DECRBY", 3, K1),
    write("INCRBYFLOAT", 3, K1),
    write("SETRANGE", 4, K1),
    write("MSET", -3, r(1, -1, 2)).merged(Merge::AllOk, 2),
    // Not split: MSETNX's all-or-nothing promise cannot survive being cut per slot.
    write("MSETNX", -3, r(1, -1, 2)).merged(Merge::None, 2),
    // Generic keyspace.
    read("EXISTS", -2, ALL).merged(Merge::Sum, 1),
    // Read-only in Redis (it only bumps the LRU clock), yet its integer reply sums like DEL's.
    read("TOUCH", -2, ALL).merged(Merge::Sum, 1),
    read("TYPE", 2, K1),
    read("TTL", 2, K1).drifts(),
    read("PTTL", 2, K1).drifts(),
    read("EXPIRETIME", 2, K1).drifts(),
    read("PEXPIRETIME", 2, K1).drifts(),
    // The payload embeds encoding details that may legitimately differ between versions.
    read("DUMP", 2, K1).rand(),
    // ENCODING, FREQ, IDLETIME and USAGE describe one server's memory, not the data.
    read("OBJECT", -2, K2).rand(),
    read("MEMORY", -2, K2).rand(),
    read("SORT_RO", -2, K1),
    write("DEL", -2, ALL).merged(Merge::Sum, 1),
    write("UNLINK", -2, ALL).merged(Merge::Sum, 1),
    write("EXPIRE", -3, K1),
    write("PEXPIRE", -3, K1),
    write("EXPIREAT", -3, K1),
    write("PEXPIREAT", -3, K1),
    write("PERSIST", 2, K1),
    write("RENAME", 3, K1_2),
    write("RENAMENX", 3, K1_2),
    write("COPY", -3, K1_2),
    write("RESTORE", -4, K1),
    // Hashes.
    read("HGET", 3, K1),
    read("HMGET", -3, K1),
    read("HGETALL", 2, K1).unord(),
    read("HKEYS", 2, K1).unord(),
    read("HVALS", 2, K1).unord(),
    read("HLEN", 2, K1),
    read("HEXISTS", 3, K1),
    read("HSTRLEN", 3, K1),
    read("HRANDFIELD", -2, K1).rand(),
    // Cursors are server-specific, so two servers' pages never match: reads, but never compared.
    read("HSCAN", -3, K1).rand(),
    read("SSCAN", -3, K1).rand(),
    read("ZSCAN", -3, K1).rand(),
    write("HSET", -4, K1),
    write("HSETNX", 4, K1),
    write("HMSET", -4, K1),
    write("HDEL", -3, K1),
    write("HINCRBY", 4, K1),
    write("HINCRBYFLOAT", 4, K1),
    // Lists.
    read("LLEN", 2, K1),
    read("LRANGE", 4, K1),
    read("LINDEX", 3, K1),
    read("LPOS", -3, K1),
    write("LPUSH", -3, K1),
    write("RPUSH", -3, K1),
    write("LPUSHX", -3, K1),
    write("RPUSHX", -3, K1),
    write("LPOP", -2, K1),
    write("RPOP", -2, K1),
    write("LSET", 4, K1),
    write("LREM", 4, K1),
    write("LTRIM", 4, K1),
    write("LINSERT", 5, K1),
    write("LMOVE", 5, K1_2),
    write("RPOPLPUSH", 3, K1_2),
    write("LMPOP", -4, nk(1)),
    // Sets.
    read("SCARD", 2, K1),
    read("SISMEMBER", 3, K1),
    read("SMISMEMBER", -3, K1),
    read("SMEMBERS", 2, K1).unord(),
    read("SRANDMEMBER", -2, K1).rand(),
    read("SINTER", -2, ALL).unord(),
    read("SUNION", -2, ALL).unord(),
    read("SDIFF", -2, ALL).unord(),
    read("SINTERCARD", -3, nk(1)),
    write("SADD", -3, K1),
    write("SREM", -3, K1),
    write("SPOP", -2, K1).rand(),
    write("SMOVE", 4, K1_2),
    write("SINTERSTORE", -3, ALL),
    write("SUNIONSTORE", -3, ALL),
    write("SDIFFSTORE", -3, ALL),
    // Sorted sets.
    read("ZCARD", 2, K1),
    read("ZSCORE", 3, K1),
    read("ZMSCORE", -3, K1),
    read("ZRANGE", -4, K1),
    read("ZRANGEBYSCORE", -4, K1),
    read("ZRANGEBYLEX", -4, K1),
    read("ZREVRANGE", -4, K1),
    read("ZREVRANGEBYSCORE", -4, K1),
    read("ZREVRANGEBYLEX", -4, K1),
    read("ZRANK", 3, K1),
    read("ZREVRANK", 3, K1),
    read("ZCOUNT", 4, K1),
    read("ZLEXCOUNT", 4, K1),
    read("ZRANDMEMBER", -2, K1).rand(),
    read("ZUNION", -3, nk(1)),
    read("ZINTER", -3, nk(1)),
    read("ZDIFF", -3, nk(1)),
    read("ZINTERCARD", -3, nk(1)),
    write("ZADD", -4, K1),
    write("ZINCRBY", 4, K1),
    write("ZREM", -3, K1),
    write("ZREMRANGEBYSCORE", 4, K1),
    write("ZREMRANGEBYRANK", 4, K1),
    write("ZREMRANGEBYLEX", 4, K1),
    write("ZPOPMIN", -2, K1),
    write("ZPOPMAX", -2, K1),
    write("ZMPOP", -4, nk(1)),
    write("ZUNIONSTORE", -4, STORE),
    write("ZINTERSTORE", -4, STORE),
    write("ZDIFFSTORE", -4, STORE),
    write("ZRANGESTORE", -5, K1_2),
    // Bitmaps and HyperLogLogs.
    read("GETBIT", 3, K1),
    read("BITCOUNT", -2, K1),
    read("BITPOS", -3, K1),
    read("BITFIELD_RO", -2, K1),
    read("PFCOUNT", -2, ALL),
    write("SETBIT", 4, K1),
    write("BITFIELD", -2, K1),
    write("BITOP", -4, r(2, -1, 1)),
    write("PFADD", -2, K1),
    write("PFMERGE", -2, ALL),
    // Geo.
    read("GEOPOS", -2, K1),
    read("GEODIST", -4, K1),
    read("GEOHASH", -2, K1),
    read("GEOSEARCH", -7, K1),
    read("GEORADIUS_RO", -6, K1),
    read("GEORADIUSBYMEMBER_RO", -5, K1),
    write("GEOADD", -5, K1),
    write("GEOSEARCHSTORE", -8, K1_2),
    // Streams.
    read("XRANGE", -4, K1),
    read("XREVRANGE", -4, K1),
    read("XLEN", 2, K1),
    read("XPENDING", -3, K1),
    read("XINFO", -2, K2),
    write("XADD", -5, K1),
    write("XDEL", -3, K1),
    write("XTRIM", -4, K1),
    write("XACK", -4, K1),
    write("XCLAIM", -6, K1),
    write("XAUTOCLAIM", -6, K1),
    write("XGROUP", -2, K2),
    write("XSETID", -3, K1),
    // Pub/sub messages are not data: they need no mirroring, so they ride the read side.
    read("PUBLISH", 3, NO),
    // A shard channel lives on its slot's node; never shadowed (a second publish).
    read("SPUBLISH", 3, K1).rand(),
    read("TIME", 1, NO).rand(),
    // Connection state lives in the proxy.
    local("PING", -1),
    local("ECHO", 2),
    local("QUIT", -1),
    local("AUTH", -2),
    local("HELLO", -1),
    local("SELECT", 2),
    local("CLIENT", -2),
    local("INFO", -1),
    local("RESET", 1),
    // A cluster client sees the proxy as a one-node cluster (proxy::cluster_view).
    local("CLUSTER", -2),
    local("ASKING", 1),
    local("READONLY", 1),
    local("READWRITE", 1),
    // The servers' own table: key positions as Redis reports them.
    read("COMMAND", -1, NO).rand(),
    // Transactions are queued by the proxy and run whole on the write primary (proxy::tx).
    tx("MULTI", 1),
    tx("EXEC", 1),
    tx("DISCARD", 1),
    tx("WATCH", -2).keys(ALL),
    tx("UNWATCH", 1),
    // Scripts run on the write primary; their declared keys are mirrored (proxy::scripts).
    write("EVAL", -3, nk(2)),
    write("EVALSHA", -3, nk(2)),
    read("EVAL_RO", -3, nk(2)).rand(),
    read("EVALSHA_RO", -3, nk(2)).rand(),
    // SCRIPT LOAD compiles on a server (and reports syntax errors); the body is remembered.
    read("SCRIPT", -2, NO).rand(),
    // Functions: FCALL routes like EVAL; libraries go to every master of both sides
    // (proxy::functions).
    write("FCALL", -3, nk(2)),
    read("FCALL_RO", -3, nk(2)).rand(),
    spec("FUNCTION", Class::Function, -2, NO),
    // Blocking commands run on a connection of the client's own (proxy::blocking).
    write("BLPOP", -3, r(1, -2, 1)).blocking(Blocks::Always),
    write("BRPOP", -3, r(1, -2, 1)).blocking(Blocks::Always),
    write("BLMOVE", 6, K1_2).blocking(Blocks::Always),
    write("BRPOPLPUSH", 4, K1_2).blocking(Blocks::Always),
    write("BZPOPMIN", -3, r(1, -2, 1)).blocking(Blocks::Always),
    write("BZPOPMAX", -3, r(1, -2, 1)).blocking(Blocks::Always),
    write("BLMPOP", -5, nk(2)).blocking(Blocks::Always),
    write("BZMPOP", -5, nk(2)).blocking(Blocks::Always),
    read("XREAD", -4, KeySpec::Streams).blocking(Blocks::WithOption),
    // Creates pending entries (and consumers): a write.
    write("XREADGROUP", -7, KeySpec::Streams).blocking(Blocks::WithOption),
    // Subscriptions are held on both sides (proxy::pubsub).
    spec("SUBSCRIBE", Class::PubSub, -2, NO),
    spec("PSUBSCRIBE", Class::PubSub, -2, NO),
    spec("UNSUBSCRIBE", Class::PubSub, -1, NO),
    spec("PUNSUBSCRIBE", Class::PubSub, -1, NO),
    spec("SSUBSCRIBE", Class::PubSub, -2, NO),
    spec("SUNSUBSCRIBE", Class::PubSub, -1, NO),
    // Counts the subscribers of the read side (every proxy subscriber is subscribed on both).
    read("PUBSUB", -2, NO).rand(),
    reject(
        "MONITOR",
        1,
        "would show one server's traffic, not the application's; run it on a server",
    ),
    // Refused unless `[proxies] allow_flush` (proxy::keyspace::flush).
    spec("FLUSHALL", Class::Flush, -1, NO),
    spec("FLUSHDB", Class::Flush, -1, NO),
    reject("SWAPDB", 3, BYPASS),
    reject("MOVE", 3, BYPASS),
    reject("MIGRATE", -6, BYPASS),
    reject("RESTORE-ASKING", -4, BYPASS),
    // Walk every master of the side that holds the migrated keys (proxy::keyspace).
    spec("KEYS", Class::Keyspace, 2, NO),
    spec("SCAN", Class::Keyspace, -2, NO),
    spec("RANDOMKEY", Class::Keyspace, 1, NO),
    spec("DBSIZE", Class::Keyspace, 1, NO),
    reject("SORT", -2, "can STORE its result; use SORT_RO"),
    reject(
        "GEORADIUS",
        -6,
        "may STORE its result; use GEOSEARCH or GEOSEARCHSTORE",
    ),
    reject(
        "GEORADIUSBYMEMBER",
        -5,
        "may STORE its result; use GEOSEARCH or GEOSEARCHSTORE",
    ),
    reject("CONFIG", -2, ADMIN),
    reject("SHUTDOWN", -1, ADMIN),
    reject("DEBUG", -2, ADMIN),
    reject("SAVE", 1, ADMIN),
    reject("BGSAVE", -1, ADMIN),
    reject("BGREWRITEAOF", 1, ADMIN),
    reject("LASTSAVE", 1, ADMIN),
    reject("REPLICAOF", 3, ADMIN),
    reject("SLAVEOF", 3, ADMIN),
    reject("SYNC", 1, ADMIN),
    reject("PSYNC", -3, ADMIN),
    reject("REPLCONF", -1, ADMIN),
    // Replicas that hold the client's writes (proxy::wait). WAITAOF is 7.2: unknown, as to 7.0.
    spec("WAIT", Class::Wait, 3, NO),
    reject("ACL", -2, ADMIN),
    reject("SLOWLOG", -2, ADMIN),
    reject("LATENCY", -2, ADMIN),
    reject("MODULE", -2, ADMIN),
    reject("FAILOVER", -1, ADMIN),
    reject("ROLE", 1, ADMIN),
    reject("LOLWUT", -1, ADMIN),
    reject("PFDEBUG", 3, ADMIN),
    reject("PFSELFTEST", 1, ADMIN),
    // Hash-field TTLs (Redis 7.4+, Valkey 9.0+; `needs`): refused while a side lacks them or a
    // direction copies by type. HTTL and HPTTL drift like TTL: never shadow-compared.
    write("HEXPIRE", -6, K1),
    write("HPEXPIRE", -6, K1),
    write("HEXPIREAT", -6, K1),
    write("HPEXPIREAT", -6, K1),
    write("HPERSIST", -5, K1),
    read("HTTL", -5, K1).rand(),
    read("HPTTL", -5, K1).rand(),
    read("HEXPIRETIME", -5, K1),
    read("HPEXPIRETIME", -5, K1),
];

#[cfg(test)]
mod tests;
