"""The response cache (RFC 9111) through the real pxd, against an origin that counts its requests (cachepeer.py):
freshness and expiry, each Cache-Control directive, Expires and heuristic freshness, Vary, revalidation with 304,
Set-Cookie and Authorization, conditional requests, HEAD, invalidation, coalescing, objects too large or cut
short, a restart, and HTTP/2 clients sharing what HTTP/1 clients stored."""
import email.utils
import hashlib
import os
import pathlib
import re
import signal
import shutil
import subprocess
import threading
import time
import unittest
import urllib.parse

from cachepeer import CachePeer
from pxtest import Admind, Client, Pxd, get, route, wait_for


def q(*fields, **kw):
    """A target's query string: response fields ("Name: value") and the origin's other knobs."""
    parts = [("h", f) for f in fields] + list(kw.items())
    return urllib.parse.urlencode(parts)


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


class CacheTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.o = CachePeer()
        cls.px = Pxd(workers=2, extra="listen 127.0.0.1:0 h2c\ncache_max_object 8m\n", routes=[
            route("c", ["c.test"], [cls.o.url], cache=True),
            route("cookie", ["cookie.test"], [cls.o.url], cache={"store_set_cookie": True}),
            route("small", ["small.test"], [cls.o.url], cache={"max_object_size": "10k"}),
            route("ttl", ["ttl.test"], [cls.o.url], cache={"default_ttl": 60}),
            route("swr", ["swr.test"], [cls.o.url], cache={"stale_while_revalidate": 600}),
            route("nocache", ["plain.test"], [cls.o.url]),
        ])
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.o.stop()

    def target(self, *fields, **kw):
        """A target of its own for each use: no test sees another's stored responses."""
        CacheTest.n += 1
        return "/t%d-%s?%s" % (CacheTest.n, self._testMethodName[5:25], q(*fields, **kw))

    def get(self, t, host="c.test", headers=(), method="GET"):
        return get(self.px.port, t, host=host, headers=headers, method=method)

    # ---- freshness ----

    def test_fresh_response_is_served_from_the_cache(self):
        t = self.target("Cache-Control: max-age=60")
        first = self.get(t)
        self.assertEqual(first.status, 200)
        self.assertIn("fwd=uri-miss", first.header("cache-status"))
        self.assertIn("stored", first.header("cache-status"))
        for _ in range(3):
            r = self.get(t)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, first.body)
            self.assertRegex(r.header("cache-status"), r"^px; hit; ttl=\d+")
            self.assertIsNotNone(r.header("age"))
            self.assertEqual(r.header("cache-control"), "max-age=60")
        self.assertEqual(self.o.count(t), 1)

    def test_a_stale_response_is_revalidated_and_a_304_refreshes_it(self):
        t = self.target("Cache-Control: max-age=1", etag='"v1"')
        first = self.get(t)
        self.assertEqual(self.get(t).header("cache-status").split(";")[1].strip(), "hit")
        # Once it is stale, the origin is asked with the stored validator, answers 304, and the client gets the
        # stored body, refreshed.
        r = wait_for(lambda: (lambda x: x if "fwd=stale" in x.header("cache-status") else None)(self.get(t)),
                     what="the stored response to go stale")
        self.assertEqual(r.status, 200)
        self.assertIn("fwd-status=304", r.header("cache-status"))
        self.assertEqual(r.body, first.body)
        self.assertEqual(self.o.count(t), 1)
        self.assertGreaterEqual(self.o.conditional(t), 1)
        self.assertEqual(self.o.last(t).get("if-none-match"), '"v1"')
        self.assertIn("hit", self.get(t).header("cache-status"))  # fresh again after the refresh

    def test_a_stale_response_without_validators_is_fetched_again(self):
        t = self.target("Cache-Control: max-age=1")
        self.get(t)
        wait_for(lambda: self.get(t) and self.o.count(t) >= 2, what="a second full fetch")
        self.assertEqual(self.o.conditional(t), 0)

    def test_no_store_is_not_stored(self):
        t = self.target("Cache-Control: no-store, max-age=60")
        for _ in range(3):
            r = self.get(t)
            self.assertIn('detail="no-store"', r.header("cache-status"))
            self.assertNotIn("stored", r.header("cache-status"))
        self.assertEqual(self.o.count(t), 3)

    def test_request_no_store_is_not_stored(self):
        t = self.target("Cache-Control: max-age=60")
        self.get(t, headers=[("Cache-Control", "no-store")])
        self.get(t)
        self.assertEqual(self.o.count(t), 2)

    def test_private_is_not_stored_by_a_shared_cache(self):
        t = self.target("Cache-Control: private, max-age=60")
        self.get(t)
        r = self.get(t)
        self.assertIn('detail="private"', r.header("cache-status"))
        self.assertEqual(self.o.count(t), 2)

    def test_no_cache_is_stored_but_validated_every_time(self):
        t = self.target("Cache-Control: no-cache", etag='"n1"')
        self.get(t)
        for i in range(3):
            r = self.get(t)
            self.assertEqual(r.status, 200)
            self.assertIn("fwd=stale; fwd-status=304", r.header("cache-status"))
        self.assertEqual(self.o.count(t), 1)
        self.assertEqual(self.o.conditional(t), 3)

    def test_request_no_cache_and_max_age_0_revalidate(self):
        t = self.target("Cache-Control: max-age=60", etag='"r1"')
        self.get(t)
        for h in ([("Cache-Control", "no-cache")], [("Cache-Control", "max-age=0")], [("Pragma", "no-cache")]):
            r = self.get(t, headers=h)
            self.assertIn("fwd=stale", r.header("cache-status"), h)
        self.assertEqual(self.o.conditional(t), 3)
        self.assertEqual(self.o.count(t), 1)

    def test_request_only_if_cached_gets_504_on_a_miss(self):
        t = self.target("Cache-Control: max-age=60")
        self.assertEqual(self.get(t, headers=[("Cache-Control", "only-if-cached")]).status, 504)
        self.assertEqual(self.o.count(t), 0)

    def test_s_maxage_wins_over_max_age(self):
        t = self.target("Cache-Control: max-age=0, s-maxage=60")
        self.get(t)
        self.assertIn("hit", self.get(t).header("cache-status"))
        self.assertEqual(self.o.count(t), 1)

    def test_must_revalidate_and_max_age_0_go_to_the_origin(self):
        t = self.target("Cache-Control: max-age=0, must-revalidate", etag='"m"')
        self.get(t)
        self.assertIn("fwd=stale", self.get(t).header("cache-status"))
        self.assertEqual(self.o.conditional(t), 1)

    def test_expires_gives_freshness_and_a_past_one_none(self):
        now = time.time()
        t = self.target("Expires: " + http_date(now + 120), "Date: " + http_date(now))
        self.get(t)
        self.assertIn("hit", self.get(t).header("cache-status"))
        t2 = self.target("Expires: " + http_date(now - 120), "Date: " + http_date(now))
        self.get(t2)
        self.get(t2)
        self.assertEqual(self.o.count(t2), 2)
        t3 = self.target("Expires: 0")  # an invalid Expires is in the past
        self.get(t3)
        self.get(t3)
        self.assertEqual(self.o.count(t3), 2)

    def test_heuristic_freshness_from_last_modified_only_for_heuristic_statuses(self):
        old = http_date(time.time() - 30 * 86400)
        t = self.target(lm=old)
        self.get(t)
        self.assertIn("hit", self.get(t).header("cache-status"))  # a tenth of 30 days, at most a day
        t2 = self.target(lm=old, status="302")
        self.get(t2)
        r = self.get(t2)
        self.assertIn('detail="no freshness"', r.header("cache-status"))
        self.assertEqual(self.o.count(t2), 2)

    def test_a_response_without_freshness_or_validator_is_not_stored(self):
        t = self.target()
        self.get(t)
        self.get(t)
        self.assertEqual(self.o.count(t), 2)

    def test_route_default_ttl_for_responses_without_freshness(self):
        t = self.target()
        get(self.px.port, t, host="ttl.test")
        r = get(self.px.port, t, host="ttl.test")
        self.assertIn("hit", r.header("cache-status"))
        self.assertEqual(self.o.count(t), 1)

    def test_a_route_without_cache_never_stores(self):
        t = self.target("Cache-Control: max-age=60")
        for _ in range(2):
            self.assertIsNone(get(self.px.port, t, host="plain.test").header("cache-status"))
        self.assertEqual(self.o.count(t), 2)

    def test_statuses_stored_with_explicit_freshness_and_never_206(self):
        t = self.target("Cache-Control: max-age=60", status="404")
        self.get(t)
        r = self.get(t)
        self.assertEqual(r.status, 404)
        self.assertIn("hit", r.header("cache-status"))
        t2 = self.target("Cache-Control: max-age=60", "Content-Range: bytes 0-1/10", status="206")
        self.get(t2)
        self.get(t2)
        self.assertEqual(self.o.count(t2), 2)

    # ---- Vary ----

    def test_vary_keeps_a_variant_per_request_value(self):
        t = self.target("Cache-Control: max-age=60", "Vary: Accept-Encoding")
        gz = [("Accept-Encoding", "gzip")]
        br = [("Accept-Encoding", "br")]
        a = self.get(t, headers=gz)
        b = self.get(t, headers=br)
        self.assertNotEqual(a.body, b.body)
        self.assertEqual(self.o.count(t), 2)
        self.assertEqual(self.get(t, headers=gz).body, a.body)
        self.assertEqual(self.get(t, headers=[("Accept-Encoding", " gzip ")]).body, a.body)
        r = self.get(t, headers=br)
        self.assertEqual(r.body, b.body)
        self.assertIn("hit", r.header("cache-status"))
        c = self.get(t)  # no Accept-Encoding: a variant of its own
        self.assertIn("fwd=vary-miss", c.header("cache-status"))
        self.assertEqual(self.o.count(t), 3)

    def test_vary_star_is_not_stored(self):
        t = self.target("Cache-Control: max-age=60", "Vary: *")
        self.get(t)
        r = self.get(t)
        self.assertIn('detail="vary *"', r.header("cache-status"))
        self.assertEqual(self.o.count(t), 2)

    # ---- Set-Cookie, Authorization ----

    def test_set_cookie_responses_are_not_stored_unless_the_route_says_so(self):
        t = self.target("Cache-Control: max-age=60", "Set-Cookie: s=1")
        self.get(t)
        r = self.get(t)
        self.assertEqual(r.header("set-cookie"), "s=1")
        self.assertIn('detail="set-cookie"', r.header("cache-status"))
        self.assertEqual(self.o.count(t), 2)
        # store_set_cookie: stored, without the cookie, which only the first client gets.
        first = get(self.px.port, t, host="cookie.test")
        self.assertEqual(first.header("set-cookie"), "s=1")
        hit = get(self.px.port, t, host="cookie.test")
        self.assertIn("hit", hit.header("cache-status"))
        self.assertIsNone(hit.header("set-cookie"))

    def test_authorization_requests_are_not_served_from_the_cache_unless_the_response_allows(self):
        t = self.target("Cache-Control: max-age=60")
        self.get(t)  # stored for anyone
        auth = [("Authorization", "Basic dTpw")]
        r = self.get(t, headers=auth)
        self.assertNotIn("hit", r.header("cache-status"))
        self.assertEqual(self.o.count(t), 2)
        # A response to a request with credentials is stored only when it says it may be shared.
        t2 = self.target("Cache-Control: max-age=60")
        self.get(t2, headers=auth)
        self.get(t2, headers=auth)
        self.assertEqual(self.o.count(t2), 2)
        t3 = self.target("Cache-Control: public, max-age=60")
        self.get(t3, headers=auth)
        self.assertIn("hit", self.get(t3, headers=auth).header("cache-status"))
        self.assertEqual(self.o.count(t3), 1)

    # ---- validators towards clients ----

    def test_304_to_clients_from_stored_validators(self):
        lm = http_date(time.time() - 3600)
        t = self.target("Cache-Control: max-age=60", etag='"e7"', lm=lm)
        self.get(t)
        r = self.get(t, headers=[("If-None-Match", 'W/"x", "e7"')])
        self.assertEqual(r.status, 304)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("etag"), '"e7"')
        self.assertEqual(self.get(t, headers=[("If-None-Match", '"other"')]).status, 200)
        self.assertEqual(self.get(t, headers=[("If-Modified-Since", lm)]).status, 304)
        self.assertEqual(self.get(t, headers=[("If-Modified-Since", http_date(time.time() - 7200))]).status, 200)
        self.assertEqual(self.o.count(t), 1)
        self.assertEqual(self.o.conditional(t), 0)

    def test_a_fill_asks_for_the_whole_response_whatever_the_client_validators(self):
        t = self.target("Cache-Control: max-age=60", etag='"f"')
        r = self.get(t, headers=[("If-None-Match", '"f"')])
        self.assertEqual(r.status, 200)  # the origin was asked without the client's condition
        self.assertNotIn("if-none-match", self.o.last(t))
        self.assertEqual(self.get(t, headers=[("If-None-Match", '"f"')]).status, 304)

    # ---- methods ----

    def test_head_is_answered_from_a_stored_get(self):
        t = self.target("Cache-Control: max-age=60")
        body = self.get(t).body
        r = self.get(t, method="HEAD")
        self.assertEqual(r.status, 200)
        self.assertIn("hit", r.header("cache-status"))
        self.assertEqual(r.header("content-length"), str(len(body)))
        self.assertEqual(self.o.count(t), 1)

    def test_unsafe_methods_invalidate_the_stored_response(self):
        t = self.target("Cache-Control: max-age=60")
        self.get(t)
        self.assertIn("hit", self.get(t).header("cache-status"))
        self.assertEqual(self.get(t, method="POST").status, 200)
        self.assertIn("fwd=uri-miss", self.get(t).header("cache-status"))
        self.assertEqual(self.o.count(t), 3)

    def test_range_requests_are_served_from_a_whole_stored_response(self):
        t = self.target("Cache-Control: max-age=60", size="1000", etag='"rg"')
        # A miss with a Range goes to the origin as it is, and is not stored.
        r = self.get(t, headers=[("Range", "bytes=0-3")])
        self.assertIn('fwd=uri-miss; fwd-status=200; detail="range"', r.header("cache-status"))
        whole = self.get(t).body
        self.assertEqual(self.o.count(t), 2)
        r = self.get(t, headers=[("Range", "bytes=10-19")])
        self.assertEqual(r.status, 206)
        self.assertEqual(r.header("content-range"), "bytes 10-19/1000")
        self.assertEqual(r.body, whole[10:20])
        self.assertIn("hit", r.header("cache-status"))
        r = self.get(t, headers=[("Range", "bytes=-5")])
        self.assertEqual((r.status, r.body), (206, whole[-5:]))
        r = self.get(t, headers=[("Range", "bytes=990-")])
        self.assertEqual((r.status, r.body), (206, whole[990:]))
        r = self.get(t, headers=[("Range", "bytes=2000-")])
        self.assertEqual((r.status, r.header("content-range"), r.body), (416, "bytes */1000", b""))
        self.assertEqual(self.get(t, headers=[("Range", "bytes=0-1,5-6")]).status, 200)  # several: the whole
        self.assertEqual(self.get(t, headers=[("Range", "bytes=0-1"), ("If-Range", '"rg"')]).status, 206)
        r = self.get(t, headers=[("Range", "bytes=0-1"), ("If-Range", '"old"')])
        self.assertEqual((r.status, r.body), (200, whole))
        self.assertEqual(self.o.count(t), 2)

    def test_a_large_range_is_sent_piece_by_piece(self):
        t = self.target("Cache-Control: max-age=60", size=str(2 * 1024 * 1024))
        whole = self.get(t).body
        r = self.get(t, headers=[("Range", "bytes=100-1500000")])
        self.assertEqual(r.status, 206)
        self.assertEqual(r.body, whole[100:1500001])

    # ---- stale serving ----

    def test_stale_while_revalidate_answers_at_once_and_refreshes_once(self):
        t = self.target("Cache-Control: max-age=2", etag='"s1"')
        first = get(self.px.port, t, host="swr.test")
        since = time.time()
        wait_for(lambda: time.time() > since + 3.5, what="the stored response to go stale")
        self.o.hold_revalidations()  # the refresh reaches the origin and waits there
        try:
            r = get(self.px.port, t, host="swr.test")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, first.body)
            self.assertRegex(r.header("cache-status"), r'^px; hit; ttl=-?\d+; detail="stale-while-revalidate"')
            wait_for(lambda: self.o.conditional(t) == 1, what="the refresh at the origin")
            for _ in range(3):  # answered stale meanwhile, without a second refresh
                self.assertIn("stale-while-revalidate", get(self.px.port, t, host="swr.test").header("cache-status"))
            self.assertEqual(self.o.conditional(t), 1)
        finally:
            self.o.hold_revalidations(False)
        wait_for(lambda: "detail" not in get(self.px.port, t, host="swr.test").header("cache-status"),
                 what="the refreshed response")
        self.assertEqual(self.o.count(t), 1)
        self.assertEqual(self.o.last(t).get("if-none-match"), '"s1"')

    def test_stale_if_error_answers_while_the_upstream_fails(self):
        o = CachePeer()
        try:
            self.px.put_route(route("sie", ["sie.test"], [o.url], cache={"stale_if_error": 600}))
            t = "/sie?" + q("Cache-Control: max-age=1")
            first = get(self.px.port, t, host="sie.test")
            since = time.time()
            wait_for(lambda: time.time() > since + 2.5, what="the stored response to go stale")
            o.set_fail(503)  # the origin answers 503: the stale response instead
            r = get(self.px.port, t, host="sie.test")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, first.body)
            self.assertIn('fwd=stale; fwd-status=503', r.header("cache-status"))
            self.assertIn('detail="stale-if-error"', r.header("cache-status"))
            o.stop()  # ... and while it is gone altogether
            r = get(self.px.port, t, host="sie.test")
            self.assertEqual((r.status, r.body), (200, first.body))
            self.assertIn('detail="stale-if-error"', r.header("cache-status"))
            # Without stale_if_error the client gets the failure.
            t2 = "/nosie?" + q("Cache-Control: max-age=1")
            self.assertEqual(get(self.px.port, t2, host="c.test").status, 200)
        finally:
            o.stop()

    # ---- under load ----

    def test_200_concurrent_requests_for_a_cold_key_make_one_upstream_request(self):
        t = self.target("Cache-Control: max-age=60", delay="1")
        results = []
        lock = threading.Lock()

        def one():
            try:
                r = self.get(t)
                with lock:
                    results.append((r.status, r.body))
            except Exception as e:  # noqa: BLE001
                with lock:
                    results.append((0, repr(e)))

        threads = [threading.Thread(target=one) for _ in range(200)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(len(results), 200)
        self.assertEqual({s for s, _ in results}, {200}, [b for s, b in results if s != 200][:3])
        self.assertEqual(len({b for _, b in results}), 1)
        self.assertEqual(self.o.count(t), 1)

    # ---- bad input ----

    def test_a_response_too_large_for_the_cache_streams_uncached(self):
        t = self.target("Cache-Control: max-age=60", size="50000")
        a = get(self.px.port, t, host="small.test")
        self.assertEqual(len(a.body), 50000)
        self.assertIn('detail="too large"', a.header("cache-status"))
        b = get(self.px.port, t, host="small.test")
        self.assertEqual(a.body, b.body)
        self.assertEqual(self.o.count(t), 2)

    def test_a_truncated_upstream_body_is_never_stored(self):
        t = self.target("Cache-Control: max-age=60", size="100000", cut="40000")
        for n in (1, 2):  # the second goes to the origin again: nothing was stored
            c = Client(self.px.port)
            c.send(("GET %s HTTP/1.1\r\nHost: c.test\r\n\r\n" % t).encode())
            with self.assertRaises(EOFError):
                c.response()
            c.close()
            wait_for(lambda: self.o.count(t) == n, what="the origin's answer %d" % n)

    def test_large_objects_are_served_whole_from_the_cache(self):
        t = self.target("Cache-Control: max-age=60", size=str(3 * 1024 * 1024 + 17))
        a = self.get(t)
        b = self.get(t)
        self.assertIn("hit", b.header("cache-status"))
        self.assertEqual(hashlib.sha256(a.body).hexdigest(), hashlib.sha256(b.body).hexdigest())
        self.assertEqual(len(b.body), 3 * 1024 * 1024 + 17)
        self.assertEqual(self.o.count(t), 1)

    # ---- HTTP/2 ----

    def test_http2_and_http1_clients_share_the_cache(self):
        h2port = int(wait_for(lambda: __import__("re").findall(r"listening on 127\.0\.0\.1:(\d+)", self.px.log())[1:],
                              what="the h2c listener")[0])
        t = self.target("Cache-Control: max-age=60")
        a = self.get(t)
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-H", "Host: c.test",
                              "http://127.0.0.1:%d%s" % (h2port, t)], capture_output=True, timeout=30)
        text = out.stdout.decode("latin-1")
        self.assertIn("HTTP/2 200", text)
        self.assertIn("cache-status: px; hit", text)
        self.assertTrue(out.stdout.endswith(a.body))
        self.assertEqual(self.o.count(t), 1)
        # ... and the other way round: stored for an HTTP/2 client, a hit for HTTP/1.
        t2 = self.target("Cache-Control: max-age=60", size="300000")
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", "-H", "Host: c.test",
                        "http://127.0.0.1:%d%s" % (h2port, t2)], check=True, timeout=30)
        r = self.get(t2)
        self.assertIn("hit", r.header("cache-status"))
        self.assertEqual(len(r.body), 300000)
        self.assertEqual(self.o.count(t2), 1)


