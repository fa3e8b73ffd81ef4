#!/usr/bin/env python3
"""gRPC-shaped load through px (grpc://), nginx (grpc_pass) and HAProxy (proto h2), in front of one h2c upstream
(nginx answering every POST with a gRPC message and a grpc-status trailer), one worker each pinned to core 0,
h2load and the upstream on core 1, same run (issue 22). Each adds X-Forwarded-For, -Proto and -Host, as px does
(px adds X-Request-ID too).

  bench/grpc [--requests N] [--rounds N] [--only px,nginx,haproxy]

Measures, per proxy (medians of interleaved rounds; CPU is the proxy process's utime+stime over the run,
divided by the requests it served):
  unary    h2load -c4 -m16 (64 streams in flight), a POST with content-type application/grpc and te: trailers
  p99      the same at half of px's saturation rate (h2load --rps), the 99th percentile of its per-request log
           (the median of --p99-rounds interleaved runs)
  conns    px's upstream connections after 1,000 concurrent streams (h2load -c10 -m100), against
           ceil(1000 / the upstream's SETTINGS_MAX_CONCURRENT_STREAMS) + 1
"""
import argparse
import math
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as pb  # noqa: E402 (the harness: processes, cores, CPU time)

UP_STREAMS = 128  # the upstream nginx's http2_max_concurrent_streams (its default)


def start_upstream():
    port = pb.free_port()
    d = os.path.join(pb.WORK, "upstream")
    os.makedirs(d, exist_ok=True)
    os.chmod(pb.WORK, 0o755)  # (nginx's workers, another user when run as root, read the reply from here)
    with open(os.path.join(d, "reply.bin"), "wb") as f:
        f.write(b"\x00" + struct.pack(">I", 7) + b"echo:hi")  # one gRPC message (no compression)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        # POSTs reach the static file through error_page (405 = 200): every RPC gets the same answer, after the
        # whole request (mirror_request_body reads it first: nginx's grpc_pass takes an answer that comes before
        # the request's end, and the resets after it, as errors).
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 100000000; http2_max_concurrent_streams %(ms)d;
  server { listen 127.0.0.1:%(port)d http2 backlog=4096;
    location / { root %(d)s; default_type application/grpc; add_trailer grpc-status 0;
      mirror /read-body; mirror_request_body on;
      try_files /reply.bin =404; error_page 405 =200 /reply.bin; }
    location = /read-body { internal; return 204; } } }
