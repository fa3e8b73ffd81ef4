"""Prometheus metrics: pxd's /metrics on its own listener passes `promtool check
metrics`, and its counters move as this test's requests say they should."""
import re
import subprocess
import unittest
import urllib.request

from pxtest import Pxd, Upstream, get, route, wait_for, DEADLINE


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=DEADLINE) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def value(text, name, **labels):
    """The sample of `name` with exactly these labels (in any order), or 0."""
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return 0.0


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.up = Upstream()
        self.pxd = Pxd(workers=2, extra="metrics_listen 127.0.0.1:0\n",
                       routes=[route("shop", "a.test", [self.up])])
        self.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.pxd.log()).group(1))

    def tearDown(self):
        self.pxd.stop()
        self.up.kill()

    def test_promtool_and_counters(self):
        for _ in range(5):
            self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        for _ in range(3):
            self.assertEqual(get(self.pxd.port, host="nowhere.test").status, 404)
        self.assertEqual(get(self.pxd.port, host="a.test", method="POST", body=b"x").status, 200)
        # Counted as each stream ends (just after its last byte left): wait for the ninth.
        text = wait_for(lambda: (lambda t: t if value(t, "px_request_duration_seconds_count", route="shop") == 6 and
                                 value(t, "px_requests_total", route="", method="get_head", code="4xx") == 3
                                 else None)(scrape(self.mport)), what="nine requests counted")
        self.assertEqual(value(text, "px_requests_total", route="shop", method="get_head", code="2xx"), 5)
        self.assertEqual(value(text, "px_requests_total", route="", method="get_head", code="4xx"), 3)
        self.assertEqual(value(text, "px_requests_total", route="shop", method="post", code="2xx"), 1)
        self.assertEqual(value(text, "px_request_duration_seconds_count", route="shop"), 6)
        self.assertEqual(value(text, "px_request_duration_seconds_bucket", route="shop", le="+Inf"), 6)
        self.assertGreater(value(text, "px_sent_bytes_total"), 0)
        self.assertEqual(value(text, "px_stream_terminations_total", reason="local"), 3)
        self.assertIn('px_build_info{version="', text)
        gen = self.pxd.applied()
        self.assertEqual(value(text, "px_config_generation"), gen)
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Anything but GET /metrics is 404.
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen("http://127.0.0.1:%d/other" % self.mport, timeout=DEADLINE)
        self.assertEqual(e.exception.code, 404)

    def test_grafana_dashboard_uses_real_series(self):
        import json
        import os
        from pxtest import ROOT
        get(self.pxd.port, host="a.test")
        text = scrape(self.mport)
        families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        dash = json.load(open(os.path.join(ROOT, "conf/grafana/px-dashboard.json")))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        self.assertGreaterEqual(len(exprs), 10)
        for e in exprs:
            for name in re.findall(r"\bpx_[a-z_]+", e):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertIn(base, families, "%s in %r is not a series pxd exports" % (name, e))

    def test_connections_gauge(self):
        from pxtest import Client
        c = Client(self.pxd.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        wait_for(lambda: value(scrape(self.mport), "px_client_connections") >= 1, what="the open connection counted")
        c.close()
        wait_for(lambda: value(scrape(self.mport), "px_client_connections") == 0, what="the connection gone")


if __name__ == "__main__":
    unittest.main()
