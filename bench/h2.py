#!/usr/bin/env python3
"""HTTP/2 benchmarks: pxd against nginx, HAProxy and h2o (Debian packages), same
ECDSA P-256 certificate, same upstream (nginx answering 12 bytes), one worker
each pinned to core 0, load (h2load) and upstream on core 1, same run.

  bench/h2 [--requests N] [--rounds N] [--idle N] [--only px,px-uring,px-epoll,nginx,haproxy,h2o] [--ref NAME]

Measures, per proxy (medians of interleaved rounds; CPU is the proxy process's
utime+stime over the run, divided by the requests it served):
  64x10    h2load -c64 -m10 over TLS (64 connections, 10 streams each)
  1x100    h2load -c1 -m100 over TLS (one connection, 100 streams)
  idle     RSS growth per idle HTTP/2 TLS connection (Python ssl clients: preface, SETTINGS, one request)
"""
import argparse
import getpass
import importlib.util
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    spec = importlib.util.spec_from_file_location("px" + name, os.path.join(HERE, name + ".py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


pb = load("run")
tb = load("tls")
tb.pb = pb  # one harness state (WORK) for both


def start_px(up, crt, key, name="px", engine=""):
    # TLS listeners offer h2 by default. Requests per connection unbounded and 1024 idle upstream connections
    # kept, as the others are configured here (HAProxy keeps every idle one).
    extra = "h2_max_requests 100000000\nupstream_keepalive 1024\n" + ("io_engine %s\n" % engine if engine else "")
    return tb.start_px(up, crt, key, name=name, extra=extra)


def start_nginx(up, crt, key):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "nginx")
    os.makedirs(d)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000; http2_max_requests 1000000;
  upstream up { server 127.0.0.1:%(up)d; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d ssl http2 backlog=4096;
    ssl_certificate %(crt)s; ssl_certificate_key %(key)s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up.port, "crt": crt, "key": key})
    return pb.Proc("nginx", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port,
                   pb.PROXY_CORE, measure_child=True)


def start_haproxy(up, crt, key):
    return pb.start_haproxy(up.port, "ssl crt %s alpn h2,http/1.1" % os.path.join(os.path.dirname(crt),
                                                                                  "combined.pem"), "https")


def start_h2o(up, crt, key):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "h2o")
    os.makedirs(d)
    with open(os.path.join(d, "h2o.conf"), "w") as f:
        f.write("""user: %(user)s
num-threads: 1
max-connections: 40000
error-log: %(d)s/error.log
pid-file: %(d)s/h2o.pid
proxy.timeout.keepalive: 60000
listen:
  host: 127.0.0.1
  port: %(port)d
  ssl:
    certificate-file: %(crt)s
    key-file: %(key)s
    ocsp-update-interval: 0
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:%(up)d/
        proxy.preserve-host: ON
""" % {"d": d, "port": port, "up": up.port, "crt": crt, "key": key, "user": getpass.getuser()})
    return pb.Proc("h2o", ["h2o", "-c", d + "/h2o.conf"], port, pb.PROXY_CORE)


def h2load(port, requests, clients, streams, pid):
    cpu0 = pb.cpu_seconds(pid)
    argv = ["taskset", "-c", pb.LOAD_CORE, "h2load", "-c%d" % clients, "-m%d" % streams, "-n%d" % requests,
            "-t1", "https://localhost:%d/" % port, "--connect-to=127.0.0.1:%d" % port]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    cpu = pb.cpu_seconds(pid) - cpu0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not m:
        raise RuntimeError("h2load said: %s" % out[-600:])
    ok, failed, errored = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not re.search(r"(?i)application protocol: h2", out):
        raise RuntimeError("not HTTP/2: %s" % out[-600:])
    if failed or errored:
        raise RuntimeError("%d failed, %d errored: %s" % (failed, errored, out[-600:]))
    m = re.search(r"finished in ([\d.]+)(ms|s),", out)
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return {"rps": ok / secs, "cpu_us": cpu * 1e6 / ok if ok else 0}


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


