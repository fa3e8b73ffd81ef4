"""Filter configs are checked before they are written (pxadmind, on every route write and import, and
pxctl filter check NAME --config): the filter must exist (built in, or loaded by a running pxd from its
filters_dir), the config must have the shape the filter declares (unknown keys and wrong types are refused),
the filter's own prepare must accept it, and the access lists it names must be stored. A bad config is a 422
naming the filter, the field and the problem, and nothing is written."""
import json
import os
import tempfile
import unittest

from pxtest import Admind, Pxd, Upstream, get, wait_for


class FilterConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.adm = Admind()
        r = cls.adm.ctl("route", "add", "shop", "--host", "shop.test", "--upstream", "http://127.0.0.1:9",
                        "--filter", 'force_tls={"hsts":{"max_age":60}}')
        assert r.returncode == 0, r.stderr

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()

    def refused(self, filt, field, words):
        a = self.adm
        gen = a.generation()
        before = a.ctl("route", "show", "shop").stdout
        r = a.ctl("route", "set", "shop", "--filter", filt)
        self.assertEqual(r.returncode, 4, (filt, r.stdout, r.stderr))  # pxctl's exit code for a 422
        self.assertIn(field + ": ", r.stderr, filt)
        self.assertIn("(422)", r.stderr, filt)
        for w in words:
            self.assertIn(w, r.stderr, filt)
        self.assertEqual(a.generation(), gen, filt)
        self.assertEqual(a.ctl("route", "show", "shop").stdout, before, filt)

    def test_bad_configs_are_refused_naming_the_filter_and_field_and_nothing_is_written(self):
        cases = [
            # The ones the issue found accepted, each of which turned the site into 500s.
            ('force_tls={"hsts":{"max_age":-5}}', "filters[0].config", ["force_tls", "hsts.max_age"]),
            ('headers={"response":{"set":"notatable"}}', "filters[0].config.response.set",
             ["headers: 'response.set' must be an object"]),
            ('acl={"list":"nolist"}', "filters[0].config", ["acl: no access list named 'nolist'"]),
            ("nosuchfilter", "filters[0].name", ["no filter named 'nosuchfilter'", "force_tls", "headers",
                                                 "no pxd is running, so only the built-in filters are known"]),
            ('redirect={"url":"https://x.test","status":200}', "filters[0].config",
             ["redirect: status must be 301, 302, 307 or 308"]),
            # Unknown keys, at the top and nested, and wrong types.
            ('force_tls={"bogus":1}', "filters[0].config.bogus", ["force_tls: unknown key 'bogus' (known: hsts, port)"]),
            ('force_tls={"hsts":{"max_age":1,"preloaded":true}}', "filters[0].config.hsts.preloaded",
             ["unknown key 'hsts.preloaded' (known: include_subdomains, max_age, preload)"]),
            ('force_tls={"port":"443"}', "filters[0].config.port", ["'port' must be a whole number"]),
            ('force_tls={"port":44.5}', "filters[0].config.port", ["'port' must be a whole number"]),
            ('headers={"request":{"remove":{"a":"b"}}}', "filters[0].config.request.remove", ["must be an array"]),
            ('acl={"list":7}', "filters[0].config.list", ["'list' must be the name of an access list"]),
            ('acme={"x":1}', "filters[0].config.x", ["acme: unknown key 'x' (it takes no keys here)"]),
            ('redirect={"url":"https://x.test","preserve_path":"yes"}', "filters[0].config.preserve_path",
             ["must be true or false"]),
            ('geoip={"allow_countries":["Germany"]}', "filters[0].config",
             ["geoip: allow_countries[0]: expected a two-letter country code"]),
            ('geoip={}', "filters[0].config", ["geoip: config needs at least one of allow_countries"]),
            ('geoip={"deny_asns":[64500],"unknown":"maybe"}', "filters[0].config",
             ['geoip: unknown must be "allow" or "deny"']),
        ]
        for filt, field, words in cases:
            self.refused(filt, field, words)
        # The second filter of a list is named by its index.
        r = self.adm.ctl("route", "set", "shop", "--filter", "force_tls", "--filter", 'headers={"x":1}')
        self.assertEqual(r.returncode, 4)
        self.assertIn("filters[1].config.x: headers: unknown key 'x'", r.stderr)

    def test_good_configs_are_written_and_an_access_list_must_exist_first(self):
        a = self.adm
        self.assertEqual(a.ctl("acl", "add", "office", "--rule", "allow=10.0.0.0/8").returncode, 0)
        for filt in ('acl={"list":"office"}', 'headers={"request":{"set":{"X-A":"1"},"remove":["X-B"]}}',
                     'redirect={"url":"https://x.test","status":308,"preserve_path":false}', "force_tls",
                     'force_tls={"port":8443,"hsts":{"max_age":0,"include_subdomains":true}}'):
            r = a.ctl("route", "set", "shop", "--filter", filt)
            self.assertEqual(r.returncode, 0, (filt, r.stderr))
        self.assertEqual(json.loads(a.ctl("route", "show", "shop").stdout)["filters"][0]["config"]["port"], 8443)

    def test_pxctl_filter_check_runs_the_same_check_without_writing(self):
        a = self.adm
        gen = a.generation()
        r = a.ctl("filter", "check", "force_tls", "--config", '{"hsts":{"max_age":31536000}}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("force_tls: config ok", r.stdout)
        r = a.ctl("filter", "check", "force_tls", "--config", '{"hsts":{"max_age":-1}}')
        self.assertEqual(r.returncode, 4)
        self.assertIn("config: force_tls: hsts.max_age must be a whole number of seconds", r.stderr)
        r = a.ctl("filter", "check", "acl", "--config", '{"list":"nowhere"}')
        self.assertEqual(r.returncode, 4)
        self.assertIn("no access list named 'nowhere'", r.stderr)
        r = a.ctl("filter", "check", "nope", "--config", "{}")
        self.assertEqual(r.returncode, 4)
        self.assertIn("name: no filter named 'nope'", r.stderr)
        self.assertEqual(a.ctl("filter", "check", "force_tls", "--config", "[1]").returncode, 2)
        self.assertEqual(a.generation(), gen)

    def test_an_import_is_checked_before_anything_is_written(self):
        a = self.adm
        gen = a.generation()
        doc = {"routes": [{"name": "imp", "hosts": ["imp.test"], "upstreams": ["http://127.0.0.1:9"],
                           "filters": [{"name": "acl", "config": {"list": "imported"}}]}]}
        st, _, body = a.api("POST", "/v1/config", doc)
        self.assertEqual(st, 422, body)
        self.assertEqual(body["error"]["field"], "routes.imp.filters[0].config")
        self.assertIn("no access list named 'imported'", body["error"]["message"])
        self.assertEqual(a.generation(), gen)
        # The same route with the list in the same document goes in.
        doc["acls"] = [{"name": "imported", "rules": [{"action": "allow", "cidr": "127.0.0.0/8"}]}]
        st, _, body = a.api("POST", "/v1/config", doc)
        self.assertEqual(st, 200, body)
        doc["routes"][0]["filters"] = [{"name": "headers", "config": {"response": {"sett": {}}}}]
        st, _, body = a.api("POST", "/v1/config", doc)
        self.assertEqual((st, body["error"]["field"]), (422, "routes.imp.filters[0].config.response.sett"), body)


class PxdFiltersTest(unittest.TestCase):
    """An operator's filter, from pxd's filters_dir: pxadmind knows it through pxd's status file, checks its
    declared shape and runs its prepare; the route then serves through it."""

    def test_a_filter_pxd_loaded_is_checked_with_its_own_declared_shape(self):
        d = tempfile.mkdtemp(prefix="pxfcfg-")
        with open(os.path.join(d, "tagger.lua"), "w") as f:
            f.write('return {\n'
                    '  config = { tag = "string", times = "integer" },\n'
                    '  prepare = function(c)\n'
                    '    if c.tag == nil then error("tagger: config needs {\\"tag\\": ...}", 0) end\n'
                    '    return c\n'
                    '  end,\n'
                    '  response = function(req, c) req:set_resp_header("X-Tag", c.tag) end,\n'
                    '}\n')
        up = Upstream()
        px = Pxd(extra="filters_dir " + d)
        a = Admind(data=px.data, pxd_status=px.status_file, tcp=False)
        try:
            wait_for(lambda: "tagger" in open(px.status_file).read(), what="pxd's status lists tagger")
            base = ["route", "add", "t", "--host", "t.test", "--upstream", "http://127.0.0.1:%d" % up.port]
            r = a.ctl(*base, "--filter", 'tagger={"tag":"x","colour":"red"}')
            self.assertEqual(r.returncode, 4)
            self.assertIn("filters[0].config.colour: tagger: unknown key 'colour' (known: tag, times)", r.stderr)
            r = a.ctl(*base, "--filter", 'tagger={"times":2}')
            self.assertEqual(r.returncode, 4)
            self.assertIn('filters[0].config: tagger: config needs {"tag": ...}', r.stderr)
            r = a.ctl(*base, "--filter", 'tagger={"tag":"hello"}')
            self.assertEqual(r.returncode, 0, r.stderr)
            resp = wait_for(lambda: (lambda x: x if x.status == 200 else None)(get(px.port, host="t.test")),
                            what="the route serves")
            self.assertEqual(resp.header("X-Tag"), "hello")
        finally:
            a.stop()
            px.stop()
            up.stop()


if __name__ == "__main__":
    unittest.main()
