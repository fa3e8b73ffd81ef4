#!/usr/bin/env python3
"""TLS benchmarks: pxd (BoringSSL) against nginx and HAProxy (Debian's OpenSSL 3),
same ECDSA P-256 certificate, same machine, same run, pinned as bench/run.py.

  bench/tls [--seconds N] [--rounds N] [--idle N] [--only px,nginx,haproxy]

Measures, per proxy (medians of interleaved rounds; CPU is the proxy process's
utime+stime over the run, divided by what it did):
  full      new connection per request (wrk, Connection: close): CPU per full TLS 1.3 handshake (X25519)
  resumed   Python ssl clients resuming with the last ticket: CPU per resumed TLS 1.3 handshake
  keepalive wrk over HTTPS keep-alive (12-byte body): requests/s and CPU per request
  1mib      wrk over HTTPS keep-alive, 1 MiB responses: MiB/s and CPU per MiB
  idle      RSS growth per idle TLS keep-alive connection (Python ssl clients, one request each)
"""
import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("pxbench", os.path.join(HERE, "run.py"))
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)


def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    with open(os.path.join(d, "combined.pem"), "w") as f:
        f.write(open(crt).read() + open(key).read())
    return crt, key


def start_upstream(d):
    """nginx answering directly: 12 bytes at /, 1 MiB at /big."""
    port = pb.free_port()
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "big"), "wb") as f:
        f.write(b"x" * (1 << 20))
    # nginx's worker (not root) must reach the file: mkdtemp made the work folder 0700.
    for p in (pb.WORK, d):
        os.chmod(p, 0o755)
    os.chmod(os.path.join(d, "big"), 0o644)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:%(port)d backlog=4096;
    location = /big { default_type application/octet-stream; alias %(d)s/big; }
    location / { default_type text/plain; return 200 "hello world\\n"; } } }
""" % {"d": d, "port": port})
    return pb.Proc("upstream", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port,
                   pb.LOAD_CORE)


def start_px(up, crt, key, name="px", extra=""):
    port = pb.free_port()
    d = os.path.join(pb.WORK, name)
    os.makedirs(d)
    subprocess.run([pb.PXSTORE, "--data", d + "/data", "put-json",
                    json.dumps({"name": "bench", "hosts": ["127.0.0.1", "localhost"],
                                "upstreams": ["http://127.0.0.1:%d" % up.port]})], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([pb.PXSTORE, "--data", d + "/data", "put-cert", "bench", crt, key], check=True,
                   stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d tls\nworkers 1\ndata_dir %s/data\nlog_level warn\nmax_connections 40000\n"
                "upstream_keepalive 64\ntls_default_certificate bench\n%s%s" % (port, d, pb.IO_ENGINE, extra))
    return pb.Proc(name, [pb.PXD, "-c", d + "/pxd.conf"], port, pb.PROXY_CORE)


def start_nginx(up, crt, key):
    port = pb.free_port()
    d = os.path.join(pb.WORK, "nginx")
    os.makedirs(d)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("""worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:%(up)d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%(port)d ssl backlog=4096;
    ssl_certificate %(crt)s; ssl_certificate_key %(key)s;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_timeout 1d;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; } } }
""" % {"d": d, "port": port, "up": up.port, "crt": crt, "key": key})
    return pb.Proc("nginx", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], port,
                   pb.PROXY_CORE, measure_child=True)


def start_haproxy(up, crt, key):
    return pb.start_haproxy(up.port, "ssl crt " + os.path.join(os.path.dirname(crt), "combined.pem"), "https")


def wrk(port, seconds, conns, pid, path="/", close=False):
    cpu0 = pb.cpu_seconds(pid)
    argv = ["taskset", "-c", pb.LOAD_CORE, "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + ["https://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    mib = float(m.group(1)) * {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}[m.group(2)]
    cpu = pb.cpu_seconds(pid) - cpu0
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError("%s answered %s non-2xx responses: not measuring that" % (path, non2xx.group(1)))
    return {"rps": reqs / secs, "cpu_us": cpu * 1e6 / reqs if reqs else 0, "mib_s": mib,
            "cpu_per_mib_ms": cpu * 1e3 / (mib * secs) if mib else 0, "errors": errs.group(1) if errs else ""}


def resumed(port, seconds, pid):
    """Resumed TLS 1.3 handshakes (a ticket from the previous connection), one request each.
    The client is Python on the load core: slower than the proxy, but CPU per handshake is
    the proxy's own, whatever the rate."""
    os.sched_setaffinity(0, {int(pb.LOAD_CORE)})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def one(session):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost",
                            session=session)
        s.sendall(req)
        while s.recv(65536):
            pass
        out = s.session, s.session_reused
        s.close()
        return out

    session, _ = one(None)
    cpu0 = pb.cpu_seconds(pid)
    n = reused = 0
    t0 = time.time()
    while time.time() - t0 < seconds:
        session, r = one(session)
        n += 1
        reused += r
    secs = time.time() - t0
    cpu = pb.cpu_seconds(pid) - cpu0
    os.sched_setaffinity(0, set(range(os.cpu_count())))
    if reused < n:
        raise RuntimeError("only %d of %d handshakes resumed" % (reused, n))
    return {"rps": n / secs, "cpu_us": cpu * 1e6 / n if n else 0}


