"""TLS termination in pxd: SNI selection, ECDSA and RSA, resumption across
workers, hot swap of certificates, handshake timeouts and garbage, what the
upstream and filters see. Peers: Python's ssl (OpenSSL), curl, openssl s_client.
Certificates are made at run time (python3-cryptography)."""
import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pxtest import Admind, Pxd, Upstream, route, wait_for, DEADLINE

NOW = datetime.datetime.utcnow()


def make_key(kind):
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)


def make_cert(names, key, issuer_key=None, issuer_name=None, days=30, start=-1, ca=False, cn=None):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or (names[0] if names else "px test"))])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW + datetime.timedelta(days=start))
         .not_valid_after(NOW + datetime.timedelta(days=days)))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return b.sign(issuer_key or key, hashes.SHA256())


def pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


class Certs:
    """A private CA and leaf certificates it signs, as PEM files in a temporary folder."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pxtls-")
        self.ca_key = make_key("ec")
        self.ca = make_cert([], self.ca_key, ca=True, cn="px test CA", days=365)
        self.ca_file = self.write("ca.pem", pem_cert(self.ca))

    def write(self, name, data):
        p = os.path.join(self.dir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def leaf(self, name, names, kind="ec", days=30, start=-1):
        key = make_key(kind)
        c = make_cert(names, key, self.ca_key, self.ca.subject, days=days, start=start)
        return (self.write(name + ".crt", pem_cert(c) + pem_cert(self.ca)), self.write(name + ".key", pem_key(key)),
                c)


def tls_port(px):
    m = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", px.log()), what="the TLS listener")
    return int(m.group(1))


def client_ctx(certs, **kw):
    ctx = ssl.create_default_context(cafile=certs.ca_file)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def handshake(port, sni, ctx):
    """The server's leaf certificate for this SNI (DER), the negotiated version, and the socket."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)), s


