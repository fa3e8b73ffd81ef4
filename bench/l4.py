#!/usr/bin/env python3
"""L4 streams: px against HAProxy (mode tcp) and nginx (stream module), one run, same machine.

  bench/l4.py [--seconds N] [--rounds N]

The proxy under test is pinned to core 0 (one worker or thread); load and upstreams to core 1.
  throughput   iperf3 (Debian's), client → proxy → iperf3 -s; CPU seconds of the proxy per GiB moved
  short conns  bench/l4load.c: 64 at a time, each connect, 100 bytes each way, close; CPU µs per connection
  udp          bench/l4load.c: 64 sockets, 100-byte datagrams, one in flight each (HAProxy has no UDP)
Rounds are interleaved (px, haproxy, nginx, px, ...); the median round is reported, with ratios to the
best peer. Timing lives here, never in the tests.
"""
import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("pxbench", os.path.join(HERE, "run.py"))
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)
LOAD = None
UP = None


def build_load(d):
    out = os.path.join(d, "l4load")
    subprocess.run(["cc", "-O2", "-o", out, os.path.join(HERE, "l4load.c")], check=True)
    return out


class Upstreams:
    def __init__(self):
        self.iperf = pb.free_port()
        self.echo = pb.free_port()
        self.udp = pb.free_port()
        core = ["taskset", "-c", pb.LOAD_CORE]
        self.procs = [subprocess.Popen(core + ["iperf3", "-s", "-p", str(self.iperf)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL),
                      subprocess.Popen(core + [LOAD, "tcp-server", str(self.echo)]),
                      subprocess.Popen(core + [LOAD, "udp-server", str(self.udp)])]
        pb.wait_port(self.iperf)
        pb.wait_port(self.echo)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def start_px(up):
    d = os.path.join(pb.WORK, "px")
    os.makedirs(d, exist_ok=True)
    ports = {k: pb.free_port() for k in ("iperf", "echo", "udp")}
    for name, port, url in (("iperf", ports["iperf"], "tcp://127.0.0.1:%d" % up.iperf),
                            ("echo", ports["echo"], "tcp://127.0.0.1:%d" % up.echo),
                            ("udp", ports["udp"], "udp://127.0.0.1:%d" % up.udp)):
        s = {"name": name, "listen": "127.0.0.1:%d%s" % (port, "/udp" if name == "udp" else ""), "upstreams": [url],
             "access_log": False}
        subprocess.run([pb.PXSTORE, "--data", d + "/data", "put-stream", json.dumps(s)], check=True,
                       stdout=subprocess.DEVNULL)
    with open(d + "/pxd.conf", "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\ndata_dir %s/data\nlog_level warn\nmax_connections 40000\n"
                % (pb.free_port(), d))
    p = pb.Proc("px", [pb.PXD, "-c", d + "/pxd.conf"], ports["echo"], pb.PROXY_CORE)
    return p, ports


def start_haproxy(up):
    # HAProxy reserves two descriptors per connection of maxconn: size it to the open-file limit.
    maxconn = min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] // 2 - 200)
    d = os.path.join(pb.WORK, "haproxy")
    os.makedirs(d, exist_ok=True)
    ports = {"iperf": pb.free_port(), "echo": pb.free_port()}
    with open(d + "/haproxy.cfg", "w") as f:
        f.write("""global
  nbthread 1
  maxconn %d
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen iperf
  bind 127.0.0.1:%d
  server s1 127.0.0.1:%d
listen echo
  bind 127.0.0.1:%d
  server s1 127.0.0.1:%d
""" % (maxconn, ports["iperf"], up.iperf, ports["echo"], up.echo))
    return pb.Proc("haproxy", ["haproxy", "-db", "-f", d + "/haproxy.cfg"], ports["echo"], pb.PROXY_CORE), ports


