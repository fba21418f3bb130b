// An application's-eye check of one Redis endpoint with ioredis in its DEFAULT configuration
// (ioredis 6 opens with HELLO 3 and falls back to RESP2 on NOPROTO). Run by tests/app_clients.rs
// against plain Redis and against `cachemig proxy`; see harness.mjs for the arguments and the
// output.

import { StepFailed, WAIT_MS, alongside, check, describe, keySlot, parseCommandLine, requireClient, runSteps, same, sleep } from './harness.mjs';

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

/** The steps, sharing the endpoint, the key prefix and the clients to close. */
class App {
  constructor(port, prefix) {
    this.port = port;
    this.prefix = prefix;
    this.errors = [];
    this.open = [];
  }

  /** A key under the prefix. */
  key(name) {
    return `${this.prefix}${name}`;
  }

  /** A key under the prefix whose hash tag keeps every key of `group` in one slot. */
  slotKey(group, name) {
    return `${this.prefix}{${group}}:${name}`;
  }

  /** A client with the library's defaults (the lock script defined); it connects on its own. */
  client() {
    const c = new Redis({ host: '127.0.0.1', port: this.port });
    c.on('error', (err) => this.errors.push(describe(err)));
    c.defineCommand('releaseLock', { numberOfKeys: 1, lua: RELEASE_LOCK });
    this.open.push(c);
    return c;
  }

  /** Closes every client the step opened. */
  async cleanup() {
    for (const c of this.open.splice(0)) c.disconnect();
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

  /** A WATCH/MULTI/EXEC increment retried on conflict, racing INCRs from another client. */
  async step_watch() {
    const k = this.key('watch:counter');
    const rounds = 30;
    const otherRounds = 30;
    const [w, other] = [this.client(), this.client()];
    let conflicts = 0;
    const racing = async () => {
      for (let i = 0; i < otherRounds; i++) {
        await other.incr(k);
        await sleep(2);
      }
    };
    await alongside('concurrent INCR', racing, () => this.watchLoop(w, k, rounds, () => conflicts++));
    const got = await w.get(k);
    check(got === String(rounds + otherRounds), `${k} = ${got}, expected ${rounds + otherRounds}`);
    return { writes: { [k]: got }, details: { conflicts } };
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

  /** A lock taken with SET NX PX and released by a Lua script (defineCommand: EVALSHA, EVAL on
   * NOSCRIPT), two clients taking turns to read-modify-write a counter under it. */
  async step_lock() {
    const name = this.key('lock');
    const counter = this.key('lock:counter');
    const perWorker = 10;
    const worker = async (id) => {
      const c = this.client();
      for (let i = 0; i < perWorker; i++) {
        const token = `${id}-${i}-${Math.random()}`;
        const deadline = Date.now() + WAIT_MS;
        while ((await c.set(name, token, 'PX', 10_000, 'NX')) !== 'OK') {
          check(Date.now() < deadline, 'could not acquire the lock');
          await sleep(5);
        }
        const value = Number((await c.get(counter)) ?? 0);
        await sleep(1);
        await c.set(counter, String(value + 1));
        const released = await c.releaseLock(name, token);
        check(released === 1, `the release script returned ${released}`);
      }
    };
    await Promise.all([worker('a'), worker('b')]);
    const c = this.client();
    const got = await c.get(counter);
    check(got === String(2 * perWorker), `${counter} = ${got}: the lock let an update through`);
    check((await c.exists(name)) === 0, 'the lock key is still there after release');
    return { writes: { [counter]: got, [name]: null } };
  }

  /** A worker takes jobs with BLMOVE while another client fills the queue; each exactly once. */
  async step_blmove() {
    const queue = this.slotKey('queue', 'jobs');
    const done = this.slotKey('queue', 'done');
    const jobs = Array.from({ length: 60 }, (_, i) => `job-${i}`);
    const [w, producer] = [this.client(), this.client()];
    const produce = async () => {
      for (let i = 0; i < jobs.length; i++) {
        await producer.rpush(queue, jobs[i]);
        if (i % 10 === 9) await sleep(50); // let the worker drain the queue and block
      }
    };
    const taken = [];
    const work = async () => {
      const deadline = Date.now() + WAIT_MS;
      while (taken.length < jobs.length && Date.now() < deadline) {
        const job = await w.blmove(queue, done, 'LEFT', 'RIGHT', 1);
        if (job !== null) taken.push(job);
      }
    };
    await alongside('producer', produce, work);
    check(same(taken, jobs), `took ${taken.length} of ${jobs.length} jobs, in this order: ${taken}`);
    check((await w.llen(queue)) === 0, 'jobs left in the queue');
    const inDone = await w.lrange(done, 0, -1);
    check(same(inDone, jobs), `done list holds ${inDone}`);
    return { writes: { [queue]: null, [done]: jobs } };
  }

  /** A subscriber receives every message published by another client, in order. */
  async step_pubsub() {
    const channel = this.key('channel');
    const messages = Array.from({ length: 50 }, (_, i) => `m-${i}`);
    const [sub, pub] = [this.client(), this.client()];
    const got = [];
    sub.on('message', (ch, message) => ch === channel && got.push(message));
    await sub.subscribe(channel);
    const receivers = [];
    for (const m of messages) receivers.push(await pub.publish(channel, m));
    check(receivers.every((n) => n >= 1), `PUBLISH reached ${receivers} subscribers`);
    const deadline = Date.now() + WAIT_MS;
    while (got.length < messages.length && Date.now() < deadline) await sleep(10);
    await sub.unsubscribe(channel);
    check(same(got, messages), `received ${got.length} of ${messages.length}: ${got}`);
    return { writes: {} };
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
