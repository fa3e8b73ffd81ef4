#!/usr/bin/env python3
"""Fleet mode (pxadmind --etcd): a real three-member etcd cluster (Debian's etcd-server, data on tmpfs, TLS with
client certificates) and three px hosts on this machine, as tests/integration/test_fleet.py sets them up.

  bench/fleet.py [--changes N] [--routes N] [--idle S] [--load S]

1. propagation: a route added on host A (the API call, which returns once etcd committed it and A applied it),
   until it serves on hosts B and C (their pxd polled every millisecond): p50 and p99 over N changes.
2. initial sync: --routes routes in the fleet (written into etcd in batches); a new host with an empty store
   starts: the time from pxadmind's start to its first answer with every route applied, and to pxd serving
   the last of them.
3. idle follower: pxadmind's CPU (utime+stime) over --idle seconds while nothing changes, in % of a core.
4. data plane under changes: wrk against host B's pxd (1 worker), quiet against while host A takes 50 changes
   per second; interleaved rounds, medians of requests/s and of pxd's CPU per request, the ratios. In two
   layouts: "host" (core 0 is host B's machine: its pxd and pxadmind, wrk and the upstream; core 1 is the rest
   of the fleet, etcd and hosts A and C, as other machines), and "shared" (B's pxd alone on core 0; wrk and
   the upstream on core 1 with etcd and every pxadmind, so that the fleet's work takes the load generator's
   CPU).
"""
import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pxtest import Upstream, get, wait_for  # noqa: E402
from test_fleet import Etcd, Host  # noqa: E402

sys.path.insert(0, HERE)
import run as pb  # noqa: E402  (the nginx upstream answering 12 bytes)
from admin import pct, wrk_rps  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def propagation(hosts, up, n):
    a, b, c = hosts
    lat = []
    for i in range(n):
        name = "prop%d.bench" % i
        t0 = time.monotonic()
        s, _, body = a.adm.api("POST", "/v1/routes", {"name": "prop-%d" % i, "hosts": [name], "upstreams": [up.url]})
        assert s == 201, body
        for h in (b, c):
            while get(h.pxd.port, "/", host=name).status != 200:
                time.sleep(0.001)
        lat.append((time.monotonic() - t0) * 1000)
    return lat


