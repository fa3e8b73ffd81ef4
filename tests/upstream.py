#!/usr/bin/env python3
"""px test upstream: a small HTTP/1.1 server whose behaviour the request path picks.

It exists so that px's integration tests (and the demo) can meet every kind of
upstream a proxy meets in production, on a loopback port chosen at run time:

  /echo (and any other path)  JSON: id, method, path, headers, body length, connection number
  /upload                     reads the body as it streams, answers its length
  /download?bytes=N[&chunked=1]   N bytes of body, Content-Length or chunked
  /stall?ms=N                 waits, then echoes
  /close                      promises 1000 bytes, sends 10, closes (mid-response death)
  /closehead                  closes without answering
  /bad?kind=...               broken framing: cl_te, dup_cl, te_gzip, bad_chunk, space_colon, fold, nul, version
  /status?code=N              answers that status (204, 304, ... have no body)
  /hop                        a 200 with hop-by-hop headers (Connection-listed, Keep-Alive, Proxy-*, ...)
  /nolength                   a body delimited by closing the connection
  /interim                    103 Early Hints, then 200
  /ws                         101 Switching Protocols, then echoes raw bytes
  /health                     200, or what /_health?status=N set
  /_inflight                  how many /stall requests are being answered now
  /_open                      how many connections are open now, besides the one asking
  /_tls                       with --tls CERT KEY: each TLS connection (number, resumed?, version), SNIs seen
It prints "listening on 127.0.0.1:PORT" once ready.
"""
import argparse
import json
import socket
import sys
import ssl
import threading
import time
from urllib.parse import urlsplit, parse_qs

ARGS = None
HEALTH = [200]
INFLIGHT = [0]
OPEN = [0]  # connections open now
CONN_COUNTER = [0]
LOCK = threading.Lock()
TLS_CTX = [None]  # --tls: the server context
TLS_INFO = []     # per TLS connection: its number, whether it resumed a session, the version
SNIS = []         # the server names TLS clients asked for
REASONS = {100: "Continue", 101: "Switching Protocols", 103: "Early Hints", 200: "OK", 204: "No Content",
           304: "Not Modified", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
           503: "Service Unavailable"}


class Closed(Exception):
    pass


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed()
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise Closed()
            self.fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def read_exact(self, n, sink=None):
        """Reads n bytes; with a sink, streams them there instead of keeping them."""
        kept = []
        while n > 0:
            if not self.buf:
                self.fill()
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            n -= len(take)
            if sink is not None:
                sink(take)
            else:
                kept.append(take)
        return b"".join(kept)

    def send(self, data):
        self.sock.sendall(data)


