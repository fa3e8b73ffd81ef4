"""Upstream peers for L4 streams, run in the test's own process (threads, real loopback sockets).

TcpPeer speaks a one-line command first ("ECHO\\n", "SEND <n>\\n", "RECV\\n", "PUSH <n>\\n"); with
proxy=True it first reads a PROXY protocol header (v1 or v2) and records the client address it names.
UdpPeer answers each datagram with "<id>|<the sender's port>|<the datagram>"; DnsPeer answers A queries."""
import socket
import ssl
import struct
import threading

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def hold_port():
    """A TCP port on 127.0.0.1 another process holds (a listening socket of this one): (socket, port)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def recv_all(s, limit=1 << 20):
    """Everything the peer sends until it closes its side."""
    out = b""
    while True:
        d = s.recv(limit)
        if not d:
            return out
        out += d


def read_proxy_header(conn, buf):
    """Reads a PROXY v1 or v2 header from conn (buf: bytes already read). Returns (info, rest)."""
    while len(buf) < 16:
        d = conn.recv(4096)
        if not d:
            raise ValueError("closed before a PROXY header")
        buf += d
    if buf.startswith(V2_SIG):
        length = struct.unpack("!H", buf[14:16])[0]
        while len(buf) < 16 + length:
            buf += conn.recv(4096)
        fam = buf[13]
        body = buf[16:16 + length]
        if fam in (0x11, 0x12):
            src, dst = socket.inet_ntop(socket.AF_INET, body[0:4]), socket.inet_ntop(socket.AF_INET, body[4:8])
            sport, dport = struct.unpack("!HH", body[8:12])
        else:
            src, dst = socket.inet_ntop(socket.AF_INET6, body[0:16]), socket.inet_ntop(socket.AF_INET6, body[16:32])
            sport, dport = struct.unpack("!HH", body[32:36])
        return {"version": 2, "cmd": buf[12], "family": fam, "src": src, "sport": sport, "dst": dst,
                "dport": dport}, buf[16 + length:]
    while b"\r\n" not in buf:
        d = conn.recv(4096)
        if not d:
            raise ValueError("closed inside a PROXY v1 header")
        buf += d
    line, rest = buf.split(b"\r\n", 1)
    parts = line.decode().split(" ")
    assert parts[0] == "PROXY", line
    return {"version": 1, "proto": parts[1], "src": parts[2], "dst": parts[3], "sport": int(parts[4]),
            "dport": int(parts[5])}, rest


class TcpPeer:
    def __init__(self, proxy=False):
        self.proxy = proxy
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "tcp://127.0.0.1:%d" % self.port
        self.headers = []  # PROXY headers seen
        self.accepted = 0
        self.after_fin = []  # PUSH: what the client sent after this peer's FIN
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            buf = b""
            if self.proxy:
                info, buf = read_proxy_header(c, buf)
                with self.lock:
                    self.headers.append(info)
            while b"\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            cmd, buf = buf.split(b"\n", 1)
            words = cmd.decode().split()
            if words[0] == "ECHO":
                n = len(buf)
                if buf:
                    c.sendall(buf)
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    n += len(d)
                    c.sendall(d)
                c.sendall(b"bye:%d" % n)  # after the client's FIN: the other direction still works
            elif words[0] == "SEND":
                left = int(words[1])
                block = memoryview(b"x" * (1 << 20))
                while left:
                    k = min(left, len(block))
                    c.sendall(block[:k])
                    left -= k
            elif words[0] == "RECV":
                n = len(buf)
                while True:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    n += len(d)
                c.sendall(b"%d" % n)
            elif words[0] == "PUSH":
                c.sendall(b"p" * int(words[1]))
                c.shutdown(socket.SHUT_WR)
                got = buf
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    got += d
                with self.lock:
                    self.after_fin.append(got)
            elif words[0] == "WAIT":
                c.recv(1)  # until the client or px closes
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


class TlsEchoPeer(TcpPeer):
    """An upstream that does its own TLS (its own certificate, from crt and key files), then echoes."""

    def __init__(self, crt, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        super().__init__()

    def _serve(self, c):
        try:
            c.settimeout(30)
            t = self.ctx.wrap_socket(c, server_side=True)
            while True:
                d = t.recv(65536)
                if not d:
                    break
                t.sendall(d)
        except (OSError, ssl.SSLError):
            pass
        finally:
            c.close()


class UdpPeer:
    def __init__(self, id="u1", proxy=False):
        self.id = id
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = "udp://127.0.0.1:%d" % self.port
        self.headers = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                d, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            if self.proxy and d.startswith(V2_SIG):
                length = struct.unpack("!H", d[14:16])[0]
                body = d[16:16 + length]
                self.headers.append((socket.inet_ntop(socket.AF_INET, body[0:4]), struct.unpack("!H", body[8:10])[0]))
                d = d[16 + length:]
            try:
                self.sock.sendto(b"%s|%d|%s" % (self.id.encode(), addr[1], d), addr)
            except OSError:
                return

    def close(self):
        self.sock.close()


class DnsPeer:
    """A tiny authoritative server: every A question gets 192.0.2.<n> (n counts the queries)."""

    def __init__(self, answer="192.0.2.7"):
        self.answer = socket.inet_aton(answer)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = "udp://127.0.0.1:%d" % self.port
        self.queries = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                q, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            if len(q) < 12:
                continue
            self.queries += 1
            # The question: labels up to the zero byte, then QTYPE and QCLASS.
            i = 12
            while i < len(q) and q[i]:
                i += 1 + q[i]
            question = q[12:i + 5]
            flags = 0x8400 | (struct.unpack("!H", q[2:4])[0] & 0x0100)  # response, authoritative, RD copied
            head = q[0:2] + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + self.answer
            self.sock.sendto(head + question + answer, addr)

    def close(self):
        self.sock.close()
