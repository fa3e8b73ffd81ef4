"""testssl.sh against pxd's TLS listener with the default TLS settings: no finding
rated MEDIUM or worse about what the server decides (protocols, ciphers, their
order, key exchange, renegotiation, the known attacks, headers a route sets).

Findings about the certificate itself (ids starting with cert_: chain of trust,
revocation URIs, expiry window, name) are left out: the test's certificate comes
from a private CA made at run time, which no public trust store knows. The
listener is named by a DNS name (shop.test) that testssl is told to reach at
127.0.0.1, so nothing leaves loopback."""
import json
import os
import subprocess
import unittest

from pxtest import Pxd, Upstream, route, DEADLINE
from test_tls import Certs, tls_port


class TestsslTest(unittest.TestCase):
    def test_default_profile_has_no_medium_or_worse_finding(self):
        certs = Certs()
        up = Upstream("testssl")
        self.addCleanup(up.stop)
        # What an operator would put on an HTTPS site: HSTS and the usual security headers.
        headers = {"response": {"set": {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                                        "Content-Security-Policy": "default-src 'self'",
                                        "Referrer-Policy": "no-referrer"}}}
        px = Pxd(extra="listen 127.0.0.1:0 tls\ntls_default_certificate shop\n",
                 routes=[route("shop", ["shop.test"], [up], filters=[
                     {"name": "force_tls", "config": {"hsts": {"max_age": 31536000}}},
                     {"name": "headers", "config": headers}])])
        self.addCleanup(px.stop)
        port = tls_port(px)
        crt, key, _ = certs.leaf("shop", ["shop.test"], days=90)
        r = px.store("put-cert", "shop", crt, key)
        self.assertEqual(r.returncode, 0, r.stderr)
        px.wait_applied(int(r.stdout.strip()))
        out = os.path.join(certs.dir, "testssl.json")
        r = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
                            "--add-ca", certs.ca_file, "--jsonfile", out,
                            "shop.test:%d" % port], capture_output=True, text=True,
                           timeout=max(1100, DEADLINE))  # about 300 s, 400-600 s under ASan on a busy machine
        self.assertTrue(os.path.exists(out), "testssl wrote no result:\n" + r.stdout[-3000:] + r.stderr[-2000:])
        findings = json.load(open(out))
        self.assertTrue(any(f.get("id") == "TLS1_3" for f in findings), "testssl did not reach the listener")
        bad = ["%s %s: %s" % (f["severity"], f["id"], f.get("finding", ""))
               for f in findings
               if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL") and not f["id"].startswith("cert")]
        self.assertEqual(bad, [], "\n".join(bad))
        # The protocols are the ones the profile names, and only those.
        offered = {f["id"]: f["finding"] for f in findings if f["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1",
                                                                             "TLS1_2", "TLS1_3")}
        for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            self.assertIn("not offered", offered.get(old, ""), old)
        for new in ("TLS1_2", "TLS1_3"):
            self.assertTrue(offered.get(new, "").startswith("offered"), new + ": " + offered.get(new, ""))


if __name__ == "__main__":
    unittest.main()
