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
  bench/instructions.py --rate-limit   the filtered case is rate_limit alone (per client address, not limiting)
  bench/instructions.py --forward-auth the filtered case is forward_auth alone (a 200 from an nginx auth service,
                                       on a kept-alive connection)
  bench/instructions.py --geoip        the filtered case with the geoip filter too (a country and an ASN
                                       database written here, as tests/integration/test_geoip.py does), and
                                       the instructions its lookups take per request, and their share
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
GEOIP = "--geoip" in sys.argv
RATE_LIMIT = "--rate-limit" in sys.argv
FORWARD_AUTH = "--forward-auth" in sys.argv
if FORWARD_AUTH:
    spec2 = importlib.util.spec_from_file_location("pxpolicy", os.path.join(HERE, "policy.py"))
    pxpolicy = importlib.util.module_from_spec(spec2)
    spec2.loader.exec_module(pxpolicy)
    pxpolicy.pb.WORK = WORK
    auth = pxpolicy.start_auth()
if GEOIP:
    for kind, pairs in (("country", ["127.0.0.1/32=DE"]), ("asn", ["127.0.0.1/32=64500"])):
        subprocess.run(["perl", os.path.join(HERE, "..", "tests", "integration", "geoip_db.pl"), kind,
                        "%s/%s.mmdb" % (WORK, kind)] + pairs, check=True)
EXTRA = ("metrics_listen 127.0.0.1:0\n" if "--metrics" in sys.argv else "") + \
        ("access_log %s/access.log\n" % WORK if "--access-log" in sys.argv else "") + \
        ("geoip_database %s/country.mmdb\ngeoip_asn_database %s/asn.mmdb\n" % (WORK, WORK) if GEOIP else "")
def measure(filtered, n):
    d = os.path.join(WORK, "d%d%d" % (filtered, n))
    subprocess.run(["rm", "-rf", d]); os.makedirs(d)
    subprocess.run([PXSTORE, "--data", d + "/data", "put-acl", json.dumps({"name": "lan", "rules": [{"action": "allow", "cidr": "127.0.0.0/8"}]})], check=True, capture_output=True)
    r = {"name": "b", "hosts": ["127.0.0.1"], "upstreams": [UP]}
    if filtered:
        r["filters"] = [{"name": "acl", "config": {"list": "lan"}}, {"name": "force_tls", "config": {}},
                        {"name": "headers", "config": {"response": {"set": {"X-Frame-Options": "DENY"}}}}]
        if GEOIP:
            r["filters"].append({"name": "geoip", "config": {"deny_countries": ["FR"], "deny_asns": [64501]}})
        if RATE_LIMIT:
            r["filters"] = [{"name": "rate_limit", "config": {"rate": "1000000r/s", "burst": 1000000, "nodelay": True}}]
        if FORWARD_AUTH:
            r["filters"] = [{"name": "forward_auth", "config": {"url": "http://127.0.0.1:%d/verify" % auth.port,
                                                                "copy_headers": ["Remote-User"]}}]
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
    total = int(re.search(r"^summary: (\d+)", txt, re.M).group(1))
    if GEOIP and filtered:
        # What the filter's req:country() and req:asn() cost, inclusive: the worker's cache (Geo::lookup),
        # libmaxminddb on a miss, and the Lua string. None at start-up.
        out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", d + "/cg.out"],
                             capture_output=True, text=True).stdout
        look = sum(int(m.group(1).replace(",", "")) for m in
                   re.finditer(r"^\s*([\d,]+) .*::api_(?:country|asn)\(lua_State", out, re.M))
        LOOKUPS[n] = look
    return total
LOOKUPS = {}
for filtered in (0, 1):
    a, b = measure(filtered, 1000), measure(filtered, 6000)
    print("filtered" if filtered else "unfiltered", "(%s)" % EXTRA.strip().replace("\n", ", ") if EXTRA else "", "instructions per request: %.0f" % ((b - a) / 5000.0), flush=True)
    if GEOIP and filtered:
        per = (LOOKUPS[6000] - LOOKUPS[1000]) / 5000.0
        print("geoip lookups (country and ASN): %.0f instructions per request, %.1f%% of the filtered request"
              % (per, 100.0 * per / ((b - a) / 5000.0)), flush=True)
upstream.stop()
if FORWARD_AUTH:
    auth.stop()
