"""OCSP stapling: pxadmind asks the responder a certificate names (here
`openssl ocsp`, the real responder), checks the answer, and pxd staples it for
clients that ask (openssl s_client -status). A certificate that names no
responder, or one the responder says is revoked, gets no staple."""
import datetime
import os
import subprocess
import time
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from pxtest import Admind, Pxd, Upstream, wait_for, DEADLINE
from test_acme import free_port
from test_tls import NOW, make_key, pem_cert, pem_key, make_cert


def leaf(name, serial_holder, ca_key, ca_cert, ocsp_port):
    key = make_key("ec")
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False))
    if ocsp_port:
        b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier("http://127.0.0.1:%d" % ocsp_port))]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    serial_holder.append(cert)
    return cert, key


class OcspTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = __import__("tempfile").mkdtemp(prefix="pxocsp-")
        cls.ca_key = make_key("ec")
        cls.ca = make_cert([], cls.ca_key, ca=True, cn="px OCSP test CA", days=365)
        cls.ca_file = cls.write("ca.pem", pem_cert(cls.ca))
        cls.ca_key_file = cls.write("ca.key", pem_key(cls.ca_key))
        cls.port = free_port()
        issued = []
        cls.good = leaf("good.test", issued, cls.ca_key, cls.ca, cls.port)
        cls.revoked = leaf("revoked.test", issued, cls.ca_key, cls.ca, cls.port)
        cls.plain = leaf("plain.test", issued, cls.ca_key, cls.ca, 0)
        expiry = (NOW + datetime.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
        revoked_at = (NOW - datetime.timedelta(hours=1)).strftime("%y%m%d%H%M%SZ")
        with open(os.path.join(cls.dir, "index.txt"), "w") as f:
            f.write("V\t%s\t\t%X\tunknown\t/CN=good.test\n" % (expiry, cls.good[0].serial_number))
            f.write("R\t%s\t%s\t%X\tunknown\t/CN=revoked.test\n" % (expiry, revoked_at,
                                                                  cls.revoked[0].serial_number))
        cls.responder_log = open(os.path.join(cls.dir, "ocsp.log"), "wb")
        cls.responder = subprocess.Popen(
            ["openssl", "ocsp", "-index", os.path.join(cls.dir, "index.txt"), "-port", str(cls.port),
             "-rsigner", cls.ca_file, "-rkey", cls.ca_key_file, "-CA", cls.ca_file, "-nmin", "60", "-ignore_err"],
            stdout=cls.responder_log, stderr=subprocess.STDOUT)
        # Ready when it says so (it serves one connection at a time: a probe connection would hold it up).
        log = os.path.join(cls.dir, "ocsp.log")
        wait_for(lambda: b"waiting for OCSP client connections" in open(log, "rb").read(), what="openssl ocsp")
        cls.up = Upstream()
        cls.pxd = Pxd(extra="listen 127.0.0.1:0 tls\n")
        import re
        cls.tls_port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", cls.pxd.log()).group(1))
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)

    @classmethod
    def write(cls, name, data):
        p = os.path.join(cls.dir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()
        cls.up.kill()
        cls.responder.terminate()
        cls.responder.wait()
        cls.responder_log.close()

    def add(self, name, pair):
        cert, key = pair
        cf = self.write(name + ".pem", pem_cert(cert) + pem_cert(self.ca))
        kf = self.write(name + ".key", pem_key(key))
        r = self.adm.ctl("cert", "add", name, "--cert", cf, "--key", kf)
        self.assertEqual(r.returncode, 0, r.stderr)

    def s_client_status(self, name):
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.tls_port, "-servername", name,
                            "-status", "-CAfile", self.ca_file],
                           input="", capture_output=True, text=True, timeout=DEADLINE)
        return r.stdout

    def test_good_certificate_is_stapled(self):
        self.add("good", self.good)
        out = wait_for(lambda: (lambda o: o if "OCSP Response Status: successful" in o else None)(
            self.s_client_status("good.test")), what="a stapled OCSP response")
        self.assertIn("Cert Status: good", out)
        self.assertIn("Verify return code: 0 (ok)", out)
        c = self.adm.api("GET", "/v1/certs/good")[2]
        self.assertGreater(c["ocsp_next_update"], c["ocsp_this_update"])
        self.assertIn("ocsp: certificate good: a good response", self.adm.log())

    def test_no_responder_no_staple(self):
        self.add("plain", self.plain)
        self.pxd.wait_applied(self.adm.generation())
        out = self.s_client_status("plain.test")
        self.assertIn("OCSP response: no response sent", out)

    def test_revoked_is_not_stapled_and_logged(self):
        self.add("revoked", self.revoked)
        wait_for(lambda: "ocsp: certificate revoked:" in self.adm.log(), what="the revocation logged")
        self.assertIn("the certificate is revoked", self.adm.log())
        self.assertIn("OCSP response: no response sent", self.s_client_status("revoked.test"))


if __name__ == "__main__":
    unittest.main()
