#!/usr/bin/env python3
"""Where a proxy's CPU goes under load (issue 26: perf profiles of both io engines): each proxy in turn under wrk
(keep-alive, or --close for a new connection per request), `perf record -e cpu-clock` on its process for a few
seconds, then its split (kernel, pxd, libc, libuv, liburing, ...) and its hottest symbols.

  bench/profile.py [--only px-uring,px-epoll,nginx,haproxy] [--seconds N] [--connections N] [--close] [--top N]

Pinned as bench/run (proxy on core 0, wrk and the upstream on core 1).
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as pb  # noqa: E402


def profile(proc, seconds, conns, top):
    data = os.path.join(pb.WORK, proc.name + ".data")
    hdrs = []
    for h in pb.EXTRA_HEADERS:
        hdrs += ["-H", h]
    pb.wrk(proc.port, 1, conns)  # warm up
    w = subprocess.Popen(["taskset", "-c", pb.LOAD_CORE, "wrk", "-t1", "-c%d" % conns, "-d%ds" % (seconds + 2)] + hdrs
                         + ["http://127.0.0.1:%d/" % proc.port], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    subprocess.run(["perf", "record", "-e", "cpu-clock", "-p", str(proc.pid()), "-o", data, "--", "sleep",
                    str(seconds)], capture_output=True)
    w.communicate()
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                          "--percent-limit", "0"], capture_output=True, text=True).stdout
    by_dso = collections.Counter()
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        pct = float(parts[0][:-1])
        dso = parts[1]
        sym = " ".join(parts[3:]) if len(parts) > 3 else "?"
        kind = "kernel" if dso.startswith("[kernel") else dso
        by_dso[kind] += pct
        rows.append((pct, kind, sym))
    split = ", ".join("%s %.1f%%" % (k, v) for k, v in by_dso.most_common(6))
    print("## %s\n\nsplit: %s\n" % (proc.name, split))
    print("| share | where | symbol |\n| ---: | --- | --- |")
    for pct, kind, sym in rows[:top]:
        print("| %.1f%% | %s | %s |" % (pct, kind, sym.replace("|", "/")))
    print(flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="px-uring,px-epoll,nginx,haproxy")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--close", action="store_true", help="Connection: close on every request")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    if args.close:
        pb.EXTRA_HEADERS.append("Connection: close")
    pb.WORK = tempfile.mkdtemp(prefix="pxprofile-")
    up = pb.start_upstream()
    starters = {"px": pb.start_px, "px-uring": pb.start_px_uring, "px-epoll": pb.start_px_epoll,
                "nginx": pb.start_nginx, "haproxy": pb.start_haproxy}
    try:
        for n in args.only.split(","):
            p = starters[n](up.port)
            try:
                profile(p, args.seconds, args.connections, args.top)
            finally:
                p.stop()
    finally:
        up.stop()


if __name__ == "__main__":
    main()
