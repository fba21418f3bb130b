// The steps node_redis.mjs and ioredis.mjs share: the application logic is the same, only a few
// calls differ between the libraries. A script's App extends Steps and supplies those calls:
//
//   client()                        a client with the library's defaults (may be async)
//   close(c)                        closes a client
//   watchLoop(w, k, rounds, onConflict)   WATCH/GET/MULTI/SET/EXEC increments, retried on conflict
//   acquire(c, name, token)         SET name token NX PX 10000: true when taken
//   rpush(c, key, value), blmove(c, src, dst), llen(c, key), lrange(c, key)
//   subscribe(sub, channel, onMessage)

import { WAIT_MS, alongside, check, same, sleep } from './harness.mjs';

/** The steps, sharing the endpoint, the key prefix and the clients to close. */
export class Steps {
  constructor(port, prefix) {
    this.port = port;
    this.prefix = prefix;
    this.url = `redis://127.0.0.1:${port}`;
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

  /** Closes every client the step opened. */
  async cleanup() {
    for (const c of this.open.splice(0)) this.close(c);
  }

  /** A WATCH/MULTI/EXEC increment retried on conflict, racing INCRs from another client. */
  async step_watch() {
    const k = this.key('watch:counter');
    const rounds = 30;
    const otherRounds = 30;
    const [w, other] = await Promise.all([this.client(), this.client()]);
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

  /** A lock taken with SET NX PX and released by a Lua script (EVALSHA, EVAL on NOSCRIPT), two
   * clients taking turns to read-modify-write a counter under it. */
  async step_lock() {
    const name = this.key('lock');
    const counter = this.key('lock:counter');
    const perWorker = 10;
    const worker = async (id) => {
      const c = await this.client();
      for (let i = 0; i < perWorker; i++) {
        const token = `${id}-${i}-${Math.random()}`;
        const deadline = Date.now() + WAIT_MS;
        while (!(await this.acquire(c, name, token))) {
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
    const c = await this.client();
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
    const [w, producer] = await Promise.all([this.client(), this.client()]);
    const produce = async () => {
      for (let i = 0; i < jobs.length; i++) {
        await this.rpush(producer, queue, jobs[i]);
        if (i % 10 === 9) await sleep(50); // let the worker drain the queue and block
      }
    };
    const taken = [];
    const work = async () => {
      const deadline = Date.now() + WAIT_MS;
      while (taken.length < jobs.length && Date.now() < deadline) {
        const job = await this.blmove(w, queue, done);
        if (job !== null) taken.push(job);
      }
    };
    await alongside('producer', produce, work);
    check(same(taken, jobs), `took ${taken.length} of ${jobs.length} jobs, in this order: ${taken}`);
    check((await this.llen(w, queue)) === 0, 'jobs left in the queue');
    const inDone = await this.lrange(w, done);
    check(same(inDone, jobs), `done list holds ${inDone}`);
    return { writes: { [queue]: null, [done]: jobs } };
  }

  /** A subscriber receives every message published by another client, in order. */
  async step_pubsub() {
    const channel = this.key('channel');
    const messages = Array.from({ length: 50 }, (_, i) => `m-${i}`);
    const [sub, pub] = await Promise.all([this.client(), this.client()]);
    const got = [];
    await this.subscribe(sub, channel, (message) => got.push(message));
    const receivers = [];
    for (const m of messages) receivers.push(await pub.publish(channel, m));
    check(receivers.every((n) => n >= 1), `PUBLISH reached ${receivers} subscribers`);
    const deadline = Date.now() + WAIT_MS;
    while (got.length < messages.length && Date.now() < deadline) await sleep(10);
    await sub.unsubscribe(channel);
    check(same(got, messages), `received ${got.length} of ${messages.length}: ${got}`);
    return { writes: {} };
  }
}
