"""gRPC and HTTP/2 upstreams (h2c://, grpc://, https:// with upstream_proto h2), against real peers: a gRPC
server and client (python3-grpcio) for the four kinds of RPC, over an h2c and a TLS client side, to h2c and TLS
upstreams; px's own answers as gRPC statuses; and a python3-h2 peer (h2peer.py) that counts its connections,
sends GOAWAY mid-load and misbehaves on request."""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import unittest
import urllib.request

try:
    import grpc  # noqa: F401
except ImportError:  # a python3 other than Debian's first on PATH: Debian's python3-grpcio, python3-h2
    sys.path.append("/usr/lib/python3/dist-packages")
import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from pxtest import DEADLINE, Pxd, free_port, route, wait_for
from test_tls import Certs

HERE = os.path.dirname(os.path.abspath(__file__))


class Peer:
    """A helper peer script run as a process: its port from its first line."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, script)] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.proc.stdout.readline())
        if not m:
            raise RuntimeError(script + " did not start")
        self.port = int(m.group(1))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=DEADLINE).read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else 0.0


class GrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        crt, key, _ = cls.certs.leaf("px", ["grpc.test", "tlsup.test", "h2.test"])
        ucrt, ukey, _ = cls.certs.leaf("up", ["up.test"])
        cls.g = Peer("grpcpeer.py")
        cls.gtls = Peer("grpcpeer.py", "--tls", ucrt, ukey)
        cls.h2 = Peer("h2peer.py", "--max-streams", "10")
        cls.nowin = Peer("h2peer.py", "--no-window")
        up_tls = {"ca_file": cls.certs.ca_file, "sni": "up.test"}
        cls.alog = os.path.join(cls.certs.dir, "access.log")
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c\nlisten 127.0.0.1:0 tls\nmetrics_listen 127.0.0.1:0\n"
                           "access_log %s\n" % cls.alog,
                     routes=[route("grpc", ["grpc.test"], ["grpc://127.0.0.1:%d" % cls.g.port]),
                             route("tlsup", ["tlsup.test"], ["https://127.0.0.1:%d" % cls.gtls.port],
                                   upstream_proto="h2", upstream_tls=up_tls),
                             route("dead", ["dead.test"], ["grpc://127.0.0.1:%d" % free_port()]),
                             route("slow", ["slow.test"], ["grpc://127.0.0.1:%d" % cls.g.port],
                                   read_timeout_ms=300),
                             route("small", ["small.test"], ["grpc://127.0.0.1:%d" % cls.g.port], max_body_size=100),
                             route("denied", ["denied.test"], ["grpc://127.0.0.1:%d" % cls.g.port],
                                   filters=[{"name": "acl", "config": {"list": "nobody"}}]),
                             route("limited", ["limited.test"], ["grpc://127.0.0.1:%d" % cls.g.port],
                                   filters=[{"name": "rate_limit", "config": {"rate": "1r/m", "nodelay": True}}]),
                             route("h2", ["h2.test"], ["h2c://127.0.0.1:%d" % cls.h2.port]),
                             route("nowin", ["nowin.test"], ["h2c://127.0.0.1:%d" % cls.nowin.port],
                                   read_timeout_ms=500)])
        r = cls.px.store("put-acl", json.dumps({"name": "nobody", "default": "deny"}))
        assert r.returncode == 0, r.stderr
        r = cls.px.store("put-cert", "px", crt, key)
        assert r.returncode == 0, r.stderr
        cls.px.wait_applied(int(r.stdout.strip()))
        log = cls.px.log()
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", log).group(1))
        cls.tls = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(tls\)", log).group(1))
        cls.mport = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log).group(1))
        with open(cls.certs.ca_file, "rb") as f:
            cls.ca = f.read()
        cls.big = os.path.join(cls.certs.dir, "big.bin")
        with open(cls.big, "wb") as f:
            f.write(b"x" * 200000)

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        for p in (cls.g, cls.gtls, cls.h2, cls.nowin):
            p.stop()

    def channel(self, host, tls=False):
        # The client names the route by :authority; over TLS by SNI too.
        opts = [("grpc.default_authority", host)]
        if tls:
            opts.append(("grpc.ssl_target_name_override", host))
            return grpc.secure_channel("127.0.0.1:%d" % self.tls, grpc.ssl_channel_credentials(self.ca), opts)
        return grpc.insecure_channel("127.0.0.1:%d" % self.h2c, opts)

    def four_kinds(self, ch):
        r, call = ch.unary_unary("/px.test.Echo/Unary").with_call(b"hello", timeout=DEADLINE)
        self.assertEqual(r, b"echo:hello")
        self.assertIn(("x-trail", "t1"), [(m.key, m.value) for m in call.trailing_metadata()])
        self.assertEqual(list(ch.unary_stream("/px.test.Echo/Server")(b"5", timeout=DEADLINE)),
                         [b"part%d" % i for i in range(5)])
        self.assertEqual(ch.stream_unary("/px.test.Echo/Client")(iter([b"a", b"b", b"c"]), timeout=DEADLINE),
                         b"a|b|c")
        # Bidirectional: each answer comes before the next request is sent.
        got = []
        ready = threading.Event()

        def requests():
            for m in (b"x", b"y", b"z"):
                yield m
                ready.wait(DEADLINE)
                ready.clear()

        for reply in ch.stream_stream("/px.test.Echo/Bidi")(requests(), timeout=DEADLINE):
            got.append(reply)
            ready.set()
        self.assertEqual(got, [b"re:x", b"re:y", b"re:z"])

    def test_four_kinds_of_rpc_h2c_client_to_h2c_upstream(self):
        with self.channel("grpc.test") as ch:
            self.four_kinds(ch)

    def test_four_kinds_of_rpc_tls_client_to_h2c_upstream(self):
        with self.channel("grpc.test", tls=True) as ch:
            self.four_kinds(ch)

    def test_four_kinds_of_rpc_to_a_tls_upstream_by_alpn(self):
        with self.channel("tlsup.test") as ch:
            self.four_kinds(ch)
        with self.channel("tlsup.test", tls=True) as ch:
            self.four_kinds(ch)

    def test_access_log_and_metrics_name_the_upstream_protocol(self):
        with self.channel("grpc.test") as ch:
            md = json.loads(ch.unary_unary("/px.test.Echo/Meta")(b"", timeout=DEADLINE))
        rid = md["x-request-id"]

        def record():
            with open(self.alog) as f:
                for line in f:
                    r = json.loads(line)
                    if r["request_id"] == rid:
                        return r
        r = wait_for(record, what="the access log line")
        self.assertEqual(r["upstream_protocol"], "HTTP/2.0")
        self.assertEqual(r["protocol"], "HTTP/2.0")
        self.assertEqual(r["peer"], "h2c://127.0.0.1:%d" % self.g.port)
        self.assertGreater(metric(self.mport, 'px_upstream_requests_by_protocol_total{protocol="HTTP/2"}'), 0)

    def test_upstream_statuses_pass_unchanged(self):
        with self.channel("grpc.test") as ch:
            for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL):
                with self.assertRaises(grpc.RpcError) as e:
                    ch.unary_unary("/px.test.Echo/Unary")(b"fail:%d" % code.value[0], timeout=DEADLINE)
                self.assertEqual(e.exception.code(), code)
                self.assertEqual(e.exception.details(), "failed as asked")

    def test_metadata_and_te_trailers_reach_the_upstream(self):
        with self.channel("grpc.test") as ch:
            md = json.loads(ch.unary_unary("/px.test.Echo/Meta")(b"", metadata=(("x-mine", "v1"),),
                                                                 timeout=DEADLINE))
        self.assertEqual(md["x-mine"], "v1")
        self.assertIn("x-forwarded-for", md)
        self.assertIn("x-request-id", md)

    def rpc_error(self, host, req=b"hi", tls=False):
        with self.channel(host, tls) as ch:
            with self.assertRaises(grpc.RpcError) as e:
                ch.unary_unary("/px.test.Echo/Unary")(req, timeout=DEADLINE)
        return e.exception

    def test_px_answers_a_dead_peer_with_unavailable(self):
        e = self.rpc_error("dead.test")
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("upstream", e.details())

    def test_px_answers_a_timeout_with_deadline_exceeded(self):
        e = self.rpc_error("slow.test", b"sleep:3000")
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_px_answers_a_body_limit_with_resource_exhausted(self):
        e = self.rpc_error("small.test", b"x" * 1000)
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_px_answers_an_acl_denial_with_a_grpc_status(self):
        e = self.rpc_error("denied.test")
        self.assertIn(e.code(), (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED))

    def test_px_answers_a_rate_limit_with_resource_exhausted(self):
        with self.channel("limited.test") as ch:
            self.assertEqual(ch.unary_unary("/px.test.Echo/Unary")(b"one", timeout=DEADLINE), b"echo:one")
        e = self.rpc_error("limited.test")
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    # ---- the python3-h2 peer ----

    def curl(self, path, host="h2.test", *extra):
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: " + host, "-o", "-", "-w",
                            "\n%{http_code}"] + list(extra) + ["http://127.0.0.1:%d%s" % (self.h2c, path)],
                           capture_output=True, text=True, timeout=DEADLINE)
        body, _, code = r.stdout.rpartition("\n")
        return int(code), body

    def test_h2c_upstream_sees_an_http2_request_without_connection_fields(self):
        code, body = self.curl("/echo", "h2.test", "-H", "TE: trailers", "-H", "X-Mine: 1")
        self.assertEqual(code, 200)
        h = dict(json.loads(body)["headers"])
        self.assertEqual(h[":method"], "GET")
        self.assertEqual(h[":path"], "/echo")
        self.assertEqual(h[":authority"], "h2.test")
        self.assertEqual(h["te"], "trailers")
        self.assertEqual(h["x-mine"], "1")
        self.assertNotIn("connection", h)

    def test_trailers_reach_http2_and_chunked_http1_clients(self):
        r = subprocess.run(["nghttp", "-v", "-H", ":authority: h2.test", "http://127.0.0.1:%d/echo" % self.h2c],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertRegex(r.stdout, r"recv \(stream_id=\d+\) x-trailer: yes")
        r = subprocess.run(["curl", "-s", "-v", "--raw", "-H", "Host: h2.test", "-H", "TE: trailers",
                            "http://127.0.0.1:%d/echo" % self.px.port], capture_output=True, text=True,
                           timeout=DEADLINE)
        self.assertIn("x-trailer: yes", r.stdout)

    def test_request_trailers_reach_an_http2_peer(self):
        s = socket.create_connection(("127.0.0.1", self.h2c), timeout=DEADLINE)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/echo"), (":authority", "h2.test"),
                           ("te", "trailers")])
        c.send_data(1, b"abc")
        c.send_headers(1, [("x-client-trailer", "yes")], end_stream=True)
        s.sendall(c.data_to_send())
        body, done = b"", False
        while not done:
            d = s.recv(65536)
            self.assertTrue(d, "px closed the connection")
            for ev in c.receive_data(d):
                if isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            s.sendall(c.data_to_send())
        s.close()
        echo = json.loads(body)
        self.assertEqual(echo["body"], 3)
        self.assertEqual(echo["trailers"], [["x-client-trailer", "yes"]])

    def test_100_concurrent_streams_share_the_peers_connections(self):
        # The peer allows 10 streams per connection and answers each after 300 ms: 100 at once need 10.
        before = json.loads(self.curl("/stats")[1])["connections"]
        results = []

        def one(i):
            results.append(self.curl("/slow?ms=300")[0])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 100)
        stats = json.loads(self.curl("/stats")[1])
        self.assertLessEqual(stats["connections"] - before, 10 + 1)
        self.assertLessEqual(stats["max_open"], 10)

    def test_malformed_frame_ends_that_connection_with_502(self):
        n = metric(self.mport, "px_upstream_h2_errors_total")
        code, _ = self.curl("/bad/frame")
        self.assertEqual(code, 502)
        self.assertEqual(self.curl("/echo")[0], 200)  # a new connection serves the next
        wait_for(lambda: metric(self.mport, "px_upstream_h2_errors_total") > n, what="the error counted")

    def test_connection_specific_field_in_a_response_is_a_502(self):
        n = metric(self.mport, "px_upstream_h2_errors_total")
        self.assertEqual(self.curl("/bad/conn-header")[0], 502)
        self.assertEqual(self.curl("/echo")[0], 200)  # only that stream ended: its connection serves on
        wait_for(lambda: metric(self.mport, "px_upstream_h2_errors_total") > n, what="the error counted")

    def test_pseudo_header_in_trailers_is_refused(self):
        # The head left already: the client's stream is reset, so curl reports no whole answer (the body's
        # bytes may have reached it before the trailers came: what tells is that the stream did not end well).
        n = metric(self.mport, "px_upstream_h2_errors_total")
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-H", "Host: h2.test", "-o", "/dev/null",
                            "http://127.0.0.1:%d/bad/trailer-pseudo" % self.h2c],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.curl("/echo")[0], 200)
        wait_for(lambda: metric(self.mport, "px_upstream_h2_errors_total") > n, what="the error counted")

    def test_a_peer_that_never_opens_its_window_gets_a_502(self):
        # (Past the 64 KiB a peer's window allows before its SETTINGS: the rest can never be sent.)
        n = metric(self.mport, "px_upstream_h2_errors_total")
        code, _ = self.curl("/echo", "nowin.test", "--data-binary", "@" + self.big)
        self.assertEqual(code, 502)
        wait_for(lambda: metric(self.mport, "px_upstream_h2_errors_total") > n, what="the error counted")


class GrpcHealthTest(unittest.TestCase):
    """grpc:// peers are health-checked with gRPC's health protocol (grpc.health.v1.Health/Check)."""

    def test_a_peer_not_serving_is_taken_out_and_comes_back(self):
        g = Peer("grpcpeer.py")
        hc = {"interval_ms": 100, "timeout_ms": 2000, "healthy": 1, "unhealthy": 1}
        px = Pxd(extra="listen 127.0.0.1:0 h2c\n",
                 routes=[route("g", ["g.test"], ["grpc://127.0.0.1:%d" % g.port], health_check=hc)])
        try:
            port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", px.log()).group(1))
            direct = grpc.insecure_channel("127.0.0.1:%d" % g.port)
            via = grpc.insecure_channel("127.0.0.1:%d" % port, [("grpc.default_authority", "g.test")])
            self.assertEqual(via.unary_unary("/px.test.Echo/Unary")(b"a", timeout=DEADLINE), b"echo:a")
            direct.unary_unary("/px.test.Echo/SetHealth")(b"2", timeout=DEADLINE)
            wait_for(lambda: "health check failing, out of service" in px.log(), what="the peer taken out")
            with self.assertRaises(grpc.RpcError) as e:
                via.unary_unary("/px.test.Echo/Unary")(b"b", timeout=DEADLINE)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            direct.unary_unary("/px.test.Echo/SetHealth")(b"1", timeout=DEADLINE)
            wait_for(lambda: "health check passing, back in service" in px.log(), what="the peer back")
            self.assertEqual(via.unary_unary("/px.test.Echo/Unary")(b"c", timeout=DEADLINE), b"echo:c")
            direct.close()
            via.close()
        finally:
            px.stop()
            g.stop()


class GoawayTest(unittest.TestCase):
    """GOAWAY from the peer mid-load: streams it had not taken are retried on a new connection, none fails."""

    def test_goaway_mid_load_loses_no_stream(self):
        h2 = Peer("h2peer.py", "--goaway-after", "30")
        px = Pxd(extra="listen 127.0.0.1:0 h2c\n", routes=[route("h2", ["h2.test"], ["h2c://127.0.0.1:%d" % h2.port])])
        try:
            port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", px.log()).group(1))
            r = subprocess.run(["h2load", "-n", "200", "-c", "1", "-m", "50", "-H", ":authority: h2.test",
                                "http://127.0.0.1:%d/slow?ms=50" % port], capture_output=True, text=True,
                               timeout=DEADLINE * 2)
            self.assertRegex(r.stdout, r"status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx")
            self.assertRegex(r.stdout, r"200 succeeded, 0 failed, 0 errored")
        finally:
            px.stop()
            h2.stop()


if __name__ == "__main__":
    unittest.main()
