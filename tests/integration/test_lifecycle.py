"""pxd as a process: configuration checks, signals, and behaviour under load
while routes change and upstreams die."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from pxtest import PXD, PXSTORE, ROOT, Client, Pxd, Upstream, get, route, wait_for, wrk


def check_config(text):
    d = tempfile.mkdtemp(prefix="pxconf-")
    p = os.path.join(d, "pxd.conf")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([PXD, "--check-config", "-c", p], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr, p


class ConfigTest(unittest.TestCase):
    def test_valid_config_passes(self):
        code, out, _ = check_config("listen 127.0.0.1:8080\nworkers 2\nclient_header_timeout 5s\n")
        self.assertEqual(code, 0, out)

    def test_shipped_config_passes(self):
        conf = os.path.join(ROOT, "conf", "pxd.conf")
        r = subprocess.run([PXD, "--check-config", "-c", conf], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_errors_name_file_line_and_problem(self):
        cases = [
            ("listen 127.0.0.1:8080\nworkers lots\n", ":2: workers: expected 'auto' or a number"),
            ("listen 127.0.0.1:99999\n", ":1: listen: port '99999' must be 0..65535"),
            ("listen 127.0.0.1:80\nfrobnicate yes\n", ":2: unknown directive 'frobnicate'"),
            ("listen 127.0.0.1:80\n\n# c\nkeepalive_timeout soon\n", ":4: keepalive_timeout: 'soon' is not a duration"),
            ("listen 127.0.0.1:80\nmax_body_size 1q\n", ":2: max_body_size: '1q' is not a size"),
            ("listen 127.0.0.1:80\ntrusted_proxies 10.0.0.0/33\n", ":2: trusted_proxies: prefix length"),
            ("listen example.com:80\n", ":1: listen: 'example.com' is not a numeric"),
            ("workers 2\n", "no listen address"),
            ("listen 127.0.0.1:443 tls h2c\n", ":1: listen: 'h2c' is for cleartext listeners"),
            ("listen 127.0.0.1:80\nlisten 127.0.0.1:81 http1-only\n", ":2: listen: 'http1-only' is for TLS listeners"),
            ("listen 127.0.0.1:80\nh2_max_concurrent_streams many\n", ":2: h2_max_concurrent_streams"),
        ]
        for text, want in cases:
            code, out, path = check_config(text)
            self.assertEqual(code, 2, text)
            self.assertIn(path, out)
            self.assertIn(want, out)

    def test_missing_file_is_exit_2(self):
        r = subprocess.run([PXD, "-c", "/nonexistent/pxd.conf"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent/pxd.conf: cannot open", r.stderr)


class SignalTest(unittest.TestCase):
    def test_sigterm_drains_in_flight_requests(self):
        up = Upstream("u")
        px = Pxd(workers=2, routes=[route("app", ["a.test"], [up])])
        try:
            idle = Client(px.port)
            idle.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            self.assertEqual(idle.response().status, 200)
            busy = Client(px.port)
            busy.send("GET /stall?ms=1000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            up.wait_inflight()
            px.signal(signal.SIGTERM)
            r = busy.response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(idle.closed())
            self.assertEqual(px.wait_exit(), 0)
        finally:
            px.stop()
            up.stop()

    def test_grace_period_cuts_what_is_left(self):
        up = Upstream("u")
        px = Pxd(extra="grace_period 300ms", routes=[route("app", ["a.test"], [up])])
        try:
            busy = Client(px.port)
            busy.send("GET /stall?ms=20000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            up.wait_inflight()
            px.signal(signal.SIGTERM)
            self.assertEqual(px.wait_exit(), 0)
            self.assertTrue(busy.closed())
        finally:
            px.stop()
            up.stop()

    def test_sigint_stops_at_once(self):
        up = Upstream("u")
        px = Pxd(routes=[route("app", ["a.test"], [up])])
        try:
            busy = Client(px.port)
            busy.send("GET /stall?ms=20000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            up.wait_inflight()
            px.signal(signal.SIGINT)
            self.assertEqual(px.wait_exit(), 0)
            self.assertTrue(busy.closed())
        finally:
            px.stop()
            up.stop()


class UnderLoadTest(unittest.TestCase):
    def test_1000_route_changes_under_load_fail_no_request(self):
        a, b = Upstream("a"), Upstream("b")
        ra = route("app", ["a.test"], [a])
        rb = route("app", ["a.test"], [b])
        px = Pxd(workers=2, routes=[ra])
        try:
            start_gen = px.gen
            flip = subprocess.Popen([PXSTORE, "--data", px.data, "flip", "1000", json.dumps(ra), json.dumps(rb)],
                                    stdout=subprocess.PIPE, text=True)
            total = errors = non2xx = 0
            while True:
                done = flip.poll() is not None
                reqs, err, bad, out = wrk(px.port, "a.test", seconds=1, connections=8)
                total += reqs
                errors += err
                non2xx += bad
                if done:
                    break
            final = int(flip.stdout.read().strip())
            self.assertEqual(final, start_gen + 1000)
            px.wait_applied(final)
            self.assertGreater(total, 0)
            self.assertEqual(errors, 0)
            self.assertEqual(non2xx, 0)
        finally:
            px.stop()
            a.stop()
            b.stop()

    def test_upstream_death_under_load_fails_no_idempotent_request(self):
        a, b = Upstream("a"), Upstream("b")
        px = Pxd(workers=2, routes=[route("app", ["a.test"], [a, b])])
        try:
            result = {}

            def load():
                result["r"] = wrk(px.port, "a.test", seconds=3, connections=8)

            t = threading.Thread(target=load)
            t.start()
            time.sleep(1)
            a.kill()
            t.join()
            reqs, errors, non2xx, out = result["r"]
            self.assertGreater(reqs, 0)
            self.assertEqual(errors, 0, out)
            self.assertEqual(non2xx, 0, out)
        finally:
            px.stop()
            a.stop()
            b.stop()


if __name__ == "__main__":
    unittest.main()
