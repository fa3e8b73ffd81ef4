#!/usr/bin/env python3
"""Traffic policy filters against nginx, in one run (issue 24's targets): rate_limit against nginx limit_req,
forward_auth against nginx auth_request, and px with rate_limit against px without.

  bench/policy [--seconds N] [--rounds N] [--connections N]

Each proxy is pinned to core 0; wrk, the upstream (nginx answering 12 bytes) and the auth service (an nginx
answering 200 with Remote-User) to core 1. rate_limit and limit_req are keyed on the client address with a rate
far above the load (1,000,000 r/s, burst 1,000,000, nodelay: counting, not limiting). forward_auth and
auth_request ask the auth service about every request and copy Remote-User upstream; nginx keeps its
connections to the auth service alive (an upstream block with keepalive), as px does. Rounds are interleaved
and medians reported, with CPU per request of the proxy process.
"""
import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    spec = importlib.util.spec_from_file_location("px" + name, os.path.join(HERE, name + ".py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


pb = load("run")

NOT_LIMITING = {"rate": "1000000r/s", "burst": 1000000, "nodelay": True}


def start_auth():
    port = pb.free_port()
    d = os.path.join(pb.WORK, "auth")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:%(port)d backlog=4096;
    location / { add_header Remote-User alice; return 200; } } }
""" % {"d": d, "port": port})
    return pb.Proc("auth", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, pb.LOAD_CORE)


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
    args = ap.parse_args()
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
    names = list(starters)
    results = {n: [] for n in names}
    try:
        procs = {n: starters[n]() for n in names}
        for n in names:
            pb.wrk(procs[n].port, 1, args.connections)
        for r in range(args.rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                res = pb.wrk(procs[n].port, args.seconds, args.connections, procs[n].pid())
                results[n].append(res)
                print("round %d %-19s %9.0f req/s  p99 %.3f ms  %.2f us CPU/req  non-2xx %d %s" %
                      (r + 1, n, res["rps"], res["p99"], res["cpu_us"], res["non2xx"],
                       ("errors: " + res["errors"]) if res["errors"] else ""), flush=True)
        for p in procs.values():
            p.stop()
    finally:
        auth.stop()
        up.stop()
        shutil.rmtree(pb.WORK, ignore_errors=True)

    def med(n, k):
        return statistics.median(x[k] for x in results[n])

    def ratio(a, b, k, inverse=False):
        return statistics.median((y[k] / x[k]) if inverse else (x[k] / y[k])
                                 for x, y in zip(results[a], results[b]) if x[k] and y[k])
    print()
    print("| proxy | requests/s | p99 ms | CPU per request |")
    print("| --- | ---: | ---: | ---: |")
    for n in names:
        print("| %s | %.0f | %.3f | %.2f µs |" % (n, med(n, "rps"), med(n, "p99"), med(n, "cpu_us")))
    print()
    print("| measure | result | target |")
    print("| --- | ---: | --- |")
    print("| requests/s with rate_limit (not limiting) vs without | %.3f | ≥ 0.97 |" % ratio("px-rate_limit", "px", "rps"))
    print("| the same, per CPU-second | %.3f | (reported) |" % ratio("px-rate_limit", "px", "cpu_us", True))
    print("| rate_limit vs nginx limit_req, requests per CPU-second | %.2f× | ≥ 1.2× |"
          % ratio("px-rate_limit", "nginx-limit_req", "cpu_us", True))
    print("| rate_limit vs nginx limit_req, requests/s | %.2f× | (reported) |"
          % ratio("px-rate_limit", "nginx-limit_req", "rps"))
    print("| forward_auth vs nginx auth_request, requests per CPU-second | %.2f× | ≥ 1.2× |"
          % ratio("px-forward_auth", "nginx-auth_request", "cpu_us", True))
    print("| forward_auth vs nginx auth_request, requests/s | %.2f× | (reported) |"
          % ratio("px-forward_auth", "nginx-auth_request", "rps"))


if __name__ == "__main__":
    main()
