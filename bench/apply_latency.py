#!/usr/bin/env python3
"""How fast a route written to the store serves traffic through a running pxd.

  bench/apply_latency.py [--changes N] [--workers N]

Each change writes a route for a new host with the store library (px-store),
then polls that host through pxd every 0.2 ms until it answers 200. Reported:
the distribution of the time from the write's commit (px-store exiting) to
the first 200. Store writes are what pxadmind will do; the path is the same.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from pxtest import PXSTORE, Pxd, Upstream, route  # noqa: E402


def status(port, host):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
    data = b""
    while b"\r\n" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    return int(data.split(b" ")[1]) if data else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    up = Upstream("u")
    px = Pxd(workers=args.workers)
    lat = []
    try:
        for i in range(args.changes):
            host = "h%d.apply.test" % i
            r = subprocess.run([PXSTORE, "--data", px.data, "put-json",
                                json.dumps(route("r%d" % i, [host], [up]))], capture_output=True, text=True)
            t0 = time.monotonic()
            assert r.returncode == 0, r.stderr
            while status(px.port, host) != 200:
                time.sleep(0.0002)
            lat.append((time.monotonic() - t0) * 1000)
    finally:
        px.stop()
        up.stop()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print("route applied and serving, %d changes, %d workers: min %.2f  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms"
          % (len(lat), args.workers, lat[0], q(0.5), q(0.9), q(0.99), lat[-1]))


if __name__ == "__main__":
    main()
