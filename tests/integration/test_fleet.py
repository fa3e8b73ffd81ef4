"""Fleet mode: px hosts on one configuration through a real three-member etcd cluster (Debian's etcd-server)
on loopback ports chosen at run time, TLS with client certificates. Each host is a real pxadmind and pxd with
a data directory of its own."""
import datetime
import json
import os
import re
import socket
import ssl
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
import ipaddress

from l4peers import hold_port
from pxtest import DEADLINE, PXADMIND, Admind, Pxd, Upstream, free_port, get, wait_for, wrk

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class Pki:
    """A CA, one certificate for the etcd members (127.0.0.1) and one client certificate per host."""

    def __init__(self, d):
        self.dir = d
        now = datetime.datetime.utcnow()
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "px fleet test CA")])
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = self.write("ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def leaf(self, cn, ca=None, ca_key=None, subject_cn=True):
        """(cert file, key file) for cn, valid for 127.0.0.1, for servers and clients. Without subject_cn the
        subject is empty (what etcd's JSON gateway needs of client certificates when authentication is on)."""
        now = datetime.datetime.utcnow()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if subject_cn else []))
                .issuer_name((ca or self.ca).subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key or self.ca_key, hashes.SHA256()))
        return (self.write(cn + ".pem", cert.public_bytes(serialization.Encoding.PEM)),
                self.write(cn + "-key.pem", key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption())))


