"""Zero-downtime binary upgrade (SIGUSR2): the pxd binary starts again with the
running one's listening sockets, serves, and the old one drains and exits. Under
wrk load across the upgrade: no failed request and no refused connection. A new
pxd that cannot start leaves the old one serving. Socket activation: sockets
handed over the way systemd does (LISTEN_PID, LISTEN_FDS) are served."""
import os
import re
import signal
import socket
import subprocess
import threading
import json
import urllib.request
import unittest

from pxtest import PXD, Pxd, Upstream, get, route, wait_for, DEADLINE


def successor_pid(log):
    m = re.findall(r"upgrade: started \S+ \(pid (\d+)\)", log)
    return int(m[-1]) if m else None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.up = Upstream()
        self.pxd = Pxd(workers=2, routes=[route("r", "a.test", [self.up])])
        self.new = None

    def tearDown(self):
        if self.new and alive(self.new):
            os.kill(self.new, signal.SIGINT)
            wait_for(lambda: not alive(self.new), what="the new pxd to stop")
        self.pxd.stop()
        self.up.kill()

    def test_upgrade_under_load_loses_nothing(self):
        out = {}

        def load():
            out["wrk"] = subprocess.run(["wrk", "-t1", "-c16", "-d4s", "-H", "Host: a.test",
                                         "http://127.0.0.1:%d/" % self.pxd.port],
                                        capture_output=True, text=True).stdout
        t = threading.Thread(target=load)
        t.start()
        # Upgrade once the load flows (pxd holds connections to the upstream), well before wrk ends.
        wait_for(lambda: json.load(urllib.request.urlopen(self.up.url + "/_open", timeout=DEADLINE))["open"] >= 1,
                 what="the load to reach the upstream")
        self.pxd.signal(signal.SIGUSR2)
        self.new = wait_for(lambda: successor_pid(self.pxd.log()), what="the new pxd to start")
        # The old pxd drains and exits by itself once the new one serves.
        self.assertEqual(self.pxd.wait_exit(timeout=DEADLINE), 0)
        t.join()
        wrk = out["wrk"]
        reqs = int(re.search(r"(\d+) requests in", wrk).group(1))
        self.assertGreater(reqs, 0)
        self.assertNotIn("Socket errors", wrk, wrk)
        self.assertNotIn("Non-2xx", wrk, wrk)
        # The new pxd serves on the same port, and says it took the sockets over.
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        log = self.pxd.log()
        self.assertIn("(inherited)", log)
        self.assertIn("upgrade: serving; pxd %d drains" % self.pxd.proc.pid, log)
        self.assertTrue(alive(self.new))

    def test_stream_listeners_are_handed_over_and_open_connections_finish(self):
        from l4peers import TcpPeer
        from pxtest import free_port
        peer = TcpPeer()
        self.addCleanup(peer.close)
        port = free_port()
        r = self.pxd.store("put-stream", json.dumps({"name": "s", "listen": "127.0.0.1:%d" % port,
                                                     "upstreams": [{"url": peer.url}]}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.pxd.wait_applied(int(r.stdout))
        wait_for(lambda: "stream s: listening on stream tcp 127.0.0.1:%d" % port in self.pxd.log(), what="stream")
        held = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        held.sendall(b"ECHO\nbefore")
        got = b""
        while len(got) < 6:
            got += held.recv(6 - len(got))
        self.assertEqual(got, b"before")
        self.pxd.signal(signal.SIGUSR2)
        self.new = wait_for(lambda: successor_pid(self.pxd.log()), what="the new pxd to start")
        wait_for(lambda: "stream s: listening on stream tcp 127.0.0.1:%d (inherited)" % port in self.pxd.log(),
                 what="the new pxd to take the stream's sockets")
        wait_for(lambda: "upgrade: serving" in self.pxd.log(), what="the old pxd told to drain")
        # New connections reach the new pxd; the old one keeps relaying the connection it holds.
        c = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        c.sendall(b"ECHO\nnew")
        c.shutdown(socket.SHUT_WR)
        got = b""
        while True:  # until the upstream's FIN: the answer may come in pieces
            d = c.recv(100)
            if not d:
                break
            got += d
        self.assertEqual(got, b"newbye:3")
        c.close()
        held.sendall(b"after")
        got = b""
        while len(got) < 5:
            d = held.recv(5 - len(got))
            self.assertTrue(d, "the held connection closed")
            got += d
        self.assertEqual(got, b"after")
        self.assertTrue(self.pxd.proc.poll() is None)  # still draining: it waits for that connection
        held.shutdown(socket.SHUT_WR)
        held.recv(100)
        held.close()
        self.assertEqual(self.pxd.wait_exit(timeout=DEADLINE), 0)

    def test_websocket_tunnel_stays_up_until_the_grace_period(self):
        from pxtest import Client
        self.pxd.stop()
        self.pxd = Pxd(workers=2, extra="grace_period 3s\n", routes=[route("r", "a.test", [self.up])])
        c = Client(self.pxd.port)
        c.send("GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.assertEqual(c.response(allow_interim=True).status, 101)

        def echo(msg):
            c.send(msg)
            got = b""
            while len(got) < len(msg):
                d = c.sock.recv(65536)
                if not d:
                    break
                got += d
            return got
        self.assertEqual(echo(b"before"), b"before")
        self.pxd.signal(signal.SIGUSR2)
        self.new = wait_for(lambda: successor_pid(self.pxd.log()), what="the new pxd to start")
        wait_for(lambda: "upgrade: serving; pxd %d drains" % self.pxd.proc.pid in self.pxd.log(),
                 what="the new pxd serving")
        # The old pxd drains: the tunnel it holds still carries messages both ways, new requests go to the new one.
        self.assertEqual(echo(b"during the drain"), b"during the drain")
        self.assertIsNone(self.pxd.proc.poll())
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        self.assertEqual(echo(b"x" * 50000), b"x" * 50000)
        # At the end of the grace period the old pxd closes it and exits.
        self.assertTrue(c.closed())
        self.assertEqual(self.pxd.wait_exit(timeout=DEADLINE), 0)
        self.assertIn("grace period over", self.pxd.log())
        self.assertTrue(alive(self.new))

    def test_failed_successor_leaves_the_old_one_serving(self):
        # A configuration the new pxd refuses: it exits, the old one goes on.
        with open(self.pxd.conf, "a") as f:
            f.write("max_header_size lots\n")
        self.pxd.signal(signal.SIGUSR2)
        wait_for(lambda: "upgrade failed: the new pxd ended" in self.pxd.log(), what="the failure logged")
        self.assertIsNone(self.pxd.proc.poll())
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)


class SocketActivationTest(unittest.TestCase):
    def test_systemd_sockets_are_served(self):
        up = Upstream()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        port = s.getsockname()[1]
        pxd = Pxd(workers=2, routes=[route("r", "a.test", [up])], start=False)
        with open(pxd.conf) as f:
            conf = f.read().replace("listen 127.0.0.1:0", "listen 127.0.0.1:%d" % port)
        with open(pxd.conf, "w") as f:
            f.write(conf)
        # As systemd does it: the socket at fd 3, LISTEN_PID set to the new process's pid (a shell
        # that execs pxd keeps its pid), LISTEN_FDS=1.
        logf = open(pxd.logpath, "wb")
        proc = subprocess.Popen(["/bin/bash", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -c "$1" 3<&%d' % s.fileno(),
                                 PXD, pxd.conf], stdout=logf, stderr=subprocess.STDOUT, pass_fds=(s.fileno(),))
        s.close()  # pxd holds the only copy now
        try:
            wait_for(lambda: "pxd ready" in open(pxd.logpath).read(), what="pxd ready")
            self.assertIn("listening on 127.0.0.1:%d (inherited)" % port, open(pxd.logpath).read())
            for _ in range(4):
                self.assertEqual(get(port, host="a.test", headers=[("Connection", "close")]).status, 200)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=DEADLINE)
            logf.close()
            up.kill()


if __name__ == "__main__":
    unittest.main()
