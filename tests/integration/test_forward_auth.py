"""forward_auth against the project's own Authelia-like auth service (tests/authd.py): redirect to login
without a session, 200 with Remote-User with one, 401 and 403 passed back, a slow and a dead auth service
(503), cached positive answers, a request body held while the filter waits, HTTP/2; and the waiting API it
stands on: px.fetch limited to the origins the route's config names, px.sleep serving other requests
meanwhile, a client that leaves while its request waits."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

from pxtest import ROOT, Client, Pxd, Upstream, free_port, get, route, wait_for

AUTHD = os.path.join(ROOT, "tests", "authd.py")

SLEEPY = """
return {
  yields = true,
  request = function(req)
    if req:path() == "/sleep" then
      px.sleep(tonumber(req:query():match("s=([%d.]+)")) or 0.1)
      req:set_header("X-Slept", "yes")
    end
  end,
}
"""

CALLER = """
return {
  config = { target = "string", call = "string" },
  yields = true,
  request = function(req, conf)
    local res, err = px.fetch("http://" .. conf.call)  -- conf.call itself is not a URL
    return px.respond(200, {}, res and tostring(res.status) or err)
  end,
}
"""


class Authd:
    def __init__(self, port=0):
        self.proc = subprocess.Popen([sys.executable, AUTHD, "--port", str(port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", self.proc.stdout.readline()).group(1))
        self.url = "http://127.0.0.1:%d" % self.port

    def count(self):
        return get(self.port, "/_count", host="a").json()["count"]

    def last(self):
        return get(self.port, "/_last", host="a").json()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class ForwardAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxfa-")
        fdir = os.path.join(cls.dir, "filters")
        os.makedirs(fdir)
        for name, src in (("sleepy", SLEEPY), ("caller", CALLER)):
            with open(os.path.join(fdir, name + ".lua"), "w") as f:
                f.write(src)
        cls.auth = Authd()
        cls.auth2 = Authd(free_port())
        cls.up = Upstream()
        verify = cls.auth.url + "/api/verify"
        FA = lambda **conf: [{"name": "forward_auth", "config": dict(conf)}]
        cls.dead = free_port()
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c\nfilters_dir %s\naccess_log %s/access.log"
                           % (fdir, cls.dir),
                     routes=[route("app", ["app.test"], [cls.up],
                                   filters=FA(url=verify, copy_headers=["Remote-User", "Remote-Groups", "X-Auth-Level"])),
                             route("cached", ["cached.test"], [cls.up],
                                   filters=FA(url=verify, copy_headers=["Remote-User"], cache=60)),
                             route("restart", ["restart.test"], [cls.up],
                                   filters=FA(url=cls.auth2.url + "/api/verify", copy_headers=["Remote-User"])),
                             route("slow", ["slow.test"], [cls.up], filters=FA(url=verify + "?slow=30", timeout=1)),
                             route("dead", ["dead.test"], [cls.up],
                                   filters=FA(url="http://127.0.0.1:%d/api/verify" % cls.dead)),
                             route("sleepy", ["sleepy.test"], [cls.up], filters=[{"name": "sleepy", "config": {}}]),
                             route("caller", ["caller.test"], [cls.up],
                                   filters=[{"name": "caller", "config": {"target": cls.auth.url + "/x",
                                                                          "call": "127.0.0.1:%d/" % cls.up.port}}]),
                             route("caller_ok", ["callerok.test"], [cls.up],
                                   filters=[{"name": "caller", "config": {"target": cls.auth.url + "/",
                                                                          "call": "127.0.0.1:%d/_count" % cls.auth.port}}])])
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()
        cls.auth.stop()
        cls.auth2.stop()

    def test_no_session_redirects_to_login_with_the_original_url(self):
        r = get(self.px.port, "/docs?page=2", host="app.test", headers=[("Accept", "text/html")])
        self.assertEqual(r.status, 302)
        self.assertEqual(r.header("Location"),
                         "http://auth.test/login?rd=" + "http%3A%2F%2Fapp.test%2Fdocs%3Fpage%3D2")
        self.assertEqual(r.header_all("Set-Cookie"), ["flow=1; Path=/", "csrf=2; Path=/"])
        self.assertIn(b"log in", r.body)
        seen = self.auth.last()
        self.assertEqual((seen["x-forwarded-method"], seen["x-forwarded-proto"], seen["x-forwarded-host"],
                          seen["x-forwarded-uri"], seen["x-forwarded-for"]),
                         ("GET", "http", "app.test", "/docs?page=2", "127.0.0.1"))
        self.assertEqual(seen["accept"], "text/html")

    def test_session_reaches_the_upstream_as_the_user_auth_names(self):
        r = get(self.px.port, "/x", host="app.test",
                headers=[("Cookie", "session=good"), ("Remote-User", "mallory"), ("Remote-Groups", "root"),
                         ("X-Auth-Level", "admin")])
        self.assertEqual(r.status, 200)
        h = {k.lower(): v for k, v in r.json()["headers"].items()} if isinstance(r.json()["headers"], dict) \
            else {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual((h.get("remote-user"), h.get("remote-groups")), ("alice", "admins"))
        self.assertNotIn("x-auth-level", h)  # named by copy_headers, not given by the auth service: removed
        self.assertEqual(self.auth.last()["cookie"], "session=good")

    def test_a_client_cannot_name_itself_when_auth_names_nobody(self):
        # Basic credentials pass; the answer names alice. A forbidden session gets the auth service's 403.
        r = get(self.px.port, "/", host="app.test", headers=[("Authorization", "Basic YWxpY2U6c2VjcmV0")])
        self.assertEqual(r.status, 200)
        r = get(self.px.port, "/", host="app.test", headers=[("Cookie", "session=forbidden")])
        self.assertEqual((r.status, r.body), (403, b"forbidden by policy\n"))

    def test_script_gets_401_with_www_authenticate(self):
        r = get(self.px.port, "/api", host="app.test", headers=[("X-Requested-With", "XMLHttpRequest")])
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("WWW-Authenticate"), 'Basic realm="auth"')

    def test_a_kept_connection_the_auth_service_closed_is_retried(self):
        ok = lambda: get(self.px.port, "/", host="restart.test", headers=[("Cookie", "session=good")]).status
        self.assertEqual(ok(), 200)  # px keeps this connection to the auth service
        port = self.auth2.port
        self.auth2.stop()  # ... which closes with it; a new service comes up on the same port
        self.auth2 = type(self).auth2 = wait_for(lambda: self._restart(port), what="the auth service to restart")
        self.assertEqual(ok(), 200)
        self.assertEqual(self.auth2.count(), 1)

    @staticmethod
    def _restart(port):
        try:
            return Authd(port)
        except (AttributeError, ValueError):
            return None

    def test_slow_and_dead_auth_services_answer_503(self):
        self.assertEqual(get(self.px.port, "/", host="slow.test").status, 503)
        self.assertEqual(get(self.px.port, "/", host="dead.test").status, 503)
        wait_for(lambda: "forward_auth: %s/api/verify?slow=30: timeout" % self.auth.url in self.px.log(),
                 what="the timeout in pxd's log")

    def test_positive_answers_cached_per_cookie(self):
        before = self.auth.count()
        for _ in range(3):
            self.assertEqual(get(self.px.port, "/", host="cached.test", headers=[("Cookie", "session=good")]).status,
                             200)
        self.assertEqual(self.auth.count(), before + 1)
        # another cookie is asked about; a refusal is not cached
        self.assertEqual(get(self.px.port, "/", host="cached.test", headers=[("Cookie", "session=x")]).status, 302)
        self.assertEqual(get(self.px.port, "/", host="cached.test", headers=[("Cookie", "session=x")]).status, 302)
        self.assertEqual(self.auth.count(), before + 3)

    def test_request_body_waits_with_the_request(self):
        body = b"x" * 300000
        r = get(self.px.port, "/upload", host="app.test", method="POST", body=body,
                headers=[("Cookie", "session=good")])
        self.assertEqual(r.status, 200)
        self.assertIn(str(len(body)).encode(), r.body)
        r = get(self.px.port, "/upload", host="app.test", method="POST", body=body)
        self.assertEqual(r.status, 302)

    def test_http2(self):
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: app.test", "-H",
                              "Cookie: session=good", "-w", "\n%{http_code} %{http_version}",
                              "http://127.0.0.1:%d/h2" % self.h2c], capture_output=True, text=True, timeout=60)
        body, tail = out.stdout.rsplit("\n", 1)
        self.assertEqual(tail, "200 2")
        self.assertIn("alice", body)
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: app.test", "-o", "/dev/null",
                              "-w", "%{http_code} %{redirect_url}", "http://127.0.0.1:%d/h2" % self.h2c],
                             capture_output=True, text=True, timeout=60)
        self.assertTrue(out.stdout.startswith("302 http://auth.test/login?rd="), out.stdout)

    def test_fetch_only_reaches_origins_the_config_names(self):
        r = get(self.px.port, "/", host="caller.test")
        self.assertEqual(r.status, 500)
        wait_for(lambda: "is not an origin this route's filter configs name" in self.px.log(),
                 what="the refusal in pxd's log")
        r = get(self.px.port, "/", host="callerok.test")
        self.assertEqual((r.status, r.body), (200, b"200"))

    def test_sleep_waits_without_holding_the_worker(self):
        c = Client(self.px.port)
        c.send("GET /sleep?s=60 HTTP/1.1\r\nHost: sleepy.test\r\n\r\n")
        # the worker (there is one) answers others meanwhile, including another sleeper that wakes first
        r = get(self.px.port, "/sleep?s=0.05", host="sleepy.test")
        self.assertEqual(r.status, 200)
        self.assertIn(b"x-slept", r.body.lower())
        self.assertEqual(get(self.px.port, "/", host="sleepy.test").status, 200)
        c.close()  # the client leaves while its request waits: the wait ends with it
        wait_for(lambda: '"wait":' in open(os.path.join(self.dir, "access.log")).read(),
                 what="the access log's wait time")
        self.assertEqual(get(self.px.port, "/", host="sleepy.test").status, 200)


class ForwardAuthNativeTest(unittest.TestCase):
    """px runs the built-in forward_auth in C++ (without its cache); an operator's copy of
    filters/forward_auth.lua in filters_dir runs as Lua. Both send the auth service the same subrequest and
    answer the same way."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pxfan-")
        with open(os.path.join(ROOT, "filters", "forward_auth.lua")) as src, \
                open(os.path.join(cls.dir, "forward_auth.lua"), "w") as dst:
            dst.write(src.read())
        cls.auth = Authd()
        cls.up = Upstream()
        FA = lambda **conf: [{"name": "forward_auth", "config": dict(conf)}]
        routes = [route("app", ["app.test"], [cls.up],
                        filters=FA(url=cls.auth.url + "/api/verify",
                                   copy_headers=["Remote-User", "Remote-Groups", "X-Auth-Level"])),
                  route("dead", ["dead.test"], [cls.up], filters=FA(url="http://127.0.0.1:%d/v" % free_port()))]
        cls.native = Pxd(routes=routes, extra="metrics_listen 127.0.0.1:0")
        cls.lua = Pxd(routes=routes, extra="filters_dir %s\nmetrics_listen 127.0.0.1:0" % cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls.native.stop()
        cls.lua.stop()
        cls.up.stop()
        cls.auth.stop()

    def run_sequence(self, px):
        out = []
        def ask(path, host="app.test", headers=()):
            r = get(px.port, path, host=host, headers=list(headers))
            seen = {k: v for k, v in self.auth.last().items() if k.startswith(("x-", "cookie", "accept", "auth"))}
            if r.status == 200:
                h = r.json()["headers"]
                h = {k.lower(): v for k, v in (h.items() if isinstance(h, dict) else h)}
                got = tuple(h.get(k) for k in ("remote-user", "remote-groups", "x-auth-level"))
            else:
                got = (r.body, r.header("Content-Type"))
            out.append((path, r.status, r.header("Location"), r.header_all("Set-Cookie"),
                        r.header("WWW-Authenticate"), got, seen))
        ask("/docs?page=2", headers=[("Accept", "text/html"), ("User-Agent", "t/1")])
        ask("/x", headers=[("Cookie", "session=good"), ("Remote-User", "mallory"), ("X-Auth-Level", "admin")])
        ask("/b", headers=[("Authorization", "Basic YWxpY2U6c2VjcmV0"), ("Remote-Groups", "root")])
        ask("/f", headers=[("Cookie", "session=forbidden")])
        ask("/api", headers=[("X-Requested-With", "XMLHttpRequest")])
        ask("/", host="dead.test")
        port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", px.log()).group(1))
        def counts():
            m = get(port, "/metrics", host="m").body.decode()
            return [float(v) for v in re.findall(r'px_filter_(?:calls|answers)_total\{filter="forward_auth",'
                                                 r'phase="request"\} (\S+)', m)]
        wait_for(lambda: counts() == [6.0, 4.0], what="6 calls and 4 answers in px_filter_*_total")
        return out

    def test_native_and_lua_agree(self):
        native, lua = self.run_sequence(self.native), self.run_sequence(self.lua)
        self.assertEqual(native, lua)
        self.assertEqual([x[1] for x in native], [302, 200, 200, 403, 401, 503])
        self.assertEqual(native[0][3], ["flow=1; Path=/", "csrf=2; Path=/"])
        self.assertEqual(native[1][5], ("alice", "admins", None))
        self.assertEqual(native[0][6]["x-forwarded-uri"], "/docs?page=2")


if __name__ == "__main__":
    unittest.main()
