"""GeoIP: pxd.conf's geoip_database and geoip_asn_database (MaxMind DB files, built here at test time with
Debian's libmaxmind-db-writer-perl, nothing downloaded), req:country() and req:asn() in filters, the geoip
filter allowing and denying by country and AS number, IPv4 and IPv6 clients, and a database file replaced
while pxd serves."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import unittest

from pxtest import PXD, Client, Pxd, Upstream, get, route, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SHOW = """
return { response = function(req)
  req:set_resp_header("X-Country", req:country() or "none")
  req:set_resp_header("X-ASN", tostring(req:asn() or "none"))
end }
"""


def write_db(kind, path, *pairs):
    subprocess.run(["perl", os.path.join(HERE, "geoip_db.pl"), kind, path] + list(pairs), check=True)


def from_source(port, source, host, headers=()):
    """One request from a given loopback source address (127.0.0.0/8 is all ours)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    c = Client.__new__(Client)
    c.sock, c.buf = s, b""
    req = "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % host
    for k, v in headers:
        req += "%s: %s\r\n" % (k, v)
    c.send(req + "\r\n")
    try:
        return c.response()
    finally:
        c.close()


class GeoipTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxgeo-")
        cls.country = os.path.join(cls.dir, "country.mmdb")
        cls.asn = os.path.join(cls.dir, "asn.mmdb")
        write_db("country", cls.country, "127.0.0.2/32=DE", "127.0.0.3/32=FR", "2001:db8::/32=JP", "10.1.0.0/16=US")
        write_db("asn", cls.asn, "127.0.0.2/32=64500", "127.0.0.4/32=64501", "2001:db8::/32=64502")
        fdir = os.path.join(cls.dir, "filters")
        os.makedirs(fdir)
        with open(os.path.join(fdir, "show.lua"), "w") as f:
            f.write(SHOW)
        cls.up = Upstream()
        G = lambda conf: {"name": "geoip", "config": conf}
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c\ngeoip_database %s\ngeoip_asn_database %s\nfilters_dir %s\n"
                           "trusted_proxies 127.0.0.1/32" % (cls.country, cls.asn, fdir),
                     routes=[route("show", ["show.test"], [cls.up], filters=[{"name": "show", "config": {}}]),
                             route("de", ["de.test"], [cls.up], filters=[G({"allow_countries": ["de"]})]),
                             route("nofr", ["nofr.test"], [cls.up], filters=[G({"deny_countries": ["FR"]})]),
                             route("asn", ["asn.test"], [cls.up], filters=[G({"deny_asns": [64501], "status": 451})]),
                             route("strict", ["strict.test"], [cls.up],
                                   filters=[G({"deny_countries": ["FR"], "unknown": "deny"})])])

        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def seen(self, source, xff=None):
        r = from_source(self.px.port, source, "show.test", [("X-Forwarded-For", xff)] if xff else ())
        self.assertEqual(r.status, 200)
        return r.header("X-Country"), r.header("X-ASN")

    def test_country_and_asn_of_the_real_client_v4_and_v6(self):
        self.assertEqual(self.seen("127.0.0.2"), ("DE", "64500"))
        self.assertEqual(self.seen("127.0.0.3"), ("FR", "none"))
        self.assertEqual(self.seen("127.0.0.4"), ("none", "64501"))
        self.assertEqual(self.seen("127.0.0.5"), ("none", "none"))
        # Behind a trusted proxy (127.0.0.1), the client X-Forwarded-For names: IPv6 and another IPv4.
        self.assertEqual(self.seen("127.0.0.1", "2001:db8::7"), ("JP", "64502"))
        self.assertEqual(self.seen("127.0.0.1", "10.1.2.3"), ("US", "none"))
        # From an untrusted address, X-Forwarded-For does not count.
        self.assertEqual(self.seen("127.0.0.3", "10.1.2.3"), ("FR", "none"))

    def test_over_http2_too(self):
        def h2(source, host):
            r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--interface", source, "-D-", "-o/dev/null",
                                "-H", "Host: " + host, "http://127.0.0.1:%d/" % self.h2c],
                               capture_output=True, text=True, timeout=60)
            return r.stdout.lower()
        out = h2("127.0.0.2", "show.test")
        self.assertIn("http/2 200", out)
        self.assertIn("x-country: de", out)
        self.assertIn("x-asn: 64500", out)
        self.assertIn("http/2 403", h2("127.0.0.3", "de.test"))
        self.assertIn("http/2 200", h2("127.0.0.2", "de.test"))

    def test_the_geoip_filter_allows_and_denies(self):
        status = lambda host, source: from_source(self.px.port, source, host).status
        self.assertEqual([status("de.test", s) for s in ("127.0.0.2", "127.0.0.3", "127.0.0.5")], [200, 403, 403])
        self.assertEqual([status("nofr.test", s) for s in ("127.0.0.2", "127.0.0.3", "127.0.0.5")], [200, 403, 200])
        self.assertEqual([status("asn.test", s) for s in ("127.0.0.2", "127.0.0.4", "127.0.0.5")], [200, 451, 200])
        self.assertEqual([status("strict.test", s) for s in ("127.0.0.2", "127.0.0.3", "127.0.0.5")], [200, 403, 403])
        r = from_source(self.px.port, "127.0.0.3", "de.test")
        self.assertEqual(r.body, b"forbidden\n")

    def test_a_replaced_database_is_used_and_a_broken_one_keeps_the_last(self):
        try:
            write_db("country", self.country, "127.0.0.2/32=AT", "127.0.0.3/32=FR")
            wait_for(lambda: self.seen("127.0.0.2")[0] == "AT", what="the new database in use")
            with open(self.country + ".tmp", "wb") as f:
                f.write(b"not a maxmind database")
            os.replace(self.country + ".tmp", self.country)
            wait_for(lambda: "geoip: %s" % self.country in self.px.log(), what="the broken file logged")
            self.assertEqual(self.seen("127.0.0.2")[0], "AT")  # the last good one serves
        finally:
            write_db("country", self.country, "127.0.0.2/32=DE", "127.0.0.3/32=FR", "2001:db8::/32=JP",
                     "10.1.0.0/16=US")
            wait_for(lambda: self.seen("127.0.0.2")[0] == "DE", what="the original database back")

    def test_a_bad_database_in_pxd_conf_is_refused_naming_the_directive(self):
        conf = os.path.join(self.dir, "bad.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:0\ngeoip_database %s/nope.mmdb\n" % self.dir)
        r = subprocess.run([PXD, "-t", "-c", conf], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("geoip_database: %s/nope.mmdb: No such file or directory" % self.dir, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
