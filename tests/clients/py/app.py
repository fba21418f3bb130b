#!/usr/bin/env python3
"""An application's-eye check of one Redis endpoint with redis-py, in its DEFAULT configuration.

Run by tests/app_clients.rs with the Python of a venv made by scripts/install-clients (redis-py
8.x, which speaks RESP3 by default, or 5.x, which speaks RESP2), against plain Redis (to prove
this script right) and against `cachemig proxy`:

    app.py --port 6400 --prefix token:app:py8: --steps connect,pipeline,transaction

Every key it touches starts with --prefix (so the plan's key patterns decide whether it
migrates). Each step prints one JSON line, {"step": NAME, "ok": true|false, "error": TEXT|null},
possibly with details; the last line is {"writes": {KEY: EXPECTED, ...}}, the model of every
acknowledged write of the steps that passed: a string is a string key's value, a list a list
key's elements in order, null a key that must not exist. Exit code 1 when any step failed.
"""

import argparse
import json
import sys
import threading
import time

import redis
from redis.cluster import RedisCluster

# Every socket read or connect gives up after this many seconds, so a step never hangs.
SOCKET_TIMEOUT = 20
# Upper bound for waits on other threads (a producer, a competing writer, a subscriber).
WAIT = 30.0


class StepFailed(Exception):
    """A check of a step did not hold."""


def check(condition, message):
    """Fails the current step with `message` unless `condition` holds."""
    if not condition:
        raise StepFailed(message)


def protocol(client):
    """The RESP version the client's connections speak (2 or 3)."""
    conn = client.connection_pool.get_connection()
    try:
        return int(conn.protocol)
    finally:
        client.connection_pool.release(conn)


