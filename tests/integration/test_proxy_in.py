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


class StreamProxyInTest(unittest.TestCase):
    """PROXY protocol in on a TCP stream (--accept-proxy on): the header's client is the one the access
    list judges and the one named to the upstream; TLS streams read it below TLS."""

    @classmethod
    def setUpClass(cls):
        from pxtest import Admind
        from test_tls import Certs
        cls.pxd = Pxd(extra="trusted_proxies 127.0.0.1/32\n")
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)
        cls.certs = Certs()
        crt, key, _ = cls.certs.leaf("mq", ["mq.test"])
        for args in (["cert", "add", "mq", "--cert", crt, "--key", key],
                     ["acl", "add", "net", "--rule", "allow=198.51.100.0/24", "--default", "deny"]):
            r = cls.adm.ctl(*args)
            assert r.returncode == 0, r.stdout + r.stderr

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()

    def stream(self, name, *args, pxd=None, adm=None):
        from pxtest import free_port, wait_for
        pxd, adm = pxd or self.pxd, adm or self.adm
        port = free_port()
        r = adm.ctl("stream", "add", name, "--listen", "127.0.0.1:%d" % port, "--accept-proxy", "on", *args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_for(lambda: ("stream %s: listening" % name) in pxd.log(), what="stream listening")
        pxd.wait_applied(adm.generation())
        return port

    def exchange(self, port, header, payload=b"ECHO\nhi", split=False):
        c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = b""
        try:
            if split:
                c.sendall(header)
                c.sendall(payload)
            else:
                c.sendall(header + payload)
            c.shutdown(socket.SHUT_WR)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                out += d
        except OSError:  # closed by px before everything was sent
            pass
        c.close()
        return out

    def test_the_header_client_is_judged_and_named_upstream(self):
        from l4peers import TcpPeer, recv_all
        up = TcpPeer(proxy=True)
        self.addCleanup(up.close)
        port = self.stream("pin", "--upstream", up.url, "--acl", "net", "--proxy-protocol", "v2")
        # The header and the first bytes in one segment, and the header alone before the bytes.
        self.assertEqual(self.exchange(port, b"PROXY TCP4 198.51.100.7 127.0.0.1 4000 80\r\n"), b"hibye:2")
        self.assertEqual(self.exchange(port, v2("198.51.100.8", 5000), split=True), b"hibye:2")
        self.assertEqual([(h["src"], h["sport"]) for h in up.headers],
                         [("198.51.100.7", 4000), ("198.51.100.8", 5000)])
        # A client outside the access list, by its header: closed, the upstream never contacted.
        self.assertEqual(self.exchange(port, v2("203.0.113.9", 5000)), b"")
        # No header, or a malformed one: closed unanswered.
        self.assertEqual(self.exchange(port, b"ECHO\nno header\n"), b"")
        self.assertEqual(self.exchange(port, b"PROXY TCP4 1.2.3 127.0.0.1 1 2\r\n"), b"")
        self.assertEqual(up.accepted, 2)
        # The header alone: the upstream is connected at once (a server that speaks first is not kept
        # waiting for the client's first bytes).
        from pxtest import wait_for
        c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        c.sendall(v2("198.51.100.10", 7000))
        wait_for(lambda: up.accepted == 3, what="the upstream connected after the header alone")
        c.sendall(b"ECHO\nlate")
        c.shutdown(socket.SHUT_WR)
        out = recv_all(c)
        c.close()
        self.assertEqual(out, b"latebye:4")

    def test_tls_stream_reads_the_header_below_tls(self):
        import ssl
        from l4peers import TcpPeer
        up = TcpPeer()
        self.addCleanup(up.close)
        port = self.stream("pintls", "--upstream", up.url, "--tls", "mq")
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        raw.sendall(v2("198.51.100.9", 6000))
        s = ssl.create_default_context(cafile=self.certs.ca_file).wrap_socket(raw, server_hostname="mq.test")
        s.sendall(b"ECHO\nsecure")
        got = b""
        while len(got) < 6:
            got += s.recv(100)
        self.assertEqual(got, b"secure")
        s.close()

    def test_untrusted_sender_is_closed(self):
        from l4peers import TcpPeer
        from pxtest import Admind
        pxd = Pxd(extra="trusted_proxies 10.0.0.0/8\n")
        self.addCleanup(pxd.stop)
        adm = Admind(data=pxd.data, pxd_status=pxd.status_file)
        self.addCleanup(adm.stop)
        up = TcpPeer()
        self.addCleanup(up.close)
        port = self.stream("untrusted", "--upstream", up.url, pxd=pxd, adm=adm)
        self.assertEqual(self.exchange(port, v2("198.51.100.7", 4000)), b"")
        self.assertEqual(up.accepted, 0)