class CacheHttp2Test(unittest.TestCase):
    """The cache's answers over HTTP/2 (curl, h2c): 304s from stored validators, ranges, HEAD, revalidation with a
    304 from the upstream, Vary, and a purge-free miss that stores for HTTP/1."""

    @classmethod
    def setUpClass(cls):
        cls.o = CachePeer()
        cls.px = Pxd(workers=1, extra="listen 127.0.0.1:0 h2c\n",
                     routes=[route("c", ["c.test"], [cls.o.url], cache=True)])
        cls.h2 = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", cls.px.log())[1])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.o.stop()

    def curl(self, t, *args):
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-H", "Host: c.test"] + list(args) +
                             ["http://127.0.0.1:%d%s" % (self.h2, t)], capture_output=True, timeout=60)
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        return status, fields, body

    def test_validators_ranges_and_head_over_http2(self):
        t = "/h2v?" + q("Cache-Control: max-age=600", size="1000", etag='"h2e"')
        status, fields, whole = self.curl(t)
        self.assertEqual((status, len(whole)), (200, 1000))
        self.assertIn("stored", fields["cache-status"])
        status, fields, body = self.curl(t, "-H", 'If-None-Match: "h2e"')
        self.assertEqual((status, body, fields["etag"]), (304, b"", '"h2e"'))
        status, fields, body = self.curl(t, "-H", "Range: bytes=10-19")
        self.assertEqual((status, fields["content-range"], body), (206, "bytes 10-19/1000", whole[10:20]))
        status, fields, body = self.curl(t, "-I")  # (curl ends a HEAD's output with an empty line)
        self.assertEqual((status, fields["content-length"], body.strip()), (200, "1000", b""))
        self.assertIn("hit", fields["cache-status"])
        self.assertEqual(self.o.count(t), 1)

    def test_revalidation_and_vary_over_http2(self):
        t = "/h2r?" + q("Cache-Control: no-cache", etag='"r2"')
        _, _, first = self.curl(t)
        status, fields, body = self.curl(t)
        self.assertEqual((status, body), (200, first))
        self.assertIn("fwd=stale; fwd-status=304", fields["cache-status"])
        self.assertEqual((self.o.count(t), self.o.conditional(t)), (1, 1))
        v = "/h2vary?" + q("Cache-Control: max-age=600", "Vary: Accept-Language")
        _, _, en = self.curl(v, "-H", "Accept-Language: en")
        _, _, fr = self.curl(v, "-H", "Accept-Language: fr")
        status, fields, body = self.curl(v, "-H", "Accept-Language: en")
        self.assertEqual(body, en)
        self.assertIn("hit", fields["cache-status"])
        self.assertNotEqual(en, fr)
        self.assertEqual(self.o.count(v), 2)


