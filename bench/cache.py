#!/usr/bin/env python3
"""The response cache against nginx proxy_cache, in one run (issue 25's targets).

  bench/cache [--seconds N] [--rounds N] [--connections N]

- Hits of a 1 KiB object over keep-alive connections: requests per CPU-second of each proxy (px's cache against
  nginx proxy_cache with open_file_cache, so that neither opens a file per hit). Target ≥ 1.3× nginx.
- Hits of a 1 MiB object: throughput (nginx: sendfile on; px: the body from its mapping, by writev).
  Target ≥ 1.0× nginx.
- A cold key under 200 concurrent requests: how many requests reach the origin (px's coalescing; nginx with
  proxy_cache_lock on). Target: 1 for both.

Each proxy is pinned to core 0 (one worker each), wrk and the origin to core 1. The two proxies are loaded at
the same moment (a wrk each, half the connections each), so that both share the machine's noise; CPU per
request is each process's own. Medians of per-round ratios are reported.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import run as pb  # noqa: E402 (the harness: its processes, CPU readings and state)
from cachepeer import CachePeer  # noqa: E402 (the tests' counting origin, for the cold key)

OBJECTS = {"1k": 1024, "1m": 1024 * 1024}


def start_origin():
    """nginx serving the objects from files, with a day of freshness."""
    port = pb.free_port()
    d = os.path.join(pb.WORK, "origin")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    for name, size in OBJECTS.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write((b"0123456789abcdef" * (size // 16 + 1))[:size])
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:%(port)d backlog=4096; root %(d)s;
    location / { default_type application/octet-stream; add_header Cache-Control "max-age=86400"; } } }
""" % {"d": d, "port": port})
    return pb.Proc("origin", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port,
                   pb.LOAD_CORE)


