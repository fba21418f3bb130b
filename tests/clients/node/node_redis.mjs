// An application's-eye check of one Redis endpoint with node-redis (npm `redis`) in its DEFAULT
// configuration (RESP3: HELLO 3 on connect). Run by tests/app_clients.rs against plain Redis and
// against `cachemig proxy`; see harness.mjs for the arguments and the output.

import { CONNECT_TIMEOUT_MS, StepFailed, WAIT_MS, check, describe, keySlot, parseCommandLine, requireClient, runSteps, same, sleep, withTimeout } from './harness.mjs';
import { Steps } from './steps.mjs';

const { DEFAULT_RESP, createClient, createCluster, defineScript, WatchError } = requireClient('redis');
const VERSION = requireClient('redis/package.json').version;

/** Deletes the lock `KEYS[1]` only if it still holds our token `ARGV[1]` (the usual release). */
const releaseLock = defineScript({
  NUMBER_OF_KEYS: 1,
  SCRIPT: 'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end',
  parseCommand(parser, key, token) {
    parser.pushKey(key);
    parser.push(token);
  },
  transformReply: undefined,
});

/** The steps (the shared ones in steps.mjs), with node-redis's calls. */
class App extends Steps {
  /** A connected client with the library's defaults (the lock script registered). */
  async client() {
    const c = createClient({ url: this.url, scripts: { releaseLock } });
    c.on('error', (err) => this.errors.push(describe(err)));
    this.open.push(c);
    await withTimeout(c.connect(), CONNECT_TIMEOUT_MS, 'connect');
    return c;
  }

  close(c) {
    c.destroy();
  }

  async acquire(c, name, token) {
    return (await c.set(name, token, { NX: true, PX: 10_000 })) === 'OK';
  }

  rpush(c, key, value) {
    return c.rPush(key, value);
  }

  blmove(c, src, dst) {
    return c.blMove(src, dst, 'LEFT', 'RIGHT', 1);
  }

  llen(c, key) {
    return c.lLen(key);
  }

  lrange(c, key) {
    return c.lRange(key, 0, -1);
  }

  subscribe(sub, channel, onMessage) {
    return sub.subscribe(channel, onMessage);
  }

  async step_connect() {
    const c = await this.client();
    check((await c.ping()) === 'PONG', 'PING did not answer PONG');
    const k = this.key('hello');
    check((await c.set(k, 'world')) === 'OK', 'SET did not answer OK');
    const got = await c.get(k);
    check(got === 'world', `GET ${k} = ${got}`);
    return { writes: { [k]: 'world' }, details: { protocol: c.options?.RESP ?? DEFAULT_RESP } };
  }

  /** A non-transactional pipeline of 100 commands over keys in many slots. */
  async step_pipeline() {
    const c = await this.client();
    const counter = this.key('pipe:counter');
    const batch = c.multi();
    for (let i = 0; i < 40; i++) batch.set(this.key(`pipe:${i}`), `v${i}`);
    for (let i = 0; i < 40; i++) batch.incr(counter);
    for (let i = 0; i < 20; i++) batch.get(this.key(`pipe:${i}`));
    const replies = await batch.execAsPipeline();
    check(replies.length === 100, `${replies.length} replies to 100 commands`);
    check(replies.slice(0, 40).every((r) => r === 'OK'), `SET replies: ${replies.slice(0, 40)}`);
    check(same(replies.slice(40, 80), Array.from({ length: 40 }, (_, i) => i + 1)), `INCR replies: ${replies.slice(40, 80)}`);
    check(same(replies.slice(80), Array.from({ length: 20 }, (_, i) => `v${i}`)), `GET replies: ${replies.slice(80)}`);
    const writes = { [counter]: '40' };
    for (let i = 0; i < 40; i++) writes[this.key(`pipe:${i}`)] = `v${i}`;
    return { writes };
  }

