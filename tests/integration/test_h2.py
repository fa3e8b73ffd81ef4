"""HTTP/2 to clients: ALPN and h2c, requests mapped to HTTP/1 upstreams, the
phases and built-in filters, flow control, limits, and the HTTP/2 attacks
(Rapid Reset, CONTINUATION flood, HPACK bomb, PING and SETTINGS floods, zero
windows, stream misuse). Peers: curl, nghttp, h2load (nghttp2-client) and frames
written with python3-h2 and by hand, over real TLS and cleartext sockets."""
import json
import os
import re
import socket
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

try:
    import h2  # noqa: F401
except ImportError:  # an interpreter other than Debian's: python3-h2 is pure Python, its folder serves
    sys.path.append("/usr/lib/python3/dist-packages")
import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Decoder, Encoder

from pxtest import Pxd, Upstream, free_port, route, wait_for, DEADLINE
from test_tls import Certs

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# An answer from the response phase: a page instead of the upstream's 5xx, or of px's own.
ERRPAGE_FILTER = """
return { response = function(req)
  if req:status() >= 500 then
    return px.respond(503, {["Content-Type"] = "text/html", ["X-Page"] = tostring(req:status())}, "<h1>sorry</h1>")
  end
end }
"""

VERSION_FILTER = """
local M = {}
function M.response(req, conf)
  req:set_resp_header("X-Http-Version", tostring(req:http_version()))
end
return M
"""


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS = 1, 1, 4
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 5: "STREAM_CLOSED",
          6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


class Raw:
    """A client that writes frames by hand and reads what comes back (frame by frame)."""

    def __init__(self, port, tls_ctx=None, sni="h2.test", settings=b"", timeout=DEADLINE):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_ctx:
            s = tls_ctx.wrap_socket(s, server_hostname=sni)
            assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
        self.s = s
        self.buf = b""
        self.enc = Encoder()
        self.dec = Decoder()
        self.fields = {}  # stream -> the last header block's fields, decoded in order
        self.s.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send(self, data):
        self.s.sendall(data)

    def headers(self, sid, fields, end_stream=True, end_headers=True):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, self.enc.encode(fields))

    def request(self, sid, path="/echo", host="h2.test", method="GET", extra=(), end_stream=True):
        return self.headers(sid, [(":method", method), (":scheme", "https"), (":authority", host), (":path", path)]
                            + list(extra), end_stream=end_stream)

    def read_frame(self):
        """(type, flags, stream, payload), or None when the connection closed."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                d = self.s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                d = b""
            if not d:
                return None
            self.buf += d
        n = int.from_bytes(self.buf[:3], "big")
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        if f[0] == HEADERS:
            block = f[3]
            if f[1] & 0x8:  # PADDED
                block = block[1:len(block) - block[0]]
            if f[1] & 0x20:  # PRIORITY
                block = block[5:]
            self.fields[f[2]] = dict(self.dec.decode(block))
        return f

    def until(self, pred, what):
        """Reads frames until pred(frame) is true; returns that frame (None: the connection closed first)."""
        deadline = time.time() + DEADLINE
        while time.time() < deadline:
            f = self.read_frame()
            if f is None or pred(f):
                return f
        raise AssertionError("no %s in time" % what)

    def goaway(self):
        """The GOAWAY's (last stream, error name), after reading everything before it; None if closed without."""
        f = self.until(lambda f: f[0] == GOAWAY, "GOAWAY")
        if f is None:
            return None
        last, code = struct.unpack(">II", f[3][:8])
        return last & 0x7FFFFFFF, ERRORS.get(code, code)

    def closed(self):
        deadline = time.time() + DEADLINE
        while time.time() < deadline:
            if self.read_frame() is None:
                return True
        return False

    def close(self):
        self.s.close()


