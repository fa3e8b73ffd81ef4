"""pxctl trace: one request through the running pxd, its path recorded and shown —
route and why, filters per phase with verdict and time, peers and attempts, the
upstream status, time per phase. Only a holder of admin rights can trace; a
forged, expired or replayed-elsewhere token gets an ordinary untraced answer,
and the token never reaches the upstream."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

from pxtest import Admind, Pxd, Upstream, free_port, get, route, wait_for

TAG = 'return { request = function(req) req:set_header("X-Tag", "1") end,' \
      ' response = function(req) req:set_resp_header("X-Seen", "1") end }'
GATE = 'return { path_prefix = "/admin", request = function(req) return px.respond(403, nil, "no\\n") end }'


class TraceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxtrace-")
        for name, src in (("tag", TAG), ("gate", GATE)):
            with open(os.path.join(cls.dir, name + ".lua"), "w") as f:
                f.write(src)
        cls.up = Upstream()
        cls.h2 = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "h2peer.py")],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        h2port = int(re.search(r":(\d+)$", cls.h2.stdout.readline().strip()).group(1))
        cls.dead = "http://127.0.0.1:%d" % free_port()  # nothing listens: refused
        cls.pxd = Pxd(workers=2, extra="filters_dir %s\nlisten 127.0.0.1:0 h2c\n" % cls.dir)
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.pxd.log()).group(1))
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)
        for args in (["route", "add", "shop", "--host", "shop.test", "--upstream", cls.up.url,
                      "--filter", "tag", "--filter", "gate"],
                     ["route", "add", "api", "--host", "*.api.test", "--path", "/v1", "--upstream", cls.dead,
                      "--upstream", cls.up.url],
                     ["route", "add", "h2r", "--host", "h2r.test", "--upstream", "h2c://127.0.0.1:%d" % h2port]):
            r = cls.adm.ctl(*args)
            assert r.returncode == 0, r.stderr
        cls.pxd.wait_applied(cls.adm.generation())

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()
        cls.up.kill()
        cls.h2.kill()
        cls.h2.wait()

    def trace(self, *args):
        r = self.adm.ctl("trace", "--connect", "127.0.0.1:%d" % self.pxd.port, *args)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r.stdout

    def test_route_filters_peer_and_phases(self):
        rec = json.loads(self.trace("http://shop.test/cart?x=1", "-H", "Cookie: a=b", "--json"))
        self.assertEqual(rec["status"], 200)
        self.assertEqual(rec["route"]["name"], "shop")
        self.assertIn("host shop.test (exact)", rec["route"]["why"])
        seen = [(f["phase"], f["filter"], f["verdict"]) for f in rec["filters"]]
        self.assertIn(("request", "tag", "next"), seen)
        self.assertIn(("request", "gate", "skipped (path_prefix /admin)"), seen)
        self.assertIn(("response", "tag", "next"), seen)
        for f in rec["filters"]:
            self.assertGreaterEqual(f["ms"], 0)
        up = rec["upstream"]
        self.assertEqual(up["status"], 200)
        self.assertEqual(up["balancer"], "round_robin")
        self.assertEqual(len(up["attempts"]), 1)
        self.assertIn(up["attempts"][0]["peer"], self.up.url)
        self.assertEqual(up["attempts"][0]["outcome"], "answered")
        self.assertIsNotNone(up["first_byte_ms"])
        self.assertEqual(set(rec["phases_ms"]), {"early_request", "request", "upstream_peer", "upstream_request",
                                                 "response", "logging"})
        self.assertGreater(rec["bytes_out"], 0)
        # The upstream saw the request (and its headers), but never the token.
        seen_by_upstream = json.loads(get(self.pxd.port, host="shop.test", path="/echo").body)
        self.assertNotIn("x-px-trace", json.dumps(seen_by_upstream).lower())

    def test_an_http2_upstream_shows_its_stream_and_why_its_connection(self):
        rec = json.loads(self.trace("http://h2r.test/echo", "--json"))
        self.assertEqual(rec["status"], 200)
        at = rec["upstream"]["attempts"][0]
        self.assertTrue(at["peer"].startswith("h2c://127.0.0.1:"), at)
        self.assertRegex(at["why"], r"HTTP/2 stream \d+ on a (new connection|connection with room)")
        self.assertEqual(at["outcome"], "answered")

    def test_answer_from_a_filter_and_human_output(self):
        out = self.trace("http://shop.test/admin/x")
        self.assertIn("status     403", out)
        self.assertIn("route      shop: host shop.test (exact)", out)
        self.assertIn("gate  answered", out)
        self.assertNotIn("attempt 1", out)

    def test_wildcard_path_prefix_and_failover(self):
        rec = json.loads(self.trace("http://a.api.test/v1/items", "--json"))
        self.assertEqual(rec["status"], 200)
        self.assertIn("*.api.test (wildcard", rec["route"]["why"])
        self.assertIn("path prefix /v1", rec["route"]["why"])
        peers = rec["upstream"]["peers"]
        self.assertEqual(len(peers), 2)
        attempts = rec["upstream"]["attempts"]
        # Round robin may start with either; when the dead one comes first, the retry is in the record.
        if len(attempts) == 2:
            self.assertEqual(attempts[0]["outcome"], "connection refused")
            self.assertIn("retry", attempts[1]["why"])
        self.assertEqual(attempts[-1]["outcome"], "answered")
        # After a failure the dead peer's state shows in the next trace's peer list.
        wait_for(lambda: any("failures" in p or "out for" in p for p in json.loads(
            self.trace("http://a.api.test/v1/items", "--json"))["upstream"]["peers"]), what="the failure shown")

    def test_tokens_are_checked(self):
        # A token from pxadmind works once pxd checks it; a forged or expired one is served untraced.
        st, _, tk = self.adm.api("POST", "/v1/traces", {})
        self.assertEqual(st, 201)
        forged = tk["token"][:-1] + ("0" if tk["token"][-1] != "0" else "1")
        parts = tk["token"].split(".")
        expired = "%s.%d.%s" % (parts[0], int(time.time()) - 10, parts[2])
        for bad in (forged, expired, "garbage", "a.b.c,,x"):
            r = get(self.pxd.port, host="shop.test", headers=[("X-Px-Trace", bad)])
            self.assertEqual(r.status, 200)
        self.assertEqual(self.adm.api("GET", "/v1/traces/" + tk["id"])[0], 404)
        r = get(self.pxd.port, host="shop.test", headers=[("X-Px-Trace", tk["token"])])
        self.assertEqual(r.status, 200)
        st, _, rec = wait_for(lambda: (lambda x: x if x[0] == 200 else None)(
            self.adm.api("GET", "/v1/traces/" + tk["id"])), what="the record")
        self.assertEqual(rec["id"], tk["id"])
        # Taken once.
        self.assertEqual(self.adm.api("GET", "/v1/traces/" + tk["id"])[0], 404)
        self.assertEqual(self.adm.api("GET", "/v1/traces/..%2Fx")[0], 400)

    def test_a_trace_over_http2(self):
        st, _, tk = self.adm.api("POST", "/v1/traces", {})
        self.assertEqual(st, 201)
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                            "-w", "%{http_version} %{http_code}", "-H", "Host: shop.test", "-H", "X-Px-Trace: " + tk["token"],
                            "http://127.0.0.1:%d/cart" % self.h2c], capture_output=True, text=True)
        self.assertEqual(r.stdout, "2 200")
        st, _, rec = wait_for(lambda: (lambda x: x if x[0] == 200 else None)(
            self.adm.api("GET", "/v1/traces/" + tk["id"])), what="the record")
        self.assertEqual(rec["id"], tk["id"])
        self.assertIn("/cart", json.dumps(rec))
        self.assertEqual(rec.get("route", {}).get("name", rec.get("route")), "shop", json.dumps(rec)[:600])

    def test_tracing_needs_admin_rights(self):
        # The TCP API without a token: 401, no token issued.
        st, _, _ = self.adm.api("POST", "/v1/traces", {}, tcp=True)
        self.assertEqual(st, 401)


if __name__ == "__main__":
    unittest.main()
