#!/usr/bin/env python3
"""px benchmark harness: px against nginx and HAProxy, in one run, same machine.

  bench/run [--seconds N] [--rounds N] [--connections N] [--idle N] [--burst N] [--routes N]
            [--only px,px-uring,px-epoll,nginx,haproxy] [--ref NAME] [--close] [--syscalls]
  bench/run --observability   px with metrics, with an access log, and a second px, each loaded at the
                              same moment as a px with both off (see observability())

Topology (2 cores): the proxy under test is pinned to core 0; the load
generator (wrk) and the upstream (nginx serving a 12-byte body directly) are
pinned to core 1. Each proxy adds X-Forwarded-For/-Proto/-Host and keeps
upstream connections alive. Rounds are interleaved (px, nginx, haproxy, px, ...)
and the median round is reported, with ratios. Then each proxy holds N idle
keep-alive client connections and its RSS growth per connection is reported;
then the same after a burst (N requests in flight at once, then idle for 3 s).
Timing lives here, never in the tests.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("PX_BUILD", os.path.join(ROOT, "build"))
PXD = os.path.join(BUILD, "src", "pxd")
PXSTORE = os.path.join(BUILD, "src", "px-store")
PROXY_CORE = "0"
LOAD_CORE = "1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on %d" % port)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


class Proc:
    def __init__(self, name, argv, port, core, measure_child=False):
        self.name, self.port = name, port
        self.log = open(os.path.join(WORK, name + ".log"), "wb")
        self.p = subprocess.Popen(["taskset", "-c", core] + argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port)
        self.measure_child = measure_child

    def pid(self):
        if self.measure_child:  # nginx: the worker, not the master
            kids = children(self.p.pid)
            return kids[0] if kids else self.p.pid
        return self.p.pid

    def stop(self):
        self.p.send_signal(signal.SIGINT if self.name.startswith("px") else signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def start_upstream(name="upstream", answer='default_type text/plain; return 200 "hello world\\n";'):
    """nginx answering every request itself (`answer`: its location's directives), on the load core."""
    port = free_port()
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:%(port)d backlog=4096;
    location / { %(answer)s } } }
