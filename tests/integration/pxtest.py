"""Shared fixtures for px integration tests: the real pxd, the project's test
upstream, raw sockets on 127.0.0.1, ports chosen at run time. Every wait polls a
condition with a generous deadline; nothing asserts a duration."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PX_BUILD", os.path.join(ROOT, "build"))
PXD = os.path.join(BUILD, "src", "pxd")
PXSTORE = os.path.join(BUILD, "src", "px-store")
PXADMIND = os.path.join(BUILD, "src", "pxadmind")
PXCTL = os.path.join(BUILD, "src", "pxctl")
UPSTREAM = os.path.join(ROOT, "tests", "upstream.py")
DEADLINE = float(os.environ.get("PX_TEST_DEADLINE", "30"))


# Tests run side by side (tests/run_integration.py): each test class gets a block of ports of its own,
# below the kernel's ephemeral range (32768 and up on Linux), so a port one class picks is never the port
# another class, or a connection's source port, takes meanwhile.
_PORT_BLOCK = 500
_port_base = int(os.environ.get("PX_TEST_PORT_BASE", "10000")) + int(os.environ.get("PX_TEST_SLOT", "0")) * _PORT_BLOCK
_port_next = [0]


def free_port():
    """A loopback TCP port nothing listens on (just now): for a peer that refuses, or a fixed listen line.
    From this test class's own block (see above); UDP is free there too."""
    for _ in range(_PORT_BLOCK):
        port = _port_base + _port_next[0] % _PORT_BLOCK
        _port_next[0] += 1
        ok = True
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free port in %d..%d" % (_port_base, _port_base + _PORT_BLOCK - 1))


def listener_options(pid, port, level, option):
    """The socket option `option` of each listening TCP socket process `pid` holds on `port` (one per worker),
    read from a copy of the socket the kernel hands over (pidfd_getfd: the test started the process)."""
    import ctypes
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    values = []
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if not (target.startswith("socket:[") and target[8:-1] in inodes):
                continue
            mine = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
            if mine < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            s = socket.socket(fileno=mine)
            try:
                values.append(s.getsockopt(level, option))
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return values


def wait_for(cond, timeout=DEADLINE, interval=0.01, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class Upstream:
    def __init__(self, id="u1", host="127.0.0.1", port=0, tls=None, client_ca=None):
        """tls: (cert file, key file) to serve HTTPS; client_ca: require client certificates it issued."""
        self.id = id
        self.tls = tls
        extra = ["--tls", tls[0], tls[1]] if tls else []
        if client_ca:
            extra += ["--client-ca", client_ca]
        self.proc = subprocess.Popen([sys.executable, UPSTREAM, "--id", id, "--host", host, "--port", str(port)] + extra,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (.*):(\d+)", line)
        if not m:
            raise RuntimeError("test upstream did not start: %r" % line)
        self.port = int(m.group(2))
        self.host = host

    @staticmethod
    def try_start(id, port):
        """An upstream on a given port, or None while that port is still taken."""
        try:
            return Upstream(id, port=port)
        except RuntimeError:
            return None

    @property
    def url(self):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % ("https" if self.tls else "http", h, self.port)

    def inflight(self):
        return get(self.port, "/_inflight", host="direct").json()["inflight"]

    def wait_inflight(self, n=1):
        wait_for(lambda: self.inflight() >= n, what="%d stalled request(s) at %s" % (n, self.id))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    stop = kill


# The I/O engine every pxd of the run uses (PX_IO_ENGINE=uring|epoll|auto; tests/run_integration.py runs the
# suite once per engine). An io_engine line in a test's own config comes later and wins.
IO_ENGINE = "io_engine %s\n" % os.environ["PX_IO_ENGINE"] if os.environ.get("PX_IO_ENGINE") else ""


class Pxd:
    def __init__(self, workers=1, extra="", routes=(), start=True, env=None, preexec=None):
        self.dir = tempfile.mkdtemp(prefix="pxtest-")
        self.data = os.path.join(self.dir, "data")
        self.status_file = os.path.join(self.dir, "status.json")
        self.conf = os.path.join(self.dir, "pxd.conf")
        self.logpath = os.path.join(self.dir, "pxd.log")
        with open(self.conf, "w") as f:
            f.write("listen 127.0.0.1:0\nworkers %d\ndata_dir %s\nstatus_file %s\nlog_level info\n%s%s\n"
                    % (workers, self.data, self.status_file, IO_ENGINE, extra))
        self.proc = None
        self.env = env
        self.preexec = preexec  # run in the child before pxd (a seccomp filter, say)
        self.gen = 0
        for r in routes:
            self.put_route(r)
        if start:
            self.start()

    def start(self):
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen([PXD, "-c", self.conf], stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **self.env) if self.env else None,
                                     preexec_fn=self.preexec)
        m = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log()), what="pxd to listen")
        self.port = int(m.group(1))
        wait_for(lambda: "pxd ready" in self.log(), what="pxd ready")
        self.wait_applied(self.gen)

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def store(self, *args, input=None):
        r = subprocess.run([PXSTORE, "--data", self.data] + list(args), input=input,
                           capture_output=True, text=True)
        return r

    def put_route(self, route, wait=True):
        r = self.store("put-json", json.dumps(route))
        if r.returncode != 0:
            raise AssertionError("px-store put failed: " + r.stderr)
        self.gen = int(r.stdout.strip())
        if wait and self.proc:
            self.wait_applied(self.gen)
        return self.gen

    def rm_route(self, name, wait=True):
        r = self.store("rm", name)
        if r.returncode != 0:
            raise AssertionError("px-store rm failed: " + r.stderr)
        self.gen = int(r.stdout.strip())
        if wait and self.proc:
            self.wait_applied(self.gen)
        return self.gen

    def applied(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)["generation"]
        except (OSError, ValueError, KeyError):
            return -1

    def wait_applied(self, gen):
        wait_for(lambda: self.applied() >= gen, what="generation %d applied" % gen)

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=DEADLINE):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
            log = self.log()
            # Under the sanitizer build, any report from pxd fails the test that ran it.
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in log:
                    i = log.index(marker)
                    raise AssertionError("pxd sanitizer report:\n" + log[max(0, i - 200):i + 3000])


