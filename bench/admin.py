#!/usr/bin/env python3
"""Control-plane measurements: px's own numbers, no peers.

  bench/admin.py [--changes N] [--routes N]

1. pxctl route add → the route serves through a running pxd (2 workers): the
   distribution over N changes, measured from pxctl's start (so it includes the
   pxctl process, the API call and the commit) to the first 200.
2. pxctl import of a document with --routes routes: wall time, then the time
   until pxd serves the last of them.
3. pxd requests/s with those routes in the store against 1 route, interleaved
   rounds in one run (wrk -c64, pxd pinned to core 0, wrk and upstream to core 1).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from pxtest import PXCTL, PXD, Admind, Pxd, Upstream, get  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def wrk_rps(port, host, seconds, core="1", connections=64):
    """wrk's requests/s against 127.0.0.1:port with this Host, one thread pinned to `core`."""
    out = subprocess.run(["taskset", "-c", core, "wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds,
                          "-H", "Host: " + host,
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    up = Upstream("u")
    px = Pxd(workers=2)
    adm = Admind(data=px.data, pxd_status=px.status_file, tcp=False)
    env = dict(os.environ, PX_ADMIN_SOCKET=adm.socket)
    def changes(n, tag):
        lat = []
        for i in range(n):
            host = "%s%d.bench.test" % (tag, i)
            t0 = time.monotonic()
            subprocess.run([PXCTL, "route", "add", "%s%d" % (tag, i), "--host", host, "--upstream", up.url], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            while get(px.port, "/", host=host).status != 200:
                time.sleep(0.0002)
            lat.append((time.monotonic() - t0) * 1000)
        return "min %.1f  p50 %.1f  p90 %.1f  p99 %.1f  max %.1f ms" % (
            min(lat), pct(lat, .5), pct(lat, .9), pct(lat, .99), max(lat))

    try:
        print("pxctl route add -> serving (%d changes, 2 workers, up to %d routes): %s"
              % (args.changes, args.changes, changes(args.changes, "c")), flush=True)
        doc = {"routes": [{"name": "r%05d" % i, "hosts": ["h%05d.bulk.test" % i], "upstreams": [up.url]}
                          for i in range(args.routes)]}
        t0 = time.monotonic()
        subprocess.run([PXCTL, "import", "-"], input=json.dumps(doc), env=env, check=True, text=True,
                       stdout=subprocess.DEVNULL)
        t1 = time.monotonic()
        last = "h%05d.bulk.test" % (args.routes - 1)
        while get(px.port, "/", host=last).status != 200:
            time.sleep(0.001)
        t2 = time.monotonic()
        print("pxctl import of %d routes: %.2f s; serving through pxd %.2f s after the import returned"
              % (args.routes, t1 - t0, t2 - t1), flush=True)
        print("pxctl route add -> serving (%d changes, %d routes in the store): %s"
              % (args.changes // 4, args.routes, changes(args.changes // 4, "d")), flush=True)
    finally:
        adm.stop()
        px.stop()
    # Throughput with many routes against one, interleaved, in front of a fast upstream
    # (nginx answering directly, as in bench/run.py): the test upstream would be the bottleneck.
    import importlib.util
    import tempfile
    spec = importlib.util.spec_from_file_location("pxbench", os.path.join(os.path.dirname(__file__), "run.py"))
    pxbench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pxbench)
    pxbench.WORK = tempfile.mkdtemp(prefix="pxbench-")
    fast = pxbench.start_upstream()
    fast_url = "http://127.0.0.1:%d" % fast.port
    for r in doc["routes"]:
        r["upstreams"] = [fast_url]
    big = Pxd(workers=1, start=False)
    subprocess.run([os.path.join(os.path.dirname(PXD), "px-store"), "--data", big.data, "put-many", "-"],
                   input="\n".join(json.dumps(r) for r in doc["routes"]), text=True, check=True,
                   stdout=subprocess.DEVNULL)
    small = Pxd(workers=1, start=False)
    small.put_route({"name": "one", "hosts": ["h%05d.bulk.test" % (args.routes // 2)], "upstreams": [fast_url]})
    res = {"1 route": [], "%d routes" % args.routes: []}
    try:
        for p in (small, big):
            p.start()
            subprocess.run(["taskset", "-p", "-c", "0", str(p.proc.pid)], capture_output=True)
        host = "h%05d.bulk.test" % (args.routes // 2)
        for _ in range(args.rounds):
            res["1 route"].append(wrk_rps(small.port, host, args.seconds))
            res["%d routes" % args.routes].append(wrk_rps(big.port, host, args.seconds))
        a, b = (statistics.median(v) for v in res.values())
        ratio = statistics.median(y / x for x, y in zip(*res.values()))
        print("pxd requests/s, median of %d interleaved rounds: 1 route %.0f, %d routes %.0f (ratio %.3f)"
              % (args.rounds, a, args.routes, b, ratio))
    finally:
        small.stop()
        big.stop()
        fast.stop()
        up.stop()


if __name__ == "__main__":
    main()
