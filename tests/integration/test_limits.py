"""Limits and timeouts, each answered with its own status."""
import socket
import time
import unittest

from pxtest import Client, Pxd, Upstream, get, listener_options, route, wait_for


class LimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("u1")
        cls.px = Pxd(extra="max_header_size 4k\nmax_headers 20\nmax_uri_length 1k\n"
                           "client_header_timeout 1s\nkeepalive_timeout 1s\nclient_body_timeout 1s\n"
                           "max_body_size 64k",
                     routes=[route("app", ["a.test"], [cls.up]),
                             route("small", ["small.test"], [cls.up], max_body_size=10),
                             route("slow", ["slow.test"], [cls.up], read_timeout_ms=300),
                             route("big", ["big.test"], [cls.up], max_body_size=0)])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def test_head_too_large_is_431(self):
        r = get(self.px.port, "/", headers=[("X-Big", "a" * 5000)])
        self.assertEqual(r.status, 431)

    def test_too_many_headers_is_431(self):
        r = get(self.px.port, "/", headers=[("X-H%d" % i, "v") for i in range(25)])
        self.assertEqual(r.status, 431)

    def test_uri_too_long_is_414(self):
        r = get(self.px.port, "/" + "u" * 1500)
        self.assertEqual(r.status, 414)

    def test_body_over_route_limit_is_413(self):
        r = get(self.px.port, "/", host="small.test", method="POST", body=b"x" * 11)
        self.assertEqual(r.status, 413)
        r = get(self.px.port, "/", host="small.test", method="POST", body=b"x" * 10)
        self.assertEqual(r.status, 200)

    def test_body_over_default_limit_is_413_and_route_can_lift_it(self):
        r = get(self.px.port, "/", method="POST", body=b"x" * 70000)
        self.assertEqual(r.status, 413)
        r = get(self.px.port, "/upload", host="big.test", method="POST", body=b"x" * 70000)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body_len"], 70000)

    def test_chunked_body_over_limit_is_413(self):
        c = Client(self.px.port)
        c.send("POST / HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
        self.assertEqual(c.response().status, 413)
        self.assertTrue(c.closed())

    def test_413_before_body_with_expect(self):
        c = Client(self.px.port)
        c.send("POST / HTTP/1.1\r\nHost: small.test\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        r = c.response(allow_interim=True)
        self.assertEqual(r.status, 413)

    def test_slowloris_gets_408_and_close(self):
        c = Client(self.px.port)
        c.send("GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ")
        r = c.response()
        self.assertEqual(r.status, 408)
        self.assertTrue(c.closed())

    def test_the_listener_waits_for_the_request_and_a_silent_client_is_still_closed(self):
        # HTTP's client speaks first: the kernel hands a connection over once its first bytes came
        # (TCP_DEFER_ACCEPT on every HTTP listener, one per worker), so px wakes once per connection.
        vals = listener_options(self.px.proc.pid, self.px.port, socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
        self.assertTrue(vals)
        self.assertTrue(all(v > 0 for v in vals), vals)
        # A client that connects and sends nothing is handed over after the kernel's SYN-ACK retransmission,
        # and client_header_timeout closes it from there: it is not left open.
        c = Client(self.px.port)
        self.assertTrue(c.closed())
        # One that sends its request after a pause is answered.
        c = Client(self.px.port)
        time.sleep(0.3)
        c.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)

    def test_slow_body_gets_408(self):
        c = Client(self.px.port)
        c.send("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nabc")
        r = c.response()
        self.assertEqual(r.status, 408)
        self.assertTrue(c.closed())

    def test_body_timeout_is_between_reads_not_for_the_whole_body(self):
        # 2.5 s of steady upload with a 1 s client_body_timeout: each gap is short, so it succeeds.
        c = Client(self.px.port)
        c.send("POST /upload HTTP/1.1\r\nHost: big.test\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            time.sleep(0.25)
            c.send("x")
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body_len"], 10)
        c.close()

    def test_idle_keep_alive_is_closed(self):
        c = Client(self.px.port)
        c.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")

    def test_silent_connection_is_closed_without_a_response(self):
        c = Client(self.px.port)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")

    def test_upstream_read_timeout_is_504(self):
        r = get(self.px.port, "/stall?ms=3000", host="slow.test")
        self.assertEqual(r.status, 504)

    def test_read_timeout_on_a_reused_upstream_connection(self):
        # The upstream connection's timer is lazy: a quick request leaves it armed for
        # a deadline that the parked connection then moves later, and the stalled
        # request on the same connection must still time out at its own deadline.
        c = Client(self.px.port)
        c.send("GET /echo HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        first = c.response()
        self.assertEqual(first.status, 200)
        c.send("GET /stall?ms=3000 HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        self.assertEqual(c.response().status, 504)
        c.close()
        r = get(self.px.port, "/echo", host="slow.test")
        self.assertEqual(r.status, 200)


class ConnectTimeoutTest(unittest.TestCase):
    def test_upstream_connect_timeout_is_504(self):
        # A listener that never accepts, with its queue full: SYNs go unanswered.
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        px = Pxd(extra="max_fails 0", routes=[route("app", ["a.test"], ["http://127.0.0.1:%d" % port],
                                                    connect_timeout_ms=300)])
        try:
            r = get(px.port, "/")
            self.assertEqual(r.status, 504)
        finally:
            px.stop()
            for s in fillers:
                s.close()
            blackhole.close()


class MaxConnectionsTest(unittest.TestCase):
    def test_connections_past_the_limit_get_503(self):
        up = Upstream("u1")
        px = Pxd(extra="max_connections 2", routes=[route("app", ["a.test"], [up])])
        try:
            held = [Client(px.port), Client(px.port)]
            for c in held:
                c.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                self.assertEqual(c.response().status, 200)
            extra = Client(px.port)
            extra.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            self.assertEqual(extra.response().status, 503)
            held[0].close()
            # Once a slot frees up, new connections are served again.
            def served():
                try:
                    return get(px.port, "/").status == 200
                except (EOFError, OSError):
                    return False
            wait_for(served, what="a free connection slot")
        finally:
            px.stop()
            up.stop()


if __name__ == "__main__":
    unittest.main()
