"""TLS on L4 streams through a real pxd: a stream that terminates TLS with a stored certificate (checked
with openssl s_client and Python's ssl), its handshake failures, and SNI passthrough on pxd's TLS
listener: a passthrough route's upstream does its own TLS and its certificate reaches the client
untouched, while HTTPS routes on the same port keep px's certificate. ClientHellos split byte by byte,
garbage, and oversized ones. Streams and routes are made with pxctl, through pxadmind."""
import re
import socket
import ssl
import subprocess
import threading
import unittest

from cryptography import x509

from l4peers import TcpPeer
from pxtest import DEADLINE, Admind, Pxd, Upstream, free_port, route, wait_for
from test_tls import Certs


def recv_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return out
        if not d:
            return out
        out += d


class TlsStreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.web = Upstream("web")
        cls.pxd = Pxd(workers=2, extra="listen 127.0.0.1:0 tls\nmetrics_listen 127.0.0.1:0\n"
                                       "tls_handshake_timeout 1s\n",
                      routes=[route("web", ["web.test"], [cls.web])])
        cls.tls_port = int(wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", cls.pxd.log()),
                                    what="the TLS listener").group(1))
        cls.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", cls.pxd.log()).group(1))
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)
        crt, key, _ = cls.certs.leaf("mqtt", ["mqtt.test", "mqtt2.test"])
        wcrt, wkey, _ = cls.certs.leaf("web", ["web.test"])
        for name, c, k in (("mqtt", crt, key), ("web", wcrt, wkey)):
            r = cls.adm.ctl("cert", "add", name, "--cert", c, "--key", k)
            assert r.returncode == 0, r.stdout + r.stderr

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()
        cls.web.stop()

    def ctl(self, *args):
        r = self.adm.ctl(*args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def add(self, name, *args):
        port = free_port()
        self.ctl("stream", "add", name, "--listen", "127.0.0.1:%d" % port, *args)
        wait_for(lambda: ("stream %s: listening on stream tcp 127.0.0.1:%d" % (name, port)) in self.pxd.log(),
                 what="stream listening")
        self.pxd.wait_applied(self.adm.generation())
        self.addCleanup(lambda: self.adm.ctl("stream", "rm", name))
        return port

    def peer(self):
        p = TcpPeer()
        self.addCleanup(p.close)
        return p

    def scrape(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=DEADLINE) as r:
            return r.read().decode()

    def ended(self, stream, termination):
        m = re.search(r'^px_l4_connections_total\{stream="%s",termination="%s"\} (\d+)$' % (stream, termination),
                      self.scrape(), re.M)
        return int(m.group(1)) if m else 0

    def ctx(self, **kw):
        c = ssl.create_default_context(cafile=self.certs.ca_file)
        for k, v in kw.items():
            setattr(c, k, v)
        return c

    # ---- TLS terminated on a stream ----

    def test_terminated_stream_with_openssl_s_client(self):
        up = self.peer()
        port = self.add("mqtts", "--tls", "mqtt", "--upstream", up.url)
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "mqtt.test",
                            "-CAfile", self.certs.ca_file, "-verify_return_error", "-verify_hostname", "mqtt.test",
                            "-alpn", "mqtt", "-ign_eof"],
                           input=b"SEND 5000\n", capture_output=True, timeout=DEADLINE)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors="replace"))
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertIn("CN = mqtt.test", out)
        self.assertIn("No ALPN negotiated", out)  # a stream's bytes are not HTTP: no http/1.1 is chosen
        self.assertIn("x" * 5000, out)  # what the upstream sent, decrypted by s_client
        self.assertEqual(up.accepted, 1)

    def test_both_directions_and_half_close_through_tls(self):
        up = self.peer()
        port = self.add("mqtts2", "--tls", "mqtt", "--upstream", up.url)
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        s = self.ctx().wrap_socket(raw, server_hostname="mqtt2.test")
        s.sendall(b"ECHO\nhello")
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        self.assertEqual(got, b"hello")
        s.sendall(b" world")
        got = b""
        while len(got) < 6:
            got += s.recv(100)
        self.assertEqual(got, b" world")
        # The upstream half-closes first: its FIN reaches the client as the end of the TLS stream, and
        # what the client sends after it still reaches the upstream.
        s2 = self.ctx().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE),
                                    server_hostname="mqtt.test")
        s2.sendall(b"PUSH 3000\n")
        got = b""
        while True:
            d = s2.recv(65536)
            if not d:
                break
            got += d
        self.assertEqual(got, b"p" * 3000)
        s2.sendall(b"late words")
        s2.close()
        s.close()
        wait_for(lambda: up.after_fin == [b"late words"], what="the bytes sent after the upstream's FIN")

    def test_without_sni_the_stream_certificate_serves(self):
        up = self.peer()
        port = self.add("nosni", "--tls", "mqtt", "--upstream", up.url)
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        s = self.ctx(check_hostname=False).wrap_socket(raw)
        leaf = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
        self.assertIn("mqtt.test", leaf.subject.rfc4514_string())
        s.sendall(b"ECHO\nx")
        self.assertEqual(s.recv(10), b"x")
        s.close()

    def test_handshake_failures_never_reach_the_upstream(self):
        up = self.peer()
        port = self.add("shaky", "--tls", "mqtt", "--upstream", up.url)
        before = self.ended("shaky", "tls_handshake")
        # Garbage instead of a ClientHello: closed.
        c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 100)
        recv_all(c)
        c.close()
        # Silence: closed at tls_handshake_timeout (1 s here; waited for, not timed).
        c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.assertEqual(recv_all(c), b"")
        c.close()
        wait_for(lambda: self.ended("shaky", "tls_handshake") >= before + 2, what="two tls_handshake ends")
        self.assertEqual(up.accepted, 0)

    def test_validation(self):
        r = self.adm.ctl("stream", "add", "bad", "--listen", "127.0.0.1:%d" % free_port(), "--tls", "nosuch",
                         "--upstream", "tcp://127.0.0.1:9")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("tls: no certificate named 'nosuch'", r.stderr + r.stdout)


if __name__ == "__main__":
    unittest.main()