def request(s, host, path="/echo"):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError("connection closed before a response")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n:
        body += s.recv(65536)
    return int(head.split(b" ")[1]), body


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.up = Upstream("tls-up")

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()

    def start(self, extra="", workers=1):
        px = Pxd(workers=workers, extra="listen 127.0.0.1:0 tls\n" + extra,
                 routes=[route("shop", ["shop.test", "a.wild.test"], [self.up])])
        self.addCleanup(px.stop)
        return px, tls_port(px)

    def put_cert(self, px, name, crt, key, expect_ok=True):
        r = px.store("put-cert", name, crt, key)
        if expect_ok:
            self.assertEqual(r.returncode, 0, r.stderr)
            px.gen = int(r.stdout.strip())
            px.wait_applied(px.gen)
        return r

    def test_sni_selects_exact_then_wildcard_then_default(self):
        px, port = self.start("tls_default_certificate fallback\n")
        c = self.certs
        exact_crt, exact_key, exact = c.leaf("exact", ["shop.test"])
        wild_crt, wild_key, wild = c.leaf("wild", ["*.wild.test"])
        fb_crt, fb_key, fb = c.leaf("fallback", ["fallback.test"])
        for n, crt, key in (("exact", exact_crt, exact_key), ("wild", wild_crt, wild_key),
                            ("fallback", fb_crt, fb_key)):
            self.put_cert(px, n, crt, key)
        ctx = client_ctx(c)
        got, s = handshake(port, "shop.test", ctx)
        self.assertEqual(got.serial_number, exact.serial_number)
        status, body = request(s, "shop.test")
        self.assertEqual(status, 200)
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        s.close()
        got, s = handshake(port, "a.wild.test", ctx)
        self.assertEqual(got.serial_number, wild.serial_number)
        s.close()
        # A name no certificate has, and no name at all: the default certificate.
        nocheck = client_ctx(c, check_hostname=False)
        got, s = handshake(port, "other.test", nocheck)
        self.assertEqual(got.serial_number, fb.serial_number)
        s.close()
        got, s = handshake(port, None, nocheck)
        self.assertEqual(got.serial_number, fb.serial_number)
        s.close()
        # A wildcard covers one label only.
        got, s = handshake(port, "x.y.wild.test", nocheck)
        self.assertEqual(got.serial_number, fb.serial_number)
        s.close()

    def test_unknown_name_gets_the_unrecognized_name_alert(self):
        px, port = self.start("tls_default_certificate fallback\ntls_unknown_name reject\n")
        crt, key, _ = self.certs.leaf("fallback", ["fallback.test"])
        self.put_cert(px, "fallback", crt, key)
        with self.assertRaises(ssl.SSLError) as e:
            handshake(port, "nobody.test", client_ctx(self.certs, check_hostname=False))
        self.assertIn("UNRECOGNIZED_NAME", str(e.exception).upper())
        # openssl s_client names the alert too.
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "nobody.test"],
                           input="", capture_output=True, text=True, timeout=DEADLINE)
        self.assertIn("unrecognized name", r.stdout + r.stderr)
        # The worker keeps serving the names it has.
        got, s = handshake(port, "fallback.test", client_ctx(self.certs))
        s.close()

    def test_ecdsa_for_clients_that_take_it_rsa_for_the_others(self):
        px, port = self.start()
        ec_crt, ec_key, ecc = self.certs.leaf("shop-ec", ["shop.test"], "ec")
        rsa_crt, rsa_key, rsac = self.certs.leaf("shop-rsa", ["shop.test"], "rsa")
        self.put_cert(px, "shop-ec", ec_crt, ec_key)
        self.put_cert(px, "shop-rsa", rsa_crt, rsa_key)
        got, s = handshake(port, "shop.test", client_ctx(self.certs))
        self.assertEqual(got.serial_number, ecc.serial_number)
        s.close()
        ctx = client_ctx(self.certs, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        got, s = handshake(port, "shop.test", ctx)
        self.assertEqual(got.serial_number, rsac.serial_number)
        self.assertEqual(request(s, "shop.test")[0], 200)
        s.close()
        # curl, the same two ways.
        base = ["curl", "-sS", "--cacert", self.certs.ca_file, "--resolve", "shop.test:%d:127.0.0.1" % port,
                "-o", "/dev/null", "-w", "%{http_code}", "https://shop.test:%d/echo" % port]
        self.assertEqual(subprocess.run(base, capture_output=True, text=True, timeout=DEADLINE).stdout, "200")
        r = subprocess.run(base[:1] + ["--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES256-GCM-SHA384"] + base[1:],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.stdout, "200", r.stderr)

    def test_sessions_resume_on_every_worker(self):
        px, port = self.start(workers=2)
        crt, key, _ = self.certs.leaf("shop", ["shop.test"])
        self.put_cert(px, "shop", crt, key)
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_ctx(self.certs, maximum_version=version, minimum_version=version)
            raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            s = ctx.wrap_socket(raw, server_hostname="shop.test")
            self.assertEqual(request(s, "shop.test")[0], 200)  # TLS 1.3 tickets arrive after the handshake
            session = s.session
            s.close()
            # Many connections: SO_REUSEPORT spreads them over both workers; every one resumes.
            for i in range(12):
                raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
                s = ctx.wrap_socket(raw, server_hostname="shop.test", session=session)
                self.assertEqual(request(s, "shop.test")[0], 200)
                self.assertTrue(s.session_reused, "connection %d (%s) did not resume" % (i, version))
                s.close()

    def test_handshake_timeout_and_garbage_close_the_connection_and_the_worker_goes_on(self):
        px, port = self.start("tls_handshake_timeout 200ms\n")
        crt, key, _ = self.certs.leaf("shop", ["shop.test"])
        self.put_cert(px, "shop", crt, key)
        # Silent after connecting: closed by the handshake timeout.
        quiet = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.assertEqual(quiet.recv(100), b"")
        # Half a ClientHello, then nothing.
        half = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertEqual(half.recv(100), b"")
        # Garbage records and plain HTTP on the TLS port: an alert at most, then the end.
        for junk in (b"\x17\x03\x03\x00\x05hello" * 3, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n",
                     b"\x16\x03\x01\xff\xff" + b"\x00" * 100, os.urandom(3000)):
            g = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            g.sendall(junk)
            data = b""
            while True:
                d = g.recv(4096)
                if not d:
                    break
                data += d
            self.assertTrue(data == b"" or data[0] == 0x15, "expected an alert or nothing, got %r" % data[:20])
            g.close()
        got, s = handshake(port, "shop.test", client_ctx(self.certs))
        self.assertEqual(request(s, "shop.test")[0], 200)
        s.close()

    def test_a_new_certificate_serves_new_handshakes_and_open_connections_keep_theirs(self):
        px, port = self.start(workers=2)
        crt, key, first = self.certs.leaf("shop1", ["shop.test"])
        self.put_cert(px, "shop", crt, key)
        ctx = client_ctx(self.certs)
        got, old = handshake(port, "shop.test", ctx)
        self.assertEqual(got.serial_number, first.serial_number)
        crt2, key2, second = self.certs.leaf("shop2", ["shop.test"])
        r = px.store("put-cert", "shop", crt2, key2)
        self.assertEqual(r.returncode, 0, r.stderr)
        px.wait_applied(int(r.stdout.strip()))

        def serial():
            got, s = handshake(port, "shop.test", ctx)
            s.close()
            return got.serial_number

        # Every worker applied the generation: each new handshake sees the new certificate.
        for _ in range(8):
            self.assertEqual(serial(), second.serial_number)
        self.assertEqual(request(old, "shop.test")[0], 200)  # the open connection goes on
        old.close()

    def test_force_tls_and_hsts_see_the_real_connection_and_filters_see_sni(self):
        """Plain HTTP is redirected; over TLS the request passes, with HSTS; a filter reads req:sni()."""
        fdir = tempfile.mkdtemp(prefix="pxtls-filters-")
        with open(os.path.join(fdir, "sni_echo.lua"), "w") as f:
            f.write('return { phases = function() return {"response"} end,\n'
                    '  response = function(req) px.req.set_resp_header(req, "X-SNI", px.req.sni(req)) '
                    'px.req.set_resp_header(req, "X-TLS", tostring(px.req.is_tls(req))) end }\n')
        px = Pxd(extra="listen 127.0.0.1:0 tls\nfilters_dir %s\n" % fdir,
                 routes=[route("shop", ["shop.test"], [self.up],
                               filters=[{"name": "force_tls", "config": {"hsts": {"max_age": 600}}},
                                        {"name": "sni_echo", "config": {}}])])
        self.addCleanup(px.stop)
        port = tls_port(px)
        crt, key, _ = self.certs.leaf("shop", ["shop.test"])
        self.put_cert(px, "shop", crt, key)
        from pxtest import get
        r = get(px.port, "/x?y=1", host="shop.test")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("Location"), "https://shop.test/x?y=1")
        self.assertIsNone(r.header("Strict-Transport-Security"))
        got, s = handshake(port, "shop.test", client_ctx(self.certs))
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head = buf.split(b"\r\n\r\n")[0].decode()
        self.assertIn(" 200 ", head.splitlines()[0])
        self.assertIn("Strict-Transport-Security: max-age=600", head)
        self.assertIn("X-SNI: shop.test", head)
        self.assertIn("X-TLS: true", head)
        s.close()

    def test_certificates_change_100_times_under_load_and_no_request_fails(self):
        """wrk over https, a new connection (a full handshake) per request, while the certificate
        is replaced 100 times: every request succeeds."""
        px, port = self.start("tls_default_certificate shop\n", workers=2)
        pairs = [self.certs.leaf("swap%d" % i, ["shop.test", "127.0.0.1"]) for i in range(2)]
        self.put_cert(px, "shop", pairs[0][0], pairs[0][1])
        wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d60s", "--timeout", "30s", "-H", "Host: shop.test", "-H", "Connection: close",
                                "https://127.0.0.1:%d/echo" % port], stdout=subprocess.PIPE, text=True)
        try:
            for i in range(100):
                crt, key, _ = pairs[(i + 1) % 2]
                r = px.store("put-cert", "shop", crt, key)
                self.assertEqual(r.returncode, 0, r.stderr)
            px.wait_applied(int(r.stdout.strip()))
        finally:
            wrk.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
            out = wrk.communicate(timeout=DEADLINE)[0]
        n = int(re.search(r"(\d+) requests in", out).group(1))
        self.assertGreater(n, 0, out)
        self.assertNotIn("Socket errors", out)
        self.assertNotIn("Non-2xx", out)

    def test_uploads_are_checked_and_the_error_names_the_problem(self):
        px, port = self.start()
        c = self.certs
        crt, key, _ = c.leaf("good", ["shop.test"])
        _, other_key, _ = c.leaf("other", ["shop.test"])
        old_crt, old_key, _ = c.leaf("old", ["shop.test"], days=-1, start=-10)
        garbage = c.write("garbage.pem", b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        noname_key = make_key("ec")
        noname = c.write("noname.crt", pem_cert(make_cert([], noname_key, c.ca_key, c.ca.subject)))
        noname_k = c.write("noname.key", pem_key(noname_key))
        leaf_only = open(crt, "rb").read().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
        swapped = c.write("swapped.crt", open(c.ca_file, "rb").read() + leaf_only)
        cases = [
            (crt, other_key, "key: does not match the certificate"),
            (old_crt, old_key, "cert: the certificate expired on"),
            (garbage, key, "cert: certificate 1 of 1 is not valid"),
            (key, key, "cert: holds a 'PRIVATE KEY' block"),
            (crt, crt, "key: holds 2 PEM blocks"),
            (noname, noname_k, "cert: the certificate names no DNS name"),
            (swapped, key, "cert: the chain is out of order"),
        ]
        for cf, kf, want in cases:
            r = self.put_cert(px, "bad", cf, kf, expect_ok=False)
            self.assertNotEqual(r.returncode, 0, "accepted: " + want)
            self.assertIn(want, r.stderr)
        self.assertEqual(px.store("generation").stdout.strip(), str(px.gen))  # nothing was written



class CertApiTest(unittest.TestCase):
    """pxctl cert and pxadmind's /v1/certs, with the real pxd serving what they store."""

    def test_pxctl_cert_add_serves_it_and_keys_never_leave(self):
        certs = Certs()
        up = Upstream("cert-api")
        self.addCleanup(up.stop)
        adm = Admind(tcp=False)
        self.addCleanup(adm.stop)
        px = Pxd(extra="listen 127.0.0.1:0 tls\ndata_dir %s\n" % adm.data, start=False)
        r = adm.ctl("route", "add", "shop", "--host", "shop.test", "--upstream", up.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        px.start()
        self.addCleanup(px.stop)
        port = tls_port(px)
        crt, key, leaf = certs.leaf("shop", ["shop.test", "www.shop.test"])
        r = adm.ctl("cert", "add", "shop", "--cert", crt, "--key", key)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cert shop added: shop.test,www.shop.test", r.stdout)
        wait_for(lambda: px.applied() >= adm.generation(), what="pxd to apply the certificate")
        got, s = handshake(port, "www.shop.test", client_ctx(certs))
        self.assertEqual(got.serial_number, leaf.serial_number)
        self.assertEqual(request(s, "shop.test")[0], 200)
        s.close()
        r = adm.ctl("--json", "cert", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        lst = json.loads(r.stdout)
        self.assertEqual([c["name"] for c in lst], ["shop"])
        self.assertEqual(lst[0]["source"], "custom")
        self.assertEqual(lst[0]["key_type"], "ecdsa")
        self.assertIn(lst[0]["days_left"], (29, 30))
        key_pem = open(key).read().strip().splitlines()[1]  # a line of the key's base64
        # The key is in no answer, no export, no audit record and no log line.
        shown = adm.ctl("cert", "show", "shop").stdout
        self.assertIn("BEGIN CERTIFICATE", shown)
        exported = adm.ctl("export").stdout
        self.assertIn('"certs"', exported)
        audit = adm.ctl("--json", "audit", "--resource", "cert/").stdout
        self.assertIn("cert.create", audit)
        for text in (shown, exported, audit, adm.log(), px.log(), r.stdout):
            self.assertNotIn(key_pem, text)
        with_keys = adm.ctl("export", "--include-keys").stdout
        self.assertIn(key_pem, json.loads(with_keys)["certs"][0]["key"])
        # An export without keys imports again: the stored key is kept.
        path = certs.write("export.json", exported.encode())
        r = adm.ctl("import", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Bad uploads: 422, the field named, nothing stored.
        gen = adm.generation()
        _, other_key, _ = certs.leaf("other", ["shop.test"])
        status, _, body = adm.api("PUT", "/v1/certs/shop",
                                  {"cert": open(crt).read(), "key": open(other_key).read()})
        self.assertEqual(status, 422)
        self.assertEqual(body["error"]["field"], "key")
        self.assertIn("does not match", body["error"]["message"])
        status, _, body = adm.api("PUT", "/v1/certs/shop", {"cert": "junk", "key": open(key).read()})
        self.assertEqual((status, body["error"]["field"]), (422, "cert"))
        r = adm.ctl("cert", "add", "x", "--cert", key, "--key", key)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("only certificates belong here", r.stderr)
        self.assertEqual(adm.generation(), gen)
        got, s = handshake(port, "shop.test", client_ctx(certs))  # the stored one keeps serving
        self.assertEqual(got.serial_number, leaf.serial_number)
        s.close()
        r = adm.ctl("cert", "rm", "shop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(adm.ctl("--json", "cert", "list").stdout.strip(), "[]")



class UpstreamTlsTest(unittest.TestCase):
    """https:// upstreams: verified against a CA file, by the name sent as SNI; failures answer 502."""

    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        crt, key, _ = cls.certs.leaf("backend", ["backend.test"])
        cls.up = Upstream("tls-backend", tls=(crt, key))

    @classmethod
    def tearDownClass(cls):
        cls.up.stop()

    def px(self, **tls):
        px = Pxd(routes=[route("shop", ["shop.test"], [self.up], upstream_tls=tls)])
        self.addCleanup(px.stop)
        # The upstream's connection count so far, over an https request of the test's own.
        ctx = ssl.create_default_context(cafile=self.certs.ca_file)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.up.port), timeout=DEADLINE),
                            server_hostname="backend.test")
        self.first_conn = max([c["conn"] for c in json.loads(request(s, "x", "/_tls")[1])["connections"]] + [0])
        s.close()
        return px

    def test_verified_upstream_keeps_its_connections_and_resumes_sessions(self):
        from pxtest import get, Client
        px = self.px(ca_file=self.certs.ca_file, sni="backend.test")
        for i in range(3):  # one client connection each: the upstream connection is pooled and reused
            r = get(px.port, "/echo", host="shop.test")
            self.assertEqual(r.status, 200, r.body)
        # Two at once: a second upstream connection, which resumes the first one's session.
        slow = Client(px.port)
        slow.send(b"GET /stall?ms=800 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        wait_for(lambda: any(c for c in json.loads(get(px.port, "/_tls", host="shop.test").body)["connections"]),
                 what="a TLS connection")
        r = get(px.port, "/echo", host="shop.test")
        self.assertEqual(r.status, 200)
        self.assertEqual(slow.response().status, 200)
        info = json.loads(get(px.port, "/_tls", host="shop.test").body)
        # This pxd's connections only (the upstream serves the class's other tests too).
        conns = [c for c in info["connections"] if c["conn"] > self.first_conn]
        self.assertEqual(len(conns), 2, conns)  # 6 requests, 2 upstream connections
        self.assertFalse(conns[0]["resumed"])
        self.assertTrue(conns[1]["resumed"], conns)
        self.assertEqual(info["sni"][-2:], ["backend.test", "backend.test"])

    def test_verification_failures_answer_502_and_say_why(self):
        from pxtest import get
        for tls, why in (({"sni": "backend.test"}, "certificate verification"),  # the system CAs do not know it
                         ({"ca_file": self.certs.ca_file, "sni": "other.test"}, "certificate verification")):
            px = self.px(**tls)
            r = get(px.port, "/echo", host="shop.test")
            self.assertEqual(r.status, 502)
            self.assertIn(b"upstream TLS handshake failed", r.body)
            wait_for(lambda: "TLS handshake failed: " + why in px.log(), what="the log line")

    def test_verify_off_works_and_is_logged(self):
        from pxtest import get
        px = self.px(verify=False)
        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 200)
        self.assertIn("is not verified (upstream_tls.verify is off)", px.log())

    def test_pxctl_route_add_with_an_https_upstream(self):
        from pxtest import get
        adm = Admind(tcp=False)
        self.addCleanup(adm.stop)
        r = adm.ctl("route", "add", "api", "--host", "api.test", "--upstream", self.up.url,
                    "--upstream-ca", self.certs.ca_file, "--upstream-sni", "backend.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = json.loads(adm.ctl("--json", "route", "show", "api").stdout)
        self.assertEqual(shown["upstream_tls"], {"verify": True, "ca_file": self.certs.ca_file, "sni": "backend.test"})
        px = Pxd(extra="data_dir %s\n" % adm.data)
        self.addCleanup(px.stop)
        self.assertEqual(get(px.port, "/echo", host="api.test").status, 200)
        r = adm.ctl("route", "set", "api", "--upstream-verify", "off")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(json.loads(adm.ctl("--json", "route", "show", "api").stdout)["upstream_tls"]["verify"])
        wait_for(lambda: "is not verified" in px.log(), what="the warning for verify off")

    def test_mtls_presents_the_stored_client_certificate(self):
        from pxtest import get
        crt, key, _ = self.certs.leaf("mtls-backend", ["backend.test"])
        strict = Upstream("mtls", tls=(crt, key), client_ca=self.certs.ca_file)
        self.addCleanup(strict.stop)
        px = Pxd(routes=[route("shop", ["shop.test"], [strict], upstream_tls={
            "ca_file": self.certs.ca_file, "sni": "backend.test", "client_cert": "px-client"})])
        self.addCleanup(px.stop)
        # Not stored yet: no connection can be made, and the log says which certificate is missing.
        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 502)
        wait_for(lambda: "client certificate 'px-client' is not in the store" in px.log(), what="the log line")
        ccrt, ckey, _ = self.certs.leaf("px-client", ["px.client.test"])
        r = px.store("put-cert", "px-client", ccrt, ckey)
        self.assertEqual(r.returncode, 0, r.stderr)
        px.wait_applied(int(r.stdout.strip()))
        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 200)
        # Without it, the upstream refuses the handshake.
        px2 = Pxd(routes=[route("shop", ["shop.test"], [strict], upstream_tls={
            "ca_file": self.certs.ca_file, "sni": "backend.test"})])
        self.addCleanup(px2.stop)
        self.assertEqual(get(px2.port, "/echo", host="shop.test").status, 502)

    def test_active_health_check_of_an_https_upstream_speaks_its_tls(self):
        """Probes go over TLS with the route's upstream_tls (CA, SNI): a failing check takes the peer
        out, a passing one brings it back; a probe in plain text would never pass."""
        from pxtest import get
        crt, key, _ = self.certs.leaf("backend", ["backend.test"])
        up = Upstream("tls-hc", tls=(crt, key))
        self.addCleanup(up.stop)
        hc = {"path": "/health", "interval_ms": 50, "timeout_ms": 1000, "healthy": 2, "unhealthy": 2}
        px = Pxd(routes=[route("shop", ["shop.test"], [up], health_check=hc,
                               upstream_tls={"ca_file": self.certs.ca_file, "sni": "backend.test"})])
        self.addCleanup(px.stop)
        ctx = ssl.create_default_context(cafile=self.certs.ca_file)

        def set_health(status):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", up.port), timeout=DEADLINE),
                                server_hostname="backend.test")
            request(s, "direct", "/_health?status=%d" % status)
            s.close()

        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 200)
        set_health(503)
        wait_for(lambda: "health check failing" in px.log(), what="the peer marked down")
        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 502)
        set_health(200)
        wait_for(lambda: "back in service" in px.log(), what="the peer back")
        self.assertEqual(get(px.port, "/echo", host="shop.test").status, 200)
        # The probes sent the configured SNI.
        self.assertIn("backend.test", json.loads(get(px.port, "/_tls", host="shop.test").body)["sni"])

    def test_route_validation_names_the_field(self):
        px = Pxd(start=False)
        for bad, field in (({"ca_file": "relative.pem"}, "upstream_tls.ca_file"), ({"verify": "no"}, "upstream_tls.verify"),
                           ({"sni": "a b"}, "upstream_tls.sni"), ({"bogus": 1}, "upstream_tls.bogus")):
            r = px.store("put-json", json.dumps(route("x", ["x.test"], [self.up], upstream_tls=bad)))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(field, r.stderr)


if __name__ == "__main__":
    unittest.main()