  /** multi().exec() five times on keys of one slot. */
  async step_transaction() {
    const c = await this.client();
    const [a, b, s] = ['a', 'b', 'c'].map((n) => this.slotKey('tx', n));
    for (let n = 1; n <= 5; n++) {
      const replies = await c.multi().incr(a).incrBy(b, 2).set(s, `round-${n}`).get(a).exec();
      check(same(replies, [n, 2 * n, 'OK', String(n)]), `round ${n}: EXEC replied ${JSON.stringify(replies)}`);
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
        try {
          await w.multi().set(k, String(current + 1)).exec();
          break;
        } catch (err) {
          if (!(err instanceof WatchError)) throw err;
          onConflict();
        }
      }
    }
  }

  /** A full SCAN MATCH iteration finds every key written. */
  async step_scan() {
    const c = await this.client();
    const writes = {};
    for (let i = 0; i < 50; i++) writes[this.key(`scan:${i}`)] = `s${i}`;
    const batch = c.multi();
    for (const [k, v] of Object.entries(writes)) batch.set(k, v);
    await batch.execAsPipeline();
    const found = new Set();
    for await (const keys of c.scanIterator({ MATCH: this.key('scan:*'), COUNT: 7 })) {
      for (const k of keys) found.add(k);
    }
    const want = Object.keys(writes);
    const missing = want.filter((k) => !found.has(k));
    const extra = [...found].filter((k) => !(k in writes));
    check(missing.length === 0 && extra.length === 0, `SCAN missed ${missing}; extra ${extra}`);
    return { writes };
  }

  /**
   * The opt-in client-side cache (RESP3 + clientSideCache: CLIENT TRACKING on connect). Against
   * Redis a write by another client invalidates the cached value; where CLIENT TRACKING is refused
   * (the proxy), connecting must fail with that refusal, never serve a stale value.
   */
  async step_tracking() {
    const k = this.key('tracking');
    const other = await this.client();
    await other.set(k, 'v1');
    const seen = [];
    const cached = createClient({ url: this.url, RESP: 3, clientSideCache: { ttl: 0, maxEntries: 0 } });
    cached.on('error', (err) => seen.push(describe(err)));
    this.open.push(cached);
    try {
      await withTimeout(cached.connect(), CONNECT_TIMEOUT_MS, 'connect');
    } catch (e) {
      const refusal = [describe(e), ...seen].find((m) => m.includes('CLIENT TRACKING'));
      check(refusal !== undefined, `connect failed without naming CLIENT TRACKING: ${describe(e)}; ${seen}`);
      return { writes: { [k]: 'v1' }, details: { tracking: 'refused', refusal, connect: describe(e) } };
    }
    check((await cached.get(k)) === 'v1' && (await cached.get(k)) === 'v1', 'the cached read');
    await other.set(k, 'v2');
    const deadline = Date.now() + WAIT_MS;
    while ((await cached.get(k)) !== 'v2') {
      check(Date.now() < deadline, 'the cached value was never invalidated');
      await sleep(10);
    }
    return { writes: { [k]: 'v2' }, details: { tracking: 'on' } };
  }

  /** createCluster pointed at the port: SET, GET and INCR on keys in different slots. */
  async step_cluster() {
    const cluster = createCluster({ rootNodes: [{ url: this.url }] });
    cluster.on('error', (err) => this.errors.push(describe(err)));
    this.open.push(cluster);
    await withTimeout(cluster.connect(), CONNECT_TIMEOUT_MS, 'connect');
    const writes = {};
    const slots = new Set();
    for (let i = 0; i < 12; i++) {
      const k = this.key(`cluster:${i}`);
      const counter = this.key(`cluster:counter:${i}`);
      slots.add(keySlot(k));
      check((await cluster.set(k, `c${i}`)) === 'OK', `SET ${k} did not answer OK`);
      const got = await cluster.get(k);
      check(got === `c${i}`, `GET ${k} = ${got}`);
      check((await cluster.incr(counter)) === 1 && (await cluster.incrBy(counter, 4)) === 5, `INCR ${counter}`);
      Object.assign(writes, { [k]: `c${i}`, [counter]: '5' });
    }
    check(slots.size > 1, 'the keys did not span slots');
    const nodes = cluster.masters.map((m) => `${m.host}:${m.port}`);
    return { writes, details: { slots: slots.size, nodes } };
  }
}

const args = parseCommandLine();
await runSteps(new App(args.port, args.prefix), `node-redis ${VERSION}`, args.steps);
