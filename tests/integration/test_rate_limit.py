"""rate_limit: nginx limit_req semantics, exact for the whole host. Two workers count in one table (wrk from
many clients: exactly burst + 1 requests pass per client), burst, delay and nodelay side by side with a real
nginx running limit_req with the same settings, keys (client, header, route, a Lua expression), Retry-After,
dry runs, metrics, HTTP/2, and configs refused on write. px.shared counters are host-wide too."""
import os
import re
import subprocess
import tempfile
import threading
import unittest

from pxtest import ROOT, Admind, Nginx, Pxd, Upstream, free_port, get, route, wait_for
from test_geoip import from_source

XFF_SCRIPT = """
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", { ["Host"] = "many.test", ["X-Forwarded-For"] = "10.9.0." .. (i %% %d) })
end
"""

COUNT = """
return { request = function(req)
  local n = px.shared.incr("hits:" .. req:route(), 1)
  if req:path() == "/count" then return px.respond(200, {}, tostring(px.shared.get("hits:" .. req:route()))) end
end }
"""


def read(path):
    with open(path) as f:
        return f.read()


def rl(conf, **kw):
    return [{"name": "rate_limit", "config": dict(conf, **kw)}]


class RateLimitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxrl-")
        fdir = os.path.join(cls.dir, "filters")
        os.makedirs(fdir)
        with open(os.path.join(fdir, "count.lua"), "w") as f:
            f.write(COUNT)
        cls.up = Upstream()
        R = lambda name, conf: route(name, [name + ".test"], [cls.up], filters=rl(conf))
        cls.px = Pxd(workers=2, extra="listen 127.0.0.1:0 h2c\ntrusted_proxies 127.0.0.1/32\nfilters_dir %s\n"
                                      "metrics_listen 127.0.0.1:0" % fdir,
                     routes=[R("many", {"rate": "1r/m", "burst": 4, "nodelay": True}),
                             R("src", {"rate": "1r/m", "burst": 1, "nodelay": True}),
                             R("nodelay", {"rate": "1r/m", "burst": 3, "nodelay": True}),
                             R("delay", {"rate": "6r/m", "burst": 2, "delay": 1}),
                             R("hdr", {"rate": "1r/m", "key": "header:X-Api-Key", "status": 503}),
                             R("whole", {"rate": "1r/m", "burst": 1, "key": "route", "nodelay": True}),
                             R("expr", {"rate": "1r/m", "key": "expr:req:header('x-user') or req:client_ip()"}),
                             R("dry", {"rate": "1r/m", "dry_run": True}),
                             route("count", ["count.test"], [cls.up], filters=[{"name": "count", "config": {}}])])
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))
        cls.metrics = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", cls.px.log()).group(1))
        # nginx with the same limit_req settings, in front of the same upstream.
        cls.nport = free_port()
        loc = lambda path, zone, extra: ("location %s { limit_req zone=%s %s; limit_req_status 429; "
                                         "proxy_pass http://127.0.0.1:%d; }" % (path, zone, extra, cls.up.port))
        cls.nginx = Nginx("limit_req_zone $binary_remote_addr zone=nd:1m rate=1r/m;\n"
                          "limit_req_zone $binary_remote_addr zone=dl:1m rate=6r/m;\n"
                          "server { listen 127.0.0.1:%d; %s %s }"
                          % (cls.nport, loc("/nodelay", "nd", "burst=3 nodelay"), loc("/delay", "dl", "burst=2 delay=1")))
        cls.nginx.wait_port(cls.nport)

    @classmethod
    def tearDownClass(cls):
        cls.nginx.stop()
        cls.px.stop()
        cls.up.stop()

    def test_exact_across_two_workers_with_many_clients(self):
        clients = 20
        script = os.path.join(self.dir, "xff.lua")
        with open(script, "w") as f:
            f.write(XFF_SCRIPT % clients)
        out = subprocess.run(["wrk", "-t2", "-c16", "-d2s", "-s", script, "http://127.0.0.1:%d/" % self.px.port],
                             capture_output=True, text=True, timeout=120).stdout
        total = int(re.search(r"(\d+) requests in", out).group(1))
        refused = int(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1))
        self.assertGreater(total, clients * 10, out)
        # burst 4 + 1 per client, however many of wrk's 16 connections each worker took
        self.assertEqual(total - refused, clients * 5, out)
        # both workers served: each counted requests of its own
        def answered():
            m = get(self.metrics, "/metrics", host="m").body.decode()
            return sum(float(v) for v in re.findall(
                r'px_filter_answers_total\{filter="rate_limit",phase="request"\} (\S+)', m))
        wait_for(lambda: answered() >= refused, what="px_filter_answers_total to count the refusals")

    def test_real_source_addresses(self):
        for src in ("127.0.0.7", "127.0.0.8"):
            got = [from_source(self.px.port, src, "src.test").status for _ in range(4)]
            self.assertEqual(got, [200, 200, 429, 429], src)

    def test_refusal_has_retry_after(self):
        r = [get(self.px.port, "/", host="hdr.test", headers=[("X-Api-Key", "k1")]) for _ in range(2)]
        self.assertEqual([x.status for x in r], [200, 503])
        self.assertGreaterEqual(int(r[1].header("Retry-After")), 1)
        self.assertLessEqual(int(r[1].header("Retry-After")), 60)
        # another key has its own bucket; no key at all is not limited
        self.assertEqual(get(self.px.port, "/", host="hdr.test", headers=[("X-Api-Key", "k2")]).status, 200)
        self.assertEqual([get(self.px.port, "/", host="hdr.test").status for _ in range(3)], [200] * 3)

    def test_route_key_is_one_bucket_for_every_client(self):
        got = [from_source(self.px.port, s, "whole.test").status for s in ("127.0.0.11", "127.0.0.12", "127.0.0.13")]
        self.assertEqual(got, [200, 200, 429])

    def test_lua_expression_key(self):
        u = lambda who: get(self.px.port, "/", host="expr.test", headers=[("X-User", who)]).status
        self.assertEqual([u("ann"), u("ann"), u("bob")], [200, 429, 200])

    def test_dry_run_lets_everything_through(self):
        self.assertEqual([get(self.px.port, "/", host="dry.test").status for _ in range(3)], [200] * 3)
        wait_for(lambda: "rate_limit: would refuse" in self.px.log(), what="the dry run's log line")

    def test_nodelay_burst_matches_nginx(self):
        def burst(port, host, path, n=8):
            out = []
            threads = [threading.Thread(target=lambda: out.append(get(port, path, host=host).status)) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sorted(out)
        px = burst(self.px.port, "nodelay.test", "/nodelay")
        ng = burst(self.nport, "n.test", "/nodelay")
        self.assertEqual(px, ng)
        self.assertEqual(px, [200] * 4 + [429] * 4)

    def rl_calls(self):
        m = get(self.metrics, "/metrics", host="m").body.decode()
        return sum(float(v) for v in re.findall(
            r'px_filter_calls_total\{filter="rate_limit",phase="request"\} (\S+)', m))

    def test_delay_matches_nginx(self):
        """rate 6r/m (one per 10 s), burst 2, delay 1: two at once, the third waits its turn, the rest are
        refused while it waits. The same for nginx."""
        def pattern(port, host, counted):
            first = [get(port, "/delay", host=host).status for _ in range(2)]
            waited = []
            seen = counted()
            t = threading.Thread(target=lambda: waited.append(get(port, "/delay", host=host).status))
            t.start()
            wait_for(lambda: counted() > seen, what="the third request to be counted")
            later = [get(port, "/delay", host=host).status for _ in range(2)]
            pending = t.is_alive()  # the third still waits after the refusals came back
            t.join()
            return first, pending, waited, later
        nlog = os.path.join(self.nginx.dir, "error.log")
        px = pattern(self.px.port, "delay.test", self.rl_calls)
        ng = pattern(self.nport, "d.test", lambda: read(nlog).count("delaying request"))
        self.assertEqual(px, ng)
        self.assertEqual(px, ([200, 200], True, [200], [429, 429]))

    def test_http2(self):
        def h2():
            return subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                   "-H", "Host: src.test", "--interface", "127.0.0.9",
                                   "http://127.0.0.1:%d/" % self.h2c], capture_output=True, text=True,
                                  timeout=60).stdout
        self.assertEqual([h2() for _ in range(3)], ["200", "200", "429"])

    def test_shared_counter_is_host_wide(self):
        for _ in range(10):
            self.assertEqual(get(self.px.port, "/", host="count.test").status, 200)  # new connections: both workers
        self.assertEqual(get(self.px.port, "/count", host="count.test").body.decode(), "11")