class CacheAdminTest(unittest.TestCase):
    """pxctl: a route's cache on and off, purges (by path and all, audited, refused naming the field), stats; the
    Prometheus series."""

    @classmethod
    def setUpClass(cls):
        cls.o = CachePeer()
        cls.mport = __import__("pxtest").free_port()
        cls.log = os.path.join(__import__("tempfile").mkdtemp(prefix="pxcache-"), "access.log")
        cls.px = Pxd(workers=2, extra="metrics_listen 127.0.0.1:%d\naccess_log %s\n" % (cls.mport, cls.log))
        cls.adm = Admind(data=cls.px.data, pxd_status=cls.px.status_file)
        r = cls.adm.ctl("route", "add", "shop", "--host", "shop.test", "--upstream", cls.o.url, "--cache", "on")
        assert r.returncode == 0, r.stderr
        cls.px.wait_applied(cls.adm.generation())

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.px.stop()
        cls.o.stop()

    def get(self, t):
        return get(self.px.port, t, host="shop.test")

    def test_purge_by_path_and_all(self):
        ts = ["/products/%d?%s" % (i, q("Cache-Control: max-age=600")) for i in range(3)] + \
             ["/about?" + q("Cache-Control: max-age=600")]
        for t in ts:
            self.get(t)
            self.assertIn("hit", self.get(t).header("cache-status"))
        r = self.adm.ctl("cache", "purge", "shop", "--path", "/products/*")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.px.wait_applied(self.adm.generation())
        for t in ts[:3]:
            self.assertIn('detail="purged"', self.get(t).header("cache-status"))
            self.assertIn("hit", self.get(t).header("cache-status"))  # stored again after the purge
        self.assertIn("hit", self.get(ts[3]).header("cache-status"))
        self.assertEqual([self.o.count(t) for t in ts], [2, 2, 2, 1])
        self.assertEqual(self.adm.ctl("cache", "purge", "shop", "--all").returncode, 0)
        self.px.wait_applied(self.adm.generation())
        self.assertNotIn("hit", self.get(ts[3]).header("cache-status"))
        self.assertEqual(self.o.count(ts[3]), 2)
        audit = self.adm.ctl("audit", "--action", "cache.purge", "--json")
        self.assertEqual(audit.returncode, 0, audit.stderr)
        self.assertGreaterEqual(audit.stdout.count('"cache.purge"'), 2)

    def test_purge_refusals_name_the_field(self):
        r = self.adm.ctl("cache", "purge", "nosuch", "--all")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no route named 'nosuch'", r.stderr)
        r = self.adm.ctl("cache", "purge", "shop", "--path", "no-slash")
        self.assertIn("path:", r.stderr)
        self.assertEqual(self.adm.ctl("cache", "purge", "shop").returncode, 2)
        r = self.adm.ctl("route", "add", "plain", "--host", "plain.test", "--upstream", self.o.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.adm.ctl("cache", "purge", "plain", "--all")
        self.assertIn("has no cache", r.stderr)
        r = self.adm.ctl("route", "set", "plain", "--cache", '{"ttl": 5}')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cache.ttl: unknown field", r.stderr)
        r = self.adm.ctl("route", "set", "plain", "--cache", "maybe")
        self.assertEqual(r.returncode, 2)

    def test_the_issue_example_sets_a_route_cache(self):
        r = self.adm.ctl("route", "add", "ex", "--host", "ex.test", "--upstream", self.o.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.adm.ctl("route", "set", "ex", "--cache",
                         '{"max_size":"2g","default_ttl":0,"stale_while_revalidate":30,"stale_if_error":600}')
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = __import__("json").loads(self.adm.ctl("route", "show", "ex", "--json").stdout)["cache"]
        self.assertEqual((shown["max_size"], shown["stale_while_revalidate"], shown["stale_if_error"]),
                         (2 << 30, 30, 600))

    def test_route_set_cache_object_then_off(self):
        r = self.adm.ctl("route", "add", "obj", "--host", "obj.test", "--upstream", self.o.url, "--cache",
                         '{"default_ttl": "1m", "stale_if_error": 600}')
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = __import__("json").loads(self.adm.ctl("route", "show", "obj", "--json").stdout)
        self.assertEqual(shown["cache"]["default_ttl"], 60)
        self.assertEqual(shown["cache"]["stale_if_error"], 600)
        self.px.wait_applied(self.adm.generation())
        t = "/x"
        get(self.px.port, t, host="obj.test")
        self.assertIn("hit", get(self.px.port, t, host="obj.test").header("cache-status"))
        self.assertEqual(self.adm.ctl("route", "set", "obj", "--cache", "off").returncode, 0)
        self.px.wait_applied(self.adm.generation())
        self.assertIsNone(get(self.px.port, t, host="obj.test").header("cache-status"))

    def test_access_log_and_trace_say_what_the_cache_did(self):
        t = "/logged?" + q("Cache-Control: max-age=600")
        r = self.adm.ctl("trace", "--connect", "127.0.0.1:%d" % self.px.port, "http://shop.test" + t)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cache      miss", r.stdout)
        r = self.adm.ctl("trace", "--connect", "127.0.0.1:%d" % self.px.port, "http://shop.test" + t)
        self.assertIn("cache      hit", r.stdout)
        t2 = "/nostore?" + q("Cache-Control: no-store")
        r = self.adm.ctl("trace", "--connect", "127.0.0.1:%d" % self.px.port, "--json", "http://shop.test" + t2)
        doc = __import__("json").loads(r.stdout)
        self.assertEqual(doc["cache"], {"result": "miss", "detail": "no-store"})
        log = wait_for(lambda: [__import__("json").loads(l) for l in pathlib.Path(self.log).read_text().splitlines()
                                if "/nostore" in l], what="the access log line")
        self.assertEqual((log[-1]["cache"], log[-1]["cache_detail"]), ("miss", "no-store"))

    def test_stats_and_metrics(self):
        t = "/stats?" + q("Cache-Control: max-age=600")
        self.get(t)
        self.get(t)
        self.get(t)

        def stats():
            r = self.adm.ctl("cache", "stats", "shop", "--json")
            if r.returncode != 0:
                return None
            doc = __import__("json").loads(r.stdout)
            req = doc["pxd"][0]["requests"]
            return doc if req.get("hit", 0) >= 2 and req.get("miss", 0) >= 1 else None

        doc = wait_for(stats, what="the cache's stats")
        p = doc["pxd"][0]
        self.assertGreaterEqual(p["objects"], 1)
        self.assertGreaterEqual(p["stored"], 1)
        self.assertGreater(p["requests"]["served_bytes"], 0)
        text = self.adm.ctl("cache", "stats").stdout
        self.assertIn("HIT", text)
        self.assertIn("shop", text)
        import urllib.request
        m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=30).read().decode()
        self.assertRegex(m, r'px_cache_requests_total\{route="shop",result="hit"\} [1-9]')
        for name in ("px_cache_objects", "px_cache_bytes", "px_cache_stored_total", "px_cache_evictions_total",
                     "px_cache_sendfile_bytes_total",
                     "px_cache_coalesced_total", "px_cache_errors_total", "px_cache_served_bytes_total"):
            self.assertIn(name, m)
        promtool = shutil.which("promtool")
        if promtool:
            chk = subprocess.run([promtool, "check", "metrics"], input=m, capture_output=True, text=True)
            self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)