""" % {"d": d, "port": port, "answer": answer})
    return Proc(name, ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, LOAD_CORE)


IO_ENGINE = ""  # "io_engine uring\n": every px of the run on that engine (bench/policy --io-engine)
# --peers-defer: nginx's and HAProxy's listeners also wait for the client's first bytes before the accept (nginx
# `listen ... deferred`, HAProxy `bind ... defer-accept`), as px's HTTP listeners always do (TCP_DEFER_ACCEPT).
PEERS_DEFER = False


def start_px(up_port, routes=1, extra="", name="px", filters=None):
    port = free_port()
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    # Trusted so that the --filters mode's X-Forwarded-Proto is passed on as it is by px-filtered.
    # Extra routes (other hosts) show that lookup cost does not grow with their number.
    if routes > 1:
        lines = "\n".join(json.dumps({"name": "r%d" % i, "hosts": ["h%d.bench.test" % i],
                                      "upstreams": ["http://127.0.0.1:%d" % up_port]}) for i in range(routes - 1))
        subprocess.run([PXSTORE, "--data", d + "/data", "put-many", "-"], input=lines, text=True, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([PXSTORE, "--data", d + "/data", "put-json",
                    json.dumps({"name": "bench", "hosts": ["127.0.0.1", "localhost"],
                                "upstreams": ["http://127.0.0.1:%d" % up_port], "filters": filters or []})],
                   check=True, stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\ndata_dir %s/data\nlog_level warn\nmax_connections 40000\n"
                "upstream_keepalive 64\ntrusted_proxies 127.0.0.1/32\n%s%s" % (port, d, IO_ENGINE,
                                                                    extra.replace("@DIR@", d)))
    return Proc(name, [PXD, "-c", d + "/pxd.conf"], port, PROXY_CORE)


def start_px_uring(up_port):
    """px on its io_uring engine (pxd.conf io_engine uring)."""
    return start_px(up_port, extra="io_engine uring\n", name="px-uring")


def start_px_epoll(up_port):
    """px on its epoll engine (pxd.conf io_engine epoll)."""
    return start_px(up_port, extra="io_engine epoll\n", name="px-epoll")


def syscalls_per_request(proc, seconds, conns):
    """System calls the proxy made per request (perf stat -e raw_syscalls:sys_enter on its pid, all its threads),
    over a wrk run of its own: counting costs the proxy a little, so the timed rounds run without it."""
    out = os.path.join(WORK, proc.name + ".perf")
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(proc.pid()),
                             "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the load starts
    res = wrk(proc.port, seconds, conns)
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=20)
    with open(out) as f:
        m = re.search(r"^(\d+),,raw_syscalls:sys_enter", f.read(), re.M)
    reqs = res["rps"] * seconds
    return int(m.group(1)) / reqs if m and reqs else float("nan")


def start_px_metrics(up_port):
    """px with Prometheus metrics on (per-worker counters, nothing scraping)."""
    return start_px(up_port, extra="metrics_listen 127.0.0.1:0\n", name="px-metrics")


def start_px_control(up_port):
    """A second px, configured as the first: how far two identical processes differ in one run."""
    return start_px(up_port, name="px-control")


def start_px_logs(up_port):
    """px writing a JSON access log line per request."""
    return start_px(up_port, extra="access_log @DIR@/access.log\n", name="px-logs")


def start_px_filtered(up_port):
    """pxd with acl (CIDR allow) + force_tls (passing: a trusted X-Forwarded-Proto: https) + headers."""
    port = free_port()
    d = os.path.join(WORK, "pxf")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    subprocess.run([PXSTORE, "--data", d + "/data", "put-acl",
                    json.dumps({"name": "lan", "rules": [{"action": "allow", "cidr": "127.0.0.0/8"}]})],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([PXSTORE, "--data", d + "/data", "put-json",
                    json.dumps({"name": "bench", "hosts": ["127.0.0.1", "localhost"],
                                "upstreams": ["http://127.0.0.1:%d" % up_port],
                                "filters": [{"name": "acl", "config": {"list": "lan"}},
                                            {"name": "force_tls", "config": {}},
                                            {"name": "headers",
                                             "config": {"response": {"set": {"X-Frame-Options": "DENY"}}}}]})],
                   check=True, stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\ndata_dir %s/data\nlog_level warn\nmax_connections 40000\n"
                "upstream_keepalive 64\ntrusted_proxies 127.0.0.1/32\n" % (port, d))
    return Proc("px-filtered", [PXD, "-c", d + "/pxd.conf"], port, PROXY_CORE)


def start_nginx_lua(up_port):
    """nginx + lua-nginx-module doing what px-filtered does, in access_by_lua and header_filter_by_lua."""
    port = free_port()
    d = os.path.join(WORK, "nginx-lua")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000; lua_code_cache on;
  init_by_lua_block {
    -- the access list: CIDR allow 127.0.0.0/8, else deny
    function px_allowed(ip) return ip:sub(1, 4) == "127." end
  }
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d backlog=4096%(defer)s;
    location / {
      access_by_lua_block {
        if not px_allowed(ngx.var.remote_addr) then return ngx.exit(403) end
        local proto = ngx.var.http_x_forwarded_proto
        if proto ~= "https" then
          local status = (ngx.var.request_method == "GET" or ngx.var.request_method == "HEAD") and 301 or 308
          return ngx.redirect("https://" .. ngx.var.host .. ngx.var.request_uri, status)
        end
      }
      header_filter_by_lua_block { ngx.header["X-Frame-Options"] = "DENY" }
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;
      proxy_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up_port, "defer": " deferred" if PEERS_DEFER else ""})
    return Proc("nginx-lua", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, PROXY_CORE,
                measure_child=True)


def start_nginx(up_port):
    port = free_port()
    d = os.path.join(WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d backlog=4096%(defer)s;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up_port, "defer": " deferred" if PEERS_DEFER else ""})
    return Proc("nginx", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port, PROXY_CORE,
                measure_child=True)


def start_haproxy(up_port, bind_opts="", proto="http"):
    """bind_opts: e.g. "ssl crt combined.pem" (bench/tls.py); proto: the X-Forwarded-Proto it sets."""
    # HAProxy reserves two descriptors per connection of maxconn: size it to the open-file limit.
    maxconn = min(40000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] // 2 - 200)
    port = free_port()
    d = os.path.join(WORK, "haproxy")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "haproxy.cfg"), "w") as f:
        f.write("""global
  nbthread 1
  maxconn %(maxconn)d
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:%(port)d %(bind)s%(defer)s
  option forwardfor
  http-request set-header X-Forwarded-Proto %(proto)s
  http-request set-header X-Forwarded-Host %%[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:%(up)d
""" % {"port": port, "up": up_port, "maxconn": maxconn, "bind": bind_opts, "proto": proto,
       "defer": " defer-accept" if PEERS_DEFER else ""})
    return Proc("haproxy", ["haproxy", "-db", "-f", d + "/haproxy.cfg"], port, PROXY_CORE)


def to_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


EXTRA_HEADERS = []


def wrk(port, seconds, conns, pid=None):
    return wrk_many([(port, pid)], seconds, conns)[0]


def wrk_many(targets, seconds, conns):
    """One wrk per (port, pid) in targets, all at once on the load core; the results in that order."""
    hdrs = []
    for h in EXTRA_HEADERS:
        hdrs += ["-H", h]
    runs = []
    for port, pid in targets:
        cpu0 = cpu_seconds(pid) if pid else 0
        runs.append((subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds,
                                       "--latency"] + hdrs + ["http://127.0.0.1:%d/" % port],
                                      stdout=subprocess.PIPE, text=True), pid, cpu0))
    results = []
    for p, pid, cpu0 in runs:
        out = p.communicate()[0]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        lat = {}
        for pct in ("50", "99"):
            m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, out, re.M)
            lat[pct] = to_ms(m.group(1), m.group(2))
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        cpu_us = (cpu_seconds(pid) - cpu0) * 1e6 / reqs if pid and reqs else 0
        errs = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        results.append({"rps": rps, "p50": lat["50"], "p99": lat["99"], "cpu_us": cpu_us,
                        "errors": errs.group(1) if errs else "", "non2xx": int(non2xx.group(1)) if non2xx else 0})
    return results


def observability(args, up):
    """px with metrics on, px with a JSON access log, and a second px configured as the first, each
    against px with both off. Each round starts a fresh pair and loads both at the same time (a wrk
    each, half the connections each, both pinned as usual): the pair shares every moment of the
    machine's noise, which rounds taken one after the other do not (on this VM two identical
    processes measured in turn differ by up to 20% in a round)."""
    variants = [("px-metrics", start_px_metrics), ("px-logs", start_px_logs), ("px-control", start_px_control)]
    ratios = {n: [] for n, _ in variants}
    half = max(1, args.connections // 2)
    for r in range(args.rounds):
        for name, start in variants[r % 3:] + variants[:r % 3]:
            base, other = start_px(up.port), start(up.port)
            try:
                wrk_many([(base.port, None), (other.port, None)], 1, half)  # warm up
                a, b = wrk_many([(base.port, base.pid()), (other.port, other.pid())], args.seconds, half)
            finally:
                base.stop()
                other.stop()
            ratios[name].append((b["rps"] / a["rps"], a["cpu_us"] / b["cpu_us"]))
            print("round %d %-10s %8.0f req/s %6.2f us/req   px %8.0f req/s %6.2f us/req%s" %
                  (r + 1, name, b["rps"], b["cpu_us"], a["rps"], a["cpu_us"],
                   ("  errors: " + a["errors"] + b["errors"]) if a["errors"] or b["errors"] else ""), flush=True)
    print()
    print("| px with | requests/s, of px's with both off | requests per CPU-second, of px's | target |")
    print("| --- | ---: | ---: | --- |")
    targets = {"px-metrics": "≥ 0.97", "px-logs": "≥ 0.95", "px-control": "(the run's own spread)"}
    labels = {"px-metrics": "metrics on (nothing scraping)", "px-logs": "a JSON access log",
              "px-control": "nothing (a second px, configured as the first)"}
    for name, _ in variants:
        rs = ratios[name]
        print("| %s | %.3f | %.3f | %s |" % (labels[name], statistics.median(x for x, _ in rs),
                                            statistics.median(y for _, y in rs), targets[name]))
    print()
    print("medians of %d per-round ratios, %d s each, %d connections to each of the pair" %
          (args.rounds, args.seconds, half))


def interleaved(starters, names, kinds, warm, measure, rounds, show, idle=None):
    """The comparison loop of bench/tls.py and bench/h2.py: each proxy started and warmed up, then `rounds`
    rounds, each measuring every kind on every proxy in turn (so all of them share the machine's moments),
    then each one's idle memory. measure(kind, proc, pid) and idle(proc) return what is recorded; show(round,
    name, row) prints a round's line. Returns ({name: {kind: [measure, ...]}}, {name: idle bytes})."""
    res = {n: {k: [] for k in kinds} for n in names}
    memory = {}
    procs = {n: starters[n]() for n in names}
    for n in names:
        warm(procs[n], procs[n].pid())
    for r in range(rounds):
        for n in names:
            p, pid = procs[n], procs[n].pid()
            for k in kinds:
                res[n][k].append(measure(k, p, pid))
            show(r + 1, n, {k: res[n][k][-1] for k in kinds})
    if idle:
        for n in names:
            memory[n] = idle(procs[n])
    for p in procs.values():
        p.stop()
    return res, memory


