"""challenge: the proof-of-work page. Headless Chromium solves it and reaches the upstream; curl without the
cookie does not; answers computed here pass and wrong ones do not; a forged, an expired and another client's
cookie are refused; exempt paths, networks and a bot whose reverse DNS confirms it; the page's strict CSP; no
open redirect; HTTP/2."""
import hashlib
import hmac
import os
import re
import subprocess
import sys
import time
import unittest
from urllib.parse import quote

from pxtest import DEADLINE, Pxd, Upstream, get, route, wait_for
from test_geoip import from_source

SECRET = "a test secret of enough length"


def solve(nonce, bits):
    n = 0
    while True:
        d = hashlib.sha256((nonce + str(n)).encode()).digest()
        v = int.from_bytes(d, "big")
        if v >> (256 - bits) == 0:
            return n
        n += 1


def sign(what):
    return hmac.new(SECRET.encode(), what.encode(), hashlib.sha256).hexdigest()[:32]


class ChallengeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream()
        conf = {"difficulty": 12, "secret": SECRET, "exempt_paths": ["/api/"], "exempt_cidrs": ["127.0.0.5/32"],
                "exempt_bots": {"TestBot": ["localhost"], "FakeBot": ["googlebot.com"]}}
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c",
                     routes=[route("site", ["site.test", "127.0.0.1"], [cls.up],
                                   filters=[{"name": "challenge", "config": conf}])])
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def page(self, path="/docs?x=1", headers=()):
        r = get(self.px.port, path, host="site.test", headers=headers)
        self.assertEqual(r.status, 403)
        nonce = re.search(rb'data-nonce="([^"]+)"', r.body).group(1).decode()
        bits = int(re.search(rb'data-bits="(\d+)"', r.body).group(1))
        return r, nonce, bits

    def verify(self, nonce, answer, rd="/docs?x=1"):
        return get(self.px.port, "/.px-challenge/verify?nonce=%s&answer=%s&rd=%s" % (nonce, answer, quote(rd, safe="")),
                   host="site.test")

    def test_without_a_cookie_the_page_with_a_strict_csp(self):
        r, nonce, bits = self.page()
        self.assertEqual(bits, 12)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        csp = r.header("Content-Security-Policy")
        self.assertIn("script-src 'self'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertNotIn(b"<script>", r.body)  # no inline script: the solver comes from this origin
        js = get(self.px.port, "/.px-challenge/solver.js", host="site.test")
        self.assertEqual(js.status, 200)
        self.assertTrue(js.header("Content-Type").startswith("application/javascript"))

    def test_a_right_answer_sets_a_cookie_that_reaches_the_upstream(self):
        _, nonce, bits = self.page()
        r = self.verify(nonce, solve(nonce, bits))
        self.assertEqual(r.status, 303)
        self.assertEqual(r.header("Location"), "/docs?x=1")
        cookie = r.header("Set-Cookie").split(";")[0]
        self.assertIn("HttpOnly", r.header("Set-Cookie"))
        ok = get(self.px.port, "/docs?x=1", host="site.test", headers=[("Cookie", "a=b; " + cookie)])
        self.assertEqual(ok.status, 200)
        self.assertIn(b'"path": "/docs?x=1"', ok.body)
        # the cookie is bound to the client's address
        other = from_source(self.px.port, "127.0.0.9", "site.test", [("Cookie", cookie)])
        self.assertEqual(other.status, 403)

    def test_wrong_answers_forged_and_expired_cookies(self):
        _, nonce, bits = self.page()
        n = solve(nonce, bits)
        wrong = next(a for a in range(n + 1, n + 100000)
                     if int.from_bytes(hashlib.sha256((nonce + str(a)).encode()).digest(), "big") >> (256 - bits))
        self.assertEqual(self.verify(nonce, wrong).status, 403)
        tampered = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
        self.assertEqual(self.verify(tampered, solve(tampered, bits)).status, 403)
        later = int(time.time()) + 3600
        for cookie in ("px_challenge=%d.%s" % (later, "0" * 32),  # forged
                       "px_challenge=%d.%s" % (int(time.time()) - 10,  # signed right, expired
                                               sign("c|%d|127.0.0.1" % (int(time.time()) - 10)))):
            self.assertEqual(get(self.px.port, "/", host="site.test", headers=[("Cookie", cookie)]).status, 403)
        good = "px_challenge=%d.%s" % (later, sign("c|%d|127.0.0.1" % later))
        self.assertEqual(get(self.px.port, "/", host="site.test", headers=[("Cookie", good)]).status, 200)

    def test_no_open_redirect(self):
        _, nonce, bits = self.page()
        for rd in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            r = self.verify(nonce, solve(nonce, bits), rd)
            self.assertEqual((r.status, r.header("Location")), (303, "/"), rd)

    def test_exemptions(self):
        self.assertEqual(get(self.px.port, "/api/v1", host="site.test").status, 200)
        self.assertEqual(from_source(self.px.port, "127.0.0.5", "site.test").status, 200)
        # 127.0.0.1's reverse DNS name is localhost, which resolves back to it
        self.assertEqual(get(self.px.port, "/", host="site.test", headers=[("User-Agent", "TestBot/1.0")]).status, 200)
        self.assertEqual(get(self.px.port, "/", host="site.test", headers=[("User-Agent", "FakeBot/2.1")]).status, 403)

    def test_http2(self):
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                              "-H", "Host: site.test", "http://127.0.0.1:%d/" % self.h2c],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout, "403")

    def test_headless_chromium_solves_it(self):
        try:
            import selenium  # noqa: F401
        except ImportError:
            sys.path.append("/usr/lib/python3/dist-packages")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        o = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"):
            o.add_argument(a)
        o.binary_location = "/usr/bin/chromium"
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        try:
            d.set_page_load_timeout(DEADLINE)
            d.get("http://127.0.0.1:%d/landing?from=browser" % self.px.port)
            wait_for(lambda: "px-test-upstream" in d.page_source or '"id": "u1"' in d.page_source,
                     what="the browser to reach the upstream")
            self.assertTrue(d.current_url.endswith("/landing?from=browser"), d.current_url)
            self.assertTrue(any(c["name"] == "px_challenge" and c["httpOnly"] for c in d.get_cookies()))
            csp = [e for e in d.get_log("browser") if "Content Security Policy" in e.get("message", "")]
            self.assertEqual(csp, [])
        finally:
            d.quit()


if __name__ == "__main__":
    unittest.main()
