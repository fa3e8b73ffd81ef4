"""Streams (L4 proxying) in the store: pxctl and the API add, show, change and
remove them; they are validated field by field, conflict-checked (another
stream's address, pxd.conf's listeners, an access list that does not exist),
audited, exported and imported, and a pxd reading the store keeps serving."""
import json
import unittest

from l4peers import hold_port
from pxtest import Admind, Pxd, Upstream, free_port, get, route


class StreamStoreTest(unittest.TestCase):
    def setUp(self):
        self.adm = Admind()

    def tearDown(self):
        self.adm.stop()

    def ok(self, *args):
        r = self.adm.ctl(*args)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r.stdout

    def refused(self, *args, code=4):
        r = self.adm.ctl(*args)
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        return r.stderr

    def test_lifecycle(self):
        self.ok("acl", "add", "office", "--rule", "allow=10.0.0.0/8", "--default", "deny")
        self.ok("stream", "add", "pg", "--listen", "0.0.0.0:5432", "--upstream", "tcp://10.0.0.7:5432",
                "--upstream", "tcp://db2.internal:5432#3", "--acl", "office", "--proxy-protocol", "v2")
        self.ok("stream", "add", "dns", "--listen", "0.0.0.0:53/udp", "--upstream", "udp://10.0.0.53:53",
                "--lb", "hash", "--idle-timeout", "30000")
        pg = json.loads(self.ok("stream", "show", "pg"))
        self.assertEqual((pg["listen"], pg["protocol"], pg["acl"], pg["proxy_protocol"]),
                         ("0.0.0.0:5432", "tcp", "office", "v2"))
        self.assertEqual(pg["upstreams"], [{"url": "tcp://10.0.0.7:5432", "weight": 1},
                                           {"url": "tcp://db2.internal:5432", "weight": 3}])
        dns = json.loads(self.ok("stream", "show", "dns"))
        self.assertEqual((dns["protocol"], dns["lb"], dns["idle_timeout_ms"]), ("udp", "hash", 30000))
        table = self.ok("stream", "list")
        self.assertIn("0.0.0.0:5432/tcp", table)
        self.assertIn("0.0.0.0:53/udp", table)
        self.assertEqual(pg["version"], 1)
        self.ok("stream", "set", "pg", "--max-connections", "100")
        self.ok("stream", "disable", "pg")
        pg = json.loads(self.ok("stream", "show", "pg"))
        self.assertEqual((pg["max_connections"], pg["enabled"], pg["version"]), (100, False, 3))
        self.assertIn("stale", self.refused("stream", "set", "pg", "--rate", "1000", "--if-match", "1"))
        # The access list is in use: it cannot go.
        self.assertIn("used by stream 'pg'", self.refused("acl", "rm", "office"))
        _, _, audit = self.adm.api("GET", "/v1/audit?resource=stream/pg")
        self.assertEqual([a["action"] for a in audit][:3], ["stream.create", "stream.update", "stream.update"])
        self.ok("stream", "rm", "pg")
        self.assertEqual(self.adm.ctl("stream", "show", "pg").returncode, 3)
        self.ok("acl", "rm", "office")

    def test_validation_names_the_field(self):
        cases = [
            (["--listen", "example.com:80", "--upstream", "tcp://10.0.0.1:80"], "listen: "),
            (["--listen", "0.0.0.0:0", "--upstream", "tcp://10.0.0.1:80"], "listen: "),
            (["--listen", "0.0.0.0:80/sctp", "--upstream", "tcp://10.0.0.1:80"], "listen: "),
            (["--listen", "0.0.0.0:80", "--upstream", "udp://10.0.0.1:80"], "upstreams[0].url: "),
            (["--listen", "0.0.0.0:80", "--upstream", "tcp://10.0.0.1"], "upstreams[0].url: "),
            (["--listen", "0.0.0.0:80", "--upstream", "tcp://a..b:80"], "upstreams[0].url: "),
            (["--listen", "0.0.0.0:53/udp", "--upstream", "udp://10.0.0.1:53", "--tls", "auto", "--host", "a.b"],
             "tls: "),
            (["--listen", "0.0.0.0:53/udp", "--upstream", "udp://10.0.0.1:53", "--proxy-protocol", "v1"],
             "proxy_protocol: "),
            (["--listen", "0.0.0.0:8883", "--upstream", "tcp://10.0.0.1:1883", "--tls", "auto"], "hosts: "),
            (["--listen", "0.0.0.0:53/udp", "--upstream", "udp://10.0.0.1:53", "--accept-proxy", "on"],
             "accept_proxy: PROXY headers are read on TCP streams only"),
            (["--listen", "0.0.0.0:8883", "--upstream", "tcp://10.0.0.1:1883", "--tls", "nosuch"], "tls: "),
            (["--listen", "0.0.0.0:80", "--upstream", "tcp://10.0.0.1:80", "--acl", "nosuch"],
             "acl: no access list named 'nosuch'"),
            # As for routes: a wildcard needs DNS-01, and this pxadmind has no --dns-hook.
            (["--listen", "0.0.0.0:8883", "--upstream", "tcp://10.0.0.1:1883", "--tls", "auto", "--host",
              "*.m.test"], "tls: auto on the wildcard host *.m.test needs a DNS-01 challenge"),
        ]
        for args, want in cases:
            err = self.refused("stream", "add", "s", *args)
            self.assertIn(want, err, args)
        st, _, body = self.adm.api("POST", "/v1/streams", {"name": "s", "listen": "0.0.0.0:1", "upstreams": [
            "tcp://10.0.0.1:1"], "colour": "red"})
        self.assertEqual((st, body["error"]["field"]), (422, "colour"))
        self.assertEqual(self.adm.api("GET", "/v1/streams")[2], [])

    def test_listen_conflicts(self):
        self.ok("stream", "add", "a", "--listen", "127.0.0.1:7000", "--upstream", "tcp://10.0.0.1:1")
        # The wildcard covers 127.0.0.1 on the same port and protocol: refused, naming the other stream.
        err = self.refused("stream", "add", "b", "--listen", "0.0.0.0:7000", "--upstream", "tcp://10.0.0.1:1", code=4)
        self.assertIn("listen: stream 'a' already listens on", err)
        # Another port, or UDP on the same port, is fine.
        self.ok("stream", "add", "c", "--listen", "0.0.0.0:7000/udp", "--upstream", "udp://10.0.0.1:1")
        self.ok("stream", "add", "d", "--listen", "127.0.0.2:7000", "--upstream", "tcp://10.0.0.1:1")
        # Changing a stream onto a taken address is refused too.
        self.assertIn("already listens", self.refused("stream", "set", "d", "--listen", "[::]:7000"))

    def test_export_import(self):
        self.ok("stream", "add", "a", "--listen", "127.0.0.1:7001", "--upstream", "tcp://10.0.0.1:1")
        doc = json.loads(self.ok("export"))
        self.assertEqual([s["name"] for s in doc["streams"]], ["a"])
        other = Admind()
        try:
            r = other.ctl("import", "-", input=json.dumps(doc))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(other.ctl("stream", "show", "a").stdout)["listen"], "127.0.0.1:7001")
            # Two streams of one document on one address: 409; a stream naming a missing access list: 422.
            bad = dict(doc, streams=doc["streams"] + [dict(doc["streams"][0], name="b", listen="0.0.0.0:7001")])
            st, _, body = other.api("POST", "/v1/config?mode=replace", bad)
            self.assertEqual(st, 409, body)
            self.assertIn("both listen on", body["error"]["message"])
            bad = dict(doc, streams=[dict(doc["streams"][0], acl="ghost")])
            st, _, body = other.api("POST", "/v1/config?mode=replace", bad)
            self.assertEqual(st, 422, body)
            self.assertIn("ghost", body["error"]["message"])
            self.assertEqual(json.loads(other.ctl("stream", "show", "a").stdout)["version"], 1)
        finally:
            other.stop()


