"""L4 streams through a real pxd: TCP relayed both ways with half-closes, large transfers in bounded
memory, failover, access lists, timeouts, limits, PROXY protocol v1/v2 to the upstream; UDP sessions
for many clients, their expiry and failover, and a real `dig` through px; streams added and removed
while others carry traffic. Streams are made the way a user makes them: pxctl, through pxadmind."""
import os
import re
import resource
import socket
import subprocess
import threading
import time
import unittest

from l4peers import DnsPeer, TcpPeer, UdpPeer, recv_all
from pxtest import DEADLINE, Admind, Pxd, free_port, listener_options, wait_for

MIB = 1 << 20
# The bound for a 1 GiB transfer; the sanitizer build's allocator keeps a quarantine on top. On io_uring
# (pxd.conf(5)) the worker's receive buffers (256 x 16 KiB, shared by all its sockets) become resident once the
# kernel has filled each, and a side that stops reading may hold what the ring had received for it already, up
# to those buffers' worth (kept in pieces, never copied as it grows): twice 4 MiB more.
RSS_LIMIT_KB = (16 + (24 if "ASAN_OPTIONS" in os.environ else 0)) * 1024
URING_BUFFERS_KB = 4 * 1024


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in f) if k in ("VmRSS", "VmHWM")}


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def udp_ask(port, payload, tries=20, sock=None):
    """Sends until an answer comes (UDP may lose the first datagram while a peer fails over)."""
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        for _ in range(tries):
            s.sendto(payload, ("127.0.0.1", port))
            try:
                return s.recvfrom(65536)[0]
            except socket.timeout:
                continue
        raise AssertionError("no answer to %r" % payload)
    finally:
        if sock is None:
            s.close()