CACHE_FILTER = """return {
  request = function(req)
    if req:header("X-Skip-Cache") then req:cache_bypass() end
    if req:header("X-Key-By-Path") then req:cache_key("by-path " .. req:path()) end
  end,
  response = function(req)
    if req:resp_header("X-Private") then req:cache_no_store() end
  end,
}
"""


class CacheFilterTest(unittest.TestCase):
    """Lua filters choose the cache key, bypass the cache, and keep a response out of it."""

    @classmethod
    def setUpClass(cls):
        cls.dir = __import__("tempfile").mkdtemp(prefix="pxcachef-")
        with open(os.path.join(cls.dir, "cachey.lua"), "w") as f:
            f.write(CACHE_FILTER)
        cls.o = CachePeer()
        cls.px = Pxd(workers=1, extra="filters_dir %s\n" % cls.dir,
                     routes=[route("f", ["f.test"], [cls.o.url], cache=True, filters=[{"name": "cachey"}])])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.o.stop()

    def get(self, t, headers=()):
        return get(self.px.port, t, host="f.test", headers=headers)

    def test_bypass(self):
        t = "/b?" + q("Cache-Control: max-age=600")
        self.get(t)
        r = self.get(t, headers=[("X-Skip-Cache", "1")])
        self.assertIn('fwd=bypass; fwd-status=200; detail="filter"', r.header("cache-status"))
        self.assertEqual(self.o.count(t), 2)
        self.assertIn("hit", self.get(t).header("cache-status"))

    def test_a_filter_key_shares_one_response_between_targets(self):
        a = "/k?" + q("Cache-Control: max-age=600", body="one")
        b = "/k?" + q("Cache-Control: max-age=600", body="two")
        ra = self.get(a, headers=[("X-Key-By-Path", "1")])
        rb = self.get(b, headers=[("X-Key-By-Path", "1")])
        self.assertIn("hit", rb.header("cache-status"))
        self.assertEqual(rb.body, b"one")
        self.assertEqual(self.o.count(b), 0)

    def test_no_store_from_the_response_phase(self):
        t = "/p?" + q("Cache-Control: max-age=600", "X-Private: 1")
        r = self.get(t)
        self.assertIn('detail="filter"', r.header("cache-status"))
        self.assertNotIn("stored", r.header("cache-status"))
        self.get(t)
        self.assertEqual(self.o.count(t), 2)