class H2Client:
    """python3-h2's client state machine over a socket: streams, responses, trailers."""

    def __init__(self, port, tls_ctx=None, sni="h2.test", validate=True):
        s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        if tls_ctx:
            s = tls_ctx.wrap_socket(s, server_hostname=sni)
        self.s = s
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate, normalize_outbound_headers=validate,
                                        validate_inbound_headers=False)
        self.c = h2.connection.H2Connection(config=cfg)
        self.c.initiate_connection()
        self.flush()
        self.responses = {}
        self.resets = {}
        self.goaway = None

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def request(self, path="/echo", host="h2.test", method="GET", headers=(), body=None):
        sid = self.c.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https"), (":authority", host), (":path", path)] + list(headers)
        self.c.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            self.send_body(sid, body)
        self.flush()
        return sid

    def send_body(self, sid, body):
        while body:
            n = min(len(body), self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
            if n == 0:
                self.pump(lambda: self.c.local_flow_control_window(sid) > 0, "window for the request body")
                continue
            self.c.send_data(sid, body[:n])
            body = body[n:]
            self.flush()
        self.c.end_stream(sid)
        self.flush()

    def pump(self, cond, what):
        deadline = time.time() + DEADLINE
        while not cond():
            if time.time() > deadline:
                raise AssertionError("no %s in time" % what)
            d = self.s.recv(65536)
            if not d:
                raise AssertionError("connection closed waiting for %s" % what)
            for ev in self.c.receive_data(d):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.responses.setdefault(ev.stream_id, {"headers": {}, "body": b"", "done": False})
                    self.responses[ev.stream_id]["headers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    self.responses.setdefault(ev.stream_id, {"headers": {}, "body": b"", "done": False})
                    self.responses[ev.stream_id]["body"] += ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.responses[ev.stream_id]["done"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    self.resets[ev.stream_id] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev
            self.flush()

    def response(self, sid):
        done = lambda: sid in self.responses and self.responses[sid]["done"]
        self.pump(lambda: done() or sid in self.resets, "response on stream %d" % sid)
        if not done():
            return None
        r = self.responses[sid]
        return int(r["headers"][":status"]), r["headers"], r["body"]

    def close(self):
        self.s.close()


class H2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.up = Upstream("h2-up")
        crt, key, _ = cls.certs.leaf("h2", ["h2.test", "redir.test", "deny.test", "big.test"])
        cls.fdir = tempfile.mkdtemp(prefix="pxh2f-")
        with open(os.path.join(cls.fdir, "version.lua"), "w") as f:
            f.write(VERSION_FILTER)
        with open(os.path.join(cls.fdir, "errpage.lua"), "w") as f:
            f.write(ERRPAGE_FILTER)
        cls.log = os.path.join(cls.fdir, "access.log")
        F = lambda name, conf=None: {"name": name, "config": conf or {}}
        cls.px = Pxd(extra="listen 127.0.0.1:0 tls\nlisten 127.0.0.1:0 h2c\nlisten 127.0.0.1:0 tls http1-only\n"
                           "metrics_listen 127.0.0.1:0\nfilters_dir %s\naccess_log %s\n"
                           "client_body_timeout 2s\nclient_header_timeout 2s\n" % (cls.fdir, cls.log),
                     routes=[route("h2", ["h2.test"], [cls.up], filters=[F("version"), F("headers", {
                         "request": {"set": {"X-From-Filter": "yes"}}, "response": {"set": {"X-Resp": "set"}}})]),
                             route("redir", ["redir.test"], [cls.up],
                                   filters=[F("redirect", {"url": "https://elsewhere.test/", "status": 301,
                                                           "preserve_path": False})]),
                             route("deny", ["deny.test"], [cls.up], filters=[F("version")], max_body_size=1000),
                             route("big", ["big.test"], [cls.up]),
                             route("errpage", ["errpage.test"], [cls.up], filters=[F("errpage")]),
                             route("errdead", ["errdead.test"], ["http://127.0.0.1:%d" % free_port()],
                                   filters=[F("errpage")]),
                             route("pages", ["pages.test"], ["http://127.0.0.1:%d" % free_port()],
                                   filters=[F("error_pages")]),
                             route("staff", ["staff.test"], [cls.up], filters=[F("acl", {"list": "staff"})]),
                             route("nobody", ["nobody.test"], [cls.up], filters=[F("acl", {"list": "nobody"})]),
                             route("retry", ["retry.test"], ["http://127.0.0.1:%d" % free_port(), cls.up]),
                             route("secure", ["secure.test"], [cls.up], filters=[F("force_tls", {
                                 "hsts": {"max_age": 600}})])])
        hashed = subprocess.run(["openssl", "passwd", "-6", "wonderland"], capture_output=True, text=True,
                                check=True).stdout.strip()
        for acl in ({"name": "staff", "default": "deny", "realm": "Staff Only",
                     "users": [{"username": "alice", "hash": hashed}]},
                    {"name": "nobody", "default": "deny"}):
            r = cls.px.store("put-acl", json.dumps(acl))
            assert r.returncode == 0, r.stderr
        r = cls.px.store("put-cert", "h2", crt, key)
        assert r.returncode == 0, r.stderr
        cls.px.wait_applied(int(r.stdout.strip()))
        log = cls.px.log()
        cls.tls = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)\n", log).group(1))
        cls.h1only = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls, http/1\.1\)", log).group(1))
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", log).group(1))
        cls.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log).group(1))
        cls.ctx = ssl.create_default_context(cafile=cls.certs.ca_file)
        cls.ctx.set_alpn_protocols(["h2", "http/1.1"])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def curl(self, *args, port=None, host="h2.test"):
        port = port or self.tls
        cmd = ["curl", "-s", "--cacert", self.certs.ca_file, "--resolve", "%s:%d:127.0.0.1" % (host, port)] + \
            list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE)

    def metrics(self):
        return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=DEADLINE).read().decode()

    def refused(self, kind):
        m = re.search(r'px_h2_refused_total\{kind="%s"\} (\d+)' % kind, self.metrics())
        return int(m.group(1)) if m else 0

    def assert_served(self):
        """A normal client on another connection is served."""
        c = H2Client(self.tls, self.ctx)
        try:
            st, _, body = c.response(c.request("/echo"))
            self.assertEqual(st, 200)
            self.assertEqual(json.loads(body)["id"], "h2-up")
        finally:
            c.close()

    # ---- negotiation ----

    def test_alpn_picks_h2_and_http1_stays(self):
        r = self.curl("-v", "--http2", "https://h2.test:%d/echo" % self.tls)
        self.assertIn("ALPN: server accepted h2", r.stderr)
        self.assertIn("< HTTP/2 200", r.stderr)
        body = json.loads(r.stdout)
        hdrs = {k.lower(): v for k, v in body["headers"]}
        self.assertEqual(hdrs["x-forwarded-proto"], "https")
        self.assertEqual(hdrs["host"], "h2.test:%d" % self.tls)  # :authority, as curl sent it
        self.assertEqual(body["version"], "HTTP/1.1")  # upstreams stay HTTP/1.1
        r = self.curl("-v", "--http1.1", "https://h2.test:%d/echo" % self.tls)
        self.assertIn("ALPN: server accepted http/1.1", r.stderr)
        self.assertIn("< HTTP/1.1 200", r.stderr)
        r = self.curl("-v", "--http2", "https://h2.test:%d/echo" % self.h1only, port=self.h1only)
        self.assertIn("ALPN: server accepted http/1.1", r.stderr)
        self.assertIn("< HTTP/1.1 200", r.stderr)

    def test_h2c_prior_knowledge_and_http1_on_the_same_listener(self):
        r = subprocess.run(["curl", "-si", "--http2-prior-knowledge", "-H", "Host: h2.test",
                            "http://127.0.0.1:%d/echo" % self.h2c], capture_output=True, text=True, timeout=DEADLINE)
        self.assertTrue(r.stdout.startswith("HTTP/2 200"), r.stdout[:200])
        r = subprocess.run(["curl", "-si", "-H", "Host: h2.test", "http://127.0.0.1:%d/echo" % self.h2c],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertTrue(r.stdout.startswith("HTTP/1.1 200"), r.stdout[:200])
        # A cleartext listener without h2c reads the preface as HTTP/1 and refuses it.
        s = socket.create_connection(("127.0.0.1", self.px.port), timeout=DEADLINE)
        s.sendall(PREFACE)
        self.assertIn(b" 400 ", s.recv(4096).split(b"\r\n")[0] + b" ")
        s.close()

    def test_nghttp_and_h2load(self):
        r = subprocess.run(["nghttp", "-nv", "http://127.0.0.1:%d/echo" % self.h2c, "-H", ":authority: h2.test"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertIn(":status: 200", r.stdout)
        self.assertIn("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):128", r.stdout)
        r = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10", "https://h2.test:%d/echo" % self.tls,
                            "--connect-to=127.0.0.1:%d" % self.tls], capture_output=True, text=True, timeout=120)
        self.assertIn("400 succeeded, 0 failed", r.stdout, r.stdout[-800:])

    # ---- what works on HTTP/1 works here ----

    def test_filters_phases_and_version(self):
        c = H2Client(self.tls, self.ctx)
        st, hdrs, body = c.response(c.request("/echo"))
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["x-http-version"], "2")
        self.assertEqual(hdrs["x-resp"], "set")
        sent = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(sent["x-from-filter"], "yes")
        self.assertTrue(re.fullmatch(r"[0-9a-f]{32}", sent["x-request-id"]))
        st, hdrs, _ = c.response(c.request("/x", host="redir.test"))
        self.assertEqual(st, 301)
        self.assertEqual(hdrs["location"], "https://elsewhere.test/")
        st, _, body = c.response(c.request("/x", host="nowhere.test"))
        self.assertEqual(st, 404)
        c.close()
        r = subprocess.run(["curl", "-s", "--http1.1", "-H", "Host: deny.test", "-D-", "-o/dev/null",
                            "http://127.0.0.1:%d/echo" % self.px.port], capture_output=True, text=True)
        self.assertIn("x-http-version: 1.1", r.stdout.lower())

    def test_the_response_phase_answers_instead_on_its_stream(self):
        c = H2Client(self.tls, self.ctx)
        try:
            ids = [c.request("/status?code=500", host="errpage.test"), c.request("/echo", host="errpage.test"),
                   c.request("/", host="errdead.test")]
            got = [c.response(i) for i in ids]
            self.assertEqual((got[0][0], got[0][1]["x-page"], got[0][2]), (503, "500", b"<h1>sorry</h1>"))
            self.assertEqual(got[0][1]["content-type"], "text/html")
            self.assertEqual(got[1][0], 200)  # the stream beside it is the upstream's
            self.assertEqual((got[2][0], got[2][1]["x-page"]), (503, "502"))
            # The built-in error_pages filter, as the client's Accept prefers.
            st, hdrs, body = c.response(c.request("/", host="pages.test", headers=[("accept", "application/json")]))
            self.assertEqual((st, hdrs["content-type"]), (502, "application/json; charset=utf-8"))
            self.assertEqual(json.loads(body)["error"], "Bad Gateway")
        finally:
            c.close()

    def test_access_lists_and_basic_auth(self):
        import base64
        c = H2Client(self.tls, self.ctx)
        st, hdrs, _ = c.response(c.request("/echo", host="nobody.test"))
        self.assertEqual(st, 403)
        st, hdrs, _ = c.response(c.request("/echo", host="staff.test"))
        self.assertEqual(st, 401)
        self.assertIn('realm="Staff Only"', hdrs["www-authenticate"])
        good = "Basic " + base64.b64encode(b"alice:wonderland").decode()
        bad = "Basic " + base64.b64encode(b"alice:nope").decode()
        st, _, _ = c.response(c.request("/echo", host="staff.test", headers=[("authorization", bad)]))
        self.assertEqual(st, 401)
        st, _, body = c.response(c.request("/echo", host="staff.test", headers=[("authorization", good)]))
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["id"], "h2-up")
        c.close()

    def test_expect_100_continue_and_force_tls(self):
        r = Raw(self.tls, self.ctx)
        # The body waits for the 100 that pxd sends once routing and the limits passed.
        r.send(r.request(1, "/upload", method="POST", extra=[("expect", "100-continue"), ("content-length", "5")],
                         end_stream=False))
        f = r.until(lambda f: f[0] == HEADERS and f[2] == 1, "the interim answer")
        self.assertEqual(r.fields[1][":status"], "100")
        r.send(frame(DATA, END_STREAM, 1, b"hello"))
        f = r.until(lambda f: f[0] == HEADERS and f[2] == 1, "the final answer")
        self.assertEqual(r.fields[1][":status"], "200")
        # Too large for the route: 413 at once, no 100 (the body is never sent).
        r.send(r.request(3, "/upload", host="deny.test", method="POST",
                         extra=[("expect", "100-continue"), ("content-length", "5000")], end_stream=False))
        f = r.until(lambda f: f[0] == HEADERS and f[2] == 3, "the answer")
        self.assertEqual(r.fields[3][":status"], "413")
        r.close()
        # force_tls on cleartext HTTP/2: a redirect to https; over TLS: served, with HSTS.
        out = subprocess.run(["curl", "-si", "--http2-prior-knowledge", "-H", "Host: secure.test",
                              "http://127.0.0.1:%d/x?y=1" % self.h2c], capture_output=True, text=True).stdout
        self.assertRegex(out.split("\r\n")[0], r"^HTTP/2 30[18]")
        self.assertIn("location: https://secure.test/x?y=1", out.lower())
        c = H2Client(self.tls, self.ctx)
        st, hdrs, _ = c.response(c.request("/echo", host="secure.test"))
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["strict-transport-security"], "max-age=600")
        c.close()

    def test_head_204_304_and_statuses(self):
        c = H2Client(self.tls, self.ctx)
        st, hdrs, body = c.response(c.request("/download?bytes=5000", host="big.test", method="HEAD"))
        self.assertEqual((st, hdrs.get("content-length"), body), (200, "5000", b""))
        for code in (204, 304):
            st, hdrs, body = c.response(c.request("/status?code=%d" % code))
            self.assertEqual((st, body), (code, b""))
            self.assertNotIn("content-length", hdrs)
        for code in (404, 503):
            st, _, body = c.response(c.request("/status?code=%d" % code))
            self.assertEqual((st, json.loads(body)["id"]), (code, "h2-up"))
        c.close()

    def test_a_connection_that_sends_no_request_is_closed(self):
        # client_header_timeout (2 s here), as on HTTP/1; not keepalive_timeout (75 s).
        r = Raw(self.tls, self.ctx)
        g = r.goaway()
        self.assertEqual(g, (0, "NO_ERROR"))
        self.assertTrue(r.closed())
        r.close()

    def test_retries_on_another_peer(self):
        c = H2Client(self.tls, self.ctx)
        # One peer refuses connections: each request is retried on the other, whichever the balancer picks first.
        for _ in range(4):
            st, _, body = c.response(c.request("/echo", host="retry.test"))
            self.assertEqual((st, json.loads(body)["id"]), (200, "h2-up"))
        c.close()

    def test_cookies_joined_and_bodies_both_ways(self):
        c = H2Client(self.tls, self.ctx)
        sid = c.request("/echo", headers=[("cookie", "a=1"), ("cookie", "b=2")], method="POST", body=b"z" * 200000)
        st, _, body = c.response(sid)
        self.assertEqual(st, 200)
        j = json.loads(body)
        sent = {k.lower(): v for k, v in j["headers"]}
        self.assertEqual(sent["cookie"], "a=1; b=2")
        self.assertEqual(j["body_len"], 200000)
        self.assertEqual(sent["transfer-encoding"], "chunked")  # no content-length: px frames it
        # A large response through the client's flow-control window (64 KiB, acknowledged as read).
        st, hdrs, body = c.response(c.request("/download?bytes=3000000", host="big.test"))
        self.assertEqual((st, len(body)), (200, 3000000))
        st, _, body = c.response(c.request("/download?bytes=500000&chunked=1", host="big.test"))
        self.assertEqual((st, len(body)), (200, 500000))
        c.close()

    def test_body_limit_and_bad_requests(self):
        c = H2Client(self.tls, self.ctx, validate=False)
        st, _, _ = c.response(c.request("/upload", host="deny.test", method="POST", body=b"x" * 5000,
                                        headers=[("content-length", "5000")]))
        self.assertEqual(st, 413)
        sid = c.request("/upload", host="deny.test", method="POST", body=b"x" * 5000)  # no length: cut while read
        res = c.response(sid)
        self.assertTrue(res is None or res[0] == 413, res)
        st, _, _ = c.response(c.request("/echo", headers=[("host", "other.test")]))
        self.assertEqual(st, 400)  # Host names another entity than :authority
        res = c.response(c.request("/echo", method="CONNECT"))  # with :path and :scheme: malformed (8.5)
        self.assertTrue(res is None or res[0] == 405, res)
        st, _, _ = c.response(c.request("/echo", method="BREW"))
        self.assertEqual(st, 501)
        # A connection-specific field is malformed: the stream is reset (PROTOCOL_ERROR), the connection lives.
        sid = c.request("/echo", headers=[("connection", "keep-alive")])
        c.pump(lambda: sid in c.resets, "a reset")
        self.assertEqual(c.resets[sid], 1)
        st, _, _ = c.response(c.request("/echo"))
        self.assertEqual(st, 200)
        c.close()

    def test_content_length_disagreeing_with_data_is_refused(self):
        r = Raw(self.tls, self.ctx)
        r.send(r.request(1, "/upload", method="POST", extra=[("content-length", "10")], end_stream=False))
        r.send(frame(DATA, END_STREAM, 1, b"x" * 4))
        f = r.until(lambda f: f[2] == 1 and f[0] in (RST, HEADERS), "an answer on stream 1")
        self.assertEqual(f[0], RST)
        self.assertEqual(ERRORS[struct.unpack(">I", f[3])[0]], "PROTOCOL_ERROR")
        r.close()

    def test_access_log_and_metrics_by_protocol(self):
        c = H2Client(self.tls, self.ctx)
        c.response(c.request("/echo?logged=h2"))
        c.close()
        line = wait_for(lambda: [l for l in open(self.log).read().splitlines() if "logged=h2" in l],
                        what="the access log line")[0]
        j = json.loads(line)
        self.assertEqual(j["protocol"], "HTTP/2.0")
        self.assertEqual(j["client"], "127.0.0.1")
        self.assertGreaterEqual(int(re.search(r'px_requests_by_protocol_total\{protocol="HTTP/2"\} (\d+)',
                                              self.metrics()).group(1)), 1)

    # ---- attacks ----

    def test_rapid_reset_ends_the_connection(self):
        before = self.refused("glitches")
        r = Raw(self.tls, self.ctx)
        batch = b""
        sid = 1
        sent = 0
        try:
            for _ in range(30):
                for _ in range(100):
                    batch += r.request(sid, "/stall?ms=200") + frame(RST, 0, sid, struct.pack(">I", 8))
                    sid += 2
                r.send(batch)
                sent += 100
                batch = b""
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        g = r.goaway()
        self.assertIsNotNone(g, "the connection closed without GOAWAY")
        self.assertEqual(g[1], "ENHANCE_YOUR_CALM")
        self.assertTrue(r.closed())
        self.assertLess(g[0], 2 * 1100 + 1)  # at most the budget's worth of streams was taken
        self.assertGreater(self.refused("glitches") + self.refused("reset"), before)
        self.assert_served()

    def test_continuation_flood_ends_the_connection(self):
        r = Raw(self.tls, self.ctx)
        r.send(r.headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "h2.test"),
                             (":path", "/echo")], end_headers=False))
        try:
            for i in range(2000):
                r.send(frame(CONT, 0, 1, r.enc.encode([("x-flood-%d" % i, "v" * 10)])))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        g = r.goaway()
        if g is not None:
            self.assertIn(g[1], ("ENHANCE_YOUR_CALM", "PROTOCOL_ERROR"))
        self.assertTrue(r.closed())
        self.assertGreaterEqual(self.refused("continuation") + self.refused("protocol"), 1)
        self.assert_served()

    def test_hpack_bomb_gets_431(self):
        r = Raw(self.tls, self.ctx)
        big = ("x-big", "b" * 4000)
        # The field goes into the dynamic table once, then each reference is one byte.
        r.send(r.request(1, extra=[big]))
        f = r.until(lambda f: f[0] == HEADERS and f[2] == 1, "the first response")
        r.send(r.request(3, extra=[big] * 2000))
        f = r.until(lambda f: f[2] == 3 and f[0] in (HEADERS, RST, GOAWAY), "an answer on stream 3")
        self.assertEqual(f[0], HEADERS)
        self.assertEqual(r.fields[3][":status"], "431")
        self.assertEqual(r.fields[1][":status"], "200")
        r.close()
        self.assert_served()

    def test_ping_and_settings_floods_from_a_client_that_never_reads(self):
        for kind in (PING, SETTINGS):
            before = self.refused("flood")
            r = Raw(self.tls, self.ctx)
            flood = (frame(PING, 0, 0, b"12345678") if kind == PING else frame(SETTINGS, 0, 0, b"")) * 4000
            sent = 0
            try:
                for _ in range(1000):  # 4M frames (68 MB): the socket buffers fill long before
                    r.send(flood)
                    sent += 4000
            except (BrokenPipeError, ConnectionResetError, socket.timeout, ssl.SSLError, OSError):
                pass
            self.assertLess(sent, 4000000, "the server kept taking a flood it did not answer")
            wait_for(lambda: self.refused("flood") > before, what="the flood counted")
            self.assert_served()
            r.close()

    def test_zero_window_held_open(self):
        before = self.refused("timeout")
        # INITIAL_WINDOW_SIZE 0: no response byte may be sent; the streams wait, then time out.
        r = Raw(self.tls, self.ctx, settings=struct.pack(">HI", 4, 0))
        for sid in (1, 3, 5):
            r.send(r.request(sid, "/download?bytes=200000", host="big.test"))
        resets = set()
        r.until(lambda f: f[0] == RST and resets.add(f[2]) is None and len(resets) == 3, "three streams reset")
        self.assertGreater(self.refused("timeout"), before)
        self.assert_served()
        r.close()

    def test_more_streams_than_advertised(self):
        r = Raw(self.tls, self.ctx)
        # The server's SETTINGS say 128: open 140 streams that wait at the upstream.
        r.send(b"".join(r.request(1 + 2 * i, "/stall?ms=1500") for i in range(140)))
        refused = set()
        r.until(lambda f: f[0] == RST and struct.unpack(">I", f[3])[0] in (1, 7) and refused.add(f[2]) is None
                and len(refused) >= 12, "refused streams")
        self.assertTrue(all(s > 2 * 127 for s in refused), sorted(refused))
        r.close()
        self.assert_served()

    def test_stream_misuse_gets_connection_errors(self):
        cases = [
            ("ids backwards", lambda r: r.request(5) + r.request(3), "PROTOCOL_ERROR"),
            ("DATA on an idle stream", lambda r: frame(DATA, END_STREAM, 7, b"x"), "PROTOCOL_ERROR"),
            ("oversized frame", lambda r: r.request(1, end_stream=False) + frame(DATA, 0, 1, b"x" * 17000),
             "FRAME_SIZE_ERROR"),
            ("even stream id", lambda r: r.request(2), "PROTOCOL_ERROR"),
            ("window overflow", lambda r: frame(WINDOW, 0, 0, struct.pack(">I", 0x7FFFFFFF)) * 2,
             "FLOW_CONTROL_ERROR"),
        ]
        for name, make, code in cases:
            with self.subTest(name):
                r = Raw(self.tls, self.ctx)
                r.send(make(r))
                g = r.goaway()
                self.assertIsNotNone(g, name)
                self.assertEqual(g[1], code, name)
                self.assertTrue(r.closed(), name)
                r.close()
        # DATA on a closed stream: a stream error (STREAM_CLOSED), the connection lives.
        r = Raw(self.tls, self.ctx)
        r.send(r.request(1))
        r.until(lambda f: f[2] == 1 and f[1] & END_STREAM, "stream 1's end")
        r.send(frame(DATA, END_STREAM, 1, b"late"))
        f = r.until(lambda f: f[0] in (RST, GOAWAY), "the refusal")
        self.assertEqual(ERRORS[struct.unpack(">I", f[3][-4:] if f[0] == RST else f[3][4:8])[0]], "STREAM_CLOSED")
        r.close()
        self.assert_served()


