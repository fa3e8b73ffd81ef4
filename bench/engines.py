#!/usr/bin/env python3
"""pxd's I/O engines against each other (issue 26): the same px twice, io_engine epoll and io_engine uring,
loaded at the same moment (a wrk each, half the connections each; both proxies pinned to core 0, wrk and the
upstream nginx to core 1), so that both share the VM's noise. Reports requests/s and CPU per request of each,
and the median of the per-round ratios.

  bench/engines.py [--seconds N] [--rounds N] [--connections N]

On io_uring px accepts client connections itself and drives them and the upstream connections on the ring; on
epoll, client connections are libuv's and upstream ones on the worker's epoll set.
"""
import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as pb  # noqa: E402 (the harness: its proxies, wrk and state)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    pb.WORK = tempfile.mkdtemp(prefix="pxengines-")
    up = pb.start_upstream()
    a = pb.start_px(up.port, name="px-epoll", extra="io_engine epoll\n")
    b = pb.start_px(up.port, name="px-uring", extra="io_engine uring\n")
    half = max(1, args.connections // 2)
    rps, cpu = [], []
    try:
        for r in range(args.rounds):
            pair = [(a, "epoll"), (b, "uring")] if r % 2 == 0 else [(b, "uring"), (a, "epoll")]
            pb.wrk_many([(p.port, None) for p, _ in pair], 1, half)  # warm up
            res = dict(zip([n for _, n in pair],
                           pb.wrk_many([(p.port, p.pid()) for p, _ in pair], args.seconds, half)))
            x, y = res["epoll"], res["uring"]
            print("round %d  epoll %8.0f req/s %6.2f us/req   uring %8.0f req/s %6.2f us/req" %
                  (r + 1, x["rps"], x["cpu_us"], y["rps"], y["cpu_us"]), flush=True)
            rps.append(y["rps"] / x["rps"])
            cpu.append(x["cpu_us"] / y["cpu_us"])
    finally:
        a.stop()
        b.stop()
        up.stop()
    print()
    print("| measure | io_uring, of epoll's |")
    print("| --- | ---: |")
    print("| requests/s | %.3f |" % statistics.median(rps))
    print("| requests per CPU-second | %.3f |" % statistics.median(cpu))
    print()
    print("medians of %d per-round ratios, %d s each, %d connections to each" % (args.rounds, args.seconds, half))


if __name__ == "__main__":
    main()
