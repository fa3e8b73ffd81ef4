"""HTTP/2 conformance, section by section: RFC 9113 (frames, streams, flow
control, header fields) and RFC 7541 (HPACK). Each case writes frames by hand
on its own cleartext h2c connection and checks the error the RFC names: a
connection error (GOAWAY with that code, then the connection closes), a stream
error (RST_STREAM with that code; the connection lives on), or a normal answer.
(h2spec, the usual third-party suite, is not packaged in Debian and cannot be
fetched here; these cases follow the RFC text, and h2spec's sections.)"""
import struct
import unittest

from pxtest import Pxd, Upstream, route
from test_h2 import (CONT, DATA, END_HEADERS, END_STREAM, ERRORS, GOAWAY, HEADERS, PING, PREFACE, PRIORITY, RST,
                     SETTINGS, WINDOW, Raw, frame)

ACK = 1
PADDED, PRIO = 0x8, 0x20
REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "h2.test"), (":path", "/echo")]


def hpack(r, fields):
    return r.enc.encode(fields)


def settings(*pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


# (section, what, frames to send (a function of the Raw client), expected)
# expected: ("conn", CODE) a connection error; ("stream", CODE) a stream error on stream 1 (the connection still
# answers a PING); ("stream-or-conn", CODE): either (RFC 9113 5.4.1: an endpoint MAY treat a stream error as a
# connection error; nghttp2 does for these); ("ok", None): stream 1 is answered 200 and the connection stays up.
CASES = [
    # 4. Frames
    ("4.1", "unknown frame type is ignored", lambda r: frame(0x20, 0, 0, b"xx") + r.headers(1, REQ), ("ok", None)),
    ("4.1", "unknown flags are ignored", lambda r: frame(HEADERS, END_STREAM | END_HEADERS | 0x10, 1,
                                                          hpack(r, REQ)), ("ok", None)),
    ("4.2", "DATA over SETTINGS_MAX_FRAME_SIZE", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(DATA, 0, 1, b"x" * 16385), ("conn", "FRAME_SIZE_ERROR")),
    # ("{" is longer in Huffman than raw: the encoder sends it raw, so the frame is over 16384 bytes.)
    ("4.2", "HEADERS over SETTINGS_MAX_FRAME_SIZE", lambda r: frame(HEADERS, END_HEADERS, 1,
                                                                    hpack(r, REQ + [("x-a", "{" * 16500)])),
     ("conn", "FRAME_SIZE_ERROR")),
    ("4.3", "a header block that does not decode", lambda r: frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                                   b"\xff\xff\xff\xff\xff\xff"),
     ("conn", "COMPRESSION_ERROR")),
    # 5.1 Stream states
    ("5.1", "DATA on an idle stream", lambda r: frame(DATA, END_STREAM, 1, b"x"), ("conn", "PROTOCOL_ERROR")),
    ("5.1", "RST_STREAM on an idle stream", lambda r: frame(RST, 0, 1, struct.pack(">I", 8)),
     ("conn", "PROTOCOL_ERROR")),
    ("5.1", "WINDOW_UPDATE on an idle stream", lambda r: frame(WINDOW, 0, 1, struct.pack(">I", 1)),
     ("conn", "PROTOCOL_ERROR")),
    ("5.1.1", "an even stream ID", lambda r: r.headers(2, REQ), ("conn", "PROTOCOL_ERROR")),
    ("5.1.1", "a stream ID below an earlier one", lambda r: r.headers(5, REQ) + r.headers(3, REQ),
     ("conn", "PROTOCOL_ERROR")),
    ("5.5", "an unknown frame inside a header block", lambda r: r.headers(1, REQ, end_headers=False) +
     frame(0x20, 0, 1, b""), ("conn", "PROTOCOL_ERROR")),
    # 6.1 DATA
    ("6.1", "DATA on stream 0", lambda r: frame(DATA, 0, 0, b"x"), ("conn", "PROTOCOL_ERROR")),
    ("6.1", "DATA whose padding is as long as the frame", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(DATA, PADDED | END_STREAM, 1, b"\x05abcd"), ("conn", "PROTOCOL_ERROR")),
    ("6.1", "padded DATA is taken", lambda r: r.headers(1, [(":method", "POST"), (":scheme", "http"),
                                                           (":authority", "h2.test"), (":path", "/echo")],
                                                        end_stream=False) +
     frame(DATA, PADDED | END_STREAM, 1, b"\x03abc\x00\x00\x00"), ("ok", None)),
    # 6.2 HEADERS
    ("6.2", "HEADERS on stream 0", lambda r: frame(HEADERS, END_STREAM | END_HEADERS, 0, hpack(r, REQ)),
     ("conn", "PROTOCOL_ERROR")),
    ("6.2", "HEADERS whose padding is longer than the frame", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS | PADDED, 1, b"\xff" + hpack(r, REQ)), ("conn", "PROTOCOL_ERROR")),
    ("6.2", "HEADERS with a priority is taken", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS | PRIO, 1, struct.pack(">IB", 0, 15) + hpack(r, REQ)), ("ok", None)),
    ("6.2", "HEADERS that depends on itself", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS | PRIO, 1, struct.pack(">IB", 1, 15) + hpack(r, REQ)),
     ("stream-or-conn", "PROTOCOL_ERROR")),
    # 6.3 PRIORITY
    ("6.3", "PRIORITY on stream 0", lambda r: frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 15)),
     ("conn", "PROTOCOL_ERROR")),
    ("6.3", "PRIORITY of the wrong length", lambda r: frame(PRIORITY, 0, 1, b"\x00\x00\x00\x03"),
     ("stream-or-conn", "FRAME_SIZE_ERROR")),
    ("6.3", "PRIORITY on an idle stream is taken", lambda r: frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)) +
     r.headers(1, REQ), ("ok", None)),
    # 6.4 RST_STREAM
    ("6.4", "RST_STREAM on stream 0", lambda r: frame(RST, 0, 0, struct.pack(">I", 8)), ("conn", "PROTOCOL_ERROR")),
    ("6.4", "RST_STREAM of the wrong length", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(RST, 0, 1, b"\x00\x00\x08"), ("conn", "FRAME_SIZE_ERROR")),
    # 6.5 SETTINGS
    ("6.5", "SETTINGS ACK with a payload", lambda r: frame(SETTINGS, ACK, 0, settings((1, 4096))),
     ("conn", "FRAME_SIZE_ERROR")),
    ("6.5", "SETTINGS on a stream", lambda r: frame(SETTINGS, 0, 1, settings((1, 4096))),
     ("conn", "PROTOCOL_ERROR")),
    ("6.5", "SETTINGS not a multiple of 6 bytes", lambda r: frame(SETTINGS, 0, 0, b"\x00\x01\x00"),
     ("conn", "FRAME_SIZE_ERROR")),
    ("6.5.2", "ENABLE_PUSH other than 0 or 1", lambda r: frame(SETTINGS, 0, 0, settings((2, 2))),
     ("conn", "PROTOCOL_ERROR")),
    ("6.5.2", "INITIAL_WINDOW_SIZE over 2^31-1", lambda r: frame(SETTINGS, 0, 0, settings((4, 0x80000000))),
     ("conn", "FLOW_CONTROL_ERROR")),
    ("6.5.2", "MAX_FRAME_SIZE below 16384", lambda r: frame(SETTINGS, 0, 0, settings((5, 16383))),
     ("conn", "PROTOCOL_ERROR")),
    ("6.5.2", "MAX_FRAME_SIZE over 2^24-1", lambda r: frame(SETTINGS, 0, 0, settings((5, 1 << 24))),
     ("conn", "PROTOCOL_ERROR")),
    ("6.5.2", "an unknown setting is ignored", lambda r: frame(SETTINGS, 0, 0, settings((0x99, 1))) +
     r.headers(1, REQ), ("ok", None)),
    # 6.7 PING
    ("6.7", "PING on a stream", lambda r: frame(PING, 0, 1, b"12345678"), ("conn", "PROTOCOL_ERROR")),
    ("6.7", "PING of the wrong length", lambda r: frame(PING, 0, 0, b"1234567"), ("conn", "FRAME_SIZE_ERROR")),
    # 6.8 GOAWAY
    ("6.8", "GOAWAY on a stream", lambda r: frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0)),
     ("conn", "PROTOCOL_ERROR")),
    # 6.9 WINDOW_UPDATE
    ("6.9", "WINDOW_UPDATE of 0 on the connection", lambda r: frame(WINDOW, 0, 0, struct.pack(">I", 0)),
     ("conn", "PROTOCOL_ERROR")),
    ("6.9", "WINDOW_UPDATE of 0 on a stream", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(WINDOW, 0, 1, struct.pack(">I", 0)), ("stream-or-conn", "PROTOCOL_ERROR")),
    ("6.9", "WINDOW_UPDATE of the wrong length", lambda r: frame(WINDOW, 0, 0, b"\x00\x00\x01"),
     ("conn", "FRAME_SIZE_ERROR")),
    ("6.9.1", "a connection window over 2^31-1", lambda r: frame(WINDOW, 0, 0, struct.pack(">I", 0x7FFFFFFF)),
     ("conn", "FLOW_CONTROL_ERROR")),
    ("6.9.1", "a stream window over 2^31-1", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(WINDOW, 0, 1, struct.pack(">I", 0x7FFFFFFF)), ("stream", "FLOW_CONTROL_ERROR")),
    # 6.10 CONTINUATION
    ("6.10", "CONTINUATION without HEADERS", lambda r: frame(CONT, END_HEADERS, 1, hpack(r, REQ)),
     ("conn", "PROTOCOL_ERROR")),
    ("6.10", "CONTINUATION after END_HEADERS", lambda r: r.headers(1, REQ, end_stream=False) +
     frame(CONT, END_HEADERS, 1, hpack(r, [("x-a", "b")])), ("conn", "PROTOCOL_ERROR")),
    ("6.10", "DATA inside a header block", lambda r: r.headers(1, REQ, end_headers=False) +
     frame(DATA, 0, 1, b"x"), ("conn", "PROTOCOL_ERROR")),
    ("6.10", "a header block in CONTINUATIONs is taken", lambda r: (lambda b: frame(
        HEADERS, END_STREAM, 1, b[:5]) + frame(CONT, 0, 1, b[5:8]) + frame(CONT, END_HEADERS, 1, b[8:]))(
        hpack(r, REQ)), ("ok", None)),
    # 8.1, 8.2, 8.3 HTTP messages
    ("8.1", "a second HEADERS without END_STREAM (trailers must end it)", lambda r: r.headers(
        1, REQ, end_stream=False) + r.headers(1, [("x-t", "1")], end_stream=False), ("stream", "PROTOCOL_ERROR")),
    ("8.1.1", "content-length above the DATA", lambda r: r.headers(1, REQ[:3] + [(":path", "/echo"),
                                                                              ("content-length", "5")],
                                                                    end_stream=False) +
     frame(DATA, END_STREAM, 1, b"abc"), ("stream", "PROTOCOL_ERROR")),
    ("8.2", "an uppercase field name", lambda r: r.headers(1, REQ + [("X-Upper", "1")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.2.1", "a field value with LF", lambda r: r.headers(1, REQ + [("x-a", "a\nb")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.2.1", "a field value with NUL", lambda r: r.headers(1, REQ + [("x-a", "a\x00b")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.2.2", "a connection-specific field", lambda r: r.headers(1, REQ + [("connection", "close")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.2.2", "TE other than trailers", lambda r: r.headers(1, REQ + [("te", "gzip")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.2.2", "TE: trailers is taken", lambda r: r.headers(1, REQ + [("te", "trailers")]), ("ok", None)),
    ("8.3", "no :method", lambda r: r.headers(1, REQ[1:]), ("stream", "PROTOCOL_ERROR")),
    ("8.3", "no :scheme", lambda r: r.headers(1, [REQ[0]] + REQ[2:]), ("stream", "PROTOCOL_ERROR")),
    ("8.3", "no :path", lambda r: r.headers(1, REQ[:3]), ("stream", "PROTOCOL_ERROR")),
    ("8.3", "an empty :path", lambda r: r.headers(1, REQ[:3] + [(":path", "")]), ("stream", "PROTOCOL_ERROR")),
    ("8.3", "two :path", lambda r: r.headers(1, REQ + [(":path", "/x")]), ("stream", "PROTOCOL_ERROR")),
    ("8.3", "an unknown pseudo-header", lambda r: r.headers(1, REQ + [(":foo", "x")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.3", "a response pseudo-header", lambda r: r.headers(1, REQ + [(":status", "200")]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.3", "a pseudo-header after a field", lambda r: r.headers(1, REQ[:3] + [("x-a", "1"), REQ[3]]),
     ("stream", "PROTOCOL_ERROR")),
    ("8.3", "pseudo-headers in trailers", lambda r: r.headers(1, REQ, end_stream=False) +
     r.headers(1, [(":path", "/x")]), ("stream", "PROTOCOL_ERROR")),
    # RFC 7541 HPACK
    ("7541 2.3.3", "an index past the tables", lambda r: frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                               b"\x82\x86\x84\xff\x00"),
     ("conn", "COMPRESSION_ERROR")),
    ("7541 4.2", "a table size update above SETTINGS_HEADER_TABLE_SIZE (to 4097)", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe2\x1f" + hpack(r, REQ)), ("conn", "COMPRESSION_ERROR")),
    ("7541 4.2", "a table size update after a field", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x20\x86\x84"), ("conn", "COMPRESSION_ERROR")),
    ("7541 5.2", "Huffman padding that is not the EOS prefix", lambda r: frame(
        HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86\x84\x41\x82\x00\x00"), ("conn", "COMPRESSION_ERROR")),
]


class H2ConformanceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("h2-conf")
        cls.px = Pxd(extra="listen 127.0.0.1:0 h2c\n", routes=[route("h2", ["h2.test"], [cls.up])])
        import re
        cls.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+) \(h2c\)", cls.px.log()).group(1))

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def check(self, section, what, make, expected):
        r = Raw(self.port)
        try:
            r.send(make(r))
            kind, code = expected
            if kind == "conn":
                g = r.goaway()
                self.assertIsNotNone(g, "closed without GOAWAY")
                self.assertEqual(g[1], code)
                self.assertTrue(r.closed(), "the connection stays open after GOAWAY(%s)" % code)
            elif kind in ("stream", "stream-or-conn"):
                f = r.until(lambda f: f[0] in (RST, GOAWAY) or (f[0] == HEADERS and f[2] == 1), "an error")
                self.assertIsNotNone(f, "closed without an error frame")
                if f[0] == GOAWAY:
                    self.assertEqual(kind, "stream-or-conn", "a connection error (%s) where the RFC names a stream "
                                     "error" % ERRORS.get(struct.unpack(">I", f[3][4:8])[0]))
                    self.assertEqual(ERRORS.get(struct.unpack(">I", f[3][4:8])[0]), code)
                    return
                self.assertEqual(f[0], RST, "answered %s instead of a stream error" % r.fields.get(1))
                self.assertEqual(ERRORS.get(struct.unpack(">I", f[3])[0]), code)
                r.send(frame(PING, 0, 0, b"stillup?"))
                f = r.until(lambda f: f[0] in (PING, GOAWAY), "the PING's answer")
                self.assertIsNotNone(f)
                self.assertEqual((f[0], f[1], f[3]), (PING, ACK, b"stillup?"), "the connection did not live on")
            else:
                f = r.until(lambda f: f[2] == 1 and f[0] in (HEADERS, RST) or f[0] == GOAWAY, "the answer")
                self.assertIsNotNone(f)
                self.assertEqual(f[0], HEADERS)
                self.assertEqual(r.fields[1][":status"], "200")
                r.send(frame(PING, 0, 0, b"stillup?"))
                f = r.until(lambda f: f[0] in (PING, GOAWAY), "the PING's answer")
                self.assertEqual((f[0], f[3]), (PING, b"stillup?"))
        finally:
            r.close()

    def test_preface(self):
        """3.4: a connection that does not open with the client preface ends (here: read as HTTP/1, 400)."""
        import socket
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        got = s.recv(4096)
        self.assertTrue(got == b"" or b" 400 " in got.split(b"\r\n")[0] + b" ", got[:100])
        s.close()


def make_test(i, case):
    section, what, make, expected = case

    def t(self):
        self.check(section, what, make, expected)

    t.__doc__ = "%s: %s" % (section, what)
    return t


for i, case in enumerate(CASES):
    setattr(H2ConformanceTest, "test_%02d_%s" % (i, case[0].replace(" ", "_").replace(".", "_")), make_test(i, case))

if __name__ == "__main__":
    unittest.main()
