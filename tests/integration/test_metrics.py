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
        # Counted as each stream ends (just after its last byte left), and a scrape reads one family after
        # another while workers write: wait for one scrape in which every count below has arrived.
        want = [("px_requests_total", dict(route="shop", method="get_head", code="2xx"), 5),
                ("px_requests_total", dict(route="", method="get_head", code="4xx"), 3),
                ("px_requests_total", dict(route="shop", method="post", code="2xx"), 1),
                ("px_request_duration_seconds_count", dict(route="shop"), 6),
                ("px_stream_terminations_total", dict(reason="local"), 3)]
        text = wait_for(lambda: (lambda t: t if all(value(t, n, **l) >= v for n, l, v in want) else None)(
            scrape(self.mport)), what="nine requests counted")
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
        # The listener speaks HTTP/1.1 through px's codec: keep-alive, 405, 413, 400.
        from pxtest import Client
        c = Client(self.mport)
        for _ in range(2):
            c.send(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
            r = c.response()
            self.assertEqual(r.status, 200)
            self.assertIn(b"px_build_info", r.body)
        c.send(b"POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(c.response().status, 405)
        c.send(b"POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(c.response().status, 413)
        self.assertTrue(c.closed())
        c = Client(self.mport)
        c.send(b"GET /metrics HTTP/1.1\r\nHo st: m\r\n\r\n")
        self.assertEqual(c.response().status, 400)
        self.assertTrue(c.closed())

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

    def test_peer_series(self):
        """Connect time and time to first byte by peer; a dead peer's failures and its up gauge."""
        from pxtest import free_port
        dead_url = "http://127.0.0.1:%d" % free_port()  # nothing listens there: connects are refused
        self.pxd.put_route(route("two", "b.test", [self.up, dead_url]))
        # Round robin tries the dead peer every other request; once a worker has seen max_fails (3) refusals
        # it holds the peer out, and px_upstream_up says 0. Each worker counts its own: keep asking until then.
        live = self.up.url.replace("http://", "")
        dead_key = dead_url.replace("http://", "")
        sent = [0]

        def one_more_then_scrape():
            self.assertEqual(get(self.pxd.port, host="b.test", headers=[("Connection", "close")]).status, 200)
            sent[0] += 1
            t = scrape(self.mport)
            ok = (value(t, "px_upstream_first_byte_seconds_count", peer=live) >= min(sent[0], 10) and
                  value(t, "px_upstream_up", peer=dead_key) == 0 and value(t, "px_upstream_up", peer=live) == 1)
            return t if ok and sent[0] >= 10 else None
        text = wait_for(one_more_then_scrape, what="peer series")
        # Every request here opened a new connection to the live peer (Connection: close to px does not
        # close the upstream one, so at least the first did).
        self.assertGreaterEqual(value(text, "px_upstream_connect_seconds_count", peer=live), 1)
        self.assertEqual(value(text, "px_upstream_connect_seconds_count", peer=dead_key), 0)
        self.assertGreaterEqual(value(text, "px_upstream_failures_total", peer=dead_key), 3)
        self.assertGreater(value(text, "px_upstream_first_byte_seconds_sum", peer=live), 0)
        self.assertEqual(value(text, "px_upstream_failures_total", peer=live), 0)
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_scrapes_under_load_do_not_stall_workers(self):
        """Requests keep completing while /metrics is scraped over and over."""
        import threading
        done = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                done.append(get(self.pxd.port, host="a.test").status)

        t = threading.Thread(target=load)
        t.start()
        try:
            for _ in range(20):
                before = len(done)
                scrape(self.mport)
                wait_for(lambda: len(done) > before + 2, what="requests completing between scrapes")
        finally:
            stop.set()
            t.join()
        self.assertEqual(set(done), {200})

    def test_connections_gauge(self):
        from pxtest import Client
        c = Client(self.pxd.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        wait_for(lambda: value(scrape(self.mport), "px_client_connections") >= 1, what="the open connection counted")
        c.close()
        wait_for(lambda: value(scrape(self.mport), "px_client_connections") == 0, what="the connection gone")


class FilterAndTlsMetricsTest(unittest.TestCase):
    def setUp(self):
        import os
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="pxmetrics-")
        with open(os.path.join(self.dir, "tag.lua"), "w") as f:
            f.write('return { request = function(req) req:set_header("X-Tag", "1") end,'
                    ' response = function(req) if req:path() == "/boom" then error("boom") end end }')
        self.up = Upstream()
        self.pxd = Pxd(workers=2, extra="metrics_listen 127.0.0.1:0\nfilters_dir %s\nlisten 127.0.0.1:0 tls\n"
                       % self.dir, routes=[route("tagged", "t.test", [self.up],
                                                 filters=[{"name": "tag", "config": {}}])])
        self.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.pxd.log()).group(1))

    def tearDown(self):
        self.pxd.stop()
        self.up.kill()

    def test_filter_calls_time_and_errors(self):
        for _ in range(4):
            self.assertEqual(get(self.pxd.port, host="t.test").status, 200)
        self.assertEqual(get(self.pxd.port, host="t.test", path="/boom").status, 500)
        text = wait_for(lambda: (lambda t: t if value(t, "px_filter_calls_total", filter="tag", phase="request") == 5
                                 and value(t, "px_filter_errors_total", filter="tag", phase="response") == 1
                                 else None)(scrape(self.mport)), what="filter counts published")
        self.assertEqual(value(text, "px_filter_errors_total", filter="tag", phase="request"), 0)
        self.assertGreater(value(text, "px_filter_seconds_total", filter="tag", phase="request"), 0)
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_tls_handshake_failures_by_reason(self):
        from pxtest import Client
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", self.pxd.log()).group(1))
        for payload in (b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n", b"\x16\x03\x01\x00\x05garbage-not-tls"):
            c = Client(port)
            c.send(payload)
            self.assertTrue(c.closed())
            c.close()
        text = wait_for(lambda: (lambda t: t if value(t, "px_tls_handshake_failures_total", reason="plain_http") == 1
                                 and value(t, "px_tls_handshake_failures_total", reason="bad_handshake") == 1
                                 else None)(scrape(self.mport)), what="handshake failures counted")
        self.assertEqual(value(text, "px_tls_handshakes_total"), 0)


if __name__ == "__main__":
    unittest.main()
