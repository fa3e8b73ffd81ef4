#!/usr/bin/env python3
"""Instructions per proxied request in pxd (user space), counted by callgrind:
deterministic, unlike wall-clock numbers on a shared machine.

  bench/instructions.py

Runs pxd under valgrind --tool=callgrind twice per case (1,000 and 6,000
keep-alive requests through one connection) and reports the difference / 5,000,
which cancels start-up. Cases: a route without filters, and one with acl +
force_tls + headers (as bench/run --filters). The upstream is nginx answering
directly, started from bench/run.py's configuration.

  bench/instructions.py --metrics      the same two cases with metrics_listen on
  bench/instructions.py --access-log   ... with a JSON access log
"""
import os, re, signal, socket, subprocess, sys, time, json, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from pxtest import PXSTORE, PXD, wait_for
import importlib.util
spec = importlib.util.spec_from_file_location("pxbench", os.path.join(HERE, "run.py"))
pxbench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pxbench)
pxbench.WORK = tempfile.mkdtemp(prefix="pxinsn-")
upstream = pxbench.start_upstream()
UP = "http://127.0.0.1:%d" % upstream.port
WORK = pxbench.WORK
EXTRA = ("metrics_listen 127.0.0.1:0\n" if "--metrics" in sys.argv else "") + \
        ("access_log %s/access.log\n" % WORK if "--access-log" in sys.argv else "")
def measure(filtered, n):
    d = os.path.join(WORK, "d%d%d" % (filtered, n))
    subprocess.run(["rm", "-rf", d]); os.makedirs(d)
    subprocess.run([PXSTORE, "--data", d + "/data", "put-acl", json.dumps({"name": "lan", "rules": [{"action": "allow", "cidr": "127.0.0.0/8"}]})], check=True, capture_output=True)
    r = {"name": "b", "hosts": ["127.0.0.1"], "upstreams": [UP]}
    if filtered:
        r["filters"] = [{"name": "acl", "config": {"list": "lan"}}, {"name": "force_tls", "config": {}},
                        {"name": "headers", "config": {"response": {"set": {"X-Frame-Options": "DENY"}}}}]
    subprocess.run([PXSTORE, "--data", d + "/data", "put-json", json.dumps(r)], check=True, capture_output=True)
    with open(d + "/px.conf", "w") as f:
        f.write("listen 127.0.0.1:0\nworkers 1\ndata_dir %s/data\nlog_level info\ntrusted_proxies 127.0.0.1/32\n%s" % (d, EXTRA))
    log = open(d + "/log", "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/cg.out" % d, PXD, "-c", d + "/px.conf"], stdout=log, stderr=subprocess.STDOUT)
    m = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", open(d + "/log").read()), timeout=120)
    wait_for(lambda: "pxd ready" in open(d + "/log").read(), timeout=120)
    port = int(m.group(1))
    s = socket.create_connection(("127.0.0.1", port))
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    for i in range(n):
        s.sendall(req)
        buf = b""
        while not buf.endswith(b"hello world\n"):
            buf += s.recv(65536)
    s.close()
    p.send_signal(signal.SIGINT); p.wait()
    txt = open(d + "/cg.out").read()
    return int(re.search(r"^summary: (\d+)", txt, re.M).group(1))
for filtered in (0, 1):
    a, b = measure(filtered, 1000), measure(filtered, 6000)
    print("filtered" if filtered else "unfiltered", "(%s)" % EXTRA.strip().replace("\n", ", ") if EXTRA else "", "instructions per request: %.0f" % ((b - a) / 5000.0), flush=True)
upstream.stop()