def start_nginx(up):
    d = os.path.join(pb.WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    ports = {k: pb.free_port() for k in ("iperf", "echo", "udp")}
    with open(d + "/nginx.conf", "w") as f:
        f.write("""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 40000; }
stream {
  server { listen 127.0.0.1:%(pi)d backlog=4096; proxy_pass 127.0.0.1:%(ui)d; }
  server { listen 127.0.0.1:%(pe)d backlog=4096; proxy_pass 127.0.0.1:%(ue)d; }
  server { listen 127.0.0.1:%(pu)d udp; proxy_pass 127.0.0.1:%(uu)d; proxy_timeout 30s; }
}
""" % {"d": d, "pi": ports["iperf"], "ui": up.iperf, "pe": ports["echo"], "ue": up.echo, "pu": ports["udp"],
       "uu": up.udp})
    return pb.Proc("nginx", ["nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"], ports["echo"],
                   pb.PROXY_CORE, measure_child=True), ports


def core_busy(core):
    """A core's busy jiffies and all its jiffies so far (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%s " % core):
                v = [int(x) for x in line.split()[1:9]]
                return sum(v) - v[3] - v[4], sum(v)
    return 0, 1


def measure(proc, ports, seconds):
    pid = proc.pid()
    out = {}
    cpu0 = pb.cpu_seconds(pid)
    r = subprocess.run(["taskset", "-c", pb.LOAD_CORE, "iperf3", "-c", "127.0.0.1", "-p", str(ports["iperf"]),
                        "-t", str(seconds), "-J"], capture_output=True, text=True)
    cpu = pb.cpu_seconds(pid) - cpu0
    j = json.loads(r.stdout)
    moved = j["end"]["sum_received"]["bytes"]
    out["gbit_s"] = j["end"]["sum_received"]["bits_per_second"] / 1e9
    out["cpu_s_per_gib"] = cpu / (moved / (1 << 30))
    cpu0 = pb.cpu_seconds(pid)
    busy0 = core_busy(pb.LOAD_CORE)
    r = subprocess.run(["taskset", "-c", pb.LOAD_CORE, LOAD, "conns", str(ports["echo"]), "64", str(seconds)],
                       capture_output=True, text=True)
    cpu = pb.cpu_seconds(pid) - cpu0
    busy1 = core_busy(pb.LOAD_CORE)
    # The load side's core (the load generator and the echo upstream): when it is saturated, the rate
    # is its rate whatever the proxy does, and CPU per connection is what tells the proxies apart.
    out["load_core_busy"] = 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    rate, failed = r.stdout.split()
    out["conns_s"] = float(rate)
    out["conn_failed"] = int(failed)
    out["cpu_us_per_conn"] = cpu * 1e6 / max(1.0, float(rate) * seconds)
    if "udp" in ports:
        cpu0 = pb.cpu_seconds(pid)
        r = subprocess.run(["taskset", "-c", pb.LOAD_CORE, LOAD, "udp", str(ports["udp"]), "64", str(seconds)],
                           capture_output=True, text=True)
        cpu = pb.cpu_seconds(pid) - cpu0
        out["udp_dgram_s"] = float(r.stdout.split()[0])
        out["cpu_us_per_dgram"] = cpu * 1e6 / max(1.0, out["udp_dgram_s"] * seconds)
    return out


def paired(rounds, seconds):
    """Short connections with px and one peer served at the same moment: both proxies pinned to the proxy
    core, a load generator for each on the load core. The proxy core is then the limit, shared by the
    scheduler, and each proxy's rate says how much it does with its share; noise hits both alike."""
    ratios = {"haproxy": [], "nginx": []}
    for r in range(rounds):
        for name, start in (("haproxy", start_haproxy), ("nginx", start_nginx)):
            a, ap = start_px(UP)
            b, bp = start(UP)
            time.sleep(0.3)
            try:
                pids = (a.pid(), b.pid())
                cpu0 = [pb.cpu_seconds(x) for x in pids]
                runs = [subprocess.Popen(["taskset", "-c", pb.LOAD_CORE, LOAD, "conns", str(p["echo"]), "64",
                                          str(seconds)], stdout=subprocess.PIPE, text=True) for p in (ap, bp)]
                rates = [float(x.communicate()[0].split()[0]) for x in runs]
                cpu = [pb.cpu_seconds(x) - c for x, c in zip(pids, cpu0)]
            finally:
                a.stop()
                b.stop()
            us = [c * 1e6 / max(1.0, rt * seconds) for c, rt in zip(cpu, rates)]
            ratios[name].append((rates[0] / rates[1], us[0] / us[1]))
            print("paired round %d: px %.0f conn/s %.1f us, %s %.0f conn/s %.1f us" %
                  (r + 1, rates[0], us[0], name, rates[1], us[1]), file=sys.stderr)
    print()
    print("| at the same moment | px / peer: short connections/s | px / peer: CPU per connection |")
    print("| --- | ---: | ---: |")
    for name, rs in ratios.items():
        print("| px and %s | %.2f | %.2f |" % (name, statistics.median(x for x, _ in rs),
                                            statistics.median(y for _, y in rs)))


def main():
    global LOAD, UP
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paired", action="store_true",
                    help="only short connections, px and each peer loaded at the same moment")
    a = ap.parse_args()
    pb.WORK = tempfile.mkdtemp(prefix="pxbench-l4-")
    LOAD = build_load(pb.WORK)
    UP = up = Upstreams()
    if a.paired:
        try:
            paired(a.rounds, a.seconds)
        finally:
            up.stop()
        return
    results = {"px": [], "haproxy": [], "nginx": []}
    try:
        for _ in range(a.rounds):
            for name, start in (("px", start_px), ("haproxy", start_haproxy), ("nginx", start_nginx)):
                proc, ports = start(up)
                time.sleep(0.3)
                try:
                    results[name].append(measure(proc, ports, a.seconds))
                finally:
                    proc.stop()
                print(name, results[name][-1], file=sys.stderr)
    finally:
        up.stop()
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    print("| measure | px | HAProxy | nginx | px / best peer | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [("TCP throughput, Gbit/s (iperf3)", "gbit_s", True, "≥ 1.0"),
            ("CPU s per GiB", "cpu_s_per_gib", False, "≤ 1.0"),
            ("short connections/s (100 B each way)", "conns_s", True, "≥ 1.1"),
            ("CPU µs per short connection", "cpu_us_per_conn", False, ""),
            ("load core busy during short connections, %", "load_core_busy", None, ""),
            ("UDP datagrams/s (100 B)", "udp_dgram_s", True, "≥ 1.0 (nginx)"),
            ("CPU µs per datagram", "cpu_us_per_dgram", False, "")]
    for label, k, higher, target in rows:
        vals = {n: med[n].get(k) for n in med}
        peers = [v for n, v in vals.items() if n != "px" and v is not None]
        best = (max(peers) if higher else min(peers)) if peers and higher is not None else None
        fmt = lambda v: "-" if v is None else ("%.2f" % v if v < 100 else "%.0f" % v)
        ratio = "%.2f" % (vals["px"] / best) if best else "-"
        print("| %s | %s | %s | %s | %s | %s |" % (label, fmt(vals["px"]), fmt(vals["haproxy"]), fmt(vals["nginx"]),
                                                ratio, target))


if __name__ == "__main__":
    main()