class L4Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pxd = Pxd(workers=2, extra="metrics_listen 127.0.0.1:0\n")
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file)
        cls.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", cls.pxd.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.adm.stop()
        cls.pxd.stop()

    def ctl(self, *args):
        r = self.adm.ctl(*args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def add(self, name, *args, udp=False):
        """A stream on a fresh loopback port; returns the port once pxd listens on it."""
        port = free_port()
        self.ctl("stream", "add", name, "--listen", "127.0.0.1:%d%s" % (port, "/udp" if udp else ""), *args)
        key = "stream %s 127.0.0.1:%d" % ("udp" if udp else "tcp", port)
        wait_for(lambda: ("stream %s: listening on %s" % (name, key)) in self.pxd.log(), what="stream listening")
        self.pxd.wait_applied(self.adm.generation())
        self.addCleanup(lambda: self.adm.ctl("stream", "rm", name))
        return port

    def connect(self, port):
        return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)

    def peer(self, **kw):
        p = TcpPeer(**kw)
        self.addCleanup(p.close)
        return p

    def echo(self, port, data):
        """One connection: ECHO data, half-close, everything the upstream sent back (via px) until its FIN."""
        c = self.connect(port)
        try:
            c.sendall(b"ECHO\n" + data)
            c.shutdown(socket.SHUT_WR)
            return recv_all(c)
        finally:
            c.close()

    # ---- TCP ----

    def test_echo_and_half_close_both_ways(self):
        up = self.peer()
        port = self.add("echo", "--upstream", up.url)
        # The client half-closes: the upstream sees EOF, and its answer still reaches the client.
        c = self.connect(port)
        c.sendall(b"ECHO\nhello ")
        c.sendall(b"world")
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(c), b"hello worldbye:11")
        c.close()
        # The upstream half-closes first: the client sees EOF and can still send.
        c = self.connect(port)
        c.sendall(b"PUSH 1000\n")
        got = b""
        while len(got) < 1000:
            d = c.recv(65536)
            self.assertTrue(d, "EOF before the 1000 bytes")
            got += d
        self.assertEqual(c.recv(10), b"")  # the upstream's FIN, passed on
        c.sendall(b"still here")
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(c.recv(10), b"")
        c.close()
        wait_for(lambda: up.after_fin == [b"still here"], what="the bytes sent after the upstream's FIN")

    def test_a_stream_listener_hands_over_a_silent_client_at_once(self):
        # Unlike HTTP listeners, a stream's protocol may have the server speak first: the kernel hands each
        # connection over at once (no TCP_DEFER_ACCEPT), and the upstream's first bytes reach a client that
        # has sent nothing.
        up = self.peer()
        port = self.add("silent", "--upstream", up.url)
        vals = listener_options(self.pxd.proc.pid, port, socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
        self.assertTrue(vals)
        self.assertEqual(set(vals), {0})
        c = self.connect(port)
        wait_for(lambda: up.accepted == 1, what="the upstream connected for a client that sent nothing")
        c.close()

    def test_1gib_each_way_in_bounded_memory(self):
        up = self.peer()
        port = self.add("bulk", "--upstream", up.url)
        pid = self.pxd.proc.pid
        base = hwm_kb(pid)["VmRSS"]
        c = self.connect(port)
        c.sendall(b"SEND %d\n" % (1 << 30))
        n = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            n += len(d)
        c.close()
        self.assertEqual(n, 1 << 30)
        c = self.connect(port)
        c.sendall(b"RECV\n")
        block = b"z" * MIB
        for _ in range(1024):
            c.sendall(block)
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(c), b"%d" % (1 << 30))
        c.close()
        peak = hwm_kb(pid)["VmHWM"]
        limit = RSS_LIMIT_KB + (2 * URING_BUFFERS_KB if os.environ.get("PX_IO_ENGINE") == "uring" else 0)
        self.assertLess(peak - base, limit, "pxd's peak RSS grew by %d KiB" % (peak - base))

    def test_failover_to_the_next_peer_when_one_is_down(self):
        up = self.peer()
        dead = "tcp://127.0.0.1:%d" % free_port()  # nothing listens: connects are refused
        port = self.add("fo", "--upstream", dead, "--upstream", up.url)
        for i in range(8):
            self.assertEqual(self.echo(port, b"x%d" % i), b"x%dbye:2" % i)
        self.assertEqual(up.accepted, 8)

    def test_active_health_check_takes_a_dead_peer_out_without_traffic(self):
        a, b = TcpPeer(), TcpPeer()
        self.addCleanup(a.close)
        port = self.add("hc", "--upstream", a.url, "--upstream", b.url, "--health-interval", "100")

        def up(peer):
            m = re.search(r'^px_upstream_up\{peer="%s"\} (\S+)$' % re.escape(peer.url), self.scrape(), re.M)
            return m and float(m.group(1))
        wait_for(lambda: up(a) == 1 and up(b) == 1, what="both peers checked and up")
        b.close()  # its port refuses from now on
        wait_for(lambda: up(b) == 0, what="the dead peer out, by the checks alone")
        before = a.accepted
        for i in range(4):
            self.assertEqual(self.echo(port, b"h"), b"hbye:1")
        self.assertGreaterEqual(a.accepted - before, 4)

    def test_acl_denies_then_allows(self):
        up = self.peer()
        self.ctl("acl", "add", "office", "--rule", "allow=10.0.0.0/8", "--default", "deny")
        self.addCleanup(lambda: self.adm.ctl("acl", "rm", "office"))
        port = self.add("guarded", "--upstream", up.url, "--acl", "office")
        c = self.connect(port)
        c.sendall(b"ECHO\nsecret")
        try:
            self.assertEqual(recv_all(c), b"")  # closed, nothing relayed
        except ConnectionResetError:
            pass  # closed with the bytes unread: a reset, as the kernel does
        c.close()
        self.assertEqual(up.accepted, 0)
        self.ctl("acl", "set", "office", "--rule", "allow=127.0.0.0/8", "--default", "deny")
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.echo(port, b"ok"), b"okbye:2")
        text = wait_for(lambda: (lambda t: t if 'px_l4_connections_total{stream="guarded",termination="denied"} 1' in t
                                 else None)(self.scrape()), what="the denied connection counted")
        self.assertIn('px_l4_connections_total{stream="guarded",termination="ok"} 1', text)

    def scrape(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=DEADLINE) as r:
            return r.read().decode()

    def test_idle_timeout_and_max_lifetime_close_the_connection(self):
        up = self.peer()
        port = self.add("idle", "--upstream", up.url, "--idle-timeout", "300")
        c = self.connect(port)
        c.sendall(b"WAIT\n")
        self.assertEqual(c.recv(10), b"")  # px closed it once nothing moved for 300 ms
        c.close()
        port = self.add("life", "--upstream", up.url, "--max-lifetime", "500")
        c = self.connect(port)
        c.sendall(b"ECHO\n")
        # Busy all along (a byte every 100 ms), and still cut at its lifetime.
        while True:
            try:
                c.sendall(b".")
            except OSError:
                break
            c.settimeout(0.1)
            try:
                if c.recv(100) == b"":
                    break
            except socket.timeout:
                pass
            except OSError:  # cut while a byte was on its way: a reset
                break
        c.close()
        text = wait_for(lambda: (lambda t: t if 'stream="life",termination="max_lifetime"' in t else None)(
            self.scrape()), what="max_lifetime counted")
        self.assertIn('px_l4_connections_total{stream="idle",termination="idle_timeout"} 1', text)

    def test_max_connections(self):
        up = self.peer()
        port = self.add("one", "--upstream", up.url, "--max-connections", "1")
        first = self.connect(port)
        first.sendall(b"WAIT\n")
        wait_for(lambda: up.accepted == 1, what="the first connection upstream")
        second = self.connect(port)
        self.assertEqual(second.recv(10), b"")  # over the limit: closed (it sent nothing: a clean FIN)
        second.close()
        first.close()
        # Once the first ended, a new one gets through.
        def works():
            c = self.connect(port)
            try:
                c.sendall(b"ECHO\nz")
                c.shutdown(socket.SHUT_WR)
                return recv_all(c) == b"zbye:1"
            except OSError:  # still over the limit: closed (unread bytes make that a reset)
                return False
            finally:
                c.close()
        wait_for(works, what="a connection after the first ended")

    def test_proxy_protocol_v1_and_v2(self):
        for version in ("v1", "v2"):
            up = TcpPeer(proxy=True)
            self.addCleanup(up.close)
            port = self.add("pp" + version, "--upstream", up.url, "--proxy-protocol", version)
            c = self.connect(port)
            here = c.getsockname()
            c.sendall(b"ECHO\nabc")
            c.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(c), b"abcbye:3")
            c.close()
            self.assertEqual(len(up.headers), 1)
            h = up.headers[0]
            self.assertEqual(h["version"], int(version[1]))
            self.assertEqual((h["src"], h["sport"]), here)
            self.assertEqual((h["dst"], h["dport"]), ("127.0.0.1", port))
            if version == "v1":
                self.assertEqual(h["proto"], "TCP4")
            else:
                self.assertEqual((h["cmd"], h["family"]), (0x21, 0x11))

    def test_streams_come_and_go_under_load_without_dropping_others(self):
        up = self.peer()
        port = self.add("steady", "--upstream", up.url)
        held = self.connect(port)  # open across every change below
        held.sendall(b"ECHO\nfirst")
        self.assertEqual(recv_exact(held, 5), b"first")
        failures, done = [], [0]
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    c = self.connect(port)
                    c.sendall(b"ECHO\nping")
                    c.shutdown(socket.SHUT_WR)
                    r = recv_all(c)
                    c.close()
                    if r != b"pingbye:4":
                        failures.append(r)
                except OSError as e:
                    failures.append(repr(e))
                done[0] += 1

        t = threading.Thread(target=load)
        t.start()
        try:
            for i in range(5):
                other = self.add("churn%d" % i, "--upstream", up.url)
                self.assertEqual(self.echo(other, b"c"), b"cbye:1")
                self.ctl("stream", "rm", "churn%d" % i)
                wait_for(lambda: ("stream tcp 127.0.0.1:%d: closed" % other) in self.pxd.log(), what="closed")
                self.pxd.wait_applied(self.adm.generation())

                def refused():
                    try:
                        socket.create_connection(("127.0.0.1", other), timeout=DEADLINE).close()
                        return False
                    except ConnectionRefusedError:
                        return True
                wait_for(refused, what="the removed stream's port closed")
        finally:
            stop.set()
            t.join()
        self.assertEqual(failures, [])
        self.assertGreater(done[0], 0)
        held.sendall(b"last")
        held.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(held), b"lastbye:9")
        held.close()

    # ---- UDP ----

    def test_udp_many_clients_each_get_their_own_replies(self):
        up = UdpPeer("a")
        self.addCleanup(up.close)
        port = self.add("udp", "--upstream", up.url, udp=True)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]
        try:
            for i, s in enumerate(socks):
                r = udp_ask(port, b"client %d" % i, sock=s)
                self.assertTrue(r.startswith(b"a|") and r.endswith(b"|client %d" % i), r)
            # Each client has its own session, so its own upstream source port, stable while it lasts.
            ports = set()
            for i, s in enumerate(socks):
                first = udp_ask(port, b"again %d" % i, sock=s).split(b"|")[1]
                self.assertEqual(udp_ask(port, b"more %d" % i, sock=s).split(b"|")[1], first)
                ports.add(first)
            self.assertEqual(len(ports), 30)
        finally:
            for s in socks:
                s.close()

    def test_udp_session_expiry(self):
        up = UdpPeer("a")
        self.addCleanup(up.close)
        port = self.add("udpidle", "--upstream", up.url, "--idle-timeout", "200", udp=True)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        first = udp_ask(port, b"one", sock=s).split(b"|")[1]
        # Once the session expired, the next datagram opens a new one (a new upstream socket).
        wait_for(lambda: 'px_l4_connections_total{stream="udpidle",termination="ok"} 1' in self.scrape(),
                 what="the session expired")
        self.assertNotEqual(udp_ask(port, b"two", sock=s).split(b"|")[1], first)

    def test_udp_failover(self):
        live = UdpPeer("live")
        self.addCleanup(live.close)
        gone = UdpPeer("gone")
        dead_url = gone.url
        gone.close()  # its port now answers "unreachable"
        port = self.add("udpfo", "--upstream", dead_url, "--upstream", live.url, udp=True)
        for i in range(6):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.assertTrue(udp_ask(port, b"q%d" % i, sock=s).startswith(b"live|"))
            finally:
                s.close()

    def test_udp_proxy_protocol_v2(self):
        up = UdpPeer("a", proxy=True)
        self.addCleanup(up.close)
        port = self.add("udppp", "--upstream", up.url, "--proxy-protocol", "v2", udp=True)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        self.assertTrue(udp_ask(port, b"hi", sock=s).endswith(b"|hi"))
        self.assertEqual(up.headers[0], ("127.0.0.1", s.getsockname()[1]))

    def test_dig_through_px(self):
        dns = DnsPeer("192.0.2.7")
        self.addCleanup(dns.close)
        port = self.add("dns", "--upstream", dns.url, udp=True)
        r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "www.example.test", "A", "+short", "+tries=5",
                            "+time=2"], capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.stdout.strip(), "192.0.2.7", r.stdout + r.stderr)
        self.assertGreaterEqual(dns.queries, 1)



