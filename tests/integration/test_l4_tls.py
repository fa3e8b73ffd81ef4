"""TLS on L4 streams through a real pxd: a stream that terminates TLS with a stored certificate (checked
with openssl s_client and Python's ssl), its handshake failures, and SNI passthrough on pxd's TLS
listener: a passthrough route's upstream does its own TLS and its certificate reaches the client
untouched, while HTTPS routes on the same port keep px's certificate. ClientHellos split byte by byte,
garbage, and oversized ones. Streams and routes are made with pxctl, through pxadmind."""
import re
import socket
import ssl
import subprocess
import unittest

from cryptography import x509

from l4peers import TcpPeer, TlsEchoPeer
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


def split_handshake(port, sni, ctx, step=1):
    """A TLS client whose ClientHello leaves in pieces of `step` bytes (one send each, TCP_NODELAY).
    Returns the server's leaf certificate and a function that sends and reads back through the
    session."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    first = True
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            if first:
                for i in range(0, len(data), step):
                    sock.sendall(data[i:i + step])
                first = False
            elif data:
                sock.sendall(data)
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed during the handshake")
            inc.write(d)
    sock.sendall(out.read())
    leaf = x509.load_der_x509_certificate(obj.getpeercert(binary_form=True))

    def exchange(data):
        obj.write(data)
        sock.sendall(out.read())
        got = b""
        while len(got) < len(data):
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                d = sock.recv(65536)
                if not d:
                    break
                inc.write(d)
        return got
    return leaf, exchange, sock


class PassthroughTest(unittest.TestCase):
    """SNI passthrough on pxd's TLS listener, next to an HTTPS route on the same port."""

    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.web = Upstream("web")
        cls.pxd = Pxd(workers=2, extra="listen 127.0.0.1:0 tls\nmetrics_listen 127.0.0.1:0\n",
                      routes=[route("web", ["web.test"], [cls.web])])
        cls.tls_port = int(wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", cls.pxd.log()),
                                    what="the TLS listener").group(1))
        cls.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", cls.pxd.log()).group(1))
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)
        wcrt, wkey, cls.web_leaf = cls.certs.leaf("web", ["web.test"])
        r = cls.adm.ctl("cert", "add", "web", "--cert", wcrt, "--key", wkey)
        assert r.returncode == 0, r.stdout + r.stderr
        # The upstream's own certificate: px never holds its key.
        gcrt, gkey, cls.git_leaf = cls.certs.leaf("git", ["git.test", "a.pass.test"])
        cls.git = TlsEchoPeer(gcrt, gkey)
        r = cls.adm.ctl("route", "add", "git", "--host", "git.test", "--host", "*.pass.test", "--passthrough",
                        "--upstream", cls.git.url)
        assert r.returncode == 0, r.stdout + r.stderr
        cls.pxd.wait_applied(cls.adm.generation())

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()
        cls.web.stop()
        cls.git.close()

    def ctx(self):
        return ssl.create_default_context(cafile=self.certs.ca_file)

    def fingerprint(self, cert):
        from cryptography.hazmat.primitives import hashes
        return cert.fingerprint(hashes.SHA256())

    def test_passthrough_and_https_share_the_port(self):
        for name in ("git.test", "a.pass.test"):
            raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=DEADLINE)
            s = self.ctx().wrap_socket(raw, server_hostname=name)
            leaf = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
            self.assertEqual(self.fingerprint(leaf), self.fingerprint(self.git_leaf), name)
            s.sendall(b"through px, unread")
            got = b""
            while len(got) < 18:
                got += s.recv(100)
            self.assertEqual(got, b"through px, unread")
            s.close()
        # The HTTPS route on the same port: px's certificate, px's HTTP.
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=DEADLINE)
        s = self.ctx().wrap_socket(raw, server_hostname="web.test")
        leaf = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
        self.assertEqual(self.fingerprint(leaf), self.fingerprint(self.web_leaf))
        s.sendall(b"GET /x HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        self.assertTrue(recv_all(s).startswith(b"HTTP/1.1 200 "))
        s.close()

        def ended():
            import urllib.request
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=DEADLINE).read().decode()
            m = re.search(r'^px_l4_connections_total\{stream="git",termination="ok"\} (\d+)$', text, re.M)
            return m and int(m.group(1)) >= 2
        wait_for(ended, what="the two passthrough connections counted")

    def test_client_hello_split_byte_by_byte(self):
        leaf, exchange, sock = split_handshake(self.tls_port, "git.test", self.ctx(), step=1)
        self.assertEqual(self.fingerprint(leaf), self.fingerprint(self.git_leaf))
        self.assertEqual(exchange(b"split hello"), b"split hello")
        sock.close()
        leaf, _, sock = split_handshake(self.tls_port, "web.test", self.ctx(), step=3)
        self.assertEqual(self.fingerprint(leaf), self.fingerprint(self.web_leaf))
        sock.close()

    def test_garbage_and_oversized_hellos_are_closed(self):
        before = self.git.accepted
        hellos = [b"GET / HTTP/1.1\r\nHost: git.test\r\n\r\n",
                  b"\x16\x03\x01\x00\x04\x01\x01\x11\x70" + b"\x00" * 4000,  # announces 70000 bytes
                  b"\x16\x03\x01\x40\x01" + b"\x00" * 100,                     # a record over 2^14
                  b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"]            # not a ClientHello
        for junk in hellos:
            c = socket.create_connection(("127.0.0.1", self.tls_port), timeout=DEADLINE)
            c.sendall(junk)
            data = recv_all(c)
            self.assertFalse(data.startswith(b"HTTP/"), junk)
            self.assertLess(len(data), 100, junk)  # at most an alert
            c.close()
        self.assertEqual(self.git.accepted, before)
        # pxd still serves both kinds.
        leaf, exchange, sock = split_handshake(self.tls_port, "git.test", self.ctx(), step=4096)
        self.assertEqual(exchange(b"ok"), b"ok")
        sock.close()

    def test_validation(self):
        r = self.adm.ctl("route", "add", "www", "--host", "www.test", "--path", "/shop", "--upstream", self.web.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(lambda: self.adm.ctl("route", "rm", "www"))
        cases = [
            (["--host", "p.test", "--passthrough", "--upstream", "http://127.0.0.1:9"],
             "upstreams[0].url: 'http://127.0.0.1:9': a passthrough route's upstreams are tcp://HOST:PORT"),
            (["--host", "p.test", "--passthrough", "--upstream", "tcp://127.0.0.1:9", "--tls", "auto"], "tls: "),
            (["--host", "p.test", "--passthrough", "--upstream", "tcp://127.0.0.1:9", "--filter", "cors"],
             "filters: does not apply to a passthrough route"),
            (["--host", "p.test", "--passthrough", "--upstream", "tcp://127.0.0.1:9", "--path", "/api"],
             "path: does not apply"),
            # Another route serves a path of the host: the whole host cannot go to an upstream unread.
            (["--host", "www.test", "--passthrough", "--upstream", "tcp://127.0.0.1:9"],
             "hosts[0]: host www.test is already served by route www; a passthrough route needs its hosts"),
            (["--host", "git.test", "--path", "/api", "--upstream", "http://127.0.0.1:9"],
             "hosts[0]: host git.test is already served by route git, a passthrough route"),
            (["--host", "p.test", "--upstream", "tcp://127.0.0.1:9"], "upstreams[0].url: "),
        ]
        for args, want in cases:
            r = self.adm.ctl("route", "add", "p", *args)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(want, r.stdout + r.stderr, args)
        self.assertEqual(self.adm.ctl("route", "show", "p").returncode, 3)



if __name__ == "__main__":
    unittest.main()
