"""SIGHUP re-reads pxd.conf: listeners come and go, new settings apply to new
connections, open connections finish, and a broken file changes nothing (the
log names the file, the line and the problem). `pxd -t` checks a file first."""
import re
import signal
import socket
import subprocess
import unittest

from pxtest import PXD, Client, Pxd, Upstream, get, route, wait_for, DEADLINE


def get_at(addr, port):
    c = Client(port, host=addr)
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    r = c.response()
    c.close()
    return r


class ReloadTest(unittest.TestCase):
    def setUp(self):
        self.up = Upstream()
        self.pxd = Pxd(workers=2, routes=[route("r", "a.test", [self.up])])
        self.base = open(self.pxd.conf).read()

    def tearDown(self):
        self.pxd.stop()
        self.up.kill()

    def write_conf(self, extra):
        with open(self.pxd.conf, "w") as f:
            f.write(self.base + extra)

    def reload(self, marker):
        n = self.pxd.log().count(marker)
        self.pxd.signal(signal.SIGHUP)
        wait_for(lambda: self.pxd.log().count(marker) > n, what="'%s' in pxd's log" % marker)

    def test_max_body_size_applies_at_the_reload_and_back(self):
        """A reload applies every limit it reports as applied: pxd.conf's max_body_size (the default of
        routes that set none) serves from the reload on, without a store change, and so does its removal."""
        def status_of_2k_post():
            return get(self.pxd.port, "/", method="POST", body=b"x" * 2048).status
        self.assertEqual(status_of_2k_post(), 200)
        self.write_conf("max_body_size 1k\n")
        self.reload("reloaded ")
        wait_for(lambda: status_of_2k_post() == 413, what="the 1k limit applied")
        for _ in range(4):  # on every worker
            self.assertEqual(status_of_2k_post(), 413)
        self.write_conf("")
        self.reload("reloaded ")
        wait_for(lambda: status_of_2k_post() == 200, what="no limit again")
        for _ in range(4):
            self.assertEqual(status_of_2k_post(), 200)

    def test_listener_added_and_removed_open_connections_finish(self):
        # A second listener, on a port chosen at run time.
        self.write_conf("listen 127.0.0.2:0\n")
        self.reload("reloaded ")
        m = re.findall(r"listening on 127\.0\.0\.2:(\d+)", self.pxd.log())
        port2 = int(m[-1])
        for _ in range(4):  # every worker got it
            self.assertEqual(get_at("127.0.0.2", port2).status, 200)
        # A keep-alive connection on the first listener, then the first listener goes.
        c = Client(self.pxd.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        with open(self.pxd.conf, "w") as f:
            f.write(self.base.replace("listen 127.0.0.1:0\n", "") + "listen 127.0.0.2:0\n")
        self.reload("reloaded ")
        self.assertIn("no longer listening on 127.0.0.1:0", self.pxd.log())

        def refused():
            try:
                socket.create_connection(("127.0.0.1", self.pxd.port), timeout=DEADLINE).close()
                return False
            except ConnectionRefusedError:
                return True
        wait_for(refused, what="the removed listener to refuse connections")
        # The open connection finishes its business; the kept listener serves.
        c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 200)
        c.close()
        self.assertEqual(get_at("127.0.0.2", port2).status, 200)

    def test_new_limits_for_new_connections(self):
        big = [("X-Big", "x" * 3000)]
        self.assertEqual(get(self.pxd.port, host="a.test", headers=big).status, 200)
        self.write_conf("max_header_size 2048\n")
        self.reload("reloaded ")
        wait_for(lambda: get(self.pxd.port, host="a.test", headers=big).status == 431,
                 what="the new header limit on new connections")

    def test_broken_file_keeps_the_running_configuration(self):
        self.write_conf("listen 127.0.0.2:0\nmax_header_size lots\n")
        self.reload("reload refused")
        log = self.pxd.log()
        self.assertRegex(log, r"reload refused: %s:\d+: " % re.escape(self.pxd.conf))
        self.assertIn("max_header_size", log[log.rindex("reload refused"):])
        self.assertNotIn("127.0.0.2", log)  # nothing of the broken file was applied
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        # pxd -t says the same, in advance, and exits non-zero.
        r = subprocess.run([PXD, "-t", "-c", self.pxd.conf], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("max_header_size", r.stderr)
        self.write_conf("")
        r = subprocess.run([PXD, "-t", "-c", self.pxd.conf], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_a_listener_that_cannot_open_refuses_the_reload(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        try:
            self.write_conf("listen 127.0.0.1:%d\n" % taken)
            self.reload("reload refused")
            self.assertIn("listen 127.0.0.1:%d" % taken, self.pxd.log())
            self.assertEqual(get(self.pxd.port, host="a.test").status, 200)
        finally:
            busy.close()

    def test_restart_only_settings_are_kept_and_said(self):
        self.write_conf("workers 5\n")
        self.reload("reloaded ")
        self.assertIn("reload: workers changes at the next restart", self.pxd.log())
        self.assertEqual(get(self.pxd.port, host="a.test").status, 200)


if __name__ == "__main__":
    unittest.main()