class L4DescriptorsTest(unittest.TestCase):
    """pxd out of file descriptors: a TCP stream's listener says so and pauses, and the connection that
    waited in the kernel's backlog is served once descriptors are free again."""

    def test_out_of_descriptors_pauses_accepting_then_serves_the_backlog(self):
        up = TcpPeer()
        pxd = Pxd(workers=1)
        adm = Admind(data=pxd.data, pxd_status=pxd.status_file)
        try:
            port = free_port()
            r = adm.ctl("stream", "add", "tight", "--listen", "127.0.0.1:%d" % port, "--upstream", up.url)
            self.assertEqual(r.returncode, 0, r.stderr)
            wait_for(lambda: "stream tight: listening" in pxd.log(), what="stream listening")
            pxd.wait_applied(adm.generation())
            pid = pxd.proc.pid
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            used = {int(x) for x in os.listdir("/proc/%d/fd" % pid)}
            lowest_free = min(i for i in range(len(used) + 1) if i not in used)
            # No descriptor number is free below the limit: the next accept fails with EMFILE.
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
            c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)  # the kernel completes it
            c.sendall(b"ECHO\nq")
            c.shutdown(socket.SHUT_WR)
            wait_for(lambda: re.search(r"127\.0\.0\.1:%d: accept: Too many open files \(accepting again in 100 ms\)"
                                       % port, pxd.log()), what="the accept error in the log")
            self.assertEqual(up.accepted, 0)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            self.assertEqual(recv_all(c), b"qbye:1")  # accepted after the pause, relayed whole
            c.close()
            self.assertIsNone(pxd.proc.poll())
        finally:
            adm.stop()
            pxd.stop()
            up.close()

if __name__ == "__main__":
    unittest.main()
