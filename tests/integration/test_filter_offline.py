"""pxctl filter test: a filter run offline, with px's engine and phases, over requests pxd recorded for a route
(pxctl route set --record N): the recorded heads are masked where they must be, only N are kept, and replayed
offline they get the same verdicts they got live."""
import json
import os
import tempfile
import unittest

from pxtest import PXCTL, Admind, Pxd, Upstream, get, wait_for

RL = {"rate": "1r/m", "burst": 1, "nodelay": True, "key": "header:X-Api-Key"}


class FilterOfflineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream()
        cls.px = Pxd()
        cls.adm = Admind(data=cls.px.data, pxd_status=cls.px.status_file, tcp=False)
        r = cls.adm.ctl("route", "add", "shop", "--host", "shop.test", "--upstream", cls.up.url,
                        "--filter", "rate_limit=" + json.dumps(RL),
                        "--filter", 'headers={"response":{"set":{"X-Shop":"1"}}}')
        assert r.returncode == 0, r.stderr
        cls.dir = tempfile.mkdtemp(prefix="pxoffline-")

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.px.stop()
        cls.up.stop()

    def ctl(self, *args):
        return self.adm.ctl(*args)

    def test_recorded_requests_replay_with_the_live_verdicts(self):
        r = self.ctl("route", "set", "shop", "--record", "5", "--record-mask", "X-Api-Key")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.px.wait_applied(self.adm.generation())
        sent = [("/a", "k1"), ("/b", "k1"), ("/c", "k2"), ("/d", "k1"), ("/e", "k2"), ("/f", "k3"), ("/g", "k3")]
        live = []
        for path, key in sent:
            resp = get(self.px.port, path, host="shop.test",
                       headers=[("X-Api-Key", key), ("Cookie", "sid=secret"), ("Accept", "*/*")])
            live.append(resp.status)
        self.assertEqual(live, [200, 200, 200, 429, 200, 200, 200])  # k1's second after the first and its burst
        recs = wait_for(lambda: (lambda out: out if len(out.splitlines()) == 5 else None)(
            self.ctl("route", "records", "shop").stdout), what="five records")
        lines = [json.loads(l) for l in recs.splitlines()]
        self.assertEqual([l["uri"] for l in lines], ["/a", "/b", "/c", "/d", "/e"])  # the next five only
        h = dict((k.lower(), v) for k, v in lines[0]["headers"])
        self.assertEqual((h["x-api-key"], h["cookie"], h["accept"]), ("<masked>", "<masked>", "*/*"))
        self.assertEqual([l["response"]["status"] for l in lines], live[:5])
        # Replayed with the keys unmasked (masking is for the file; a user edits what a test needs).
        for l, (_, key) in zip(lines, sent):
            l["headers"] = [[k, key if k.lower() == "x-api-key" else v] for k, v in l["headers"]]
        path = os.path.join(self.dir, "shop.jsonl")
        with open(path, "w") as f:
            f.write("".join(json.dumps(l) + "\n" for l in lines))
        r = self.ctl("filter", "test", "rate_limit", "--config", json.dumps(RL), "--request", path, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = [json.loads(l) for l in r.stdout.splitlines()]
        offline = [int(o["result"].split()[1]) if o["result"].startswith("answered") else 200 for o in out]
        self.assertEqual(offline, live[:5])
        # the other filter of the route: its edit, on every request
        r = self.ctl("filter", "test", "headers", "--config", '{"response":{"set":{"X-Shop":"1"}}}',
                     "--request", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count('"op":"set","value":"1"'), 5)

    def test_errors_name_the_problem(self):
        path = os.path.join(self.dir, "one.jsonl")
        with open(path, "w") as f:
            f.write('{"uri": "/x"}\n')
        r = self.ctl("filter", "test", "rate_limit", "--config", '{"rate":"fast"}', "--request", path)
        self.assertEqual(r.returncode, 4)
        self.assertIn("rate_limit: rate must look like", r.stderr)
        r = self.ctl("filter", "test", "nosuch", "--request", path)
        self.assertEqual(r.returncode, 4)
        self.assertIn("no filter named 'nosuch'", r.stderr)
        with open(path, "w") as f:
            f.write('{"uri": "/x", "headers": {"X": 1}}\n')
        r = self.ctl("filter", "test", "headers", "--config", "{}", "--request", path)
        self.assertEqual(r.returncode, 4)
        self.assertIn("request 1: header values must be strings", r.stderr)

    def test_a_filter_file_and_its_waits(self):
        f = os.path.join(self.dir, "gate.lua")
        with open(f, "w") as out:
            out.write('return { yields = true, request = function(req)\n'
                      '  local res, err = px.fetch("http://127.0.0.1:9/check")\n'
                      '  if not res then return px.respond(503, {}, err) end\n'
                      'end, config = { url = "string" } }\n')
        path = os.path.join(self.dir, "two.jsonl")
        with open(path, "w") as out:
            out.write('{"uri": "/x"}\n')
        r = self.ctl("filter", "test", f, "--config", '{"url": "http://127.0.0.1:9/"}', "--request", path, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        o = json.loads(r.stdout)
        self.assertEqual(o["result"], "answered 503")
        self.assertEqual(o["phases"][0]["waits"][0]["fetch"], "GET http://127.0.0.1:9/check")


if __name__ == "__main__":
    unittest.main()
