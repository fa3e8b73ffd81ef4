"""pxd.conf io_engine (issue 26): auto runs io_uring where the kernel does and falls back to epoll where it does
not (here: a seccomp filter refusing io_uring_setup, as a container's or systemd's can), the log naming the engine
and why; uring where there is none refuses to start, naming the directive. Every other test runs on the engine
tests/run_integration.py gives it (PX_IO_ENGINE)."""
import ctypes
import os
import subprocess
import unittest

from pxtest import DEADLINE, PXD, Pxd, Upstream, get, route, wait_for

NR_IO_URING_SETUP = 425  # the same on x86-64 and arm64 (the common table)
ENOSYS = 38


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def no_io_uring():
    """In the child, before exec: io_uring_setup fails with ENOSYS, everything else is allowed."""
    prog = (SockFilter * 4)(
        SockFilter(0x20, 0, 0, 0),                      # ld [nr]
        SockFilter(0x15, 0, 1, NR_IO_URING_SETUP),      # jeq io_uring_setup ? next : +1
        SockFilter(0x06, 0, 0, 0x00050000 | ENOSYS),    # ret ERRNO(ENOSYS)
        SockFilter(0x06, 0, 0, 0x7FFF0000))             # ret ALLOW
    fprog = SockFprog(len(prog), prog)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        os._exit(120)
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        os._exit(121)


def io_uring_runs_here():
    r = subprocess.run(["sh", "-c", "test -r /proc/sys/kernel/io_uring_disabled && cat "
                        "/proc/sys/kernel/io_uring_disabled || echo 0"], capture_output=True, text=True)
    return r.stdout.strip() in ("0", "")


class IoEngineTest(unittest.TestCase):
    def setUp(self):
        self.up = Upstream("e1")
        self.addCleanup(self.up.kill)

    def serve(self, pxd):
        self.addCleanup(pxd.stop)
        pxd.put_route(route("e", "e.test", [self.up]))
        r = get(pxd.port, host="e.test")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["id"], "e1")

    def test_auto_falls_back_to_epoll_when_io_uring_is_refused_and_says_why(self):
        pxd = Pxd(workers=2, extra="io_engine auto\n", preexec=no_io_uring)
        self.serve(pxd)
        self.assertIn("io engine: epoll (io_engine auto: io_uring_setup: Function not implemented)", pxd.log())

    @unittest.skipUnless(io_uring_runs_here(), "kernel.io_uring_disabled is set on this machine")
    def test_auto_runs_io_uring_where_the_kernel_does(self):
        pxd = Pxd(workers=2, extra="io_engine auto\n")
        self.serve(pxd)
        self.assertIn("io engine: io_uring (io_engine auto)", pxd.log())

    def test_uring_without_io_uring_refuses_to_start_naming_the_directive(self):
        pxd = Pxd(extra="io_engine uring\n", start=False)
        r = subprocess.run([PXD, "-c", pxd.conf], capture_output=True, text=True, timeout=DEADLINE,
                           preexec_fn=no_io_uring)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("%s: io_engine uring: io_uring_setup: Function not implemented" % pxd.conf, r.stdout + r.stderr)

    def test_the_default_is_auto(self):
        pxd = Pxd(start=False)
        with open(pxd.conf) as f:  # (the suite's own io_engine line, if any, taken out)
            conf = "".join(line for line in f if not line.startswith("io_engine"))
        with open(pxd.conf, "w") as f:
            f.write(conf)
        pxd.preexec = no_io_uring
        pxd.start()
        self.serve(pxd)
        self.assertIn("io engine: epoll (io_engine auto:", pxd.log())


if __name__ == "__main__":
    unittest.main()
