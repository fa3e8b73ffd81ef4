"""An origin for the cache tests: a real HTTP/1.1 server on loopback that counts the requests it gets per target and
answers as the query string says, so that each test states its response in its URL:

  /any/path?h=Name:Value&h=...   response fields (URL-encoded)
           &status=N              status (200)
           &body=TEXT | size=N    body (a default text naming the path and the request's count)
           &delay=S               wait S seconds before answering
           &etag="x"              an ETag; with If-None-Match matching it the answer is 304
           &lm=HTTP-DATE          a Last-Modified; with If-Modified-Since at or after it the answer is 304
           &cut=N                 announce the whole body but send only N bytes, then close

GET /_count?t=TARGET answers {"n": full answers, "c": 304 answers, "last": the last request's fields}.
"""
import hashlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _answer(self, head_only=False):
        srv = self.server
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/_count":
            t = urllib.parse.parse_qs(u.query)["t"][0]
            with srv.lock:
                doc = {"n": srv.full.get(t, 0), "c": srv.cond.get(t, 0), "last": srv.last.get(t, [])}
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if srv.fail:  # every answer is this status, for now (set_fail)
            with srv.lock:
                srv.failed += 1
            self.send_response(srv.fail)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"down")
            return
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        one = lambda k, d=None: q.get(k, [d])[0]
        if one("delay"):
            time.sleep(float(one("delay")))
        etag, lm = one("etag"), one("lm")
        inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        not_modified = (etag and inm and etag in [t.strip() for t in inm.split(",")]) or \
            (lm and ims and not inm and ims == lm)
        with srv.lock:
            srv.last[self.path] = list(self.headers.items())
            if not_modified:
                srv.cond[self.path] = srv.cond.get(self.path, 0) + 1
            else:
                srv.full[self.path] = srv.full.get(self.path, 0) + 1
            n = srv.full.get(self.path, 0)
        if inm or ims:  # a revalidation: held while the gate is closed (hold_revalidations)
            srv.gate.wait()
        fields = [h.split(":", 1) for h in q.get("h", [])]
        if etag:
            fields.append(("ETag", etag))
        if lm:
            fields.append(("Last-Modified", lm))
        if not_modified:
            self.send_response(304)
            for k, v in fields:
                self.send_header(k, v.strip())
            self.end_headers()
            return
        if one("size"):
            size = int(one("size"))
            block = hashlib.sha256(u.path.encode()).hexdigest().encode() * 64
            body = (block * (size // len(block) + 1))[:size]
        else:
            body = (one("body") or "%s #%d" % (u.path, n)).encode()
        self.send_response(int(one("status", "200")))
        for k, v in fields:
            self.send_header(k, v.strip())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head_only:
            return
        if one("cut"):
            self.wfile.write(body[:int(one("cut"))])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer(head_only=True)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self._answer()

    do_PUT = do_DELETE = do_POST


class CachePeer:
    def __init__(self):
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.srv.daemon_threads = True
        self.srv.request_queue_size = 512
        self.srv.lock = threading.Lock()
        self.srv.full, self.srv.cond, self.srv.last = {}, {}, {}
        self.srv.fail, self.srv.failed = 0, 0
        self.srv.gate = threading.Event()
        self.srv.gate.set()
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def count(self, target):
        with self.srv.lock:
            return self.srv.full.get(target, 0)

    def conditional(self, target):
        with self.srv.lock:
            return self.srv.cond.get(target, 0)

    def last(self, target):
        with self.srv.lock:
            return {k.lower(): v for k, v in self.srv.last.get(target, [])}

    def hold_revalidations(self, hold=True):
        """Conditional requests are counted as they come, then held until hold_revalidations(False)."""
        if hold:
            self.srv.gate.clear()
        else:
            self.srv.gate.set()

    def set_fail(self, status):
        """From now on every answer is `status` (0: back to normal)."""
        self.srv.fail = status

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