def read_body(c, headers, sink=None):
    te = headers.get("transfer-encoding", "")
    if "chunked" in te.lower():
        parts = []
        while True:
            line = c.read_until(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while c.read_until(b"\r\n") != b"":
                    pass
                break
            parts.append(c.read_exact(size, sink))
            c.read_until(b"\r\n")
        return b"".join(p for p in parts if p)
    n = int(headers.get("content-length", "0") or 0)
    return c.read_exact(n, sink)


def respond(c, status, body=b"", headers=(), head_only=False, ctype="application/json"):
    lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
    lines.append("Server: px-test-upstream")
    lines.append("Content-Type: " + ctype)
    if status not in (204, 304) and status >= 200:
        lines.append("Content-Length: %d" % len(body))
    lines.extend(headers)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if not head_only and status not in (204, 304):
        data += body
    c.send(data)


def handle(sock, conn_no):
    if TLS_CTX[0]:
        try:
            sock = TLS_CTX[0].wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            sock.close()
            return
        with LOCK:
            TLS_INFO.append({"conn": conn_no, "resumed": sock.session_reused, "version": sock.version()})
    c = Conn(sock)
    served = 0
    with LOCK:
        OPEN[0] += 1
    try:
        while True:
            head = c.read_until(b"\r\n\r\n").decode("latin-1")
            lines = head.split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            hdrs = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdrs.append([k, v.strip()])
            h = {k.lower(): v for k, v in hdrs}
            url = urlsplit(target)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = url.path
            served += 1
            head_only = method == "HEAD"
            if path == "/upload":
                count = [0]
                read_body(c, h, lambda b: count.__setitem__(0, count[0] + len(b)))
                respond(c, 200, json.dumps({"id": ARGS.id, "body_len": count[0]}).encode(), head_only=head_only)
                continue
            body = read_body(c, h)
            if path == "/download":
                n = int(q.get("bytes", "0"))
                chunk = b"x" * min(n, 1 << 20) if n else b""
                if q.get("chunked"):
                    c.send(b"HTTP/1.1 200 OK\r\nServer: px-test-upstream\r\nTransfer-Encoding: chunked\r\n\r\n")
                    left = n
                    while left > 0:
                        part = chunk[:left]
                        c.send(b"%x\r\n" % len(part) + part + b"\r\n")
                        left -= len(part)
                    c.send(b"0\r\n\r\n")
                else:
                    c.send(b"HTTP/1.1 200 OK\r\nServer: px-test-upstream\r\nContent-Length: %d\r\n\r\n" % n)
                    if not head_only:
                        left = n
                        while left > 0:
                            part = chunk[:left]
                            c.send(part)
                            left -= len(part)
                continue
            if path == "/_tls":
                with LOCK:
                    respond(c, 200, json.dumps({"connections": TLS_INFO, "sni": SNIS}).encode())
                continue
            if path == "/_open":
                respond(c, 200, json.dumps({"open": OPEN[0] - 1}).encode())
                continue
            if path == "/_inflight":
                respond(c, 200, json.dumps({"inflight": INFLIGHT[0]}).encode())
                continue
            if path == "/stall":
                with LOCK:
                    INFLIGHT[0] += 1
                try:
                    time.sleep(int(q.get("ms", "1000")) / 1000.0)
                finally:
                    with LOCK:
                        INFLIGHT[0] -= 1
            if path == "/close":
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                return
            if path == "/closehead":
                return
            if path == "/nolength":
                c.send(b"HTTP/1.1 200 OK\r\nServer: px-test-upstream\r\n\r\n" + b"y" * int(q.get("bytes", "5000")))
                return
            if path == "/interim":
                c.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            if path == "/bad":
                kind = q.get("kind", "")
                bad = {
                    "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "dup_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                    "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
                    "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                    "space_colon": b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\nContent-Length: 5\r\n\r\nhello",
                    "fold": b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 5\r\n\r\nhello",
                    "nul": b"HTTP/1.1 200 OK\r\nX-A: o\x00ne\r\nContent-Length: 5\r\n\r\nhello",
                    "version": b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                }[kind]
                c.send(bad)
                time.sleep(0.2)
                return
            if path == "/ws":
                if h.get("upgrade", "").lower() != "websocket":
                    respond(c, 400, b"not an upgrade")
                    continue
                c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                if c.buf:
                    c.send(c.buf)
                    c.buf = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return
                    sock.sendall(data)
            if path == "/_health":
                HEALTH[0] = int(q.get("status", "200"))
                respond(c, 200, b"{}")
                continue
            if path == "/health":
                respond(c, HEALTH[0], json.dumps({"id": ARGS.id}).encode(), head_only=head_only)
                continue
            if path == "/hop":
                # Connection-level headers a proxy must not pass on (RFC 9110 7.6.1), next to one it must.
                respond(c, 200, b"{}", ["Connection: keep-alive, X-Up-Secret", "X-Up-Secret: 1",
                                        "Keep-Alive: timeout=5", "Trailer: X-T", "Proxy-Connection: keep-alive",
                                        "Proxy-Authenticate: Basic", "Upgrade: h2c", "X-Up-Kept: yes"],
                        head_only=head_only)
                continue
            if path == "/status":
                code = int(q.get("code", "200"))
                respond(c, code, json.dumps({"id": ARGS.id}).encode(), head_only=head_only)
                continue
            doc = {"id": ARGS.id, "method": method, "path": target, "version": version, "headers": hdrs,
                   "body_len": len(body), "body": body[:256].decode("latin-1"), "conn": conn_no,
                   "req_in_conn": served}
            extra = []
            if "close" in h.get("connection", "").lower():
                extra.append("Connection: close")
            respond(c, 200, json.dumps(doc).encode(), extra, head_only=head_only)
            if extra:
                return
    except (Closed, ConnectionError, OSError, ValueError):
        pass
    finally:
        with LOCK:
            OPEN[0] -= 1
        try:
            sock.close()
        except OSError:
            pass


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--id", default="u1")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this certificate")
    ap.add_argument("--client-ca", help="with --tls: require a client certificate issued by this CA")
    ARGS = ap.parse_args()
    if ARGS.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls[0], ARGS.tls[1])
        ctx.sni_callback = lambda sslobj, name, c: SNIS.append(name)
        if ARGS.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(ARGS.client_ca)
        TLS_CTX[0] = ctx
    srv = socket.socket(socket.AF_INET6 if ":" in ARGS.host else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ARGS.host, ARGS.port))
    srv.listen(1024)
    print("listening on %s:%d" % (ARGS.host, srv.getsockname()[1]), flush=True)
    while True:
        s, _ = srv.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with LOCK:
            CONN_COUNTER[0] += 1
            n = CONN_COUNTER[0]
        threading.Thread(target=handle, args=(s, n), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