class RateLimitNativeTest(unittest.TestCase):
    """px runs the built-in rate_limit in C++ where its config allows (keys client, route, header:); an
    operator's copy of filters/rate_limit.lua in filters_dir runs as Lua. Both answer the same requests the
    same way: the same statuses, Retry-After, bodies and dry-run log lines."""

    CONFIGS = {
        "hdr": {"rate": "1r/m", "burst": 2, "nodelay": True, "key": "header:X-K", "status": 503},
        "cli": {"rate": "2r/m", "burst": 1, "nodelay": True},
        "all": {"rate": "1r/m", "key": "route", "zone": "shared"},
        "also": {"rate": "1r/m", "key": "route", "zone": "shared"},  # the same zone: one bucket
        "dry": {"rate": "1r/m", "key": "header:X-K", "dry_run": True},
    }

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxrln-")
        with open(os.path.join(ROOT, "filters", "rate_limit.lua")) as src, \
                open(os.path.join(cls.dir, "rate_limit.lua"), "w") as dst:
            dst.write(src.read())
        cls.up = Upstream()
        routes = [route(n, [n + ".test"], [cls.up], filters=rl(c)) for n, c in cls.CONFIGS.items()]
        cls.native = Pxd(workers=2, routes=routes)
        cls.lua = Pxd(workers=2, routes=routes, extra="filters_dir %s" % cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls.native.stop()
        cls.lua.stop()
        cls.up.stop()

    def run_sequence(self, px):
        out = []
        def ask(host, headers=(), source="127.0.0.1"):
            r = from_source(px.port, source, host, headers)
            out.append((host, r.status, r.header("Retry-After"), r.body if r.status != 200 else None))
        for _ in range(4):
            ask("hdr.test", [("X-K", "a")])
        ask("hdr.test", [("X-K", "b")])
        ask("hdr.test")  # no key: not limited
        for src in ("127.0.0.21", "127.0.0.21", "127.0.0.21", "127.0.0.22"):
            ask("cli.test", source=src)
        ask("all.test", source="127.0.0.23")
        ask("also.test", source="127.0.0.24")
        for _ in range(3):
            ask("dry.test", [("X-K", "d")])
        wait_for(lambda: "rate_limit: would refuse d (dry run)" in px.log(), what="the dry run's log line")
        return out

    def test_native_and_lua_agree(self):
        native, lua = self.run_sequence(self.native), self.run_sequence(self.lua)
        self.assertEqual(native, lua)
        self.assertEqual([s for _, s, _, _ in native],
                         [200, 200, 200, 503, 200, 200, 200, 200, 429, 200, 200, 429, 200, 200, 200])
        refused = [x for x in native if x[1] in (429, 503)]
        self.assertTrue(all(1 <= int(ra) <= 60 for _, _, ra, _ in refused), refused)
        self.assertTrue(all(body == b"too many requests\n" for _, _, _, body in refused), refused)


class RateLimitConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream()
        cls.admin = Admind()

    @classmethod
    def tearDownClass(cls):
        cls.admin.stop()
        cls.up.stop()

    def test_bad_configs_refused_naming_the_field(self):
        cases = [({}, "rate is required"),
                 ({"rate": "ten"}, "rate must look like"),
                 ({"rate": "1r/s", "burst": -1}, "burst must be a whole number"),
                 ({"rate": "1r/s", "delay": 1, "nodelay": True}, "delay or nodelay"),
                 ({"rate": "1r/s", "key": "cookie:x"}, "key must be client, route"),
                 ({"rate": "1r/s", "key": "expr:req:header("}, "rate_limit: key:"),
                 ({"rate": "1r/s", "status": 200}, "status must be 400 to 599"),
                 ({"rate": "1r/s", "bogus": 1}, "unknown key 'bogus'")]
        for conf, msg in cases:
            r = self.admin.ctl("route", "add", "rl", "--host", "rl.test", "--upstream", self.up.url,
                               "--filter", "rate_limit=" + __import__("json").dumps(conf))
            self.assertEqual(r.returncode, 4, (conf, r.stdout, r.stderr))
            self.assertIn(msg, r.stderr, conf)
            self.assertIn("filters[0]", r.stderr, conf)
        r = self.admin.ctl("route", "add", "rl", "--host", "rl.test", "--upstream", self.up.url,
                           "--filter", 'rate_limit={"rate":"30r/m","burst":5}')
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
