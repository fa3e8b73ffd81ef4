#!/usr/bin/env python3
"""Instructions per HTTP/2 request in pxd (user space), counted by callgrind: the HTTP/2 counterpart of
bench/instructions.py, deterministic where bench/h2's CPU times are not.

  bench/h2_instructions.py [--load CxM] [BUILD_DIR ...]     default: build/, 1x100

pxd (bench/h2.py's configuration: TLS, one worker, nginx upstream) runs under valgrind --tool=callgrind twice
per build, for h2load -cC -mM (1 x 100 unless --load) with 2,000 and 12,000 requests; the difference / 10,000 cancels start-up and
the TLS handshake.
"""
import os, re, subprocess, sys, tempfile, importlib.util

HERE = os.path.dirname(os.path.abspath(__file__))


# bench/h2.py by path: "h2" is also python3-h2's module name.
_spec = importlib.util.spec_from_file_location("px_h2", os.path.join(HERE, "h2.py"))
h2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(h2)
pb, tb = h2.pb, h2.tb  # its harness (bench/run.py) and TLS set-ups (bench/tls.py)


LOAD = (1, 100)


def measure(build, n, crt, key, up):
    pb.PXD = os.path.join(build, "src", "pxd")
    pb.PXSTORE = os.path.join(build, "src", "px-store")
    pb.WORK = tempfile.mkdtemp(prefix="pxh2insn-")
    proc = h2.start_px(up, crt, key)  # configured and started once to write its files, then stopped
    proc.stop()
    conf = os.path.join(pb.WORK, "px", "pxd.conf")
    out = os.path.join(pb.WORK, "cg.out")
    p = pb.Proc("px", ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, pb.PXD, "-c", conf],
                proc.port, pb.PROXY_CORE)
    r = subprocess.run(["h2load", "-n", str(n), "-c", str(LOAD[0]), "-m", str(LOAD[1]), "https://127.0.0.1:%d/" % proc.port],
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", r.stdout)
    if not m or int(m.group(1)) != n:
        raise RuntimeError("h2load: " + r.stdout[-600:])
    p.stop()
    return int(re.search(r"^summary: (\d+)", open(out).read(), re.M).group(1))


def main():
    global LOAD
    args = sys.argv[1:]
    if args[:1] == ["--load"]:
        LOAD = tuple(int(x) for x in args[1].split("x"))
        args = args[2:]
    builds = args or [os.path.join(HERE, "..", "build")]
    pb.WORK = tempfile.mkdtemp(prefix="pxh2insn-")
    crt, key = tb.make_cert(pb.WORK)
    up = tb.start_upstream(os.path.join(pb.WORK, "upstream"))
    try:
        for b in builds:
            a, z = measure(b, 2000, crt, key, up), measure(b, 12000, crt, key, up)
            print("%s: instructions per HTTP/2 request (%dx%d, TLS): %.0f" % (b, LOAD[0], LOAD[1], (z - a) / 10000.0),
                  flush=True)
    finally:
        up.stop()


if __name__ == "__main__":
    main()
