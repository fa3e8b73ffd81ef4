"""Proxying basics through the real pxd: methods, headers, HTTP versions, keep-alive, pipelining."""
import socket
import unittest

from pxtest import Client, Pxd, Upstream, get, route, wait_for


class ProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("u1")
        cls.px = Pxd(workers=2, extra="trusted_proxies 10.0.0.0/8",
                     routes=[route("app", ["a.test"], [cls.up])])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def test_get_is_proxied_with_host_preserved(self):
        r = get(self.px.port, "/hello?x=1", host="A.Test:8080")
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertEqual(doc["path"], "/hello?x=1")
        self.assertEqual(doc["version"], "HTTP/1.1")
        hdrs = {k.lower(): v for k, v in doc["headers"]}
        self.assertEqual(hdrs["host"], "A.Test:8080")

    def test_forwarding_headers_set_and_untrusted_ones_replaced(self):
        r = get(self.px.port, "/", headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https"),
                                            ("X-Forwarded-Host", "evil.test")])
        hdrs = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(hdrs["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(hdrs["x-forwarded-proto"], "http")
        self.assertEqual(hdrs["x-forwarded-host"], "a.test")

    def test_request_id_made_here_and_an_untrusted_one_replaced(self):
        ids = set()
        for sent in ([], [("X-Request-ID", "client-chosen")]):
            hdrs = {}
            for k, v in get(self.px.port, "/", headers=sent).json()["headers"]:
                self.assertNotIn(k.lower(), hdrs, "one X-Request-ID only")
                hdrs[k.lower()] = v
            self.assertRegex(hdrs["x-request-id"], r"^[0-9a-f]{32}$")
            ids.add(hdrs["x-request-id"])
        self.assertEqual(len(ids), 2)
        # A filter that sets X-Request-ID has the last word: one header, its value.
        self.px.put_route(route("rid", ["rid.test"], [self.up],
                                filters=[{"name": "headers", "config": {"request": {"set": {"X-Request-ID": "f-1"}}}}]))
        got = [v for k, v in get(self.px.port, "/", host="rid.test").json()["headers"] if k.lower() == "x-request-id"]
        self.assertEqual(got, ["f-1"])

    def test_hop_by_hop_headers_removed(self):
        r = get(self.px.port, "/", headers=[("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
                                            ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                                            ("Trailer", "X-T"), ("Proxy-Authorization", "Basic Zm9v"),
                                            ("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")])
        names = {k.lower() for k, v in r.json()["headers"]}
        for gone in ("x-secret", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection"):
            self.assertNotIn(gone, names)
        self.assertIn("x-kept", names)

    def test_hop_by_hop_response_headers_removed(self):
        r = get(self.px.port, "/hop")
        self.assertEqual(r.status, 200)
        for gone in ("x-up-secret", "keep-alive", "trailer", "proxy-connection", "proxy-authenticate", "upgrade"):
            self.assertIsNone(r.header(gone), gone)
        self.assertEqual(r.header("x-up-kept"), "yes")
        self.assertNotIn("x-up-secret", (r.header("connection") or "").lower())  # px writes its own
        self.assertEqual(r.body, b"{}")

    def test_post_body_with_content_length(self):
        r = get(self.px.port, "/post", method="POST", body=b"hello world")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body"], "hello world")

    def test_chunked_request_body_is_rechunked(self):
        c = Client(self.px.port)
        c.send("POST /c HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertEqual(doc["body"], "hello world")
        hdrs = {k.lower(): v for k, v in doc["headers"]}
        self.assertEqual(hdrs["transfer-encoding"], "chunked")
        c.close()

    def test_head_has_no_body_and_keeps_length(self):
        c = Client(self.px.port)
        c.send("HEAD /download?bytes=1234 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response(head=True)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-length"), "1234")
        # The connection stays usable: the next response starts right where the head ended.
        c.send("GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().json()["method"], "GET")
        c.close()

    def test_keep_alive_and_upstream_connection_reuse(self):
        c = Client(self.px.port)
        conns = set()
        for i in range(5):
            c.send("GET /k HTTP/1.1\r\nHost: a.test\r\n\r\n")
            r = c.response()
            self.assertEqual(r.status, 200)
            conns.add(r.json()["conn"])
        c.close()
        # Five sequential requests on one client connection use one pooled upstream connection.
        self.assertEqual(len(conns), 1)

    def test_pipelined_requests_answered_in_order(self):
        c = Client(self.px.port)
        c.send("".join("GET /p%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i for i in range(5)))
        paths = [c.response().json()["path"] for _ in range(5)]
        self.assertEqual(paths, ["/p%d" % i for i in range(5)])
        c.close()

    def test_half_closed_client_still_gets_its_response(self):
        c = Client(self.px.port)
        c.send("GET /stall?ms=200 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("connection"), "close")
        self.assertTrue(c.closed())

    def test_http10_client_close_and_keep_alive(self):
        c = Client(self.px.port)
        c.send("GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertTrue(c.closed())
        c = Client(self.px.port)
        c.send("GET /old HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
        r = c.response()
        self.assertEqual(r.header("connection"), "keep-alive")
        c.send("GET /old2 HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
        self.assertEqual(c.response().json()["path"], "/old2")
        c.close()

    def test_http10_gets_close_delimited_body_for_chunked_upstream(self):
        c = Client(self.px.port)
        c.send("GET /download?bytes=70000&chunked=1 HTTP/1.0\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertIsNone(r.header("transfer-encoding"))
        self.assertEqual(len(r.body), 70000)

    def test_chunked_response_passes_through(self):
        c = Client(self.px.port)
        c.send("GET /download?bytes=300000&chunked=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(r.body, b"x" * 300000)
        c.close()

    def test_close_delimited_upstream_body_is_chunked_to_http11(self):
        c = Client(self.px.port)
        c.send("GET /nolength?bytes=5000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(r.body, b"y" * 5000)
        c.send("GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().json()["path"], "/after")
        c.close()

    def test_expect_100_continue(self):
        c = Client(self.px.port)
        c.send("POST /e HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = c.response(allow_interim=True)
        self.assertEqual(interim.status, 100)
        c.send("abcde")
        r = c.response()
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertEqual(doc["body"], "abcde")
        self.assertNotIn("expect", {k.lower() for k, v in doc["headers"]})
        c.close()

    def test_unknown_expectation_is_417(self):
        r = get(self.px.port, "/", headers=[("Expect", "magic")])
        self.assertEqual(r.status, 417)

    def test_interim_1xx_from_upstream_is_dropped(self):
        c = Client(self.px.port)
        c.send("GET /interim HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response(allow_interim=True)
        self.assertEqual(r.status, 200)
        c.close()

    def test_204_and_304_have_no_body(self):
        c = Client(self.px.port)
        for code in (204, 304):
            c.send("GET /status?code=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % code)
            r = c.response()
            self.assertEqual(r.status, code)
            self.assertIsNone(r.header("transfer-encoding"))
        c.send("GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().json()["path"], "/after")
        c.close()

    def test_absolute_form_target(self):
        c = Client(self.px.port)
        c.send("GET http://a.test/abs?q=1 HTTP/1.1\r\nHost: ignored.test\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertEqual(doc["path"], "/abs?q=1")
        self.assertEqual({k.lower(): v for k, v in doc["headers"]}["host"], "a.test")
        c.close()

    def test_no_route_is_404(self):
        r = get(self.px.port, "/", host="nobody.test")
        self.assertEqual(r.status, 404)
        self.assertIn(b"no route", r.body)

    def test_websocket_upgrade_is_tunnelled(self):
        c = Client(self.px.port)
        c.send("GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = c.response(allow_interim=True)
        self.assertEqual(r.status, 101)
        self.assertEqual(r.header("upgrade"), "websocket")
        for msg in (b"ping-1", b"x" * 100000, b"ping-3"):
            c.send(msg)
            got = b""
            while len(got) < len(msg):
                got += c.sock.recv(65536)
            self.assertEqual(got, msg)
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed())


class TrustedProxyTest(unittest.TestCase):
    def test_forwarding_headers_from_trusted_proxy_are_kept(self):
        up = Upstream("u1")
        px = Pxd(extra="trusted_proxies 127.0.0.0/8", routes=[route("app", ["a.test"], [up])])
        try:
            r = get(px.port, "/", headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"),
                                           ("X-Forwarded-Host", "shop.test")])
            hdrs = {k.lower(): v for k, v in r.json()["headers"]}
            self.assertEqual(hdrs["x-forwarded-for"], "203.0.113.9, 127.0.0.1")
            self.assertEqual(hdrs["x-forwarded-proto"], "https")
            self.assertEqual(hdrs["x-forwarded-host"], "shop.test")
            # A trusted proxy's request ID is kept; a malformed one is replaced.
            r = get(px.port, "/", headers=[("X-Request-ID", "edge-42.a_b")])
            self.assertEqual({k.lower(): v for k, v in r.json()["headers"]}["x-request-id"], "edge-42.a_b")
            r = get(px.port, "/", headers=[("X-Request-ID", "bad id;")])
            self.assertRegex({k.lower(): v for k, v in r.json()["headers"]}["x-request-id"], r"^[0-9a-f]{32}$")
        finally:
            px.stop()
            up.stop()


if __name__ == "__main__":
    unittest.main()