def seed_routes(etcd, up, n):
    """n routes straight into etcd, as pxadmind writes them, 500 keys per transaction."""
    import http.client
    import ssl
    cert, key = etcd.pki.leaf("bench-seeder")
    ctx = ssl.create_default_context(cafile=etcd.pki.ca_file)
    ctx.load_cert_chain(cert, key)
    port = etcd.client_ports[etcd.names[0]]
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    for start in range(0, n, 500):
        ops = []
        for i in range(start, min(n, start + 500)):
            r = {"name": "r%05d" % i, "hosts": ["r%05d.bench" % i], "upstreams": [{"url": up.url, "weight": 1}],
                 "enabled": True, "version": 1}
            ops.append({"request_put": {"key": b64("/px/edge/route:r%05d" % i), "value": b64(json.dumps(r))}})
        conn.request("POST", "/v3/kv/txn", json.dumps({"success": ops}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = resp.read()
        assert resp.status == 200, out
        rev = int(json.loads(out)["header"]["revision"])
    return rev


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=500)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--load", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not os.environ.get("PX_SKIP_DEPS"):
        subprocess.run([os.path.join(ROOT, "scripts", "deps"), "run", "build", "test", "bench"], check=True)
    etcd = Etcd(extra=["--max-request-bytes", str(8 << 20)])
    up = Upstream("fleet-bench")
    hosts = [Host(etcd, n, ttl=30) for n in ("edge-1", "edge-2", "edge-3")]
    try:
        lat = propagation(hosts, up, args.changes)
        print("propagation A -> B and C, %d changes: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (len(lat), pct(lat, 0.5), pct(lat, 0.99), max(lat)), flush=True)

        for i in range(args.changes):  # back to a small fleet for the data-plane rounds
            hosts[0].adm.api("DELETE", "/v1/routes/prop-%d" % i)

        a, b, c = hosts
        pb.WORK = etcd.dir
        nginx = pb.start_upstream()
        a.adm.ctl("route", "add", "load", "--host", "load.bench", "--upstream", "http://127.0.0.1:%d" % nginx.port)
        wait_for(lambda: get(b.pxd.port, "/", host="load.bench").status == 200, what="the load route on B")
        rest = list(etcd.procs.values()) + [a.adm.proc, c.adm.proc, a.pxd.proc, c.pxd.proc]
        # Two layouts on this 2-core machine. "host": core 0 is host B's machine (its pxd and pxadmind, and
        # wrk and the upstream, which load it the same in both phases); core 1 is the rest of the fleet, the
        # etcd cluster and hosts A and C, as other machines would be. "shared": B's pxd alone on core 0, and
        # everything else, wrk included, on core 1 with etcd and the other hosts, so that their work under
        # changes takes CPU from the load generator.
        layouts = {"host": ([b.pxd.proc, b.adm.proc, nginx], rest),
                   "shared": ([b.pxd.proc], rest + [b.adm.proc, nginx])}
        def pids(p):  # a process, or nginx: its master and its worker
            return [p.pid] if hasattr(p, "poll") else [p.p.pid] + pb.children(p.p.pid)

        for layout, (core0, core1) in layouts.items():
            for core, procs in (("0", core0), ("1", core1)):
                for p in procs:
                    for pid in pids(p):
                        subprocess.run(["taskset", "-apc", core, str(pid)], capture_output=True)
            wrk_core = "0" if layout == "host" else "1"
            quiet, busy, quiet_cpu, busy_cpu, rates = [], [], [], [], []
            # What each process of the fleet spends per change (CPU over a busy round / the changes made).
            watched = {"etcd " + m: p for m, p in etcd.procs.items()}
            watched.update({"pxadmind " + h.name: h.adm.proc for h in hosts})
            watched.update({"pxd " + h.name: h.pxd.proc for h in hosts if h is not b})  # B's serves the load
            per_change = {k: [] for k in watched}

            def measured(rows, cpus):
                c0 = cpu_seconds(b.pxd.proc.pid)
                rps = wrk_rps(b.pxd.port, "load.bench", args.load, core=wrk_core, connections=32)
                rows.append(rps)
                cpus.append((cpu_seconds(b.pxd.proc.pid) - c0) * 1e6 / (rps * args.load))

            for r in range(args.rounds):
                measured(quiet, quiet_cpu)
                stop = []
                done = [0]

                def churn():
                    i = 0
                    next_t = time.monotonic()
                    while not stop:
                        a.adm.api("PUT", "/v1/routes/churn", {"name": "churn", "hosts": ["churn.bench"],
                                                              "upstreams": [up.url], "max_body_size": 1000 + i})
                        i += 1
                        done[0] += 1
                        next_t += 0.02
                        time.sleep(max(0, next_t - time.monotonic()))
                t = threading.Thread(target=churn)
                cpu0 = {k: cpu_seconds(p.pid) for k, p in watched.items()}
                t.start()
                t0 = time.monotonic()
                measured(busy, busy_cpu)
                rates.append(done[0] / (time.monotonic() - t0))
                stop.append(1)
                t.join()
                for k, p in watched.items():
                    per_change[k].append((cpu_seconds(p.pid) - cpu0[k]) * 1000 / max(1, done[0]))
            med = statistics.median
            print("data plane on B (layout %s): quiet %.0f req/s at %.2f us of pxd CPU per request; with the fleet "
                  "taking %.0f changes/s %.0f req/s at %.2f us: requests/s ratio %.3f, CPU per request ratio %.3f"
                  % (layout, med(quiet), med(quiet_cpu), med(rates), med(busy), med(busy_cpu),
                     med(busy) / med(quiet), med(busy_cpu) / med(quiet_cpu)), flush=True)
            print("  CPU per change (medians over the rounds; host A writes): " +
                  ", ".join("%s %.2f ms" % (k, med(v)) for k, v in per_change.items()), flush=True)
        nginx.stop()

        pid = b.adm.proc.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
        print("idle follower: pxadmind %.3f%% of a core over %.0f s" % (idle, args.idle), flush=True)

        rev = seed_routes(etcd, up, args.routes)
        wait_for(lambda: a.status()["fleet"]["applied_revision"] >= rev, timeout=120,
                 what="host A to apply the seeded routes")
        d = Host(etcd, "edge-4", ttl=30, start_admind=False)
        t0 = time.monotonic()
        d.start_admind()  # returns at "pxadmind ready", after the initial resync
        ready = time.monotonic() - t0
        m = re.search(r"resynchronised (\d+) keys", d.adm.log())
        last = "r%05d.bench" % (args.routes - 1)
        wait_for(lambda: get(d.pxd.port, "/", host=last).status == 200, timeout=120, what="the new host's pxd")
        served = time.monotonic() - t0
        print("initial sync of %s keys into an empty host: pxadmind ready in %.2f s, its pxd serving the last "
              "route in %.2f s" % (m.group(1) if m else "?", ready, served), flush=True)
        d.close()
    finally:
        for h in hosts:
            h.close()
        up.stop()
        etcd.close()


if __name__ == "__main__":
    main()