def median_of(res, n, k, f):
    return statistics.median(x[f] for x in res[n][k])


def ratio_of(res, n, k, f, inverse=False, ref="px"):
    """The median of per-round ref/n ratios of field f (n/ref with inverse: for costs such as CPU per request)."""
    vals = [(y[f] / x[f]) if inverse else (x[f] / y[f]) for x, y in zip(res[ref][k], res[n][k]) if x[f] and y[f]]
    return statistics.median(vals) if vals else float("nan")


def idle_memory(proc, n):
    """RSS growth of the proxy while it holds n idle keep-alive client connections."""
    pid = proc.pid()
    before = rss_kb(pid)
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", proc.port))
        s.sendall(req)
        socks.append(s)
        if len(socks) % 500 == 0:
            for t in socks[-500:]:
                t.recv(4096)
    for t in socks[len(socks) - len(socks) % 500:]:
        t.recv(4096)
    time.sleep(0.5)
    after = rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) * 1024.0 / n


def burst_memory(proc, n, settle=3.0):
    """RSS growth of the proxy per connection after n requests were in flight at
    once (sent on n connections before any answer is read), once they are all
    answered and the connections sit idle for `settle` seconds."""
    pid = proc.pid()
    before = rss_kb(pid)
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for i in range(n):
        socks.append(socket.create_connection(("127.0.0.1", proc.port)))
    for s in socks:
        s.sendall(req)
    for s in socks:
        s.settimeout(30)
        got = b""
        while b"hello world" not in got:
            b = s.recv(4096)
            if not b:
                break
            got += b
    time.sleep(settle)
    after = rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) * 1024.0 / n