class App:
    """The steps, sharing the endpoint, the key prefix and the model of acknowledged writes."""

    def __init__(self, port, prefix):
        self.port = port
        self.prefix = prefix

    def key(self, name):
        """A key under the prefix."""
        return f"{self.prefix}{name}"

    def slot_key(self, group, name):
        """A key under the prefix whose hash tag puts every key of `group` in one slot (a
        transaction or a BLMOVE must not cross slots on a cluster)."""
        return f"{self.prefix}{{{group}}}:{name}"

    def client(self):
        """A client as an application makes it: library defaults (protocol included)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )

    # Each step returns (writes, details): the keys it wrote with their expected values, and
    # extra facts worth printing. A failed check raises.

    def step_connect(self):
        """PING, then SET and GET one key."""
        r = self.client()
        check(r.ping() is True, "PING did not answer PONG")
        k = self.key("hello")
        check(r.set(k, "world") is True, "SET did not answer OK")
        got = r.get(k)
        check(got == "world", f"GET {k} = {got!r}, expected 'world'")
        return {k: "world"}, {"protocol": protocol(r)}

    def step_pipeline(self):
        """A non-transactional pipeline of 100 commands over keys in many slots."""
        r = self.client()
        pipe = r.pipeline(transaction=False)
        counter = self.key("pipe:counter")
        for i in range(40):
            pipe.set(self.key(f"pipe:{i}"), f"v{i}")
        for _ in range(40):
            pipe.incr(counter)
        for i in range(20):
            pipe.get(self.key(f"pipe:{i}"))
        replies = pipe.execute()
        check(len(replies) == 100, f"{len(replies)} replies to 100 commands")
        check(all(x is True for x in replies[:40]), f"SET replies: {replies[:40]}")
        check(replies[40:80] == list(range(1, 41)), f"INCR replies: {replies[40:80]}")
        check(replies[80:] == [f"v{i}" for i in range(20)], f"GET replies: {replies[80:]}")
        writes = {self.key(f"pipe:{i}"): f"v{i}" for i in range(40)}
        writes[counter] = "40"
        return writes, {}

    def step_transaction(self):
        """redis-py's default pipeline() (MULTI/EXEC), five times, on keys of one slot."""
        r = self.client()
        a, b, c = (self.slot_key("tx", n) for n in ("a", "b", "c"))
        for n in range(1, 6):
            pipe = r.pipeline()  # transaction=True is the default
            pipe.incr(a).incrby(b, 2).set(c, f"round-{n}").get(a)
            replies = pipe.execute()
            check(replies == [n, 2 * n, True, str(n)], f"round {n}: EXEC replied {replies}")
        return {a: "5", b: "10", c: "round-5"}, {}

    def step_watch(self):
        """A WATCH/MULTI/EXEC increment retried on conflict, racing plain INCRs from another
        connection; no increment may be lost."""
        k = self.key("watch:counter")
        rounds, other_rounds = 30, 30
        errors = []

        def other():
            try:
                r2 = self.client()
                for _ in range(other_rounds):
                    r2.incr(k)
                    time.sleep(0.002)
            except Exception as e:  # reported by the main thread
                errors.append(f"concurrent INCR: {type(e).__name__}: {e}")

        thread = threading.Thread(target=other)
        thread.start()
        r = self.client()
        conflicts = 0
        try:
            for _ in range(rounds):
                conflicts += self.watched_increment(r, k)
        finally:
            thread.join(WAIT)
        check(not thread.is_alive(), "the concurrent writer did not finish")
        check(not errors, "; ".join(errors))
        got = r.get(k)
        check(got == str(rounds + other_rounds), f"{k} = {got!r}, expected {rounds + other_rounds}")
        return {k: got}, {"conflicts": conflicts}

    def watched_increment(self, r, k):
        """Increments `k` by WATCH, GET, MULTI, SET, EXEC, retried on conflict; the conflicts."""
        with r.pipeline() as pipe:
            for attempt in range(100):
                try:
                    pipe.watch(k)
                    current = int(pipe.get(k) or 0)
                    pipe.multi()
                    pipe.set(k, current + 1)
                    pipe.execute()
                    return attempt
                except redis.WatchError:
                    continue
        raise StepFailed("100 conflicts in a row")

    def step_lock(self):
        """redis-py's Lock (SET NX PX to acquire, a Lua script by EVALSHA to release), two
        threads taking turns to read-modify-write a counter under it."""
        r = self.client()
        name, counter = self.key("lock"), self.key("lock:counter")
        per_thread = 10
        errors = []

        def worker():
            try:
                for _ in range(per_thread):
                    lock = r.lock(name, timeout=10, blocking_timeout=WAIT)
                    if not lock.acquire():
                        errors.append("could not acquire the lock")
                        return
                    try:
                        value = int(r.get(counter) or 0)
                        time.sleep(0.001)
                        r.set(counter, value + 1)
                    finally:
                        lock.release()
            except Exception as e:  # reported by the main thread
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 2)
        check(not any(t.is_alive() for t in threads), "a lock worker did not finish")
        check(not errors, "; ".join(errors))
        got = r.get(counter)
        check(got == str(2 * per_thread), f"{counter} = {got!r}: the lock let an update through")
        check(r.exists(name) == 0, "the lock key is still there after release")
        return {counter: got, name: None}, {}

    def step_blmove(self):
        """A worker takes jobs with BLMOVE (blocking when the queue is empty) while another
        client fills the queue; every job is taken exactly once, in order."""
        queue, done = self.slot_key("queue", "jobs"), self.slot_key("queue", "done")
        jobs = [f"job-{i}" for i in range(60)]
        errors = []

        def producer():
            try:
                r2 = self.client()
                for i, job in enumerate(jobs):
                    r2.rpush(queue, job)
                    if i % 10 == 9:
                        time.sleep(0.05)  # let the worker drain the queue and block
            except Exception as e:  # reported by the main thread
                errors.append(f"producer: {type(e).__name__}: {e}")

        r = self.client()
        thread = threading.Thread(target=producer)
        thread.start()
        taken, deadline = [], time.monotonic() + WAIT
        try:
            while len(taken) < len(jobs) and time.monotonic() < deadline and not errors:
                job = r.blmove(queue, done, 1, "LEFT", "RIGHT")
                if job is not None:
                    taken.append(job)
        finally:
            thread.join(WAIT)
        check(not errors, "; ".join(errors))
        check(taken == jobs, f"took {len(taken)} of {len(jobs)} jobs, in this order: {taken}")
        check(r.llen(queue) == 0, "jobs left in the queue")
        in_done = r.lrange(done, 0, -1)
        check(in_done == jobs, f"done list holds {in_done}")
        return {queue: None, done: jobs}, {}

    def step_pubsub(self):
        """A subscriber receives every message published by another client, in order."""
        channel = self.key("channel")
        messages = [f"m-{i}" for i in range(50)]
        sub = self.client().pubsub()
        sub.subscribe(channel)
        deadline = time.monotonic() + WAIT
        confirmed = False
        while not confirmed and time.monotonic() < deadline:
            m = sub.get_message(timeout=1)
            confirmed = m is not None and m["type"] == "subscribe"
        check(confirmed, "no subscribe confirmation")
        publisher = self.client()
        receivers = [publisher.publish(channel, m) for m in messages]
        check(all(n >= 1 for n in receivers), f"PUBLISH reached {receivers} subscribers")
        got = []
        while len(got) < len(messages) and time.monotonic() < deadline:
            m = sub.get_message(timeout=1)
            if m is not None and m["type"] == "message":
                got.append(m["data"])
        sub.unsubscribe(channel)
        sub.close()
        check(got == messages, f"received {len(got)} of {len(messages)}: {got}")
        return {}, {}

    def step_scan(self):
        """A full SCAN MATCH iteration finds every key written."""
        r = self.client()
        keys = {self.key(f"scan:{i}"): f"s{i}" for i in range(50)}
        pipe = r.pipeline(transaction=False)
        for k, v in keys.items():
            pipe.set(k, v)
        pipe.execute()
        found = set(r.scan_iter(match=self.key("scan:*"), count=7))
        check(found == set(keys), f"SCAN found {len(found)} of {len(keys)}; missing "
              f"{sorted(set(keys) - found)}, extra {sorted(found - set(keys))}")
        return keys, {}

    def step_cluster(self):
        """The library's cluster client pointed at the port: SET, GET and INCR on keys in
        different slots."""
        rc = RedisCluster(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )
        writes = {}
        slots = set()
        for i in range(12):
            k, counter = self.key(f"cluster:{i}"), self.key(f"cluster:counter:{i}")
            slots.add(rc.keyslot(k))
            check(rc.set(k, f"c{i}") is True, f"SET {k} did not answer OK")
            got = rc.get(k)
            check(got == f"c{i}", f"GET {k} = {got!r}")
            check(rc.incr(counter) == 1 and rc.incr(counter, 4) == 5, f"INCR {counter}")
            writes.update({k: f"c{i}", counter: "5"})
        check(len(slots) > 1, "the keys did not span slots")
        nodes = [f"{n.host}:{n.port}" for n in rc.get_nodes()]
        rc.close()
        return writes, {"slots": len(slots), "nodes": nodes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the endpoint on 127.0.0.1")
    parser.add_argument("--prefix", required=True, help="every key starts with this")
    parser.add_argument("--steps", required=True, help="comma-separated step names, in order")
    args = parser.parse_args()
    app = App(args.port, args.prefix)
    known = [n[len("step_"):] for n in dir(App) if n.startswith("step_")]
    writes, failed = {}, False
    for step in args.steps.split(","):
        line = {"step": step, "ok": False, "error": None}
        run = getattr(app, f"step_{step}", None)
        if run is None:
            line["error"] = f"unknown step; known: {','.join(sorted(known))}"
        else:
            try:
                step_writes, details = run()
                writes.update(step_writes)
                line.update(ok=True, **details)
            except Exception as e:
                line["error"] = f"{type(e).__name__}: {e}"
        failed |= not line["ok"]
        print(json.dumps(line), flush=True)
    print(json.dumps({"writes": writes, "library": f"redis-py {redis.__version__}"}), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