def start_px(origin, name="px-cache"):
    port = pb.free_port()
    d = os.path.join(pb.WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    subprocess.run([pb.PXSTORE, "--data", d + "/data", "put-json",
                    json.dumps({"name": "bench", "hosts": ["127.0.0.1", "localhost"], "cache": True,
                                "upstreams": ["http://127.0.0.1:%d" % origin]})],
                   check=True, stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\ndata_dir %s/data\ncache_dir %s/cache\nlog_level warn\n"
                "max_connections 40000\nupstream_keepalive 64\ncache_memory 256m\n" % (port, d, d))
    return pb.Proc(name, [pb.PXD, "-c", d + "/pxd.conf"], port, pb.PROXY_CORE)


def start_nginx(origin, name="nginx-cache"):
    port = pb.free_port()
    d = os.path.join(pb.WORK, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)  # (its workers write the cache there)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000; sendfile on; tcp_nopush on;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;
  proxy_cache_path %(d)s/cache levels=1:2 keys_zone=c:10m max_size=1g inactive=60m use_temp_path=off;
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d backlog=4096;
    location / { proxy_cache c; proxy_cache_lock on; proxy_cache_lock_timeout 5s;
      add_header X-Cache $upstream_cache_status;
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } } }
""" % {"d": d, "port": port, "up": origin})
    return pb.Proc(name, ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, pb.PROXY_CORE,
                   measure_child=True)


def wrk_pair(targets, path, seconds, conns):
    """One wrk per (port, pid) at once on the load core: requests/s, bytes/s and CPU µs per request of each."""
    runs = []
    for port, pid in targets:
        cpu0 = pb.cpu_seconds(pid)
        runs.append((subprocess.Popen(["taskset", "-c", pb.LOAD_CORE, "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds,
                                       "http://127.0.0.1:%d%s" % (port, path)],
                                      stdout=subprocess.PIPE, text=True), pid, cpu0))
    out = []
    import re
    for p, pid, cpu0 in runs:
        text = p.communicate()[0]
        reqs = int(re.search(r"(\d+) requests in", text).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
        mult = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}[m.group(2)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        out.append({"rps": rps, "bps": float(m.group(1)) * mult, "cpu_us": (pb.cpu_seconds(pid) - cpu0) * 1e6 / reqs,
                    "non2xx": int(non2xx.group(1)) if non2xx else 0})
    return out


def cold_key(port, origin, n, key):
    """n requests for one cold key at once: how many reached the origin, and the statuses seen."""
    target = "/cold-%s?h=Cache-Control%%3Amax-age%%3D600&delay=1" % key
    statuses = []
    lock = threading.Lock()

    def one():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, target), timeout=30) as r:
                r.read()
                s = r.status
        except Exception as e:  # noqa: BLE001
            s = repr(e)[:40]
        with lock:
            statuses.append(s)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return origin.count(target), sorted(set(map(str, statuses)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    pb.WORK = tempfile.mkdtemp(prefix="pxcache-bench-")
    os.chmod(pb.WORK, 0o755)  # (nginx's workers run as another user: they read the origin's files)
    origin = start_origin()
    half = max(1, args.connections // 2)
    rows = {"1k": [], "1m": []}
    cpu = {"1k": {"px": [], "nginx": []}, "1m": {"px": [], "nginx": []}}
    try:
        px, ngx = start_px(origin.port), start_nginx(origin.port)
        for path in ("/1k", "/1m"):  # filled once: every measured request is a hit
            for port in (px.port, ngx.port):
                urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30).read()
                urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30).read()
        for r in range(args.rounds):
            for obj in ("1k", "1m"):
                conns = half if obj == "1k" else 4
                order = [(px, "px"), (ngx, "nginx")]
                if r % 2:
                    order.reverse()
                wrk_pair([(p.port, p.pid()) for p, _ in order], "/" + obj, 1, conns)  # warm up
                res = dict(zip([n for _, n in order],
                               wrk_pair([(p.port, p.pid()) for p, _ in order], "/" + obj, args.seconds, conns)))
                rows[obj].append((res["px"]["rps"] / res["nginx"]["rps"], res["nginx"]["cpu_us"] / res["px"]["cpu_us"],
                                  res["px"]["bps"] / res["nginx"]["bps"]))
                cpu[obj]["px"].append(res["px"]["cpu_us"])
                cpu[obj]["nginx"].append(res["nginx"]["cpu_us"])
                print("round %d %s: px %8.0f req/s %7.2f us/req %7.1f MB/s | nginx %8.0f req/s %7.2f us/req %7.1f MB/s%s"
                      % (r + 1, obj, res["px"]["rps"], res["px"]["cpu_us"], res["px"]["bps"] / 2 ** 20,
                         res["nginx"]["rps"], res["nginx"]["cpu_us"], res["nginx"]["bps"] / 2 ** 20,
                         "  non-2xx %d/%d" % (res["px"]["non2xx"], res["nginx"]["non2xx"])
                         if res["px"]["non2xx"] or res["nginx"]["non2xx"] else ""), flush=True)
        px.stop()
        ngx.stop()
        # The cold key: a fresh pair of proxies in front of the counting origin (it answers after 1 s).
        peer = CachePeer()
        px2, ngx2 = start_px(peer.port, "px-cold"), start_nginx(peer.port, "nginx-cold")
        cold = {"px": cold_key(px2.port, peer, 200, "px"), "nginx": cold_key(ngx2.port, peer, 200, "nginx")}
        px2.stop()
        ngx2.stop()
        peer.stop()
    finally:
        origin.stop()
        shutil.rmtree(pb.WORK, ignore_errors=True)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print()
    print("| measure | px | nginx proxy_cache | px / nginx | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    print("| 1 KiB hits, CPU per request | %.2f µs | %.2f µs | %.3f× per CPU-second | ≥ 1.3× |" %
          (med(cpu["1k"]["px"]), med(cpu["1k"]["nginx"]), med(x[1] for x in rows["1k"])))
    print("| 1 KiB hits, requests/s (a wrk each, at once) | | | %.3f× | |" % med(x[0] for x in rows["1k"]))
    print("| 1 MiB hits, throughput | | | %.3f× | ≥ 1.0× |" % med(x[2] for x in rows["1m"]))
    print("| 1 MiB hits, CPU per request | %.1f µs | %.1f µs | %.3f× per CPU-second | |" %
          (med(cpu["1m"]["px"]), med(cpu["1m"]["nginx"]), med(x[1] for x in rows["1m"])))
    print("| a cold key, 200 concurrent requests: upstream requests | %d %s | %d %s | | 1 each |" %
          (cold["px"][0], cold["px"][1], cold["nginx"][0], cold["nginx"][1]))
    print()
    print("medians of %d per-round ratios, %d s each; 1 KiB: %d connections to each, 1 MiB: 4 to each" %
          (args.rounds, args.seconds, half))


if __name__ == "__main__":
    main()
