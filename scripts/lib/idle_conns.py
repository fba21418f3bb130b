#!/usr/bin/env python3
"""Opens N idle client connections to a proxy and holds them until stdin closes.

Each connection sends one PING and reads its PONG first, so the proxy has accepted and served it
(its per-connection state exists). Prints "ready N" once every connection answered.
Usage: idle_conns.py HOST PORT N
"""
import resource
import selectors
import socket
import sys


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))
    conns = []
    # In waves, so the proxy's listen backlog never overflows.
    for start in range(0, count, 500):
        wave = []
        for _ in range(min(500, count - start)):
            s = socket.create_connection((host, port))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            wave.append(s)
        sel = selectors.DefaultSelector()
        for s in wave:
            sel.register(s, selectors.EVENT_READ)
        waiting = len(wave)
        while waiting:
            for key, _ in sel.select(timeout=30):
                reply = key.fileobj.recv(64)
                if not reply.startswith(b"+PONG"):
                    sys.exit(f"unexpected reply {reply!r}")
                sel.unregister(key.fileobj)
                waiting -= 1
        conns.extend(wave)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
