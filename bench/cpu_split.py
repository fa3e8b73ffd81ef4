#!/usr/bin/env python3
"""User vs kernel CPU per proxied request, over fresh starts of each proxy.

  bench/cpu_split.py [NAMES] [STARTS]     e.g. bench/cpu_split.py px-filtered,nginx-lua 6

Starts each named proxy (bench/run.py's set-ups: px, px-filtered, nginx, nginx-lua)
STARTS times, alternating, and for each start runs wrk for 3 s after a 1 s warm-up;
prints requests/s and the proxy's user and system CPU per request. Shows where a
proxy's time goes (on loopback, mostly the kernel's TCP) and whether a proxy's
speed depends on the start (nginx-lua's does, on this VM). Requests carry a
trusted X-Forwarded-Proto: https, as in bench/run --filters.
"""
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as B  # noqa: E402


def times(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(v[11]) / tick, int(v[12]) / tick


def main():
    names = (sys.argv[1] if len(sys.argv) > 1 else "px-filtered,nginx-lua").split(",")
    starts = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    B.WORK = tempfile.mkdtemp(prefix="pxsplit-")
    B.EXTRA_HEADERS.append("X-Forwarded-Proto: https")
    starters = {"px-filtered": B.start_px_filtered, "nginx-lua": B.start_nginx_lua, "px": B.start_px,
                "nginx": B.start_nginx}
    up = B.start_upstream()
    seen = {n: [] for n in names}
    try:
        for k in range(starts):
            for n in names:
                p = starters[n](up.port)
                B.wrk(p.port, 1, 64)
                pid = p.pid()
                u0, s0 = times(pid)
                r = B.wrk(p.port, 3, 64, pid)
                u1, s1 = times(pid)
                reqs = r["rps"] * 3
                user, system = (u1 - u0) * 1e6 / reqs, (s1 - s0) * 1e6 / reqs
                seen[n].append((r["rps"], user, system))
                print("start %d %-12s %8.0f req/s  user %.2f us  system %.2f us per request"
                      % (k, n, r["rps"], user, system), flush=True)
                p.stop()
    finally:
        up.stop()
    for n in names:
        print("median %-12s %8.0f req/s  user %.2f us  system %.2f us per request"
              % (n, statistics.median(x[0] for x in seen[n]), statistics.median(x[1] for x in seen[n]),
                 statistics.median(x[2] for x in seen[n])))


if __name__ == "__main__":
    main()
