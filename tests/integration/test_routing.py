"""Routing: hosts (exact, wildcard, case, port), path prefixes, strip_path,
enabled flag, default route, balancers, and live route changes."""
import collections
import time
import unittest

from pxtest import Client, Pxd, Upstream, get, route, wait_for


class RoutingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ups = {n: Upstream(n) for n in ("exact", "wild", "deep", "api", "v2", "root", "off", "fallback")}
        u = cls.ups
        cls.px = Pxd(extra="default_route fallback", routes=[
            route("exact", ["www.example.test"], [u["exact"]]),
            route("wild", ["*.example.test"], [u["wild"]]),
            route("deep", ["*.b.example.test"], [u["deep"]]),
            route("root", ["site.test"], [u["root"]]),
            route("api", ["site.test"], [u["api"]], path="/api", strip_path=True),
            route("v2", ["site.test"], [u["v2"]], path="/api/v2/"),
            route("off", ["off.test"], [u["off"]], enabled=False),
            route("fallback", ["fallback.invalid"], [u["fallback"]]),
        ])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        for u in cls.ups.values():
            u.stop()

    def who(self, host, path="/"):
        r = get(self.px.port, path, host=host)
        self.assertEqual(r.status, 200)
        return r.json()["id"], r.json()["path"]

    def test_exact_beats_wildcard_and_case_and_port_are_ignored(self):
        self.assertEqual(self.who("www.example.test")[0], "exact")
        self.assertEqual(self.who("WWW.Example.TEST:8080")[0], "exact")
        self.assertEqual(self.who("www.example.test.")[0], "exact")

    def test_wildcards_longest_suffix_wins(self):
        self.assertEqual(self.who("shop.example.test")[0], "wild")
        self.assertEqual(self.who("a.b.example.test")[0], "deep")
        self.assertEqual(self.who("x.y.example.test")[0], "wild")
        # The wildcard does not match the bare domain: that goes to the default route.
        self.assertEqual(self.who("example.test")[0], "fallback")

    def test_longest_prefix_on_segment_boundaries(self):
        self.assertEqual(self.who("site.test", "/")[0], "root")
        self.assertEqual(self.who("site.test", "/apix")[0], "root")
        self.assertEqual(self.who("site.test", "/api")[0], "api")
        self.assertEqual(self.who("site.test", "/api/v1/x")[0], "api")
        self.assertEqual(self.who("site.test", "/api/v2")[0], "v2")
        self.assertEqual(self.who("site.test", "/api/v2/users?id=1")[0], "v2")

    def test_strip_path(self):
        self.assertEqual(self.who("site.test", "/api/users?q=1")[1], "/users?q=1")
        self.assertEqual(self.who("site.test", "/api")[1], "/")
        self.assertEqual(self.who("site.test", "/api?q=1")[1], "/?q=1")
        # Without strip_path the path is sent as it came.
        self.assertEqual(self.who("site.test", "/api/v2/x")[1], "/api/v2/x")

    def test_disabled_route_is_not_served(self):
        self.assertEqual(self.who("off.test")[0], "fallback")

    def test_default_route_takes_unmatched_hosts(self):
        self.assertEqual(self.who("unknown.test")[0], "fallback")


class BalancerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Upstream("a")
        cls.b = Upstream("b")
        cls.px = Pxd(extra="trusted_proxies 127.0.0.1/32", routes=[
            route("rr", ["rr.test"], [{"url": cls.a.url, "weight": 1}, {"url": cls.b.url, "weight": 3}]),
            route("lc", ["lc.test"], [cls.a, cls.b], lb="least_conn"),
            route("ih", ["ih.test"], [cls.a, cls.b], lb="ip_hash"),
        ])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.a.stop()
        cls.b.stop()

    def test_weighted_round_robin(self):
        c = Client(self.px.port)
        seen = collections.Counter()
        for _ in range(40):
            c.send("GET / HTTP/1.1\r\nHost: rr.test\r\n\r\n")
            seen[c.response().json()["id"]] += 1
        c.close()
        self.assertEqual(seen, {"a": 10, "b": 30})

    def test_least_conn_avoids_the_busy_peer(self):
        busy = Client(self.px.port)
        busy.send("GET /stall?ms=1500 HTTP/1.1\r\nHost: lc.test\r\n\r\n")
        # Wait until that request is in flight at one peer, then the others go to the other peer.
        wait_for(lambda: self.a.inflight() + self.b.inflight() >= 1, what="the stalled request")
        ids = collections.Counter(get(self.px.port, "/", host="lc.test").json()["id"] for _ in range(6))
        stalled = busy.response().json()["id"]
        busy.close()
        other = "b" if stalled == "a" else "a"
        self.assertEqual(ids, {other: 6})

    def test_ip_hash_is_sticky_per_client_and_spreads_clients(self):
        def peer_for(ip):
            return get(self.px.port, "/", host="ih.test", headers=[("X-Forwarded-For", ip)]).json()["id"]
        firsts = {}
        for i in range(40):
            ip = "198.51.100.%d" % i
            firsts[ip] = peer_for(ip)
        for ip, first in list(firsts.items())[:10]:
            self.assertEqual(peer_for(ip), first)
        self.assertEqual(set(firsts.values()), {"a", "b"})


class LiveChangesTest(unittest.TestCase):
    def test_added_changed_and_removed_routes_apply_without_restart(self):
        a, b = Upstream("a"), Upstream("b")
        px = Pxd(workers=2, routes=[])
        try:
            self.assertEqual(get(px.port, "/", host="new.test").status, 404)
            px.put_route(route("new", ["new.test"], [a]))
            self.assertEqual(get(px.port, "/", host="new.test").json()["id"], "a")
            px.put_route(route("new", ["new.test"], [b]))
            self.assertEqual(get(px.port, "/", host="new.test").json()["id"], "b")
            px.rm_route("new")
            self.assertEqual(get(px.port, "/", host="new.test").status, 404)
        finally:
            px.stop()
            a.stop()
            b.stop()

    def test_in_flight_request_finishes_on_its_snapshot(self):
        a = Upstream("a")
        px = Pxd(workers=1, routes=[route("gone", ["gone.test"], [a])])
        try:
            c = Client(px.port)
            c.send("GET /stall?ms=500 HTTP/1.1\r\nHost: gone.test\r\n\r\n")
            a.wait_inflight()
            px.rm_route("gone")
            self.assertEqual(get(px.port, "/", host="gone.test").status, 404)
            r = c.response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["id"], "a")
            c.close()
        finally:
            px.stop()
            a.stop()

    def test_route_becomes_servable_quickly(self):
        # Polls the real path a user takes (write, then request) until it answers.
        a = Upstream("a")
        px = Pxd(routes=[])
        try:
            px.put_route(route("r1", ["fast.test"], [a]), wait=False)
            wait_for(lambda: get(px.port, "/", host="fast.test").status == 200, interval=0.001,
                     what="the new route to serve")
        finally:
            px.stop()
            a.stop()

    def test_store_created_after_start(self):
        a = Upstream("a")
        px = Pxd(routes=[], start=False)
        try:
            px.start()
            self.assertEqual(get(px.port, "/", host="late.test").status, 404)
            px.put_route(route("late", ["late.test"], [a]))
            self.assertEqual(get(px.port, "/", host="late.test").json()["id"], "a")
        finally:
            px.stop()
            a.stop()


if __name__ == "__main__":
    unittest.main()