class H2RestTest(unittest.TestCase):
    def test_a_connection_idle_for_a_second_gives_back_its_frame_buffer_and_still_serves(self):
        """After a second without a stream, pxd returns the pages of nghttp2's frame buffer to the kernel
        (they read as zeros afterwards): the frames that follow on that connection must be whole."""
        certs = Certs()
        up = Upstream("h2-rest")
        self.addCleanup(up.stop)
        crt, key, _ = certs.leaf("rest", ["rest.test"])
        px = Pxd(extra="listen 127.0.0.1:0 tls\nlog_level debug\n", routes=[route("rest", ["rest.test"], [up])])
        self.addCleanup(px.stop)
        r = px.store("put-cert", "rest", crt, key)
        self.assertEqual(r.returncode, 0, r.stderr)
        px.wait_applied(int(r.stdout.strip()))
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)\n", px.log()).group(1))
        ctx = ssl.create_default_context(cafile=certs.ca_file)
        ctx.set_alpn_protocols(["h2"])
        c = H2Client(port, ctx, sni="rest.test")
        self.addCleanup(c.close)
        st, _, body = c.response(c.request("/download?bytes=100000", host="rest.test"))
        self.assertEqual((st, body), (200, b"x" * 100000))
        wait_for(lambda: "frame buffer released" in px.log(), what="the idle connection's frame buffer released")
        # Full 16 KiB DATA frames through the released pages, then a head and a small body.
        st, _, body = c.response(c.request("/download?bytes=300000", host="rest.test"))
        self.assertEqual((st, len(body), body.count(b"x")), (200, 300000, 300000))
        st, hdrs, body = c.response(c.request("/echo", host="rest.test"))
        self.assertEqual((st, json.loads(body)["id"]), (200, "h2-rest"))
        # Idle again: released again, and served again.
        wait_for(lambda: px.log().count("frame buffer released") >= 2, what="a second release")
        st, _, body = c.response(c.request("/download?bytes=50000", host="rest.test"))
        self.assertEqual((st, body), (200, b"x" * 50000))


