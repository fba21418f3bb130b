// What the Node client scripts (node_redis.mjs, ioredis.mjs) share: arguments, loading the pinned
// libraries, the step runner and its output, and small helpers (the steps whose logic is the same
// in both libraries are in steps.mjs).
//
// Usage of a script: node SCRIPT --port 6400 --prefix token:app:x: --steps connect,pipeline
//
// Each step prints one JSON line, {"step": NAME, "ok": true|false, "error": TEXT|null}, possibly
// with details; the last line is {"writes": {KEY: EXPECTED, ...}}, the model of every
// acknowledged write of the steps that passed: a string is a string key's value, a list a list
// key's elements in order, null a key that must not exist. Exit code 1 when any step failed.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Upper bound for waits on other clients (a producer, a competing writer, a subscriber). */
export const WAIT_MS = 30_000;
/** A step that has not finished after this long fails. */
export const STEP_TIMEOUT_MS = 60_000;
/** A client that has not connected after this long fails its step (node-redis retries forever). */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Loads a library installed by scripts/install-clients: from $CACHEMIG_CLIENTS_DIR/node (set by
 * tests/app_clients.rs), else from the repository's target/clients/node.
 */
export function requireClient(name) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const clients = process.env.CACHEMIG_CLIENTS_DIR ?? path.join(here, '../../../target/clients');
  return createRequire(path.join(clients, 'node', 'package.json'))(name);
}

/** A failed check of a step. */
export class StepFailed extends Error {
  constructor(message) {
    super(message);
    this.name = 'StepFailed';
  }
}

/** Fails the current step with `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new StepFailed(message);
}

/** `promise`, or a StepFailed naming `what` if it has not settled after `ms` milliseconds. */
export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepFailed(`${what}: timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `task` (an async function) in the background. The promise returned never rejects: it
 * resolves to the task's error, or null, so a step that fails first leaves no unhandled rejection
 * behind and can still wait for the task to end.
 */
export function background(task) {
  return task().then(
    () => null,
    (err) => err,
  );
}

/**
 * Runs `main` while `task` runs alongside (both async functions, e.g. a worker and a producer)
 * and waits for both. Throws `main`'s error first, else `task`'s (named by `label`); returns what
 * `main` returned.
 */
export async function alongside(label, task, main) {
  const [mine, theirs] = await Promise.all([
    main().then(
      (value) => ({ value }),
      (error) => ({ error }),
    ),
    background(task),
  ]);
  if (mine.error) throw mine.error;
  if (theirs) throw new StepFailed(`${label}: ${describe(theirs)}`);
  return mine.value;
}

/** Whether two JSON-like values are equal. */
export const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** The Redis Cluster hash slot of `key` (CRC16/XMODEM of the hash tag or the key, mod 16384). */
export function keySlot(key) {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** A short text for any thrown value. */
export function describe(err) {
  if (err instanceof Error) return `${err.name || err.constructor?.name}: ${err.message}`;
  return String(err);
}

/** The command line: {port, prefix, steps}. */
export function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      prefix: { type: 'string' },
      steps: { type: 'string' },
    },
  });
  for (const name of ['port', 'prefix', 'steps']) {
    if (values[name] === undefined) {
      console.error(`missing --${name}`);
      process.exit(2);
    }
  }
  return { port: Number(values.port), prefix: values.prefix, steps: values.steps.split(',') };
}

/**
 * Runs the named steps of `app` in order and exits. A step is a method `step_NAME` returning
 * `{writes, details}`; `app.errors` (client 'error' events) is added to a failure's message, and
 * `app.cleanup()` closes what a step left open.
 */
export async function runSteps(app, library, steps) {
  // A stray rejection (a client failing after its step gave up) must not end the run.
  process.on('unhandledRejection', (err) => console.error(`unhandled rejection: ${describe(err)}`));
  const writes = {};
  let failed = false;
  for (const step of steps) {
    const line = { step, ok: false, error: null };
    const run = app[`step_${step}`];
    app.errors.length = 0;
    if (typeof run !== 'function') {
      const known = Object.getOwnPropertyNames(Object.getPrototypeOf(app))
        .filter((n) => n.startsWith('step_'))
        .map((n) => n.slice(5));
      line.error = `unknown step; known: ${known.sort().join(',')}`;
    } else {
      try {
        const result = await withTimeout(run.call(app), STEP_TIMEOUT_MS, 'the step');
        Object.assign(writes, result.writes);
        Object.assign(line, { ok: true }, result.details);
      } catch (err) {
        const seen = [...new Set(app.errors)].slice(0, 3);
        line.error = describe(err) + (seen.length ? ` (client errors: ${seen.join('; ')})` : '');
      } finally {
        await app.cleanup().catch(() => {});
      }
    }
    failed ||= !line.ok;
    console.log(JSON.stringify(line));
  }
  console.log(JSON.stringify({ writes, library }));
  // A client that never connected may still be retrying in the background: exit regardless.
  process.exit(failed ? 1 : 0);
}