class StreamsBesidePxdTest(unittest.TestCase):
    def test_pxd_conf_listeners_conflict_and_pxd_keeps_serving(self):
        port = free_port()
        up = Upstream()
        pxd = Pxd(extra="listen 127.0.0.1:%d\n" % port, routes=[route("r", "a.test", [up])])
        adm = Admind(data=pxd.data, pxd_status=pxd.status_file)
        try:
            r = adm.ctl("stream", "add", "s", "--listen", "0.0.0.0:%d" % port, "--upstream", "tcp://10.0.0.1:1")
            self.assertEqual(r.returncode, 4, r.stderr)
            self.assertIn("listen: pxd.conf already listens on 127.0.0.1:%d" % port, r.stderr)
            r = adm.ctl("stream", "add", "s", "--listen", "127.0.0.1:%d" % free_port(), "--upstream",
                        "tcp://10.0.0.1:1")
            self.assertEqual(r.returncode, 0, r.stderr)
            pxd.wait_applied(adm.generation())
            self.assertEqual(get(pxd.port, host="a.test").status, 200)
        finally:
            adm.stop()
            pxd.stop()
            up.kill()

    def test_a_stream_whose_port_another_process_holds_is_listed_with_the_error(self):
        holder, port = hold_port()
        pxd = Pxd()
        adm = Admind(data=pxd.data, pxd_status=pxd.status_file)
        try:
            r = adm.ctl("stream", "add", "taken", "--listen", "127.0.0.1:%d" % port, "--upstream", "tcp://10.0.0.1:1")
            self.assertEqual(r.returncode, 0, r.stderr)  # nothing in px's own configuration says no
            pxd.wait_applied(adm.generation())
            listed = json.loads(adm.ctl("--json", "stream", "list").stdout)[0]
            self.assertEqual(listed["errors"][0]["pxd"], pxd.status_file)
            self.assertIn("in use", listed["errors"][0]["error"])
            self.assertIn("in use", adm.ctl("stream", "list").stdout)
            self.assertIn("in use", json.loads(adm.ctl("stream", "show", "taken").stdout)["errors"][0]["error"])
            # the port is free again: the next change opens it, and the error is gone
            holder.close()
            adm.ctl("stream", "set", "taken", "--max-connections", "10")
            pxd.wait_applied(adm.generation())
            self.assertNotIn("errors", json.loads(adm.ctl("--json", "stream", "list").stdout)[0])
        finally:
            holder.close()
            adm.stop()
            pxd.stop()


if __name__ == "__main__":
    unittest.main()