class CacheSendfileTest(unittest.TestCase):
    """Large stored bodies go by sendfile(2) to HTTP/1 clients over plain TCP, whole, to a slow reader too; HTTP/2
    clients get the same bytes written from the mapping."""

    @classmethod
    def setUpClass(cls):
        cls.o = CachePeer()
        cls.mport = __import__("pxtest").free_port()
        cls.px = Pxd(workers=1, extra="metrics_listen 127.0.0.1:%d\nlisten 127.0.0.1:0 h2c\n" % cls.mport,
                     routes=[route("c", ["c.test"], [cls.o.url], cache=True)])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.o.stop()

    def sendfile_bytes(self):
        import urllib.request
        m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=30).read().decode()
        return int(float(re.search(r"^px_cache_sendfile_bytes_total (\S+)$", m, re.M).group(1)))

    def test_a_large_hit_goes_by_sendfile_and_whole(self):
        size = 3 * 1024 * 1024 + 5
        t = "/sf?" + q("Cache-Control: max-age=600", size=str(size))
        a = get(self.px.port, t, host="c.test")
        before = self.sendfile_bytes()
        b = get(self.px.port, t, host="c.test")
        self.assertIn("hit", b.header("cache-status"))
        self.assertEqual(hashlib.sha256(a.body).digest(), hashlib.sha256(b.body).digest())
        # (io_uring's sockets: all of it; libuv's, under io_engine epoll: until the socket is first full)
        self.assertGreater(self.sendfile_bytes() - before, 0)
        r = get(self.px.port, t, host="c.test", headers=[("Range", "bytes=1000-2000999")])
        self.assertEqual((r.status, r.body), (206, a.body[1000:2001000]))

    def test_a_slow_reader_gets_it_all(self):
        size = 6 * 1024 * 1024
        t = "/slow?" + q("Cache-Control: max-age=600", size=str(size))
        whole = get(self.px.port, t, host="c.test").body
        import socket
        s = socket.create_connection(("127.0.0.1", self.px.port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(("GET %s HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n" % t).encode())
        got = b""
        n = 0
        while True:
            d = s.recv(8192)
            if not d:
                break
            got += d
            n += 1
            if n % 64 == 0:  # a reader that stops now and then: pxd waits for room
                time.sleep(0.01)
        s.close()
        self.assertTrue(got.endswith(whole))
        self.assertIn(b"Cache-Status: px; hit", got.split(b"\r\n\r\n", 1)[0])

    def test_http2_gets_the_mapping_s_bytes(self):
        h2port = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", self.px.log())[1])
        t = "/h2big?" + q("Cache-Control: max-age=600", size=str(2 * 1024 * 1024))
        whole = get(self.px.port, t, host="c.test").body
        before = self.sendfile_bytes()
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: c.test",
                              "http://127.0.0.1:%d%s" % (h2port, t)], capture_output=True, timeout=60)
        self.assertEqual(out.stdout, whole)
        self.assertEqual(self.sendfile_bytes(), before)