def main():
    global WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--burst", type=int, default=5000, help="requests in flight at once, then idle (memory after a spike)")
    ap.add_argument("--routes", type=int, default=1, help="routes in px's store (other hosts)")
    ap.add_argument("--only", default="px,nginx,haproxy",
                    help="of px, px-uring, px-epoll (px on that io_engine), nginx, haproxy, ...")
    ap.add_argument("--ref", default="px", help="the proxy the ratio columns compare the others with")
    ap.add_argument("--close", action="store_true",
                    help="short connections: Connection: close on every request (a new connection each)")
    ap.add_argument("--peers-defer", action="store_true",
                    help="nginx and HAProxy accept only once the client's first bytes came (deferred, defer-accept), "
                         "as px's HTTP listeners do")
    ap.add_argument("--syscalls", action="store_true",
                    help="then system calls per request of each proxy (perf stat), in a run of their own")
    ap.add_argument("--observability", action="store_true",
                    help="px against px with metrics on, px with a JSON access log and a second px, in pairs")
    ap.add_argument("--fresh", action="store_true", help="start each proxy anew every round")
    ap.add_argument("--filters", action="store_true",
                    help="px unfiltered vs px with acl+force_tls+headers vs nginx+Lua doing the same")
    args = ap.parse_args()
    global PEERS_DEFER
    PEERS_DEFER = args.peers_defer
    if args.close:
        EXTRA_HEADERS.append("Connection: close")
    if args.filters:
        args.only = "px,px-filtered,nginx-lua"
        # A request a TLS-terminating proxy in front forwarded: force_tls lets it through.
        EXTRA_HEADERS.append("X-Forwarded-Proto: https")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard // 2 - 400 < args.idle:
        args.idle = max(0, hard // 2 - 400)
        print("note: open-file limit %d: measuring %d idle connections" % (hard, args.idle))
    if hard // 3 - 400 < args.burst:
        args.burst = max(0, hard // 3 - 400)
        print("note: open-file limit %d: a burst of %d connections" % (hard, args.burst))
    WORK = tempfile.mkdtemp(prefix="pxbench-")
    up = start_upstream()
    if args.observability:
        try:
            observability(args, up)
        finally:
            up.stop()
            shutil.rmtree(WORK, ignore_errors=True)
        return
    starters = {"px": start_px, "nginx": start_nginx, "haproxy": start_haproxy, "px-filtered": start_px_filtered,
                "nginx-lua": start_nginx_lua, "px-metrics": start_px_metrics, "px-logs": start_px_logs,
                "px-control": start_px_control, "px-uring": start_px_uring, "px-epoll": start_px_epoll}
    names = [n for n in args.only.split(",") if n in starters]
    results = {n: [] for n in names}
    memory = {}
    burst = {}
    syscalls = {}
    ref = args.ref if args.ref in names else names[0]
    try:
        procs = {}
        for n in names:
            procs[n] = starters[n](up.port, args.routes) if n == "px" else starters[n](up.port)
            wrk(procs[n].port, 1, args.connections)  # warm up
        for r in range(args.rounds):
            # Each round starts with the next proxy, so none always follows the same one.
            for n in names[r % len(names):] + names[:r % len(names)]:
                if args.fresh and r > 0:  # a new process each round: no proxy keeps a lucky (or unlucky) one
                    procs[n].stop()
                    procs[n] = starters[n](up.port, args.routes) if n == "px" else starters[n](up.port)
                    wrk(procs[n].port, 1, args.connections)
                res = wrk(procs[n].port, args.seconds, args.connections, procs[n].pid())
                results[n].append(res)
                print("round %d %-8s %9.0f req/s  p50 %.3f ms  p99 %.3f ms  %.2f us CPU/req %s" %
                      (r + 1, n, res["rps"], res["p50"], res["p99"], res["cpu_us"],
                       ("errors: " + res["errors"]) if res["errors"] else ""), flush=True)
        if args.syscalls:
            for n in names:
                syscalls[n] = syscalls_per_request(procs[n], args.seconds, args.connections)
                print("syscalls %-8s %6.2f system calls per request" % (n, syscalls[n]), flush=True)
        if args.idle:
            for n in names:
                memory[n] = idle_memory(procs[n], args.idle)
                print("idle    %-8s %7.0f bytes of RSS per idle keep-alive connection" % (n, memory[n]), flush=True)
        if args.burst:
            for n in names:
                burst[n] = burst_memory(procs[n], args.burst)
                print("burst   %-8s %7.0f bytes of RSS per connection, %d requests in flight at once, then idle"
                      % (n, burst[n], args.burst), flush=True)
        for p in procs.values():
            p.stop()
    finally:
        up.stop()
    # Medians of each metric over the interleaved rounds, and the median of the
    # per-round ratios (each round compares the proxies under the same conditions).
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in ("rps", "p50", "p99", "cpu_us")}
           for n in names}
    print()
    # Two ratios: requests/s, and requests per second of the proxy's own CPU (the
    # inverse of CPU per request). On 2 cores the load generator and the upstream
    # share the second core; when a proxy does not use all of its core, requests/s
    # is capped by the load side, and the CPU ratio is what it would show.
    def rps_ratio(a, b):
        return statistics.median(x["rps"] / y["rps"] for x, y in zip(results[a], results[b]))

    def cpu_ratio(a, b):
        return statistics.median(y["cpu_us"] / x["cpu_us"] for x, y in zip(results[a], results[b]) if x["cpu_us"])

    print("| proxy | requests/s | p50 ms | p99 ms | CPU per request | proxy core busy | RSS per idle conn "
          "| RSS per conn after a burst | syscalls per request | %s/this req/s | %s/this req per CPU-s |" % (ref, ref))
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        if n != ref:
            ratio, cratio = "%.2f" % rps_ratio(ref, n), "%.2f" % cpu_ratio(ref, n)
        else:
            ratio = cratio = "1.00"
        mem = ("%.0f B" % memory[n]) if n in memory else "-"
        bmem = ("%.0f B" % burst[n]) if n in burst else "-"
        busy = statistics.median(r["rps"] * r["cpu_us"] / 1e6 for r in results[n])
        sc = ("%.2f" % syscalls[n]) if n in syscalls else "-"
        print("| %s | %.0f | %.3f | %.3f | %.2f us | %.0f%% | %s | %s | %s | %s | %s |" % (
            n, med[n]["rps"], med[n]["p50"], med[n]["p99"], med[n]["cpu_us"], busy * 100, mem, bmem, sc, ratio,
            cratio))
    if memory and ref in memory:
        print()
        for n in names:
            if n != ref and n in memory and memory[n] > 0:
                print("memory: %s/%s %.2f per idle connection, %.2f after a burst" % (
                    ref, n, memory[ref] / memory[n], burst.get(ref, 0) / burst[n] if burst.get(n) else float("nan")))
    if args.filters and all(n in results for n in ("px", "px-filtered", "nginx-lua")):
        print()
        print("px-filtered keeps %.2f of unfiltered px's requests/s (%.2f per CPU-second) and makes %.2fx "
              "nginx+Lua's requests/s (%.2fx per CPU-second); medians of per-round ratios"
              % (rps_ratio("px-filtered", "px"), cpu_ratio("px-filtered", "px"),
                 rps_ratio("px-filtered", "nginx-lua"), cpu_ratio("px-filtered", "nginx-lua")))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
