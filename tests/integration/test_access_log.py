"""Access logs: one line per stream from its end record, JSON by default or the
combined format, per-route off, reopened on SIGUSR1 (logrotate), and the shipped
fail2ban filters matching exactly the 401 and 403 lines (fail2ban-regex)."""
import json
import os
import re
import signal
import subprocess
import tempfile
import unittest

from pxtest import ROOT, Client, Pxd, Upstream, get, route, wait_for

ACL = {"name": "acl", "config": {"list": "nobody"}}


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class AccessLogTest(unittest.TestCase):
    def start(self, fmt, extra=""):
        self.up = Upstream()
        self.dir = tempfile.mkdtemp(prefix="pxlog-")
        self.path = os.path.join(self.dir, "access.log")
        self.pxd = Pxd(workers=2, extra="access_log %s %s\n%s" % (self.path, fmt, extra), routes=[
            route("r", "a.test", [self.up]),
            route("quiet", "q.test", [self.up], access_log=False),
            route("denied", "d.test", [self.up], filters=[ACL])], start=False)
        r = self.pxd.store("put-acl", json.dumps({"name": "nobody", "default": "deny"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.pxd.start()

    def tearDown(self):
        if self.pxd:
            self.pxd.stop()
        if self.up:
            self.up.kill()

    def test_json_lines(self):
        self.start("json")
        self.assertEqual(get(self.pxd.port, "/x?y=1", host="a.test", headers=[("User-Agent", 'ua "q"')]).status, 200)
        self.assertEqual(get(self.pxd.port, host="q.test").status, 200)
        self.assertEqual(get(self.pxd.port, host="nowhere.test").status, 404)
        self.assertEqual(get(self.pxd.port, host="d.test").status, 403)
        recs = wait_for(lambda: (lambda l: l if len(l) >= 3 else None)(lines(self.path)), what="three lines")
        recs = [json.loads(l) for l in recs]
        self.assertEqual(len(recs), 3)  # the quiet route is not logged
        a = [r for r in recs if r["host"] == "a.test"][0]
        self.assertEqual(a["path"], "/x?y=1")
        self.assertEqual(a["status"], 200)
        self.assertEqual(a["upstream_status"], 200)
        self.assertEqual(a["route"], "r")
        self.assertEqual(a["client"], "127.0.0.1")
        self.assertEqual(a["termination"], "ok")
        self.assertEqual(a["user_agent"], 'ua "q"')
        self.assertRegex(a["request_id"], r"^[0-9a-f]{32}$")  # as sent upstream
        self.assertFalse(a["tls"])
        self.assertRegex(a["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertGreater(a["bytes_out"], 0)
        n = [r for r in recs if r["host"] == "nowhere.test"][0]
        self.assertEqual((n["status"], n["termination"], n["route"]), (404, "local", ""))
        d = [r for r in recs if r["host"] == "d.test"][0]
        self.assertEqual(d["status"], 403)
        self.assertIn("request", d["phases_us"])

    def test_requests_refused_at_parse_time_log_the_real_client_and_no_invented_method(self):
        """fail2ban reads 400 lines: they carry the connection's address, and the method the client sent
        (or none), never one the codec made up."""
        self.start("json")
        sent = [(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI"),
                (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "GET"),
                (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "")]
        for raw, _ in sent:
            c = Client(self.pxd.port)
            c.send(raw)
            self.assertEqual(c.response().status, 400)
            c.close()
        recs = wait_for(lambda: (lambda l: l if len(l) >= 3 else None)(lines(self.path)), what="three lines")
        recs = [json.loads(l) for l in recs]
        self.assertEqual(sorted(r["method"] for r in recs), sorted(m for _, m in sent))
        for r in recs:
            self.assertEqual((r["client"], r["status"], r["termination"]), ("127.0.0.1", 400, "bad_request"), r)
        self.assertNotIn("DELETE", [r["method"] for r in recs])

    def test_chosen_fields(self):
        self.start("json", "access_log_fields time status path referer phases_us\n")
        self.assertEqual(get(self.pxd.port, "/p", host="a.test", headers=[("Referer", "https://x.test/")]).status, 200)
        self.assertEqual(get(self.pxd.port, host="d.test").status, 403)
        recs = [json.loads(l) for l in wait_for(lambda: (lambda l: l if len(l) >= 2 else None)(lines(self.path)),
                                                what="two lines")]
        self.assertEqual([list(r) for r in recs], [["time", "path", "status", "phases_us", "referer"]] * 2)
        a = [r for r in recs if r["path"] == "/p"][0]
        self.assertEqual((a["status"], a["referer"]), (200, "https://x.test/"))
        d = [r for r in recs if r["status"] == 403][0]
        self.assertIn("request", d["phases_us"])  # phases by their filter API names

    def test_unknown_field_is_refused_naming_it(self):
        self.pxd, self.up = None, None
        conf = os.path.join(tempfile.mkdtemp(prefix="pxlog-"), "pxd.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:0\naccess_log_fields time stauts\n")
        from pxtest import PXD
        r = subprocess.run([PXD, "-t", "-c", conf], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("access_log_fields: no field 'stauts'", r.stdout + r.stderr)
        self.assertIn(":2:", r.stdout + r.stderr)

    def test_reopen_on_sigusr1(self):
        self.start("json")
        get(self.pxd.port, host="a.test")
        wait_for(lambda: len(lines(self.path)) == 1, what="the first line")
        os.rename(self.path, self.path + ".1")  # as logrotate does
        self.pxd.signal(signal.SIGUSR1)
        wait_for(lambda: "reopening the access log" in self.pxd.log(), what="the reopen")
        # Lines go to the new file once the writer reopened it; none is lost on the way.
        sent = [1]

        def in_new_file():
            self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
            sent[0] += 1
            return len(lines(self.path)) >= 1
        wait_for(in_new_file, what="a line in the new file")
        wait_for(lambda: len(lines(self.path)) + len(lines(self.path + ".1")) == sent[0],
                 what="every request logged in one of the files")

    def test_combined_and_fail2ban(self):
        self.start("combined")
        for _ in range(3):
            self.assertEqual(get(self.pxd.port, host="d.test").status, 403)
        self.assertEqual(get(self.pxd.port, "/ok", host="a.test", headers=[("Referer", "http://x.test/")]).status, 200)
        got = wait_for(lambda: (lambda l: l if len(l) >= 4 else None)(lines(self.path)), what="four lines")
        ok = [l for l in got if " 200 " in l][0]
        self.assertRegex(ok, r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /ok HTTP/1\.1" 200 \d+ '
                             r'"http://x\.test/" "-"$')
        r = subprocess.run(["fail2ban-regex", self.path, os.path.join(ROOT, "conf/fail2ban/filter.d/px-combined.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"Failregex: 3 total")
        self.assertRegex(r.stdout, r"Lines: 4 lines, 0 ignored, 3 matched, 1 missed")

    def test_fail2ban_json(self):
        self.start("json")
        for _ in range(2):
            self.assertEqual(get(self.pxd.port, host="d.test").status, 403)
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        wait_for(lambda: len(lines(self.path)) >= 3, what="three lines")
        r = subprocess.run(["fail2ban-regex", self.path, os.path.join(ROOT, "conf/fail2ban/filter.d/px.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"Lines: 3 lines, 0 ignored, 2 matched, 1 missed")

    def test_logrotate_snippet(self):
        self.start("json")
        d = tempfile.mkdtemp(prefix="pxrot-")
        conf = open(os.path.join(ROOT, "conf/logrotate/px")).read().replace("/var/log/px/*.log", self.path)
        conf = conf.replace("create 0640 px adm", "create 0640")
        with open(os.path.join(d, "px"), "w") as f:
            f.write(conf)
        r = subprocess.run(["logrotate", "--debug", "--state", os.path.join(d, "state"), os.path.join(d, "px")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("error", r.stderr.lower())


if __name__ == "__main__":
    unittest.main()
