// An application's-eye check of one Redis endpoint with ioredis in its DEFAULT configuration
// (ioredis 6 opens with HELLO 3 and falls back to RESP2 on NOPROTO). Run by tests/app_clients.rs
// against plain Redis and against `cachemig proxy`; see harness.mjs for the arguments and the
// output.

import { StepFailed, check, describe, keySlot, parseCommandLine, requireClient, runSteps, same } from './harness.mjs';
import { Steps } from './steps.mjs';

const Redis = requireClient('ioredis');
const VERSION = requireClient('ioredis/package.json').version;

/** Deletes the lock `KEYS[1]` only if it still holds our token `ARGV[1]` (the usual release). */
const RELEASE_LOCK = 'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end';

/** The replies of an ioredis pipeline or transaction ([[err, reply], ...]); throws the first error. */
function replies(results) {
  check(results !== null, 'the transaction was aborted');
  const failed = results.find(([err]) => err);
  if (failed) throw failed[0];
  return results.map(([, reply]) => reply);
}

/** The steps (the shared ones in steps.mjs), with ioredis's calls. */
class App extends Steps {
  /** A client with the library's defaults (the lock script defined); it connects on its own. */
  client() {
    const c = new Redis({ host: '127.0.0.1', port: this.port });
    c.on('error', (err) => this.errors.push(describe(err)));
    c.defineCommand('releaseLock', { numberOfKeys: 1, lua: RELEASE_LOCK });
    this.open.push(c);
    return c;
  }

  close(c) {
    c.disconnect();
  }

  async acquire(c, name, token) {
    return (await c.set(name, token, 'PX', 10_000, 'NX')) === 'OK';
  }

  rpush(c, key, value) {
    return c.rpush(key, value);
  }

  blmove(c, src, dst) {
    return c.blmove(src, dst, 'LEFT', 'RIGHT', 1);
  }

  llen(c, key) {
    return c.llen(key);
  }

  lrange(c, key) {
    return c.lrange(key, 0, -1);
  }

  async subscribe(sub, channel, onMessage) {
    sub.on('message', (ch, message) => ch === channel && onMessage(message));
    await sub.subscribe(channel);
  }

  async step_connect() {
    const c = this.client();
    check((await c.ping()) === 'PONG', 'PING did not answer PONG');
    const k = this.key('hello');
    check((await c.set(k, 'world')) === 'OK', 'SET did not answer OK');
    const got = await c.get(k);
    check(got === 'world', `GET ${k} = ${got}`);
    // ioredis records the protocol it settled on (3, or 2 after a fallback).
    return { writes: { [k]: 'world' }, details: { protocol: c.condition?.protocol ?? c.options.protocol } };
  }

  /** A non-transactional pipeline of 100 commands over keys in many slots. */
  async step_pipeline() {
    const c = this.client();
    const counter = this.key('pipe:counter');
    const pipe = c.pipeline();
    for (let i = 0; i < 40; i++) pipe.set(this.key(`pipe:${i}`), `v${i}`);
    for (let i = 0; i < 40; i++) pipe.incr(counter);
    for (let i = 0; i < 20; i++) pipe.get(this.key(`pipe:${i}`));
    const got = replies(await pipe.exec());
    check(got.length === 100, `${got.length} replies to 100 commands`);
    check(got.slice(0, 40).every((r) => r === 'OK'), `SET replies: ${got.slice(0, 40)}`);
    check(same(got.slice(40, 80), Array.from({ length: 40 }, (_, i) => i + 1)), `INCR replies: ${got.slice(40, 80)}`);
    check(same(got.slice(80), Array.from({ length: 20 }, (_, i) => `v${i}`)), `GET replies: ${got.slice(80)}`);
    const writes = { [counter]: '40' };
    for (let i = 0; i < 40; i++) writes[this.key(`pipe:${i}`)] = `v${i}`;
    return { writes };
  }

  /** multi().exec() five times on keys of one slot. */
  async step_transaction() {
    const c = this.client();
    const [a, b, s] = ['a', 'b', 'c'].map((n) => this.slotKey('tx', n));
    for (let n = 1; n <= 5; n++) {
      const got = replies(await c.multi().incr(a).incrby(b, 2).set(s, `round-${n}`).get(a).exec());
      check(same(got, [n, 2 * n, 'OK', String(n)]), `round ${n}: EXEC replied ${JSON.stringify(got)}`);
    }
    return { writes: { [a]: '5', [b]: '10', [s]: 'round-5' } };
  }

  /** `rounds` optimistic increments of `k` on the dedicated client `w`; `onConflict` per retry. */
  async watchLoop(w, k, rounds, onConflict) {
    for (let i = 0; i < rounds; i++) {
      for (let attempt = 0; ; attempt++) {
        if (attempt === 100) throw new StepFailed('100 conflicts in a row');
        await w.watch(k);
        const current = Number((await w.get(k)) ?? 0);
        // exec() resolves to null when a watched key changed.
        const result = await w.multi().set(k, String(current + 1)).exec();
        if (result !== null) {
          replies(result);
          break;
        }
        onConflict();
      }
    }
  }

  /** A full SCAN MATCH iteration (scanStream) finds every key written. */
  async step_scan() {
    const c = this.client();
    const writes = {};
    for (let i = 0; i < 50; i++) writes[this.key(`scan:${i}`)] = `s${i}`;
    const pipe = c.pipeline();
    for (const [k, v] of Object.entries(writes)) pipe.set(k, v);
    replies(await pipe.exec());
    const found = new Set();
    for await (const keys of c.scanStream({ match: this.key('scan:*'), count: 7 })) {
      for (const k of keys) found.add(k);
    }
    const want = Object.keys(writes);
    const missing = want.filter((k) => !found.has(k));
    const extra = [...found].filter((k) => !(k in writes));
    check(missing.length === 0 && extra.length === 0, `SCAN missed ${missing}; extra ${extra}`);
    return { writes };
  }

  /** Redis.Cluster pointed at the port: SET, GET and INCR on keys in different slots. */
  async step_cluster() {
    const cluster = new Redis.Cluster([{ host: '127.0.0.1', port: this.port }]);
    cluster.on('error', (err) => this.errors.push(describe(err)));
    this.open.push(cluster);
    const writes = {};
    const slots = new Set();
    for (let i = 0; i < 12; i++) {
      const k = this.key(`cluster:${i}`);
      const counter = this.key(`cluster:counter:${i}`);
      slots.add(keySlot(k));
      check((await cluster.set(k, `c${i}`)) === 'OK', `SET ${k} did not answer OK`);
      const got = await cluster.get(k);
      check(got === `c${i}`, `GET ${k} = ${got}`);
      check((await cluster.incr(counter)) === 1 && (await cluster.incrby(counter, 4)) === 5, `INCR ${counter}`);
      Object.assign(writes, { [k]: `c${i}`, [counter]: '5' });
    }
    check(slots.size > 1, 'the keys did not span slots');
    const nodes = cluster.nodes('master').map((n) => `${n.options.host}:${n.options.port}`);
    return { writes, details: { slots: slots.size, nodes } };
  }
}

const args = parseCommandLine();
await runSteps(new App(args.port, args.prefix), `ioredis ${VERSION}`, args.steps);