def route(name, hosts, upstreams, **kw):
    r = {"name": name, "hosts": hosts if isinstance(hosts, list) else [hosts],
         "upstreams": [u.url if isinstance(u, Upstream) else u for u in upstreams]}
    r.update(kw)
    return r


class Response:
    def __init__(self, status, headers, body, version):
        self.status = status
        self.headers = headers
        self.body = body
        self.version = version

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client on one connection: sends exact bytes, reads responses."""

    def __init__(self, port, host="127.0.0.1", timeout=DEADLINE):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def _exact(self, n, sink=None):
        parts = []
        while n > 0:
            if not self.buf:
                self._fill()
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            n -= len(take)
            if sink:
                sink(take)
            else:
                parts.append(take)
        return b"".join(parts)

    def response(self, head=False, sink=None, allow_interim=False):
        while True:
            h = self._until(b"\r\n\r\n").decode("latin-1")
            lines = h.split("\r\n")
            version, status = lines[0].split(" ")[0], int(lines[0].split(" ")[1])
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.append((k, v.strip()))
            if 100 <= status < 200 and status != 101 and not allow_interim:
                continue
            break
        r = Response(status, headers, b"", version)
        if head or status in (204, 304) or 100 <= status < 200:
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te and "chunked" in te.lower():
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n") != b"":
                        pass
                    break
                parts.append(self._exact(size, sink))
                self._until(b"\r\n")
            r.body = b"".join(parts)
        elif cl is not None:
            r.body = self._exact(int(cl), sink)
        else:
            parts = [self.buf]
            self.buf = b""
            while True:
                d = self.sock.recv(1 << 20)
                if not d:
                    break
                parts.append(d)
            r.body = b"".join(parts)
        return r

    def closed(self, timeout=DEADLINE):
        """True once the server closed the connection (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def get(port, path="/", host="a.test", headers=(), method="GET", body=None, version="HTTP/1.1"):
    c = Client(port)
    try:
        req = "%s %s %s\r\nHost: %s\r\n" % (method, path, version, host)
        for k, v in headers:
            req += "%s: %s\r\n" % (k, v)
        if body is not None:
            req += "Content-Length: %d\r\n" % len(body)
        req += "Connection: close\r\n\r\n"
        c.send(req.encode("latin-1") + (body or b""))
        return c.response(head=(method == "HEAD"))
    finally:
        c.close()


def wrk(port, host, path="/", seconds=3, connections=8, threads=1):
    """Runs wrk against pxd; returns (requests, errors, non2xx)."""
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
                          "-H", "Host: " + host, "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    reqs = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return reqs, errors, non2xx, out


class Admind:
    """The real pxadmind on a temporary store, its unix socket, and a TCP listener on a run-time port."""

    def __init__(self, data=None, pxd_status=None, tcp=True, args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="pxadm-")
        self.data = data or os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "admin.sock")
        self.logpath = os.path.join(self.dir, "pxadmind.log")
        self.pxd_status = pxd_status or os.path.join(self.dir, "none.status")
        self.tcp = tcp
        self.args = list(args)
        self.env = env
        self.start()

    def start(self):
        self.logf = open(self.logpath, "ab")
        offset = os.path.getsize(self.logpath)
        argv = [PXADMIND, "-d", self.data, "-s", self.socket, "--pxd-status", self.pxd_status]
        if self.tcp:
            argv += ["--listen", "127.0.0.1:0"]
        argv += self.args
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **self.env) if self.env else None)
        wait_for(lambda: "pxadmind ready" in self.log()[offset:], what="pxadmind ready")
        if self.tcp:
            m = re.findall(r"listening on tcp:127\.0\.0\.1:(\d+)", self.log()[offset:])
            self.port = int(m[-1])

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def ctl(self, *args, input=None, env=None):
        e = dict(os.environ, PX_ADMIN_SOCKET=self.socket)
        e.pop("PX_ADMIN_URL", None)
        e.pop("PX_TOKEN", None)
        if env:
            e.update(env)
        r = subprocess.run([PXCTL] + list(args), input=input, capture_output=True, text=True, env=e)
        return r

    def api(self, method, path, body=None, headers=(), tcp=False, token=None):
        """One request to the API; returns (status, headers dict, parsed JSON or None)."""
        if tcp:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(DEADLINE)
            sock.connect(self.socket)
        c = Client.__new__(Client)
        c.sock, c.buf = sock, b""
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = "%s %s HTTP/1.1\r\nHost: pxadmind\r\nConnection: close\r\n" % (method, path)
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        for k, v in headers:
            req += "%s: %s\r\n" % (k, v)
        if body is not None:
            req += "Content-Length: %d\r\n" % len(data)
        c.send(req.encode() + b"\r\n" + data)
        r = c.response()
        sock.close()
        hdrs = {k.lower(): v for k, v in r.headers}
        return r.status, hdrs, (json.loads(r.body) if r.body else None)

    def generation(self):
        return self.api("GET", "/v1/status")[2]["generation"]

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.logf.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.logf.close()
            log = self.log()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "Assertion `"):
                if marker in log:
                    i = log.index(marker)
                    raise AssertionError("pxadmind sanitizer report:\n" + log[max(0, i - 200):i + 3000])


NGINX = "/usr/sbin/nginx"


class Nginx:
    """A real nginx beside pxd, for tests that compare px's behaviour with nginx's for the same settings
    (limit_req, auth_request): `http` is the inside of its http {} block; it listens where that says."""

    def __init__(self, http):
        self.dir = tempfile.mkdtemp(prefix="pxnginx-")
        self.conf = os.path.join(self.dir, "nginx.conf")
        t = self.dir
        with open(self.conf, "w") as f:
            f.write("worker_processes 2;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n"
                    "events { worker_connections 1024; }\nhttp {\naccess_log off;\n"
                    "client_body_temp_path %s/b;\nproxy_temp_path %s/p;\nfastcgi_temp_path %s/f;\n"
                    "uwsgi_temp_path %s/u;\nscgi_temp_path %s/s;\n%s\n}\n" % (t, t, t, t, t, t, t, http))
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait_port(self, port):
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("nginx exited: " + open(os.path.join(self.dir, "error.log")).read())
                return False
        wait_for(up, what="nginx on port %d" % port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=DEADLINE)