class CacheRestartTest(unittest.TestCase):
    def test_a_restart_keeps_the_cache_and_a_damaged_file_is_dropped(self):
        o = CachePeer()
        px = Pxd(workers=1, routes=[route("c", ["c.test"], [o.url], cache=True)])
        try:
            t = "/keep?" + q("Cache-Control: max-age=600")
            t2 = "/damaged?" + q("Cache-Control: max-age=600")
            body = get(px.port, t, host="c.test").body
            get(px.port, t2, host="c.test")
            px.stop()
            # One file cut short while pxd was down: it is not served, and removed.
            cache = os.path.join(px.data, "cache")
            files = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if os.path.basename(d) != "tmp"]
            self.assertEqual(len(files), 2)
            damaged = [f for f in files if b"/damaged" in pathlib.Path(f).read_bytes()][0]
            with open(damaged, "r+b") as f:
                f.truncate(os.path.getsize(damaged) - 3)
            px.start()
            r = get(px.port, t, host="c.test")
            self.assertIn("hit", r.header("cache-status"))
            self.assertEqual(r.body, body)
            self.assertEqual(o.count(t), 1)
            self.assertIn("unreadable files removed", px.log())
            self.assertNotIn("hit", get(px.port, t2, host="c.test").header("cache-status"))
            self.assertEqual(o.count(t2), 2)
        finally:
            px.stop()
            o.stop()

    def test_a_binary_upgrade_keeps_the_cache(self):
        o = CachePeer()
        px = Pxd(workers=1, routes=[route("c", ["c.test"], [o.url], cache=True)])
        new = None
        try:
            t = "/upg?" + q("Cache-Control: max-age=600")
            body = get(px.port, t, host="c.test").body
            px.signal(signal.SIGUSR2)
            new = wait_for(lambda: (lambda m: int(m[-1]) if m else None)(
                re.findall(r"upgrade: started \S+ \(pid (\d+)\)", px.log())), what="the new pxd")
            self.assertEqual(px.wait_exit(timeout=60), 0)
            r = get(px.port, t, host="c.test")
            self.assertIn("hit", r.header("cache-status"))
            self.assertEqual(r.body, body)
            self.assertEqual(o.count(t), 1)
        finally:
            if new:
                os.kill(new, signal.SIGINT)
                wait_for(lambda: not os.path.exists("/proc/%d" % new) or
                         pathlib.Path("/proc/%d/stat" % new).read_text().split()[2] == "Z",
                         what="the new pxd to stop")
            px.stop()
            o.stop()

    def test_pxd_stops_with_a_background_refresh_under_way(self):
        o = CachePeer()
        px = Pxd(workers=1, routes=[route("c", ["c.test"], [o.url], cache={"stale_while_revalidate": 600})])
        try:
            t = "/refresh-stop?" + q("Cache-Control: max-age=1", etag='"r"')
            get(px.port, t, host="c.test")
            since = time.time()
            wait_for(lambda: time.time() > since + 2.5, what="the stored response to go stale")
            o.hold_revalidations()
            self.assertIn("stale-while-revalidate", get(px.port, t, host="c.test").header("cache-status"))
            wait_for(lambda: o.conditional(t) == 1, what="the refresh at the origin")
            px.signal(signal.SIGINT)  # the refresh waits at the origin: pxd still stops, at once
            self.assertEqual(px.wait_exit(timeout=30), 0)
        finally:
            o.hold_revalidations(False)
            px.stop()
            o.stop()

    def test_past_cache_max_size_the_least_recently_used_go(self):
        o = CachePeer()
        px = Pxd(workers=1, extra="cache_max_size 256k\n", routes=[route("c", ["c.test"], [o.url], cache=True)])
        try:
            keep = "/lru-keep?" + q("Cache-Control: max-age=600", size="20000")
            get(px.port, keep, host="c.test")
            for i in range(30):  # 30 x 20 KB through a 256 KiB cache, the first one asked for all along
                since = time.monotonic()  # (access times count in 10 ms ticks: each round in ticks of its own)
                wait_for(lambda: time.monotonic() > since + 0.03, what="the next tick")
                get(px.port, "/lru-%d?%s" % (i, q("Cache-Control: max-age=600", size="20000")), host="c.test")
                self.assertIn("hit", get(px.port, keep, host="c.test").header("cache-status"))
            files = [f for d, _, fs in os.walk(os.path.join(px.data, "cache")) if os.path.basename(d) != "tmp"
                     for f in fs]
            self.assertLess(len(files), 20)
            total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(px.data, "cache"))
                        for f in fs)
            self.assertLessEqual(total, 256 * 1024 + 64 * 1024)
            self.assertEqual(o.count(keep), 1)  # used all along: never evicted
            first = "/lru-0?" + q("Cache-Control: max-age=600", size="20000")
            self.assertNotIn("hit", get(px.port, first, host="c.test").header("cache-status"))
        finally:
            px.stop()
            o.stop()

    def test_a_route_max_size_evicts_its_own_least_recently_used(self):
        o = CachePeer()
        px = Pxd(workers=1, routes=[route("small", ["s.test"], [o.url], cache={"max_size": "100k"}),
                                    route("big", ["b.test"], [o.url], cache=True)])
        try:
            other = "/other?" + q("Cache-Control: max-age=600", size="20000")
            get(px.port, other, host="b.test")
            for i in range(12):  # 12 x 20 KB through the route's 100 KiB
                since = time.monotonic()
                wait_for(lambda: time.monotonic() > since + 0.03, what="the next tick")
                get(px.port, "/s-%d?%s" % (i, q("Cache-Control: max-age=600", size="20000")), host="s.test")
            files = [f for d, _, fs in os.walk(os.path.join(px.data, "cache")) if os.path.basename(d) != "tmp"
                     for f in fs]
            self.assertLessEqual(len(files), 1 + 5)  # the other route's, and what fits in 100 KiB
            last = "/s-11?" + q("Cache-Control: max-age=600", size="20000")
            self.assertIn("hit", get(px.port, last, host="s.test").header("cache-status"))
            first = "/s-0?" + q("Cache-Control: max-age=600", size="20000")
            self.assertNotIn("hit", get(px.port, first, host="s.test").header("cache-status"))
            self.assertIn("hit", get(px.port, other, host="b.test").header("cache-status"))  # not the route's
        finally:
            px.stop()
            o.stop()

    def test_a_full_disk_keeps_proxying_uncached_and_says_why(self):
        import resource

        def small_files():  # every file pxd writes stops at 64 KiB: EFBIG, as ENOSPC would stop it
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        o = CachePeer()
        mport = __import__("pxtest").free_port()
        px = Pxd(workers=1, extra="metrics_listen 127.0.0.1:%d\n" % mport, preexec=small_files,
                 routes=[route("c", ["c.test"], [o.url], cache=True)])
        try:
            t = "/full?" + q("Cache-Control: max-age=600", size="400000")
            for n in (1, 2):
                r = get(px.port, t, host="c.test")
                self.assertEqual((r.status, len(r.body)), (200, 400000))
                self.assertEqual(o.count(t), n)
            wait_for(lambda: "cache: cannot write" in px.log(), what="the cache's complaint in the log")
            import urllib.request
            m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=30).read().decode()
            self.assertRegex(m, r"px_cache_errors_total [1-9]")
            small = "/small?" + q("Cache-Control: max-age=600")  # what fits is still stored
            get(px.port, small, host="c.test")
            self.assertIn("hit", get(px.port, small, host="c.test").header("cache-status"))
        finally:
            px.stop()
            o.stop()

    def test_the_cache_directory_read_only_or_deleted_keeps_proxying(self):
        o = CachePeer()
        px = Pxd(workers=1, routes=[route("c", ["c.test"], [o.url], cache=True)])
        cache = os.path.join(px.data, "cache")
        try:
            shutil.rmtree(cache)
            t = "/gone?" + q("Cache-Control: max-age=600")
            for _ in range(2):
                self.assertEqual(get(px.port, t, host="c.test").status, 200)
            # (the directory is made again for the next store)
            self.assertIn("hit", get(px.port, t, host="c.test").header("cache-status"))
            # A directory it cannot write in: read-only for a user; for root (whom modes do not stop), its fill
            # directory replaced by a file.
            tmp = os.path.join(cache, "tmp")
            if os.geteuid() != 0:
                os.chmod(tmp, 0o500)
            else:
                shutil.rmtree(tmp)
                pathlib.Path(tmp).write_text("not a directory")
            t2 = "/ro?" + q("Cache-Control: max-age=600")
            for _ in range(2):
                self.assertEqual(get(px.port, t2, host="c.test").status, 200)
            self.assertEqual(o.count(t2), 2)
            wait_for(lambda: "cache: cannot create" in px.log(), what="the cache's complaint in the log")
        finally:
            if os.path.isdir(os.path.join(cache, "tmp")):
                os.chmod(os.path.join(cache, "tmp"), 0o700)
            px.stop()
            o.stop()


if __name__ == "__main__":
    unittest.main()
