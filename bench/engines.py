#!/usr/bin/env python3
"""Two px loaded at the same moment (a wrk each, half the connections each; both proxies pinned to core 0, wrk
and the upstream nginx to core 1), so that both share the VM's noise. Reports requests/s and CPU per request of
each, and the median of the per-round ratios (b of a).

  bench/engines.py [--seconds N] [--rounds N] [--connections N] [--close]
      pxd's I/O engines against each other (issue 26): the same px, io_engine epoll (a) and io_engine uring (b).
  bench/engines.py --a-pxd OLD --b-pxd NEW [--engine uring|epoll] [...]
      a change, A/B: two pxd binaries on the same engine (an A/A run, the same binary twice, gives ~1.00).

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
    ap.add_argument("--close", action="store_true", help="Connection: close on every request (a new connection each)")
    ap.add_argument("--a-pxd", help="A/B: the first pxd binary (then --b-pxd, on --engine)")
    ap.add_argument("--b-pxd", help="A/B: the second pxd binary")
    ap.add_argument("--engine", default="uring", help="A/B: the io_engine of both")
    args = ap.parse_args()
    if bool(args.a_pxd) != bool(args.b_pxd):
        ap.error("--a-pxd and --b-pxd go together")
    if args.close:
        pb.EXTRA_HEADERS.append("Connection: close")
    pb.WORK = tempfile.mkdtemp(prefix="pxengines-")
    up = pb.start_upstream()
    if args.a_pxd:
        names = ("a", "b")
        pb.PXD = os.path.abspath(args.a_pxd)
        a = pb.start_px(up.port, name="px-a", extra="io_engine %s\n" % args.engine)
        pb.PXD = os.path.abspath(args.b_pxd)
        b = pb.start_px(up.port, name="px-b", extra="io_engine %s\n" % args.engine)
    else:
        names = ("epoll", "uring")
        a = pb.start_px(up.port, name="px-epoll", extra="io_engine epoll\n")
        b = pb.start_px(up.port, name="px-uring", extra="io_engine uring\n")
    half = max(1, args.connections // 2)
    rps, cpu = [], []
    try:
        for r in range(args.rounds):
            pair = [(a, names[0]), (b, names[1])] if r % 2 == 0 else [(b, names[1]), (a, names[0])]
            pb.wrk_many([(p.port, None) for p, _ in pair], 1, half)  # warm up
            res = dict(zip([n for _, n in pair],
                           pb.wrk_many([(p.port, p.pid()) for p, _ in pair], args.seconds, half)))
            x, y = res[names[0]], res[names[1]]
            print("round %d  %s %8.0f req/s %6.2f us/req   %s %8.0f req/s %6.2f us/req" %
                  (r + 1, names[0], x["rps"], x["cpu_us"], names[1], y["rps"], y["cpu_us"]), flush=True)
            rps.append(y["rps"] / x["rps"])
            cpu.append(x["cpu_us"] / y["cpu_us"])
    finally:
        a.stop()
        b.stop()
        up.stop()
    print()
    print("| measure | %s, of %s's |" % (names[1], names[0]))
    print("| --- | ---: |")
    print("| requests/s | %.3f |" % statistics.median(rps))
    print("| requests per CPU-second | %.3f |" % statistics.median(cpu))
    print()
    print("medians of %d per-round ratios, %d s each, %d connections to each%s" %
          (args.rounds, args.seconds, half, ", a new connection per request" if args.close else ""))


if __name__ == "__main__":
    main()
