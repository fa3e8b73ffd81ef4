"""systemd: the shipped units pass `systemd-analyze verify` and score well in
`systemd-analyze security`, and pxd and pxadmind speak the notify protocol to a
NOTIFY_SOCKET this test owns (PID 1 here is not systemd): READY=1 once serving,
STATUS, WATCHDOG=1 pings, RELOADING=1 then READY=1 around a reload, STOPPING=1."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import unittest

from pxtest import PXADMIND, PXD, ROOT, Admind, Pxd, Upstream, get, route, wait_for, DEADLINE


class Listener:
    """A datagram socket standing in for the service manager."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pxnotify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []

    def collect(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def wait(self, pred, what):
        return wait_for(lambda: next((m for m in self.collect() if pred(m)), None), what=what)

    def close(self):
        self.sock.close()


class UnitsTest(unittest.TestCase):
    def units(self):
        d = tempfile.mkdtemp(prefix="pxunits-")
        for name, binary in (("pxd", PXD), ("pxadmind", PXADMIND)):
            text = open(os.path.join(ROOT, "conf", name + ".service")).read()
            # The units name the installed programs; verify wants them to exist.
            text = text.replace("/usr/sbin/pxadmind", PXADMIND).replace("/usr/sbin/pxd", PXD)
            with open(os.path.join(d, name + ".service"), "w") as f:
                f.write(text)
        return [os.path.join(d, n + ".service") for n in ("pxd", "pxadmind")]

    def test_units_verify(self):
        r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + self.units(), capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "")

    def test_units_are_hardened(self):
        for unit in self.units():
            r = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit], capture_output=True, text=True)
            m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertLessEqual(float(m.group(1)), 2.0, "%s: %s" % (unit, m.group(0)))
        text = open(os.path.join(ROOT, "conf", "pxd.service")).read()
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=px", "StateDirectory=px",
                     "RuntimeDirectory=px", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "WatchdogSec="):
            self.assertIn(line, text)


class NotifyTest(unittest.TestCase):
    def test_pxd_notify_protocol(self):
        up = Upstream()
        mgr = Listener()
        pxd = Pxd(workers=2, routes=[route("r", "a.test", [up])],
                  env={"NOTIFY_SOCKET": mgr.path, "WATCHDOG_USEC": "200000"})
        try:
            ready = mgr.wait(lambda m: "READY=1" in m.split("\n"), "READY=1")
            self.assertIn("MAINPID=%d" % pxd.proc.pid, ready)
            self.assertIn("STATUS=serving generation", ready)
            self.assertEqual(get(pxd.port, host="a.test").status, 200)  # READY came once it serves
            n = sum(m == "WATCHDOG=1" for m in mgr.collect())
            wait_for(lambda: sum(m == "WATCHDOG=1" for m in mgr.collect()) >= n + 3, what="watchdog pings")
            # A reload: RELOADING=1 with the monotonic time, then READY=1 again.
            before = len(mgr.collect())
            pxd.signal(signal.SIGHUP)
            rel = wait_for(lambda: next((i for i, m in enumerate(mgr.collect()) if i >= before and
                                         m.startswith("RELOADING=1")), None), what="RELOADING=1")
            self.assertRegex(mgr.messages[rel], r"MONOTONIC_USEC=\d+")
            wait_for(lambda: any("READY=1" in m.split("\n") for m in mgr.collect()[rel + 1:]),
                     what="READY=1 after the reload")
            pxd.signal(signal.SIGTERM)
            mgr.wait(lambda m: m.startswith("STOPPING=1"), "STOPPING=1")
            pxd.wait_exit()
        finally:
            pxd.stop()
            up.kill()
            mgr.close()

    def test_pxadmind_notify_protocol(self):
        mgr = Listener()
        adm = Admind(env={"NOTIFY_SOCKET": mgr.path, "WATCHDOG_USEC": "200000"})
        try:
            mgr.wait(lambda m: m.startswith("READY=1"), "READY=1")
            wait_for(lambda: sum(m == "WATCHDOG=1" for m in mgr.collect()) >= 2, what="watchdog pings")
        finally:
            adm.stop()
        mgr.wait(lambda m: m.startswith("STOPPING=1"), "STOPPING=1")
        mgr.close()


if __name__ == "__main__":
    unittest.main()
