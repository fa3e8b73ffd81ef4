#!/usr/bin/env python3
"""px test auth service: behaves like Authelia's /api/verify for forward_auth's tests (and bench/auth.py).

  /api/verify    Cookie session=good (or Authorization: Basic of alice:secret): 200 with Remote-User: alice,
                 Remote-Groups: admins; session=forbidden: 403; no session from a script
                 (X-Requested-With: XMLHttpRequest): 401 with WWW-Authenticate; otherwise 302 to the login page
                 with rd= the original URL (X-Original-URL) and a Set-Cookie (two, to see both come back).
                 ?slow=S waits S seconds first.
  /_count        how many /api/verify calls came
  /_last         the last /api/verify call's headers, as JSON
It answers with keep-alive (HTTP/1.1) and prints "listening on 127.0.0.1:PORT" once ready.
"""
import argparse
import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

COUNT = [0]
LAST = [{}]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, headers=(), body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path == "/_count":
            return self.send(200, [("Content-Type", "application/json")], json.dumps({"count": COUNT[0]}).encode())
        if u.path == "/_last":
            return self.send(200, [("Content-Type", "application/json")], json.dumps(LAST[0]).encode())
        if u.path != "/api/verify":
            return self.send(404)
        with LOCK:
            COUNT[0] += 1
            LAST[0] = {k.lower(): v for k, v in self.headers.items()}
        q = parse_qs(u.query)
        if "slow" in q:
            time.sleep(float(q["slow"][0]))
        cookie = self.headers.get("Cookie", "")
        auth = self.headers.get("Authorization", "")
        good = base64.b64encode(b"alice:secret").decode()
        if "session=good" in cookie or auth == "Basic " + good:
            return self.send(200, [("Remote-User", "alice"), ("Remote-Groups", "admins")])
        if "session=forbidden" in cookie:
            return self.send(403, [("Content-Type", "text/plain")], b"forbidden by policy\n")
        if self.headers.get("X-Requested-With") == "XMLHttpRequest":
            return self.send(401, [("WWW-Authenticate", 'Basic realm="auth"'), ("Content-Type", "text/plain")],
                             b"log in first\n")
        rd = self.headers.get("X-Original-URL", "")
        return self.send(302, [("Location", "http://auth.test/login?rd=" + quote(rd, safe="")),
                               ("Set-Cookie", "flow=1; Path=/"), ("Set-Cookie", "csrf=2; Path=/"),
                               ("Content-Type", "text/html")], b"<a href=\"/login\">log in</a>\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    print("listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
