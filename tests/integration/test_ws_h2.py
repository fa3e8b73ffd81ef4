"""WebSocket over HTTP/2 (RFC 8441): a python3-h2 client speaking extended CONNECT to px, a real HTTP/1.1
WebSocket server (python3-websockets) behind it. Echo both ways, a message larger than the stream's window,
the close handshake, and what is refused."""
import os
import re
import socket
import struct
import subprocess
import sys
import unittest

try:
    import h2  # noqa: F401
except ImportError:  # a python3 other than Debian's first on PATH: Debian's python3-h2
    sys.path.append("/usr/lib/python3/dist-packages")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

from pxtest import DEADLINE, Pxd, Upstream, route

HERE = os.path.dirname(os.path.abspath(__file__))


def ws_frame(opcode, payload, mask=b"\x01\x02\x03\x04"):
    """A client's frame (RFC 6455 5.2: masked), FIN set."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_parse(buf):
    """One whole server frame from buf: (opcode, payload, rest), or None."""
    if len(buf) < 2:
        return None
    op, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack(">Q", buf[2:10])[0], 10
    if len(buf) < at + n:
        return None
    return op, buf[at:at + n], buf[at + n:]


class H2Tunnel:
    """An HTTP/2 connection with one extended CONNECT stream."""

    def __init__(self, port, authority, path="/ws", protocol="websocket"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.data = b""
        self.status = None
        self.ended = False
        self.reset = None
        self.settings = {}
        while h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL not in self.settings:
            self.pump()
        self.id = 1
        self.c.send_headers(self.id, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                                      (":path", path), (":authority", authority), ("sec-websocket-version", "13")])
        self.s.sendall(self.c.data_to_send())
        while self.status is None and self.reset is None:
            self.pump()

    def pump(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("px closed the connection")
        for ev in self.c.receive_data(d):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings.update({k: v.new_value for k, v in ev.changed_settings.items()})
            elif isinstance(ev, h2.events.ResponseReceived):
                self.status = int(dict(ev.headers)[b":status"])
                self.headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.data += ev.data
                self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                self.reset = ev.error_code
        self.s.sendall(self.c.data_to_send())

    def send(self, data, end=False):
        # As the windows allow: a message larger than them goes in pieces as px opens them.
        while data:
            room = min(self.c.local_flow_control_window(self.id), self.c.max_outbound_frame_size, len(data))
            if room <= 0:
                self.pump()
                continue
            self.c.send_data(self.id, data[:room])
            data = data[room:]
            self.s.sendall(self.c.data_to_send())
        if end:
            self.c.end_stream(self.id)
            self.s.sendall(self.c.data_to_send())

    def message(self):
        while True:
            got = ws_parse(self.data)
            if got:
                op, payload, self.data = got
                return op, payload
            self.pump()

    def close(self):
        self.s.close()


class WebSocketOverH2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ws = subprocess.Popen([sys.executable, os.path.join(HERE, "wspeer.py")], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        cls.ws_port = int(re.search(r":(\d+)$", cls.ws.stdout.readline().strip()).group(1))
        cls.up = Upstream("ws-h1")
        cls.h2up = subprocess.Popen([sys.executable, os.path.join(HERE, "h2peer.py")], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        h2port = int(re.search(r":(\d+)$", cls.h2up.stdout.readline().strip()).group(1))
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c\n",
                     routes=[route("ws", ["ws.test"], ["http://127.0.0.1:%d" % cls.ws_port]),
                             route("plain", ["plain.test"], [cls.up]),
                             route("h2up", ["h2up.test"], ["h2c://127.0.0.1:%d" % h2port])])
        cls.h2c = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()
        for p in (cls.ws, cls.h2up):
            p.kill()
            p.wait()

    def test_px_advertises_the_extended_connect(self):
        t = H2Tunnel(self.h2c, "ws.test")
        self.assertEqual(t.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL], 1)
        t.close()

    def test_echo_both_ways_a_large_message_and_the_close_handshake(self):
        t = H2Tunnel(self.h2c, "ws.test")
        self.assertEqual(t.status, 200)  # the upstream's 101, as RFC 8441 says
        self.assertNotIn(b"sec-websocket-accept", t.headers)
        self.assertNotIn(b"upgrade", t.headers)
        t.send(ws_frame(1, b"hello"))
        self.assertEqual(t.message(), (1, b"hello"))
        big = os.urandom(300 * 1024)  # more than the stream's window (64 KiB) both ways
        t.send(ws_frame(2, big))
        op, payload = t.message()
        self.assertEqual(op, 2)
        self.assertEqual(payload, big)
        t.send(ws_frame(8, struct.pack(">H", 1000) + b"bye"))  # close: the server answers with its own
        op, payload = t.message()
        self.assertEqual(op, 8)
        self.assertEqual(struct.unpack(">H", payload[:2])[0], 1000)
        t.send(b"", end=True)
        while not t.ended and t.reset is None:
            t.pump()
        self.assertTrue(t.ended)  # the server closed its TCP side after the close handshake: END_STREAM
        t.close()

    def test_an_upstream_that_does_not_switch_is_a_502(self):
        # The test upstream answers /echo with a 200, no 101: a 2xx would tell the client its tunnel opened.
        t = H2Tunnel(self.h2c, "plain.test", path="/echo")
        self.assertEqual(t.status, 502)
        t.close()

    def test_an_upstream_that_refuses_the_upgrade_is_answered_as_it_said(self):
        t = H2Tunnel(self.h2c, "plain.test", path="/status?code=403")
        self.assertEqual(t.status, 403)
        t.close()

    def test_another_protocol_is_refused(self):
        t = H2Tunnel(self.h2c, "ws.test", protocol="webtransport")
        self.assertEqual(t.status, 501)
        t.close()

    def test_an_http2_upstream_cannot_take_the_tunnel(self):
        t = H2Tunnel(self.h2c, "h2up.test")
        self.assertEqual(t.status, 501)
        t.close()


if __name__ == "__main__":
    unittest.main()
