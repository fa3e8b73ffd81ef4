"""ACME end to end: pxadmind's own client against pebble (the ACME test CA) and
pebble-challtestsrv (its DNS server), with the real pxd answering HTTP-01 on the
port pebble validates and serving the issued certificates on its TLS listener.
Everything on 127.0.0.1, every port chosen at run time."""
import json
import os
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import unittest
import urllib.request

from cryptography import x509

from pxtest import Admind, Pxd, Upstream, free_port, wait_for, DEADLINE

# Issuance involves several round trips and, for DNS-01, a hook and lookups: be generous on a busy machine.
ACME_DEADLINE = max(DEADLINE, 120)


def wait_port(port, proc, what):
    def up():
        if proc.poll() is not None:
            raise AssertionError(what + " exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=ACME_DEADLINE, interval=0.05, what=what)


class Pebble:
    """pebble (the CA) and pebble-challtestsrv (DNS for every name: 127.0.0.1)."""

    def __init__(self, http_port):
        self.dir = tempfile.mkdtemp(prefix="pebble-")
        self.cert = os.path.join(self.dir, "cert.pem")
        key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", self.cert, "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        self.acme_port, self.mgmt_port = free_port(), free_port()
        self.dns_port, self.chal_mgmt_port = free_port(), free_port()
        self.http_port = http_port
        self.config = os.path.join(self.dir, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {"listenAddress": "127.0.0.1:%d" % self.acme_port,
                                  "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
                                  "certificate": self.cert, "privateKey": key,
                                  "httpPort": http_port, "tlsPort": free_port()}}, f)
        self.chal_log = open(os.path.join(self.dir, "challtestsrv.log"), "ab")
        self.chal = subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", "127.0.0.1:%d" % self.chal_mgmt_port],
            stdout=self.chal_log, stderr=subprocess.STDOUT)
        wait_port(self.chal_mgmt_port, self.chal, "pebble-challtestsrv")
        self.pebble = None
        self.start()

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.acme_port

    def start(self):
        self.log = open(os.path.join(self.dir, "pebble.log"), "ab")
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
        self.pebble = subprocess.Popen(["pebble", "-config", self.config,
                                        "-dnsserver", "127.0.0.1:%d" % self.dns_port],
                                       stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_port(self.acme_port, self.pebble, "pebble")
        wait_port(self.mgmt_port, self.pebble, "pebble management")

    def stop_ca(self):
        if self.pebble and self.pebble.poll() is None:
            self.pebble.terminate()
            self.pebble.wait()
        self.log.close()

    def root(self):
        """pebble's issuing root (a new one every start), PEM."""
        ctx = ssl.create_default_context(cafile=self.cert)
        with urllib.request.urlopen("https://127.0.0.1:%d/roots/0" % self.mgmt_port, context=ctx,
                                    timeout=DEADLINE) as r:
            return r.read().decode()

    def chal_api(self, path, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.chal_mgmt_port, path),
                                     data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(req, timeout=DEADLINE).read()

    def stop(self):
        self.stop_ca()
        self.chal.terminate()
        self.chal.wait()
        self.chal_log.close()


def served_cert(port, name):
    """The leaf pxd presents for SNI `name` (unverified here; verify_with checks the chain)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def https_get(port, name, root_pem, path="/"):
    """A verified HTTPS request to pxd for `name`, trusting only pebble's root."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            t.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, name)).encode())
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class AcmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream()
        cls.pxd = Pxd(workers=2, extra="listen 127.0.0.1:0 tls\n")
        import re
        cls.tls_port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", cls.pxd.log()).group(1))
        cls.ca = Pebble(cls.pxd.port)
        cls.hook = os.path.join(cls.ca.dir, "dns-hook")
        # The DNS-01 hook, as an operator would write it for a provider's HTTP API (here challtestsrv's).
        with open(cls.hook, "w") as f:
            f.write("#!/bin/sh\nset -e\napi=http://127.0.0.1:%d\n"
                    "case \"$1\" in\n"
                    "  add) curl -sf -d \"{\\\"host\\\":\\\"$2.\\\",\\\"value\\\":\\\"$3\\\"}\" $api/set-txt ;;\n"
                    "  del) curl -sf -d \"{\\\"host\\\":\\\"$2.\\\"}\" $api/clear-txt ;;\n"
                    "  *) echo \"usage: $0 add|del FQDN VALUE\" >&2; exit 2 ;;\n"
                    "esac\n" % cls.ca.chal_mgmt_port)
        os.chmod(cls.hook, stat.S_IRWXU)
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file,
                         args=["--acme-directory", cls.ca.directory, "--acme-ca", cls.ca.cert,
                               "--acme-email", "ops@example.com", "--acme-retry-min", "1", "--metrics", "127.0.0.1:0",
                               "--dns-hook", cls.hook, "--dns-resolver", "127.0.0.1:%d" % cls.ca.dns_port])

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()
        cls.ca.stop()
        cls.up.kill()

    def ctl(self, *args):
        r = self.adm.ctl(*args)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r.stdout

    def cert(self, name):
        st, _, body = self.adm.api("GET", "/v1/certs/" + name)
        return body if st == 200 else None

    def wait_issued(self, name, other_than=None):
        # Failures counted before the wait began (a CA that was down) are not this wait's: three more are.
        before = (self.cert(name) or {}).get("failures", 0)

        def done():
            c = self.cert(name)
            if c and c.get("status") == "failed" and c.get("failures", 0) >= before + 3:
                raise AssertionError("issuance keeps failing: %s" % json.dumps(c.get("last_error")))
            return c if c and c.get("serial") and c.get("serial") != other_than and c.get("status") == "valid" \
                else None
        return wait_for(done, timeout=ACME_DEADLINE, interval=0.1, what="certificate %s issued" % name)

    def wait_served(self, name, serial_hex):
        def serving():
            try:
                return format(served_cert(self.tls_port, name).serial_number, "x") == serial_hex.lstrip("0")
            except ssl.SSLError:  # pxd has not loaded the first certificate for this name yet
                return False
        wait_for(serving, timeout=ACME_DEADLINE, interval=0.05,
                 what="pxd serving serial %s for %s" % (serial_hex, name))

    def test_1_http01_issuance_through_pxd(self):
        self.ctl("route", "add", "shop", "--host", "shop.test", "--host", "www.shop.test",
                 "--upstream", self.up.url, "--tls", "auto")
        # Listed at once: the change that asked for it recorded the pending order in its own transaction.
        listed = {x["name"]: x for x in json.loads(self.ctl("cert", "list", "--json"))}
        self.assertIn("shop.test", listed)
        self.assertIn(listed["shop.test"]["status"], ("pending", "ordering", "valid"))
        self.assertEqual(listed["shop.test"]["names"], ["shop.test", "www.shop.test"])
        c = self.wait_issued("shop.test")
        self.assertEqual(sorted(c["names"]), ["shop.test", "www.shop.test"])
        self.assertEqual(c["source"], "acme")
        self.assertIn("Pebble", c["issuer"])
        self.wait_served("shop.test", c["serial"])
        # The chain pxd serves verifies against pebble's root, for both names.
        root = self.ca.root()
        for name in ("shop.test", "www.shop.test"):
            status, body = https_get(self.tls_port, name, root)
            self.assertEqual(status, 200)
            self.assertIn(b'"id": "u1"', body)
        # The challenge records are gone once the order is done.
        _, _, audit = self.adm.api("GET", "/v1/audit?resource=acme/&limit=1000")
        puts = {a["resource"] for a in audit if a["action"] == "acme.challenge.put"}
        dels = {a["resource"] for a in audit if a["action"] == "acme.challenge.delete"}
        self.assertTrue(puts)
        self.assertEqual(puts, dels)
        # The next renewal is planned (two thirds of the lifetime, or the CA's renewal window).
        def planned():
            listing = json.loads(self.ctl("cert", "list", "--json"))
            row = [x for x in listing if x["name"] == "shop.test"][0]
            return row if "next_attempt" in row else None
        row = wait_for(planned, what="the next renewal planned")
        self.assertEqual(row["managed"], "acme")
        lifetime = row["not_after"] - row["not_before"]
        self.assertGreaterEqual(row["next_attempt"], row["not_before"] + lifetime * 2 // 3)
        self.assertLessEqual(row["next_attempt"], row["not_before"] + lifetime * 2 // 3 + lifetime // 20 + 1)
        self.assertGreater(row["next_attempt"], row["last_attempt"])
        # The private key never shows.
        self.assertNotIn("PRIVATE KEY", self.ctl("cert", "show", "shop.test"))
        self.assertNotIn("PRIVATE KEY", self.adm.log())
        # pxctl cert list shows it in a table.
        table = self.ctl("cert", "list")
        self.assertIn("shop.test", table)
        self.assertIn("valid", table)

    def test_2_forced_renewal_serves_new_certificate(self):
        self.ctl("route", "add", "renew", "--host", "renew.test", "--upstream", self.up.url, "--tls", "auto")
        first = self.wait_issued("renew.test")
        self.wait_served("renew.test", first["serial"])
        out = self.ctl("cert", "renew", "renew.test")
        self.assertIn("renewed", out)
        second = self.cert("renew.test")
        self.assertNotEqual(second["serial"], first["serial"])
        self.wait_served("renew.test", second["serial"])
        # Audited: the operator's request and the new certificate.
        _, _, audit = self.adm.api("GET", "/v1/audit?resource=cert/renew.test")
        actions = [a["action"] for a in audit]
        self.assertIn("cert.renew", actions)
        self.assertGreaterEqual(actions.count("cert.update") + actions.count("cert.create"), 2)

    def test_3_dns01_wildcard(self):
        self.ctl("route", "add", "wild", "--host", "wild.test", "--host", "*.wild.test",
                 "--upstream", self.up.url, "--tls", "auto")
        c = self.wait_issued("wild.test")
        self.assertEqual(sorted(c["names"]), ["*.wild.test", "wild.test"])
        self.wait_served("any.wild.test", c["serial"])
        status, _ = https_get(self.tls_port, "any.wild.test", self.ca.root())
        self.assertEqual(status, 200)
        self.assertIn("dns hook", self.adm.log().lower())

    def test_4_refused_validation_shows_problem_document(self):
        # challtestsrv sends pebble to 127.0.0.2 for this name, where nothing answers HTTP-01.
        self.ca.chal_api("/add-a", {"host": "refused.test.", "addresses": ["127.0.0.2"]})
        self.ctl("route", "add", "refused", "--host", "refused.test", "--upstream", self.up.url, "--tls", "auto")

        def failed():
            c = self.cert("refused.test")
            return c if c and c.get("status") == "failed" else None
        c = wait_for(failed, timeout=ACME_DEADLINE, interval=0.1, what="the order to fail")
        err = c["last_error"]
        self.assertTrue(err["type"].startswith("urn:ietf:params:acme:error:"), err)
        self.assertEqual(err["authorizations"][0]["identifier"], "refused.test")
        self.assertEqual(err["authorizations"][0]["challenge"], "http-01")
        self.assertIn("detail", err["authorizations"][0]["error"])
        self.assertGreater(c["next_attempt"], c["last_attempt"])
        # In the audit log and pxadmind's log too.
        _, _, audit = self.adm.api("GET", "/v1/audit?resource=cert/refused.test")
        failures = [a for a in audit if a["action"] == "cert.acme_failed"]
        self.assertTrue(failures)
        self.assertEqual(failures[0]["after"]["problem"]["authorizations"][0]["identifier"], "refused.test")
        self.assertIn("acme: certificate refused.test for refused.test failed: urn:ietf:params:acme:error:",
                      self.adm.log())
        # The failure and the retry say that nothing serves this name, and why the retry comes.
        wait_for(lambda: self.cert("refused.test").get("failures", 0) >= 2, timeout=ACME_DEADLINE, interval=0.1,
                 what="a retry")
        lines = [l for l in self.adm.log().splitlines() if "refused.test for refused.test" in l]
        self.assertTrue(any("failed:" in l and "nothing is served for these names yet" in l for l in lines), lines)
        retries = [l for l in lines if "ordering" in l and "a retry after a failed attempt" in l]
        self.assertTrue(retries, lines)
        self.assertIn("first ordered because no certificate yet", retries[0])
        self.assertIn("no certificate serves these names yet", retries[0])
        self.assertFalse(any("keeps serving" in l for l in lines), lines)
        # The table shows the error in words.
        self.assertIn("refused.test", self.ctl("cert", "list"))
        self.ctl("route", "rm", "refused")

    def test_5_ca_down_retries_and_old_certificate_serves(self):
        self.ctl("route", "add", "down", "--host", "down.test", "--upstream", self.up.url, "--tls", "auto")
        first = self.wait_issued("down.test")
        self.wait_served("down.test", first["serial"])
        root = self.ca.root()
        self.ca.stop_ca()
        try:
            r = self.adm.ctl("cert", "renew", "down.test")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("not renewed", r.stderr)
            c = self.cert("down.test")
            self.assertEqual(c["last_error"]["type"], "px:network")
            self.assertIn("127.0.0.1:%d" % self.ca.acme_port, c["last_error"]["detail"])
            # Retries come by themselves, backing off; the old certificate keeps serving meanwhile.
            wait_for(lambda: self.cert("down.test").get("failures", 0) >= 2, timeout=ACME_DEADLINE, interval=0.1,
                     what="a retry")
            self.assertEqual(format(served_cert(self.tls_port, "down.test").serial_number, "x"),
                             first["serial"].lstrip("0"))
            # The retry's log line gives the real reason, and says the current certificate serves meanwhile.
            lines = [l for l in self.adm.log().splitlines() if "ordering a certificate down.test" in l]
            retry = [l for l in lines if "a retry after a failed attempt" in l]
            self.assertTrue(retry, lines)
            self.assertIn("first ordered because a renewal was asked for", retry[0])
            self.assertIn("the current certificate serves until", retry[0])
            self.assertFalse(any("two thirds of its lifetime" in l for l in lines), lines)
            status, _ = https_get(self.tls_port, "down.test", root)
            self.assertEqual(status, 200)
        finally:
            self.ca.start()
        # Back up (a new CA instance that forgot the account): the next retry registers again and succeeds.
        second = self.wait_issued("down.test", other_than=first["serial"])
        self.wait_served("down.test", second["serial"])
        self.assertEqual(self.cert("down.test")["failures"], 0)

    def test_7_admin_metrics(self):
        """pxadmind's /metrics: ACME orders and failures by type, certificates, pxd in sync; promtool-clean."""
        import re
        import subprocess
        import urllib.request
        port = int(re.search(r"metrics on http://127\.0\.0\.1:0/metrics \(port (\d+)\)", self.adm.log()).group(1))
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        def sample(metric, **labels):
            want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
            for line in text.splitlines():
                m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
                if m and m.group(1) == metric and ",".join(sorted((m.group(2) or "").split(","))) == want:
                    return float(m.group(3))
            return None
        issued = len([c for c in json.loads(self.ctl("cert", "list", "--json")) if c.get("serial")])
        self.assertGreaterEqual(sample("px_acme_orders_total", result="issued"), issued)
        self.assertGreaterEqual(sample("px_acme_orders_total", result="failed"), 2)   # tests 4 and 5
        self.assertGreaterEqual(sample("px_acme_failures_total", type="px:network"), 1)
        self.assertGreaterEqual(sample("px_acme_failures_total", type="unauthorized") or
                                sample("px_acme_failures_total", type="connection") or 0, 1)
        not_after = self.cert("shop.test")["not_after"]
        self.assertEqual(sample("px_certificate_not_after_seconds", name="shop.test"), not_after)
        self.assertEqual(sample("px_acme_certificate_failing", name="shop.test"), 0)
        self.assertEqual(sample("px_pxd_in_sync", status_file=self.pxd.status_file) is not None, True)
        self.assertGreater(sample("px_admin_api_requests_total", method="GET", code="2xx"), 0)
        self.assertGreater(sample("px_admin_store_generation"), 0)

    def test_8_tls_stream_gets_its_certificate(self):
        """A TCP stream with --tls auto: pxadmind orders the certificate (HTTP-01 through pxd's port 80
        listener), and the stream's listener serves it, verified against pebble's root."""
        from l4peers import TcpPeer
        peer = TcpPeer()
        self.addCleanup(peer.close)
        port = free_port()
        self.ctl("stream", "add", "mqtt", "--listen", "127.0.0.1:%d" % port, "--tls", "auto",
                 "--host", "mqtt.test", "--upstream", peer.url)
        self.addCleanup(lambda: self.adm.ctl("stream", "rm", "mqtt"))
        c = self.wait_issued("mqtt.test")
        self.assertEqual(c["names"], ["mqtt.test"])
        root = self.ca.root()

        def served():
            try:
                ctx = ssl.create_default_context(cadata=root)
                with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
                    with ctx.wrap_socket(s, server_hostname="mqtt.test") as t:
                        t.sendall(b"ECHO\nping")
                        got = b""
                        while len(got) < 4:
                            d = t.recv(10)
                            if not d:
                                break
                            got += d
                        return got == b"ping"
            except (ssl.SSLError, ConnectionError):
                return False  # pxd has not loaded the certificate yet (the handshake fails)
        wait_for(served, timeout=ACME_DEADLINE, interval=0.05, what="the stream serving its ACME certificate")
        # It is listed with the certificates ACME keeps.
        self.assertIn("mqtt.test", self.ctl("cert", "list"))

    def test_6_validation(self):
        # A wildcard with tls auto needs the DNS hook: a pxadmind without one refuses it, saying why.
        plain = Admind(args=["--acme-directory", self.ca.directory, "--acme-ca", self.ca.cert])
        try:
            r = plain.ctl("route", "add", "w", "--host", "*.nohook.test", "--upstream", self.up.url, "--tls", "auto")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("tls", r.stderr)
            self.assertIn("DNS-01", r.stderr)
            self.assertIn("--dns-hook", r.stderr)
            # A named certificate must exist.
            r = plain.ctl("route", "add", "n", "--host", "n.test", "--upstream", self.up.url, "--tls", "nosuch")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("no certificate named 'nosuch'", r.stderr)
            r = plain.ctl("route", "add", "n", "--host", "n.test", "--upstream", self.up.url, "--tls", "bad name!")
            self.assertNotEqual(r.returncode, 0)
            # Renewing what ACME does not keep.
            r = plain.ctl("cert", "renew", "n.test")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("no certificate named", r.stderr)
            self.assertEqual(plain.api("GET", "/v1/routes")[2], [])
        finally:
            plain.stop()


if __name__ == "__main__":
    unittest.main()