""" % {"d": d, "port": port, "ms": UP_STREAMS})
    return pb.Proc("upstream", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port,
                   pb.LOAD_CORE)


def start_px(up):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "px")
    os.makedirs(d, exist_ok=True)
    subprocess.run([pb.PXSTORE, "--data", d + "/data", "put-json",
                    '{"name":"grpc","hosts":["127.0.0.1","localhost"],"upstreams":["grpc://127.0.0.1:%d"]}' % up.port],
                   check=True, stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d h2c\nworkers 1\ndata_dir %s/data\nlog_level warn\nmax_connections 40000\n"
                "h2_max_requests 100000000\n" % (port, d))
    return pb.Proc("px", [pb.PXD, "-c", d + "/pxd.conf"], port, pb.PROXY_CORE)


def start_nginx(up):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 100000000;
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 100000000; }
  server { listen 127.0.0.1:%(port)d http2 backlog=4096;
    location / { grpc_pass grpc://up;
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Proto $scheme;
      grpc_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up.port})
    return pb.Proc("nginx", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, pb.PROXY_CORE,
                   measure_child=True)


def start_haproxy(up):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "haproxy")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "haproxy.cfg"), "w") as f:
        f.write("""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:%(port)d proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %%[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:%(up)d proto h2
""" % {"port": port, "up": up.port})
    return pb.Proc("haproxy", ["haproxy", "-db", "-f", d + "/haproxy.cfg"], port, pb.PROXY_CORE)


def h2load(port, requests, clients, streams, pid=None, rps=None, log=None):
    body = os.path.join(pb.WORK, "request.bin")
    if not os.path.exists(body):
        with open(body, "wb") as f:
            f.write(b"\x00" + struct.pack(">I", 2) + b"hi")
    cpu0 = pb.cpu_seconds(pid) if pid else 0
    argv = ["taskset", "-c", pb.LOAD_CORE, "h2load", "-c%d" % clients, "-m%d" % streams, "-n%d" % requests, "-t1",
            "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if rps:
        argv += ["--rps=%g" % (rps / clients)]
    if log:
        argv += ["--log-file=" + log]
    argv.append("http://127.0.0.1:%d/px.test.Echo/Unary" % port)
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    cpu = (pb.cpu_seconds(pid) - cpu0) if pid else 0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not m:
        raise RuntimeError("h2load said: %s" % out[-600:])
    ok, failed, errored = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if failed or errored or not re.search(r"status codes: %d 2xx" % ok, out):
        raise RuntimeError("%d failed, %d errored: %s" % (failed, errored, out[-600:]))
    m = re.search(r"finished in ([\d.]+)(ms|s),", out)
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return {"rps": ok / secs, "cpu_us": cpu * 1e6 / ok if ok else 0}


def p99_ms(log):
    # h2load's log: start time (µs since the epoch), status, duration (µs), one line per request.
    with open(log) as f:
        d = sorted(int(line.split()[2]) for line in f if line.strip())
    return d[min(len(d) - 1, int(math.ceil(0.99 * len(d))) - 1)] / 1000.0


def upstream_connections(proxy, up):
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", "127.0.0.1:%d" % up.port],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "pid=%d," % proxy.pid() in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="px,nginx,haproxy")
    ap.add_argument("--p99-rounds", type=int, default=3)
    args = ap.parse_args()
    pb.WORK = tempfile.mkdtemp(prefix="pxgrpc-")
    up = start_upstream()
    starters = {"px": start_px, "nginx": start_nginx, "haproxy": start_haproxy}
    names = [n for n in args.only.split(",") if n in starters]
    procs = {n: starters[n](up) for n in names}
    res = {n: [] for n in names}
    try:
        for p in procs.values():
            h2load(p.port, 20000, 4, 16)  # warm: connections made, pools filled
        for r in range(args.rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for n in order:
                res[n].append(h2load(procs[n].port, args.requests, 4, 16, procs[n].pid()))
            print("round %d: " % (r + 1) + "  ".join("%s %.0f req/s %.2f us/req" % (n, res[n][-1]["rps"],
                                                                                    res[n][-1]["cpu_us"])
                                                       for n in names), flush=True)
        rate = {n: statistics.median(x["rps"] for x in res[n]) for n in names}
        cpu = {n: statistics.median(x["cpu_us"] for x in res[n]) for n in names}
        # px's RPCs per CPU-second of each's: the median of the rounds' own ratios (a round's noise hits both).
        ratio = {n: statistics.median(res[n][r]["cpu_us"] / res["px"][r]["cpu_us"] for r in range(args.rounds))
                 for n in names} if "px" in names else {}
        half = rate.get("px", max(rate.values())) / 2
        p99s = {n: [] for n in names}
        for r in range(args.p99_rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for n in order:
                log = os.path.join(pb.WORK, n + ".h2load.log")
                h2load(procs[n].port, int(half * 6), 4, 16, rps=half, log=log)  # ~6 s at half of px's saturation
                p99s[n].append(p99_ms(log))
        p99 = {n: statistics.median(p99s[n]) for n in names}
        conns = None
        if "px" in procs:
            h2load(procs["px"].port, 20000, 10, 100)
            conns = upstream_connections(procs["px"], up)
    finally:
        for p in procs.values():
            p.stop()
        up.stop()
    print()
    print("| measure | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    print("| unary RPCs/s, 64 streams in flight | " + " | ".join("%.0f" % rate[n] for n in names) + " |")
    print("| proxy CPU per RPC (µs) | " + " | ".join("%.2f" % cpu[n] for n in names) + " |")
    if ratio:
        print("| px's RPCs per CPU-second, of each's (median of the rounds' ratios) | " +
              " | ".join("%.2f" % ratio[n] for n in names) + " |")
    print("| p99 at %.0f RPC/s, median of %d runs (ms) | " % (half, args.p99_rounds) +
          " | ".join("%.2f" % p99[n] for n in names) + " |")
    if conns is not None:
        print()
        print("px's upstream connections after 1,000 concurrent streams: %d (bound: ceil(1000/%d) + 1 = %d)"
              % (conns, UP_STREAMS, math.ceil(1000 / UP_STREAMS) + 1))
    print("medians of %d rounds of %d requests; p99 runs: %s" % (args.rounds, args.requests, "; ".join(
        "%s %s" % (n, " ".join("%.2f" % x for x in p99s[n])) for n in names)))


if __name__ == "__main__":
    main()