class Etcd:
    """Three etcd members on 127.0.0.1: clients over TLS with client certificates (peers in cleartext on
    loopback). Data on tmpfs when there is one: the tests are about px, not about disks."""

    def __init__(self, n=3, extra=()):
        self.extra = list(extra)
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="pxetcd-", dir=base)
        self.pki = Pki(self.dir)
        self.cert, self.key = self.pki.leaf("etcd")
        self.names = ["m%d" % i for i in range(1, n + 1)]
        self.client_ports = {m: free_port() for m in self.names}
        self.peer_ports = {m: free_port() for m in self.names}
        self.cluster = ",".join("%s=http://127.0.0.1:%d" % (m, self.peer_ports[m]) for m in self.names)
        self.procs = {}
        self.fleet_key = os.path.join(self.dir, "fleet.key")
        with open(self.fleet_key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        for m in self.names:
            self.start(m, "new")
        wait_for(self.healthy, what="the etcd cluster to be healthy")

    def url(self, m):
        return "https://127.0.0.1:%d" % self.client_ports[m]

    def endpoints(self):
        return ",".join(self.url(m) for m in self.names)

    def start(self, m, state="existing"):
        logf = open(os.path.join(self.dir, m + ".log"), "ab")
        self.procs[m] = subprocess.Popen(
            [ETCD, "--name", m, "--data-dir", os.path.join(self.dir, m),
             "--listen-client-urls", self.url(m), "--advertise-client-urls", self.url(m),
             "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer_ports[m],
             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % self.peer_ports[m],
             "--initial-cluster", self.cluster, "--initial-cluster-state", state,
             "--initial-cluster-token", os.path.basename(self.dir),
             "--cert-file", self.cert, "--key-file", self.key, "--client-cert-auth",
             "--trusted-ca-file", self.pki.ca_file, "--logger", "zap", "--log-level", "error",
             "--max-txn-ops", "1024"] + self.extra,
            stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

    def ctl(self, *args, endpoints=None):
        admin_cert, admin_key = getattr(self, "_ctl_cert", (None, None))
        if not admin_cert:
            admin_cert, admin_key = self._ctl_cert = self.pki.leaf("etcdctl")
        user = ["--user", self.root] if getattr(self, "root", None) else []
        return subprocess.run([ETCDCTL, "--endpoints", endpoints or self.endpoints(), "--cacert", self.pki.ca_file,
                               "--cert", admin_cert, "--key", admin_key, "--command-timeout", "10s"] + user +
                              list(args),
                              capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"))

    def healthy(self):
        return self.ctl("endpoint", "health").returncode == 0

    def stop(self, m=None, sig=signal.SIGTERM):
        for name in ([m] if m else list(self.procs)):
            p = self.procs.pop(name, None)
            if p and p.poll() is None:
                p.send_signal(sig)
                try:
                    p.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def restart_all(self):
        for m in self.names:
            if m not in self.procs:
                self.start(m)
        wait_for(self.healthy, what="the etcd cluster to be healthy again")

    def leader(self):
        """The member that leads now (None while there is none)."""
        for m in list(self.procs):
            r = self.ctl("endpoint", "status", "-w", "json", endpoints=self.url(m))
            if r.returncode != 0:
                continue
            st = json.loads(r.stdout)[0]["Status"]
            if st["leader"] == st["header"]["member_id"]:
                return m
        return None

    def fleet_revision(self, fleet="edge"):
        """The revision of the fleet's last write through px (its serial key's)."""
        out = json.loads(self.ctl("get", "/px/%s.serial" % fleet, "-w", "json").stdout)
        return int(out["kvs"][0]["mod_revision"]) if out.get("kvs") else 0

    def revision(self):
        out = json.loads(self.ctl("endpoint", "status", "-w", "json", endpoints=self.url(self.names[0])).stdout)
        return out[0]["Status"]["header"]["revision"]

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Host:
    """One px host of the fleet: a pxd and a pxadmind on the same data directory."""

    def __init__(self, etcd, name, args=(), start_admind=True, subject_cn=True, ttl=3, fleet_key=None):
        self.etcd, self.name, self.extra, self.ttl = etcd, name, list(args), ttl
        self.fleet_key = fleet_key or etcd.fleet_key
        self.cert, self.key = etcd.pki.leaf(name, subject_cn=subject_cn)
        self.pxd = Pxd(workers=1, extra="listen 127.0.0.1:0 tls\n")
        self.tls_port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", self.pxd.log()).group(1))
        self.adm = None
        if start_admind:
            self.start_admind()

    def argv(self):
        return ["--etcd", self.etcd.endpoints(), "--etcd-ca", self.etcd.pki.ca_file, "--etcd-cert", self.cert,
                "--etcd-key", self.key, "--fleet-name", "edge", "--host-name", self.name,
                "--fleet-host-ttl", str(self.ttl), "--fleet-key", self.fleet_key] + self.extra

    def start_admind(self):
        if self.adm:
            self.adm.start()
        else:
            self.adm = Admind(data=self.pxd.data, pxd_status=self.pxd.status_file, args=self.argv())

    def export(self):
        r = self.adm.ctl("export")
        assert r.returncode == 0, r.stderr
        return r.stdout

    def status(self):
        return self.adm.api("GET", "/v1/status")[2]

    def close(self):
        if self.adm:
            self.adm.stop()
        self.pxd.stop()


class FleetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.etcd = Etcd()
        cls.up = Upstream("fleet-up")
        cls.hosts = [Host(cls.etcd, n) for n in ("edge-1", "edge-2", "edge-3")]

    @classmethod
    def tearDownClass(cls):
        for h in cls.hosts:
            h.close()
        cls.up.stop()
        cls.etcd.close()

    def converged(self):
        """Every host's export once each applied the fleet's last write: the same, byte for byte."""
        rev = self.etcd.fleet_revision()
        for h in self.hosts:
            wait_for(lambda: h.status()["fleet"]["applied_revision"] >= rev, what=h.name + " to catch up")
        exports = [h.export() for h in self.hosts]
        self.assertEqual(exports[0], exports[1])
        self.assertEqual(exports[0], exports[2])
        return exports

    def serves(self, host, name):
        return get(host.pxd.port, "/", host=name).status == 200

    def test_a_route_added_on_one_host_serves_on_every_host(self):
        a, b, c = self.hosts
        r = a.adm.ctl("route", "add", "shop", "--host", "shop.fleet.test", "--upstream", self.up.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        # applied on the writing host, and served by its pxd, by the time pxctl returned
        self.assertEqual(a.adm.ctl("route", "show", "shop").returncode, 0)
        self.assertTrue(self.serves(a, "shop.fleet.test"))
        for h in (b, c):
            wait_for(lambda: self.serves(h, "shop.fleet.test"), what="the route on " + h.name)
        self.assertEqual(b.adm.ctl("route", "rm", "shop").returncode, 0)
        for h in (a, c):
            wait_for(lambda: get(h.pxd.port, "/", host="shop.fleet.test").status == 404,
                     what="the removal on " + h.name)
        # the etcd copy is the hosts' copy
        keys = self.etcd.ctl("get", "/px/edge/", "--prefix", "--keys-only").stdout.split()
        self.assertNotIn("/px/edge/route:shop", keys)
        self.assertIn("/px/edge/meta:audit_seq", keys)

    def test_concurrent_writers_on_three_hosts_conflict_with_409_and_converge(self):
        results = {}

        def writer(h):
            mine, shared = [], []
            for i in range(150):
                # a name of its own: always taken
                s, _, _ = h.adm.api("POST", "/v1/routes", {"name": "w-%s-%d" % (h.name, i), "hosts": [
                    "w%d.%s.test" % (i, h.name)], "upstreams": [self.up.url]})
                mine.append(s)
                # a name the three race for: one wins, the others get 409
                s, _, body = h.adm.api("POST", "/v1/routes", {"name": "race-%d" % i, "hosts": [
                    "race%d.test" % i], "upstreams": [self.up.url], "filters": [
                    {"name": "headers", "config": {"response": {"set": {"x-writer": h.name}}}}]})
                shared.append((s, body))
            results[h.name] = (mine, shared)

        threads = [threading.Thread(target=writer, args=(h,)) for h in self.hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in self.hosts:
            mine, shared = results[h.name]
            self.assertEqual(set(mine), {201}, h.name)
            self.assertTrue({s for s, _ in shared} <= {201, 409}, [s for s, _ in shared])
        winners = {}
        for i in range(150):
            won = [h.name for h in self.hosts if results[h.name][1][i][0] == 201]
            self.assertEqual(len(won), 1, "race-%d was created by %s" % (i, won))
            winners["race-%d" % i] = won[0]
            for h in self.hosts:
                s, body = results[h.name][1][i]
                if s == 409:
                    self.assertEqual(body["error"]["field"], "name", body)
        # every host converges on the same configuration, which is etcd's
        exports = self.converged()
        doc = json.loads(exports[0])
        routes = {r["name"]: r for r in doc["routes"]}
        for h in self.hosts:
            for i in range(150):
                self.assertIn("w-%s-%d" % (h.name, i), routes)  # no acknowledged write is lost
        for name, who in winners.items():
            self.assertEqual(routes[name]["filters"][0]["config"]["response"]["set"]["x-writer"], who)
        for h in self.hosts:
            h.adm.api("DELETE", "/v1/routes/race-0")

    def test_etcd_down_serves_the_last_configuration_refuses_writes_and_catches_up(self):
        a, b, c = self.hosts
        self.assertEqual(a.adm.ctl("route", "add", "keep", "--host", "keep.fleet.test", "--upstream",
                                   self.up.url).returncode, 0)
        for h in self.hosts:
            wait_for(lambda: self.serves(h, "keep.fleet.test"), what="the route on " + h.name)
        gens = [h.status()["generation"] for h in self.hosts]
        self.etcd.stop()
        try:
            for h in self.hosts:
                wait_for(lambda: not h.status()["fleet"]["etcd"]["reachable"], what=h.name + " to see etcd gone")
            # serving goes on, under load, without a failed request
            reqs, errors, non2xx, out = wrk(b.pxd.port, "keep.fleet.test", seconds=2, connections=4)
            self.assertGreater(reqs, 0, out)
            self.assertEqual((errors, non2xx), (0, 0), out)
            # writes are refused, naming etcd, and nothing changes
            s, _, body = c.adm.api("POST", "/v1/routes", {"name": "lost", "hosts": ["lost.test"],
                                                          "upstreams": [self.up.url]})
            self.assertEqual(s, 503, body)
            self.assertIn("etcd", body["error"]["message"])
            r = c.adm.ctl("route", "add", "lost2", "--host", "lost2.test", "--upstream", self.up.url)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("etcd", r.stderr)
            self.assertEqual([h.status()["generation"] for h in self.hosts], gens)
            st = c.status()["fleet"]
            self.assertIn("127.0.0.1", st["etcd"]["last_error"])
            self.assertIn("etcd unreachable since", c.adm.ctl("status").stdout)
            self.assertIn("etcd unreachable since", c.adm.ctl("fleet", "status").stdout)
            # a restarted pxadmind serves its last configuration too
            c.adm.stop()
            c.start_admind()
            self.assertIn("keep", c.adm.ctl("route", "list").stdout)
            self.assertTrue(self.serves(c, "keep.fleet.test"))
        finally:
            self.etcd.restart_all()
        for h in self.hosts:
            wait_for(lambda: h.status()["fleet"]["etcd"]["reachable"], what=h.name + " to see etcd back")
        self.assertEqual(b.adm.ctl("route", "add", "after", "--host", "after.fleet.test", "--upstream",
                                   self.up.url).returncode, 0)
        for h in self.hosts:
            wait_for(lambda: self.serves(h, "after.fleet.test"), what="a write after etcd came back on " + h.name)

    def test_a_host_that_missed_a_compacted_history_resynchronises(self):
        a, b, c = self.hosts
        c.adm.stop()
        for i in range(5):
            self.assertEqual(a.adm.ctl("route", "add", "gone-%d" % i, "--host", "gone%d.fleet.test" % i,
                                       "--upstream", self.up.url).returncode, 0)
        for i in range(5):
            self.assertEqual(a.adm.ctl("route", "rm", "gone-%d" % i).returncode, 0)
        self.assertEqual(a.adm.ctl("route", "add", "late", "--host", "late.fleet.test", "--upstream",
                                   self.up.url).returncode, 0)
        rev = self.etcd.revision()
        r = self.etcd.ctl("compaction", str(rev))
        self.assertEqual(r.returncode, 0, r.stderr)
        c.start_admind()
        wait_for(lambda: self.serves(c, "late.fleet.test"), what="the restarted host to resynchronise")
        wait_for(lambda: c.status()["fleet"]["resyncs"] >= 1, what="a resync to be counted")
        self.assertIn("compacted", c.adm.log())
        self.assertEqual(c.export(), a.export())


    def fleet(self, h):
        r = h.adm.ctl("--json", "fleet", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_fleet_status_lists_every_live_host_and_forgets_a_stopped_one(self):
        a, b, c = self.hosts
        self.assertEqual(a.adm.ctl("route", "add", "st", "--host", "st.fleet.test", "--upstream",
                                   self.up.url).returncode, 0)

        def view():
            f = self.fleet(b)
            return {h["host"]: h for h in f["hosts"]}, f

        def all_synced():
            hosts, f = view()
            return (set(hosts) == {"edge-1", "edge-2", "edge-3"} and
                    all(h["lag"] == 0 and h["pxd"][0]["in_sync"] and h["etcd"]["reachable"] for h in hosts.values()))
        wait_for(all_synced, what="every host published, in sync, with no lag")
        hosts, f = view()
        self.assertEqual(f["self"]["host"], "edge-2")
        self.assertGreater(f["revision"], 0)
        self.assertEqual(hosts["edge-1"]["applied_revision"], f["revision"])
        r = b.adm.ctl("fleet", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = r.stdout
        self.assertIn("etcd reachable since", text)
        for name in ("edge-1", "edge-2", "edge-3"):
            self.assertIn(name, text)
        c.adm.stop()
        try:
            wait_for(lambda: "edge-3" not in view()[0], what="the stopped host to leave fleet status")
        finally:
            c.start_admind()
        wait_for(lambda: "edge-3" in view()[0], what="the restarted host to come back")
        # on its own, pxadmind says it is in no fleet
        alone = Admind()
        try:
            r = alone.ctl("fleet", "status")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("not in a fleet", r.stderr)
        finally:
            alone.stop()

    def test_a_certificate_added_on_one_host_serves_on_every_host_and_its_key_is_sealed_in_etcd(self):
        a, b, c = self.hosts
        crt, key = self.etcd.pki.leaf("secure.fleet.test")
        # the leaf above is for 127.0.0.1 and localhost; one for a name, from the same test CA
        now = datetime.datetime.utcnow()
        k = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.etcd.pki.ca.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.fleet.test")]), critical=False)
                .sign(self.etcd.pki.ca_key, hashes.SHA256()))
        crt = self.etcd.pki.write("secure.pem", cert.public_bytes(serialization.Encoding.PEM))
        key = self.etcd.pki.write("secure-key.pem", k.private_bytes(serialization.Encoding.PEM,
                                                                    serialization.PrivateFormat.PKCS8,
                                                                    serialization.NoEncryption()))
        r = a.adm.ctl("cert", "add", "secure", "--cert", crt, "--key", key)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(a.adm.ctl("route", "add", "secure", "--host", "secure.fleet.test", "--upstream",
                                   self.up.url, "--tls", "secure").returncode, 0)

        def https_ok(h):
            ctx = ssl.create_default_context(cafile=self.etcd.pki.ca_file)
            try:
                with socket.create_connection(("127.0.0.1", h.tls_port), timeout=DEADLINE) as s:
                    with ctx.wrap_socket(s, server_hostname="secure.fleet.test") as t:
                        t.sendall(b"GET / HTTP/1.1\r\nHost: secure.fleet.test\r\nConnection: close\r\n\r\n")
                        return t.recv(100).startswith(b"HTTP/1.1 200")
            except (OSError, ssl.SSLError):
                return False
        for h in self.hosts:
            wait_for(lambda: https_ok(h), what="the certificate to serve on " + h.name)
        raw = self.etcd.ctl("get", "/px/edge/cert:secure", "--print-value-only").stdout
        self.assertTrue(raw.startswith("pxenc1:"), raw[:80])
        self.assertNotIn("PRIVATE KEY", raw)
        # a host with another fleet key applies the routes and refuses the sealed secrets, naming why
        other_key = os.path.join(self.etcd.dir, "other.key")
        with open(other_key, "w") as f:
            f.write(os.urandom(32).hex())
        d = Host(self.etcd, "edge-x", fleet_key=other_key)
        try:
            wait_for(lambda: get(d.pxd.port, "/", host="shop-never.test").status == 404, what="d to serve")
            st = d.status()["fleet"]
            self.assertIn("cert:secure", st["rejected"])
            self.assertIn("another fleet key", st["rejected"]["cert:secure"])
            self.assertIn("secure", d.adm.ctl("route", "list").stdout)
        finally:
            d.close()
        # without a key file, no fleet
        argv = a.argv()
        i = argv.index("--fleet-key")
        p = subprocess.run([PXADMIND, "-d", a.pxd.data, "-s", os.path.join(a.pxd.dir, "y.sock")] +
                           argv[:i] + argv[i + 2:], capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--fleet-key", p.stderr)
        for h in (a,):
            h.adm.ctl("route", "rm", "secure")
            h.adm.ctl("cert", "rm", "secure")

    def test_a_stream_or_route_that_cannot_serve_is_reported_per_host(self):
        a, b, c = self.hosts
        holder, port = hold_port()
        try:
            r = a.adm.ctl("stream", "add", "held", "--listen", "127.0.0.1:%d" % port, "--upstream", "tcp://10.0.0.1:1")
            self.assertEqual(r.returncode, 0, r.stderr)

            def reported():
                hosts = {h["host"]: h for h in self.fleet(b)["hosts"]}
                return all("held" in hosts.get(n, {"pxd": [{}]})["pxd"][0].get("stream_errors", {})
                           for n in ("edge-1", "edge-2", "edge-3"))
            wait_for(reported, what="every host to report the stream it cannot open")
            self.assertIn("stream held:", b.adm.ctl("fleet", "status").stdout)
            # Any host lists every host's error with the stream: its own pxd's, and the others' as published.
            listed = json.loads(c.adm.ctl("--json", "stream", "show", "held").stdout)["errors"]
            self.assertEqual(sorted(e["host"] for e in listed), ["edge-1", "edge-2", "edge-3"])
            self.assertTrue(all("in use" in e["error"] for e in listed), listed)
            self.assertEqual([e["pxd"] for e in listed if e["host"] == "edge-3"], [c.pxd.status_file])
            self.assertIn("edge-2: ", c.adm.ctl("stream", "list").stdout)
        finally:
            holder.close()
            a.adm.ctl("stream", "rm", "held")
        # A route that cannot serve: one written into etcd by hand claims another's host. Each value is valid
        # on its own, so every host applies it; every pxd keeps the first by name and says why the other is not
        # served, and route list shows that per host.
        r = a.adm.ctl("route", "add", "claimed", "--host", "claimed.fleet.test", "--upstream", self.up.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        route = {"name": "claimer", "hosts": ["claimed.fleet.test"], "upstreams": [self.up.url], "enabled": True}
        self.assertEqual(self.etcd.ctl("put", "/px/edge/route:claimer", json.dumps(route)).returncode, 0)
        try:
            def route_errors():
                for r in json.loads(b.adm.ctl("--json", "route", "list").stdout):
                    if r["name"] == "claimer":
                        return sorted(e["host"] for e in r.get("errors", [])) == ["edge-1", "edge-2", "edge-3"]
                return False
            wait_for(route_errors, what="every host's error with the route")
            listed = b.adm.ctl("route", "list").stdout
            self.assertIn("edge-3: host claimed.fleet.test path / is already served by route claimed; ignored", listed)
            for h in self.hosts:
                self.assertTrue(self.serves(h, "claimed.fleet.test"))
            self.assertNotIn("errors", json.loads(b.adm.ctl("route", "show", "claimed").stdout))
        finally:
            self.etcd.ctl("del", "/px/edge/route:claimer")
            a.adm.ctl("route", "rm", "claimed")

    def test_a_key_written_by_hand_that_does_not_validate_is_refused_and_reported(self):
        a, b, c = self.hosts
        r = self.etcd.ctl("put", "/px/edge/route:bad", '{"name":"bad","hosts":["bad.fleet.test"],"upstreams":"nope"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        route = {"name": "byhand", "hosts": ["byhand.fleet.test"], "upstreams": [self.up.url], "enabled": True}
        self.assertEqual(self.etcd.ctl("put", "/px/edge/route:byhand", json.dumps(route)).returncode, 0)
        for h in self.hosts:
            wait_for(lambda: self.serves(h, "byhand.fleet.test"), what="the valid key on " + h.name)
            st = h.status()["fleet"]
            self.assertIn("route:bad", st["rejected"])
            self.assertIn("upstreams", st["rejected"]["route:bad"])
            self.assertNotIn("bad", h.adm.ctl("route", "list").stdout.split())
            self.assertIn("etcd key /px/edge/route:bad refused", h.adm.log())
        # deleting it clears the report
        self.assertEqual(self.etcd.ctl("del", "/px/edge/route:bad").returncode, 0)
        self.assertEqual(self.etcd.ctl("del", "/px/edge/route:byhand").returncode, 0)
        for h in self.hosts:
            wait_for(lambda: "route:bad" not in h.status()["fleet"]["rejected"], what="the report to clear")

    def test_the_etcd_leader_killed_under_write_load_loses_no_acknowledged_write(self):
        a, b, c = self.hosts
        done, answers = [], []

        def writer():
            for i in range(60):
                body = {"name": "lk-%d" % i, "hosts": ["lk%d.fleet.test" % i], "upstreams": [self.up.url]}
                for _ in range(50):  # a user retries what failed; a retried write that went through says 409
                    s, _, _ = a.adm.api("POST", "/v1/routes", body)
                    answers.append(s)
                    if s in (201, 409):
                        done.append(i)
                        break
        t = threading.Thread(target=writer)
        t.start()
        wait_for(lambda: len(done) >= 15, what="writes before the kill")
        leader = wait_for(self.etcd.leader, what="a leader")
        self.etcd.stop(leader, sig=signal.SIGKILL)
        t.join()
        self.etcd.restart_all()
        self.assertEqual(sorted(done), list(range(60)), answers)
        self.assertTrue(set(answers) <= {201, 409, 503}, answers)
        exports = self.converged()
        names = {r["name"] for r in json.loads(exports[0])["routes"]}
        self.assertTrue({"lk-%d" % i for i in range(60)} <= names)

    def test_a_pxadmind_killed_mid_apply_restarts_equal_to_etcd(self):
        a, b, c = self.hosts
        stop = []

        def burst():
            i = 0
            while not stop:
                a.adm.api("POST", "/v1/routes", {"name": "k9-%d" % i, "hosts": ["k9-%d.fleet.test" % i],
                                                 "upstreams": [self.up.url]})
                i += 1
        t = threading.Thread(target=burst)
        t.start()
        try:
            wait_for(lambda: c.status()["fleet"]["applied_revision"] > 0 and "k9-5" in c.adm.ctl("route", "list").stdout,
                     what="c to apply part of the burst")
            c.adm.kill9()
        finally:
            stop.append(1)
            t.join()
        c.start_admind()
        rev = self.etcd.fleet_revision()
        wait_for(lambda: c.status()["fleet"]["applied_revision"] >= rev, what="the restarted host to catch up")
        self.assertEqual(c.export(), a.export())
        keys = self.etcd.ctl("get", "/px/edge/route:k9-", "--prefix", "--keys-only").stdout.split()
        names = {r["name"] for r in json.loads(c.export())["routes"] if r["name"].startswith("k9-")}
        self.assertEqual(names, {k[len("/px/edge/route:"):] for k in keys})


class AcmeFleetTest(unittest.TestCase):
    """tls auto in a fleet: one host orders (a lock on a lease in etcd), the CA's HTTP-01 request reaches
    another host, which answers from the shared challenge records, and the certificate serves on every host."""

    def test_one_host_orders_another_answers_the_challenge_and_every_host_serves_it(self):
        from test_acme import ACME_DEADLINE, Pebble, served_cert
        etcd = Etcd()
        up = Upstream("acme-fleet-up")
        hosts = []
        ca = None
        try:
            c = Host(etcd, "edge-3", start_admind=False)
            ca = Pebble(c.pxd.port)  # pebble validates HTTP-01 on this port: host C's pxd
            acme = ["--acme-directory", ca.directory, "--acme-ca", ca.cert, "--acme-retry-min", "1"]
            a = Host(etcd, "edge-1", args=acme)
            b = Host(etcd, "edge-2", args=acme)
            c.extra = acme
            c.start_admind()
            hosts = [a, b, c]
            r = a.adm.ctl("route", "add", "shop", "--host", "shop.fleet.test", "--upstream", up.url, "--tls", "auto")
            self.assertEqual(r.returncode, 0, r.stderr)

            def issued(h):
                st, _, body = h.adm.api("GET", "/v1/certs/shop.fleet.test")
                return st == 200 and body.get("status") == "valid" and body.get("serial")
            serial = wait_for(lambda: issued(a), timeout=ACME_DEADLINE, what="the certificate issued")
            def serves(h):
                try:
                    return format(served_cert(h.tls_port, "shop.fleet.test").serial_number, "x") == \
                        serial.lstrip("0").lower()
                except (OSError, ssl.SSLError):
                    return False
            for h in hosts:
                wait_for(lambda: issued(h) == serial, what="the certificate on " + h.name)
                wait_for(lambda: serves(h), timeout=ACME_DEADLINE, interval=0.1,
                         what="the certificate served by " + h.name)
            # one host ordered (the others found the lock taken); pebble validates HTTP-01 on host C's port
            # only, so C answered from the challenge record the ordering host wrote
            ordered = [h.name for h in hosts if "acme: ordering a certificate shop.fleet.test" in h.adm.log()]
            self.assertEqual(len(ordered), 1, ordered)
            for h in hosts:  # and the first attempt went through: every host served the answer before the CA asked
                self.assertNotIn("acme: certificate shop.fleet.test for shop.fleet.test failed", h.adm.log())
        finally:
            for h in hosts:
                h.close()
            if ca:
                ca.stop()
            up.stop()
            etcd.close()


class FleetUiTest(unittest.TestCase):
    """The dashboard in a fleet, in headless Chromium: the Fleet screen lists every host, a stream's error is
    shown per host on the Streams screen, and with etcd away the screens say so and a write is refused."""

    def test_the_fleet_screen_and_streams_per_host(self):
        from test_ui import PASSWORD, Browser
        from selenium.webdriver.common.by import By
        etcd = Etcd()
        self.addCleanup(etcd.close)
        up = Upstream("fleet-ui-up")
        self.addCleanup(up.stop)
        a = Host(etcd, "edge-1", args=["--ui", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        self.addCleanup(a.close)
        b = Host(etcd, "edge-2")
        self.addCleanup(b.close)
        port = int(wait_for(lambda: re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/ui/", a.adm.log()),
                            what="--ui").group(1))
        mport = int(wait_for(lambda: re.search(r"metrics on http://\S+ \(port (\d+)\)", a.adm.log()),
                             what="--metrics").group(1))

        def metric(name):
            text = get(mport, "/metrics").body.decode()
            m = re.search(r'^%s\{fleet="edge",host="edge-1"\} (\S+)$' % name, text, re.M)
            return float(m.group(1)) if m else None
        self.assertEqual(metric("px_fleet_etcd_reachable"), 1)
        text = get(mport, "/metrics").body.decode()
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = b.adm.ctl("user", "add", "ada", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)  # made on edge-2, logged in on edge-1
        wait_for(lambda: "ada" in a.adm.ctl("user", "list").stdout, what="the account on edge-1")
        br = Browser("http://127.0.0.1:%d" % port)
        self.addCleanup(br.quit)
        br.login("ada")
        br.open("#/fleet")
        br.wait_text("Fleet edge, host edge-1: etcd reachable since")

        def badge(host, col):
            cells = br.d.find_elements(By.CSS_SELECTOR, "tr[data-host='%s'] td" % host)
            return cells[col].text if len(cells) > col else ""
        for h in ("edge-1", "edge-2"):
            wait_for(lambda: badge(h, 4) == "in sync" and badge(h, 5) == "reachable", what=h + " listed in sync")
        br.shot("fleet-1-hosts")
        # A stream whose port another process holds on this machine: both hosts fail to open it, and the
        # Streams screen on edge-1 names each.
        holder, held = hold_port()
        self.addCleanup(holder.close)
        self.assertEqual(b.adm.api("POST", "/v1/streams", {"name": "held", "listen": "127.0.0.1:%d" % held,
                                                           "upstreams": ["tcp://127.0.0.1:1"]})[0], 201)

        def listed():
            s = a.adm.api("GET", "/v1/streams/held")[2]
            return sorted(e.get("host") for e in s.get("errors", [])) == ["edge-1", "edge-2"]
        wait_for(listed, what="the stream's error from both hosts in the API")
        br.open("#/streams")
        wait_for(lambda: sorted(e.text.split(":")[0] for e in br.d.find_elements(
            By.CSS_SELECTOR, "tr[data-stream='held'] .field-error")) == ["edge-1", "edge-2"],
            what="the stream's error from both hosts on the screen")
        self.assertIn("in use", br.el("tr[data-stream='held'] .field-error").text)
        br.shot("fleet-2-streams-per-host")
        br.open("#/fleet")
        wait_for(lambda: "stream held:" in badge("edge-2", 6), what="edge-2's error on the Fleet screen")
        # etcd away: the screens say so, with the applied revision, and a write from the dashboard is refused.
        applied = a.status()["fleet"]["applied_revision"]
        etcd.stop()
        try:
            br.wait_text("etcd unreachable since")
            self.assertIn("applied revision %d" % applied, br.el("#fleet-line").text)
            self.assertEqual(metric("px_fleet_etcd_reachable"), 0)
            self.assertEqual(metric("px_fleet_applied_revision"), applied)
            self.assertGreater(metric("px_fleet_etcd_state_since_seconds"), 1.7e9)
            br.shot("fleet-3-etcd-away")
            br.open("#/status")
            br.wait_text("etcd unreachable since")
            br.open("#/route")
            br.wait_text("Add a route")
            br.fill("name", "lost")
            br.fill("hosts", "lost.fleet.test")
            br.fill("upstreams", up.url)
            br.click("Add route", css="form button")
            self.assertIn("etcd", br.el("form .banner").text)
            self.assertEqual(a.adm.api("GET", "/v1/routes/lost")[0], 404)
        finally:
            etcd.restart_all()
        br.open("#/fleet")
        br.wait_text("Fleet edge, host edge-1: etcd reachable since")


class JoinTest(unittest.TestCase):
    def setUp(self):
        self.etcd = Etcd(n=1)

    def tearDown(self):
        self.etcd.close()

    def test_a_host_with_a_store_of_its_own_joins_only_as_told(self):
        up = Upstream("join-up")
        h = Host(self.etcd, "edge-9", start_admind=False)
        try:
            # a store with a configuration of its own, written before there was a fleet
            alone = Admind(data=h.pxd.data, pxd_status=h.pxd.status_file)
            self.assertEqual(alone.ctl("route", "add", "mine", "--host", "mine.test", "--upstream",
                                       up.url).returncode, 0)
            alone.stop()
            p = subprocess.run([PXADMIND, "-d", h.pxd.data, "-s", os.path.join(h.pxd.dir, "x.sock")] + h.argv(),
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--fleet-join", p.stderr)
            h.extra = ["--fleet-join", "seed"]
            h.start_admind()
            self.assertIn("mine", h.adm.ctl("route", "list").stdout)
            keys = self.etcd.ctl("get", "/px/edge/", "--prefix", "--keys-only").stdout.split()
            self.assertIn("/px/edge/route:mine", keys)
            # a second store of its own cannot seed a fleet that has a configuration; it can replace its own
            other = Host(self.etcd, "edge-8", start_admind=False)
            try:
                alone = Admind(data=other.pxd.data, pxd_status=other.pxd.status_file)
                alone.ctl("route", "add", "theirs", "--host", "theirs.test", "--upstream", up.url)
                alone.stop()
                other.extra = ["--fleet-join", "seed"]
                p = subprocess.run([PXADMIND, "-d", other.pxd.data, "-s",
                                    os.path.join(other.pxd.dir, "x.sock")] + other.argv(),
                                   capture_output=True, text=True, timeout=DEADLINE)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("already holds a configuration", p.stderr)
                other.extra = ["--fleet-join", "replace"]
                other.start_admind()
                listed = other.adm.ctl("route", "list").stdout
                self.assertIn("mine", listed)
                self.assertNotIn("theirs", listed)
                wait_for(lambda: get(other.pxd.port, "/", host="mine.test").status == 200, what="the fleet's route")
            finally:
                other.close()
        finally:
            h.close()
            up.stop()

    def test_an_unreachable_etcd_or_a_wrong_client_certificate_is_named_at_the_first_start(self):
        h = Host(self.etcd, "edge-7", start_admind=False)
        try:
            dead = "https://127.0.0.1:%d" % free_port()
            argv = h.argv()
            argv[1] = dead
            p = subprocess.run([PXADMIND, "-d", h.pxd.data, "-s", os.path.join(h.pxd.dir, "x.sock")] + argv,
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(dead, p.stderr)
            self.assertIn("refused", p.stderr)
            # a client certificate from another CA
            other = Pki(tempfile.mkdtemp(prefix="pxpki-"))
            cert, key = other.leaf("stranger")
            argv = h.argv()
            argv[argv.index("--etcd-cert") + 1] = cert
            argv[argv.index("--etcd-key") + 1] = key
            p = subprocess.run([PXADMIND, "-d", h.pxd.data, "-s", os.path.join(h.pxd.dir, "x.sock")] + argv,
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(self.etcd.url("m1"), p.stderr)
            # an unreadable key file
            argv[argv.index("--etcd-key") + 1] = "/nonexistent/key.pem"
            p = subprocess.run([PXADMIND, "-d", h.pxd.data, "-s", os.path.join(h.pxd.dir, "x.sock")] + argv,
                               capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("/nonexistent/key.pem", p.stderr)
        finally:
            h.close()


class AuthTest(unittest.TestCase):
    """etcd's own users and passwords, with tokens that expire every two seconds (--auth-token-ttl)."""

    def setUp(self):
        self.etcd = Etcd(n=1, extra=["--auth-token-ttl", "2"])
        e = self.etcd
        for args in (("user", "add", "root", "--new-user-password", "rootpw"), ("role", "add", "pxfleet"),
                     ("role", "grant-permission", "pxfleet", "--prefix=true", "readwrite", "/px/"),
                     ("user", "add", "px", "--new-user-password", "s3cret"), ("user", "grant-role", "px", "pxfleet"),
                     ("auth", "enable")):
            r = e.ctl(*args)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
        e.root = "root:rootpw"
        self.up = Upstream("auth-up")

    def tearDown(self):
        self.up.stop()
        self.etcd.close()

    def test_a_host_authenticates_from_a_password_file_and_renews_expired_tokens(self):
        pw = os.path.join(self.etcd.dir, "px.password")
        with open(pw, "w") as f:
            f.write("s3cret\n")
        # a client certificate with a Common Name is refused by etcd's gateway once authentication is on
        named = Host(self.etcd, "edge-n", start_admind=False, args=["--etcd-user", "px", "--etcd-password-file", pw])
        try:
            p = subprocess.run([PXADMIND, "-d", named.pxd.data, "-s", os.path.join(named.pxd.dir, "x.sock")] +
                               named.argv(), capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("subjectAltName only", p.stderr)
        finally:
            named.close()
        # published every 10 s (a third of 30): the tokens sit unused for longer than their 2 s
        a = Host(self.etcd, "edge-a", args=["--etcd-user", "px", "--etcd-password-file", pw], subject_cn=False,
                 ttl=30)
        b = Host(self.etcd, "edge-b", args=["--etcd-user", "px", "--etcd-password-file", pw], subject_cn=False,
                 ttl=30)
        try:
            self.assertEqual(a.adm.ctl("route", "add", "au", "--host", "au.test", "--upstream",
                                       self.up.url).returncode, 0)
            wait_for(lambda: get(b.pxd.port, "/", host="au.test").status == 200, what="the route on the other host")
            # Tokens expire after 2 s unused. The followers' (probes every 5 s) expire and are renewed ...
            wait_for(lambda: "token renewed" in a.adm.log() and "token renewed" in b.adm.log(),
                     what="both followers to renew their tokens")
            # ... and the writer's, unused for longer than that between writes, too: every write goes through
            n = [0]

            def write_after_expiry():
                n[0] += 1
                s, _, body = a.adm.api("POST", "/v1/routes", {"name": "au-%d" % n[0], "hosts": [
                    "au%d.test" % n[0]], "upstreams": [self.up.url]})
                self.assertEqual(s, 201, body)
                return "authenticating again" in a.adm.log()
            wait_for(write_after_expiry, interval=2.5, what="the writer to renew its token")
            last = "au%d.test" % n[0]
            wait_for(lambda: get(b.pxd.port, "/", host=last).status == 200, what="the last write on the other host")
            self.assertNotIn("s3cret", a.adm.log())
            self.assertFalse(any("s3cret" in x for x in a.adm.proc.args))
            # a wrong password is named at the first start
            bad = os.path.join(self.etcd.dir, "bad.password")
            with open(bad, "w") as f:
                f.write("nope\n")
            c = Host(self.etcd, "edge-c", start_admind=False, args=["--etcd-user", "px", "--etcd-password-file", bad],
                     subject_cn=False)
            try:
                p = subprocess.run([PXADMIND, "-d", c.pxd.data, "-s", os.path.join(c.pxd.dir, "x.sock")] + c.argv(),
                                   capture_output=True, text=True, timeout=DEADLINE)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("etcd authentication as 'px'", p.stderr)
            finally:
                c.close()
        finally:
            a.close()
            b.close()


if __name__ == "__main__":
    unittest.main()