class H2DrainTest(unittest.TestCase):
    def test_sigterm_sends_goaway_and_finishes_streams(self):
        up = Upstream("h2-drain")
        self.addCleanup(up.stop)
        px = Pxd(extra="listen 127.0.0.1:0 h2c\n", routes=[route("h2", ["h2.test"], [up])])
        self.addCleanup(px.stop)
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", px.log()).group(1))
        r = Raw(port)
        r.send(r.request(1, "/stall?ms=1500"))
        up.wait_inflight(1)
        px.signal(signal.SIGTERM)
        goaways = []
        end = r.until(lambda f: (f[0] == GOAWAY and goaways.append(struct.unpack(">II", f[3][:8])) and False)
                      or (f[2] == 1 and f[1] & END_STREAM), "stream 1's end")
        self.assertIsNotNone(end)
        self.assertEqual(r.fields[1][":status"], "200")
        # RFC 9113 6.8: a first GOAWAY that refuses nothing, then the last stream; both NO_ERROR.
        while len(goaways) < 2:
            g = r.goaway()
            self.assertIsNotNone(g, "closed before the final GOAWAY")
            goaways.append((g[0], 0 if g[1] == "NO_ERROR" else 1))
        self.assertEqual([c for _, c in goaways], [0, 0])
        self.assertEqual(goaways[0][0] & 0x7FFFFFFF, 0x7FFFFFFF)
        self.assertEqual(goaways[-1][0] & 0x7FFFFFFF, 1)
        self.assertTrue(r.closed())
        px.wait_exit()

    def test_upgrade_under_h2load_loses_nothing(self):
        from test_upgrade import alive, successor_pid
        up = Upstream("h2-upgrade")
        self.addCleanup(up.stop)
        log = os.path.join(tempfile.mkdtemp(prefix="pxh2up-"), "access.log")
        px = Pxd(workers=2, extra="listen 127.0.0.1:0 h2c\naccess_log %s\n" % log,
                 routes=[route("h2", ["h2.test"], [up])])
        self.addCleanup(px.stop)
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", px.log()).group(1))
        out = {}

        def load():
            out["h2load"] = subprocess.run(["h2load", "-c8", "-m4", "-n3000", "-H", ":authority: h2.test",
                                            "http://127.0.0.1:%d/echo" % port], capture_output=True, text=True,
                                           timeout=120).stdout
        t = threading.Thread(target=load)
        t.start()
        wait_for(lambda: json.load(urllib.request.urlopen(up.url + "/_open", timeout=DEADLINE))["open"] >= 1,
                 what="the load to reach the upstream")
        px.signal(signal.SIGUSR2)
        new = wait_for(lambda: successor_pid(px.log()), what="the new pxd to start")
        self.addCleanup(lambda: alive(new) and os.kill(new, signal.SIGINT))
        self.assertEqual(px.wait_exit(timeout=DEADLINE), 0)
        t.join()
        # h2load opens no new connection after a GOAWAY: the requests it had not sent yet (nghttp2 refuses to
        # start a stream once a GOAWAY came) are counted as failed without ever reaching pxd. Every request that
        # reached pxd must have been answered: pxd's access log (both processes) has as many 200s as h2load
        # counts successes, and nothing else.
        m = re.search(r"requests: \d+ total, (\d+) started, (\d+) done, (\d+) succeeded", out["h2load"])
        self.assertIsNotNone(m, out["h2load"][-500:])
        started, done, ok = (int(x) for x in m.groups())
        self.assertGreater(ok, 0)
        lines = wait_for(lambda: [json.loads(x) for x in open(log).read().splitlines()] if os.path.exists(log) else [],
                         what="the access log")
        self.assertEqual(sorted(set(x["status"] for x in lines)), [200])
        self.assertEqual(len(lines), ok, out["h2load"][-800:])
        self.assertLessEqual(started - ok, 8 * 4, "more failed than h2load had queued")
        # The new pxd serves HTTP/2 on the same port.
        r = subprocess.run(["h2load", "-c2", "-m4", "-n200", "-H", ":authority: h2.test",
                            "http://127.0.0.1:%d/echo" % port],
                           capture_output=True, text=True, timeout=120).stdout
        self.assertIn("200 succeeded, 0 failed", r, r[-500:])


if __name__ == "__main__":
    unittest.main()
