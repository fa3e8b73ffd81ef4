#!/usr/bin/env python3
"""Traffic policy filters against nginx, in one run (issue 24's targets): rate_limit against nginx limit_req,
forward_auth against nginx auth_request, and px with rate_limit against px without; and px against nginx with
neither filtering, the path both filters stand on.

  bench/policy [--seconds N] [--rounds N] [--connections N] [--io-engine epoll|uring]

Each proxy is pinned to core 0; wrk, the upstream (nginx answering 12 bytes) and the auth service (an nginx
answering 200 with Remote-User) to core 1. Proxies are compared in pairs loaded at the same moment (a wrk each,
half the connections each), so that both share the VM's noise; CPU per request is each process's own. rate_limit and limit_req are keyed on the client address with a rate
far above the load (1,000,000 r/s, burst 1,000,000, nodelay: counting, not limiting). forward_auth and
auth_request ask the auth service about every request and copy Remote-User upstream; nginx keeps its
connections to the auth service alive (an upstream block with keepalive), as px does. Medians of per-round
ratios are reported.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as pb  # noqa: E402 (the harness: its proxies, wrk and state)

NOT_LIMITING = {"rate": "1000000r/s", "burst": 1000000, "nodelay": True}


def start_auth():
    """The auth service: nginx answering 200 with Remote-User."""
    return pb.start_upstream("auth", "add_header Remote-User alice; return 200;")


def start_nginx(up_port, name, http_extra, location_extra):
    port = pb.free_port()
    d = os.path.join(pb.WORK, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000; %(http)s
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d backlog=4096;
    %(loc)s
    location / { %(extra)s proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up_port, "http": http_extra[0], "loc": http_extra[1], "extra": location_extra})
    return pb.Proc(name, ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, pb.PROXY_CORE,
                   measure_child=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--io-engine", choices=["epoll", "uring"], help="every px on this engine (pxd.conf io_engine)")
    args = ap.parse_args()
    if args.io_engine:
        pb.IO_ENGINE = "io_engine %s\n" % args.io_engine
    pb.WORK = tempfile.mkdtemp(prefix="pxpolicy-")
    up = pb.start_upstream()
    auth = start_auth()
    verify = "http://127.0.0.1:%d/verify" % auth.port
    starters = {
        "px": lambda: pb.start_px(up.port),
        "px-rate_limit": lambda: pb.start_px(up.port, name="px-rl",
                                             filters=[{"name": "rate_limit", "config": NOT_LIMITING}]),
        "nginx-limit_req": lambda: start_nginx(
            up.port, "nginx-rl", ("limit_req_zone $binary_remote_addr zone=z:10m rate=1000000r/s;", ""),
            "limit_req zone=z burst=1000000 nodelay;"),
        "px-forward_auth": lambda: pb.start_px(up.port, name="px-fa", filters=[
            {"name": "forward_auth", "config": {"url": verify, "copy_headers": ["Remote-User"]}}]),
        "nginx-auth_request": lambda: start_nginx(
            up.port, "nginx-fa",
            ("upstream auth { server 127.0.0.1:%d; keepalive 64; keepalive_requests 1000000; }" % auth.port,
             """location = /_auth { internal; proxy_pass http://auth/verify; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-For $remote_addr; }"""),
            "auth_request /_auth; auth_request_set $user $upstream_http_remote_user; "
            "proxy_set_header Remote-User $user;"),
    }
    # Each pair is loaded at the same moment (a wrk each, half the connections each): the two share every
    # moment of the machine's noise, which rounds taken one after another do not (bench/run.py --observability).
    pairs = [("px", "px-rate_limit", "requests/s with rate_limit (not limiting) vs without", "≥ 0.97 (requests/s)"),
             ("nginx-limit_req", "px-rate_limit", "rate_limit vs nginx limit_req", "≥ 1.2× (per CPU-second)"),
             ("nginx-auth_request", "px-forward_auth", "forward_auth (a 200) vs nginx auth_request",
              "≥ 1.2× (per CPU-second)"),
             ("nginx", "px", "px vs nginx, neither filtering (the path both filters stand on)", ""),
             ("px", "px-control", "a second px, configured as the first (the run's own spread)", "")]
    starters["px-control"] = lambda: pb.start_px(up.port, name="px-control")
    starters["nginx"] = lambda: start_nginx(up.port, "nginx-plain", ("", ""), "")
    half = max(1, args.connections // 2)
    ratios = {i: [] for i in range(len(pairs))}
    cpu = {n: [] for n in starters}
    try:
        procs = {n: starters[n]() for n in starters}
        for r in range(args.rounds):
            for i in list(range(len(pairs)))[r % len(pairs):] + list(range(len(pairs)))[:r % len(pairs)]:
                a, b = pairs[i][0], pairs[i][1]
                pb.wrk_many([(procs[a].port, None), (procs[b].port, None)], 1, half)  # warm up
                x, y = pb.wrk_many([(procs[a].port, procs[a].pid()), (procs[b].port, procs[b].pid())],
                                   args.seconds, half)
                ratios[i].append((y["rps"] / x["rps"], x["cpu_us"] / y["cpu_us"]))
                cpu[a].append(x["cpu_us"])
                cpu[b].append(y["cpu_us"])
                print("round %d %-19s %8.0f req/s %6.2f us/req   %-19s %8.0f req/s %6.2f us/req %s%s" %
                      (r + 1, b, y["rps"], y["cpu_us"], a, x["rps"], x["cpu_us"],
                       "non-2xx %d/%d " % (x["non2xx"], y["non2xx"]) if x["non2xx"] or y["non2xx"] else "",
                       ("errors: " + x["errors"] + y["errors"]) if x["errors"] or y["errors"] else ""), flush=True)
        for p in procs.values():
            p.stop()
    finally:
        auth.stop()
        up.stop()
        shutil.rmtree(pb.WORK, ignore_errors=True)
    print()
    print("| proxy | CPU per request (median over its pairs) |")
    print("| --- | ---: |")
    for n in starters:
        if cpu[n]:
            print("| %s | %.2f µs |" % (n, statistics.median(cpu[n])))
    print()
    print("| measure | requests/s, of the other's | requests per CPU-second, of the other's | target |")
    print("| --- | ---: | ---: | --- |")
    for i, (a, b, label, target) in enumerate(pairs):
        rs = ratios[i]
        print("| %s | %.3f | %.3f | %s |" % (label, statistics.median(x for x, _ in rs),
                                            statistics.median(y for _, y in rs), target))
    print()
    print("medians of %d per-round ratios, %d s each, %d connections to each of a pair" %
          (args.rounds, args.seconds, half))


if __name__ == "__main__":
    main()
