"""PROXY protocol in: a pxd.conf listener marked proxy_protocol takes the client's address from a
PROXY v1 or v2 header, only from trusted_proxies; X-Forwarded-For and the access log then name that
client. A missing, malformed or oversized header, or a sender that is not trusted, is closed unanswered."""
import json
import re
import socket
import struct
import subprocess
import unittest

from pxtest import DEADLINE, Client, Pxd, Upstream, route

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst="127.0.0.1", dport=80, cmd=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


class ProxyInTest(unittest.TestCase):
    def start(self, trusted):
        import os
        import tempfile
        self.up = Upstream()
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="pxproxyin-"), "access.log")
        self.pxd = Pxd(extra="listen 127.0.0.1:0 proxy_protocol\ntrusted_proxies %s\naccess_log %s\n"
                       % (trusted, self.log_path), routes=[route("r", "a.test", [self.up])])
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(proxy_protocol\)", self.pxd.log()).group(1))

    def tearDown(self):
        self.pxd.stop()
        self.up.kill()

    def ask(self, header):
        c = Client(self.port)
        c.send(header + b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        r = c.response()
        c.close()
        return {k.lower(): v for k, v in r.json()["headers"]}

    def closed_unanswered(self, data):
        c = Client(self.port)
        try:
            c.send(data)
        except OSError:
            pass
        self.assertTrue(c.closed())
        c.close()

    def test_v1_v2_and_curl_from_a_trusted_proxy(self):
        self.start("127.0.0.1/32")
        self.assertEqual(self.ask(b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 80\r\n")["x-forwarded-for"], "198.51.100.7")
        self.assertEqual(self.ask(v2("203.0.113.9", 5000))["x-forwarded-for"], "203.0.113.9")
        # LOCAL (the balancer's own check) and UNKNOWN keep the connection's address.
        self.assertEqual(self.ask(v2("203.0.113.9", 5000, cmd=0x20))["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(self.ask(b"PROXY UNKNOWN\r\n")["x-forwarded-for"], "127.0.0.1")
        # curl speaks PROXY v1 itself.
        r = subprocess.run(["curl", "-s", "--haproxy-protocol", "-H", "Host: a.test",
                            "http://127.0.0.1:%d/" % self.port], capture_output=True, text=True, timeout=DEADLINE)
        hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
        self.assertEqual(hdrs["x-forwarded-for"], "127.0.0.1")
        # A header split byte by byte still works.
        c = Client(self.port)
        for b in b"PROXY TCP4 192.0.2.1 127.0.0.1 1 80\r\n":
            c.send(bytes([b]))
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual({k.lower(): v for k, v in c.response().json()["headers"]}["x-forwarded-for"], "192.0.2.1")
        c.close()
        # pxd.conf's other listener takes no header.
        c = Client(self.pxd.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        c.close()
        from pxtest import wait_for
        wait_for(lambda: "203.0.113.9" in open(self.log_path).read(), what="the access log to name the client")

    def test_bad_or_missing_headers_are_closed_unanswered(self):
        self.start("127.0.0.1/32")
        for data in (b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",                      # no header
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",                         # too many fields
                     b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n",                            # family mismatch
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",                         # leading zero
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",                      # port range
                     b"PROXY " + b"x" * 200,                                           # no end in 107 bytes
                     V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,                      # version 3
                     V2_SIG + b"\x21\x11\xff\xff",                                     # too long
                     b"\x16\x03\x01\x00\x05hello"):                                    # TLS instead
            self.closed_unanswered(data)
        self.assertEqual(self.ask(b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 80\r\n")["x-forwarded-for"], "198.51.100.7")

    def test_an_untrusted_sender_is_closed(self):
        self.start("10.0.0.0/8")
        self.closed_unanswered(b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 80\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n")


if __name__ == "__main__":
    unittest.main()