# One GET / for localhost, HPACK-encoded without indexing (static table: :method GET, :scheme https, :path /).
REQUEST = frame(1, 5, 1, b"\x82\x87\x84\x01\x09localhost")


def idle_h2_memory(proc, n):
    pid = proc.pid()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    before = pb.rss_kb(pid)
    socks = []
    for i in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", proc.port)), server_hostname="localhost")
        if s.selected_alpn_protocol() != "h2":
            raise RuntimeError("%s did not pick h2" % proc.name)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + REQUEST)
        buf = b""
        while b"hello world\n" not in buf:  # the 12-byte body, in a DATA frame
            d = s.recv(65536)
            if not d:
                raise RuntimeError("%s closed an HTTP/2 connection" % proc.name)
            buf += d
        s.sendall(frame(4, 1, 0))  # SETTINGS ACK
        socks.append(s)
    time.sleep(2)  # idle: pxd gives an HTTP/2 connection's frame buffer back after a second of it
    after = pb.rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) * 1024.0 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--only", default="px,nginx,haproxy,h2o",
                    help="px-uring, px-epoll: px on that io_engine")
    ap.add_argument("--ref", default="px", help="the proxy the ratios compare the others with")
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pb.WORK = tempfile.mkdtemp(prefix="pxh2-bench-")
    crt, key = tb.make_cert(pb.WORK)
    up = tb.start_upstream(os.path.join(pb.WORK, "upstream"))
    starters = {"px": start_px, "nginx": start_nginx, "haproxy": start_haproxy, "h2o": start_h2o,
                "px-uring": lambda u, c, k: start_px(u, c, k, "px-uring", "uring"),
                "px-epoll": lambda u, c, k: start_px(u, c, k, "px-epoll", "epoll")}
    names = [n for n in args.only.split(",") if n in starters]
    loads = {"64x10": (64, 10), "1x100": (1, 100)}

    def show(r, n, row):
        print("round %d %-8s 64x10 %7.0f/s %5.2f us   1x100 %7.0f/s %5.2f us" % (
            r, n, row["64x10"]["rps"], row["64x10"]["cpu_us"], row["1x100"]["rps"], row["1x100"]["cpu_us"]), flush=True)

    def idle(p):
        b = idle_h2_memory(p, args.idle)
        print("idle    %-8s %7.0f bytes of RSS per idle HTTP/2 TLS connection" % (p.name, b), flush=True)
        return b

    try:
        res, memory = pb.interleaved(
            {n: (lambda n=n: starters[n](up, crt, key)) for n in names}, names, tuple(loads),
            lambda p, pid: h2load(p.port, 10000, 16, 10, pid),
            lambda k, p, pid: h2load(p.port, args.requests, loads[k][0], loads[k][1], pid),
            args.rounds, show, idle if args.idle else None)
    finally:
        up.stop()

    def med(n, k, f):
        return pb.median_of(res, n, k, f)

    ref = args.ref if args.ref in names else names[0]

    def ratio(n, k):  # requests per CPU-second, ref over n
        return pb.ratio_of(res, n, k, "cpu_us", inverse=True, ref=ref)

    print()
    print("| proxy | 64x10 req/s | CPU per request | 1x100 req/s | CPU per request | RSS per idle h2 TLS conn |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        print("| %s | %.0f | %.2f us | %.0f | %.2f us | %s |" % (
            n, med(n, "64x10", "rps"), med(n, "64x10", "cpu_us"), med(n, "1x100", "rps"), med(n, "1x100", "cpu_us"),
            ("%.0f B" % memory[n]) if n in memory else "-"))
    print()
    for n in names:
        if n != ref:
            print("%s/%s: requests per CPU-second 64x10 %.2f, 1x100 %.2f; idle memory %.2f" % (
                ref, n, ratio(n, "64x10"), ratio(n, "1x100"),
                memory.get(ref, 0) / memory[n] if memory.get(n) else float("nan")))
    shutil.rmtree(pb.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
