"""Every stream ends in one place with one end record: route, peer, status,
upstream status, bytes each way, duration and why it ended. Observed here
through pxd's debug stream log (the observer metrics and access logs will
share), for each way an exchange can end."""
import re
import socket
import struct
import unittest

from pxtest import Client, Pxd, Upstream, free_port, get, route, wait_for

LINE = re.compile(r"stream end: (.*)")


def records(px):
    out = []
    for m in LINE.finditer(px.log()):
        out.append(dict(kv.split("=", 1) for kv in m.group(1).split(" ")))
    return out


class EndRecordTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("u")
        cls.dead = free_port()
        cls.px = Pxd(extra="log_level debug\nclient_header_timeout 500ms\nmax_fails 0", routes=[
            route("app", ["a.test"], [cls.up]),
            route("slow", ["slow.test"], [cls.up], read_timeout_ms=300),
            route("dead", ["dead.test"], ["http://127.0.0.1:%d" % cls.dead]),
        ])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def one(self, pred, what):
        return wait_for(lambda: next((r for r in records(self.px) if pred(r)), None), what=what)

    def test_a_proxied_exchange_counts_its_bytes_both_ways(self):
        raw = b"GET /echo?rec=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        s = socket.create_connection(("127.0.0.1", self.px.port))
        s.sendall(raw)
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        s.close()
        r = self.one(lambda r: r["target"] == "/echo?rec=1", "the record of /echo?rec=1")
        self.assertEqual((r["route"], r["status"], r["upstream_status"], r["reason"]), ("app", "200", "200", "ok"))
        self.assertEqual(r["peer"], "127.0.0.1:%d" % self.up.port)
        self.assertEqual(int(r["in"]), len(raw))
        self.assertEqual(int(r["out"]), len(got))
        self.assertEqual(r["attempts"], "1")

    def test_local_answers(self):
        self.assertEqual(get(self.px.port, "/nothing-here", host="nowhere.test").status, 404)
        r = self.one(lambda r: r["target"] == "/nothing-here", "the 404's record")
        self.assertEqual((r["route"], r["status"], r["upstream_status"], r["reason"]), ("", "404", "0", "local"))

    def test_bad_request(self):
        c = Client(self.px.port)
        c.send("GET /bad-one HTTP/1.1\r\nHost: a.test\r\n: empty-name\r\n\r\n")
        self.assertEqual(c.response().status, 400)
        c.close()
        r = self.one(lambda r: r["reason"] == "bad_request", "a bad_request record")
        self.assertEqual(r["status"], "400")

    def test_upstream_refused(self):
        self.assertEqual(get(self.px.port, "/refused", host="dead.test").status, 502)
        r = self.one(lambda r: r["target"] == "/refused", "the refused record")
        self.assertEqual((r["route"], r["status"], r["reason"]), ("dead", "502", "upstream_refused"))

    def test_upstream_timeout(self):
        self.assertEqual(get(self.px.port, "/stall?ms=3000", host="slow.test").status, 504)
        r = self.one(lambda r: r["target"] == "/stall?ms=3000", "the timeout record")
        self.assertEqual((r["status"], r["reason"]), ("504", "upstream_timeout"))

    def test_client_timeout_and_client_closed(self):
        c = Client(self.px.port)
        c.send("GET /slowloris HTTP/1.1\r\nHost: a.test\r\n")
        self.assertEqual(c.response().status, 408)
        c.close()
        r = self.one(lambda r: r["reason"] == "client_timeout", "a client_timeout record")
        self.assertEqual(r["status"], "408")
        # A client that resets its connection while waiting (a half-close would still get the answer).
        c = Client(self.px.port)
        c.send("GET /stall?ms=2000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.up.wait_inflight(1)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        r = self.one(lambda r: r["target"] == "/stall?ms=2000", "the client_closed record")
        self.assertEqual((r["status"], r["reason"]), ("0", "client_closed"))


if __name__ == "__main__":
    unittest.main()