def idle_tls_memory(proc, n):
    pid = proc.pid()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = pb.rss_kb(pid)
    socks = []
    for i in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", proc.port)), server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        buf = b""
        while not buf.endswith(b"hello world\n"):
            buf += s.recv(4096)
        socks.append(s)
    time.sleep(0.5)
    after = pb.rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) * 1024.0 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--only", default="px,nginx,haproxy")
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pb.WORK = tempfile.mkdtemp(prefix="pxtls-bench-")
    crt, key = make_cert(pb.WORK)
    up = start_upstream(os.path.join(pb.WORK, "upstream"))
    starters = {"px": start_px, "nginx": start_nginx, "haproxy": start_haproxy}
    names = [n for n in args.only.split(",") if n in starters]
    kinds = ("full", "resumed", "keepalive", "1mib")

    def measure(k, p, pid):
        if k == "full":
            return wrk(p.port, args.seconds, 16, pid, close=True)
        if k == "resumed":
            return resumed(p.port, args.seconds, pid)
        if k == "keepalive":
            return wrk(p.port, args.seconds, args.connections, pid)
        return wrk(p.port, args.seconds, 8, pid, path="/big")

    def show(r, n, row):
        print("round %d %-8s full %7.0f/s %6.1f us  resumed %7.0f/s %6.1f us  keep-alive %7.0f/s %5.2f us  "
              "1MiB %6.0f MiB/s %5.2f ms/MiB %s" % (
                  r, n, row["full"]["rps"], row["full"]["cpu_us"], row["resumed"]["rps"], row["resumed"]["cpu_us"],
                  row["keepalive"]["rps"], row["keepalive"]["cpu_us"], row["1mib"]["mib_s"],
                  row["1mib"]["cpu_per_mib_ms"],
                  " ".join(x["errors"] for x in (row["full"], row["keepalive"]) if x["errors"])), flush=True)

    def idle(p):
        b = idle_tls_memory(p, args.idle)
        print("idle    %-8s %7.0f bytes of RSS per idle TLS keep-alive connection" % (p.name, b), flush=True)
        return b

    try:
        res, memory = pb.interleaved(
            {n: (lambda n=n: starters[n](up, crt, key)) for n in names}, names, kinds,
            lambda p, pid: wrk(p.port, 1, args.connections, pid), measure, args.rounds, show,
            idle if args.idle else None)
    finally:
        up.stop()

    def med(n, k, f):
        return pb.median_of(res, n, k, f)

    def ratio(n, k, f, inverse=False):  # median of per-round px/other (or other/px for CPU)
        return pb.ratio_of(res, n, k, f, inverse)

    print()
    print("| proxy | full handshakes/s | CPU per full handshake | resumed/s | CPU per resumed | keep-alive req/s "
          "| CPU per request | 1 MiB: MiB/s | CPU per MiB | RSS per idle TLS conn |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        print("| %s | %.0f | %.1f us | %.0f | %.1f us | %.0f | %.2f us | %.0f | %.2f ms | %s |" % (
            n, med(n, "full", "rps"), med(n, "full", "cpu_us"), med(n, "resumed", "rps"), med(n, "resumed", "cpu_us"),
            med(n, "keepalive", "rps"), med(n, "keepalive", "cpu_us"), med(n, "1mib", "mib_s"),
            med(n, "1mib", "cpu_per_mib_ms"), ("%.0f B" % memory[n]) if n in memory else "-"))
    if "px" in names:
        print()
        for n in names:
            if n == "px":
                continue
            print("px/%s: CPU per full handshake %.2f, per resumed %.2f; keep-alive req per CPU-s %.2f (req/s %.2f); "
                  "1 MiB throughput %.2f (CPU per MiB %.2f); idle memory %.2f" % (
                      n, 1 / ratio(n, "full", "cpu_us", True), 1 / ratio(n, "resumed", "cpu_us", True),
                      ratio(n, "keepalive", "cpu_us", True), ratio(n, "keepalive", "rps"),
                      ratio(n, "1mib", "mib_s"), 1 / ratio(n, "1mib", "cpu_per_mib_ms", True),
                      memory.get("px", 0) / memory[n] if memory.get(n) else float("nan")))
    shutil.rmtree(pb.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
