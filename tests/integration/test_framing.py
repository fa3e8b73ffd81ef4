"""Request smuggling defences: every ambiguous framing is refused with 400 and a
close; upstream responses are held to the same rules and answered 502."""
import unittest

from pxtest import Client, Pxd, Upstream, route


BAD_REQUESTS = {
    "content_length_and_chunked": "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing_duplicate_content_length": "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
                                          "Content-Length: 6\r\n\r\nhello!",
    "transfer_encoding_not_final_chunked": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip"
                                           "\r\n\r\n0\r\n\r\n",
    "transfer_encoding_gzip": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "transfer_encoding_identity_chunked": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity, chunked"
                                          "\r\n\r\n0\r\n\r\n",
    "invalid_chunk_size": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"
                          "0\r\n\r\n",
    "chunk_size_overflow": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "whitespace_before_colon": "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length : 0\r\n\r\n",
    "whitespace_before_colon_any_header": "GET / HTTP/1.1\r\nHost: a.test\r\nX-Foo : bar\r\n\r\n",
    "tab_before_colon": "GET / HTTP/1.1\r\nHost: a.test\r\nX-Foo\t: bar\r\n\r\n",
    "obsolete_line_folding": "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: one\r\n two\r\n\r\n",
    "nul_in_header": "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: o\x00ne\r\n\r\n",
    "bare_cr_in_header": "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: o\rne\r\n\r\n",
    "bare_lf_line_end": "GET / HTTP/1.1\nHost: a.test\n\n",
    "invalid_method": "G@T / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "invalid_version": "GET / HTTP/1.x\r\nHost: a.test\r\n\r\n",
    "http_1_2": "GET / HTTP/1.2\r\nHost: a.test\r\n\r\n",
    "missing_host_http11": "GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two_hosts": "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    "space_in_target": "GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "content_length_not_a_number": "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5x\r\n\r\nhello",
    "negative_content_length": "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n\r\n",
    # Vectors llhttp 8.1 alone lets through (RFC 9112's grammar, byte for byte).
    "bare_cr_in_chunk_size": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\rX\r\nabc\r\n0\r\n\r\n",
    "bare_cr_in_chunk_extension": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "3;a\rb\r\nabc\r\n0\r\n\r\n",
    "chunk_data_without_crlf": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabcXX0\r\n\r\n",
    "last_chunk_bare_lf": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n0\r\n\n",
    "chunk_extension_unbounded": "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3;" + "a" * 8000 + "\r\nabc\r\n0\r\n\r\n",
    "empty_header_name": "GET / HTTP/1.1\r\nHost: a.test\r\n: x\r\n\r\n",
    "bare_cr_line_start": "GET / HTTP/1.1\r\nHost: a.test\r\n\rX: x\r\n\r\n",
    "non_token_header_name": "GET / HTTP/1.1\r\nHost: a.test\r\nX(y): x\r\n\r\n",
    "double_space_request_line": "GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "fragment_in_target": "GET /a#b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "host_with_userinfo": "GET / HTTP/1.1\r\nHost: evil@a.test\r\n\r\n",
    "host_with_bad_port": "GET / HTTP/1.1\r\nHost: a.test:80x\r\n\r\n",
    "transfer_encoding_in_http10": "POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "0\r\n\r\n",
}


class FramingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("u1")
        cls.px = Pxd(routes=[route("app", ["a.test"], [cls.up])])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def check_rejected(self, name, raw):
        c = Client(self.px.port)
        c.send(raw + "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 400, name)
        self.assertEqual(r.header("connection"), "close", name)
        # Nothing after the bad request is ever answered: the connection closes.
        self.assertTrue(c.closed(), name)
        self.assertNotIn(b"HTTP/1.1", c.buf, name)
        c.close()

    def test_http2_version_is_505(self):
        c = Client(self.px.port)
        c.send("GET / HTTP/2.0\r\nHost: a.test\r\n\r\n")
        self.assertEqual(c.response().status, 505)
        c.close()

    def test_connect_is_405(self):
        c = Client(self.px.port)
        c.send("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        self.assertEqual(c.response().status, 405)
        c.close()

    def test_http10_without_keep_alive_is_closed_and_with_it_kept(self):
        c = Client(self.px.port)
        c.send("GET /echo HTTP/1.0\r\nHost: a.test\r\n\r\n")
        r = c.response()
        self.assertEqual((r.status, r.header("connection")), (200, "close"))
        self.assertTrue(c.closed())
        c.close()
        c = Client(self.px.port)
        for _ in range(2):
            c.send("GET /echo HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            r = c.response()
            self.assertEqual((r.status, r.header("connection")), (200, "keep-alive"))
        c.close()

    def test_header_names_with_underscore_are_dropped(self):
        c = Client(self.px.port)
        c.send("GET /echo HTTP/1.1\r\nHost: a.test\r\nX_Smuggle: 1\r\nX-Kept: 2\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(seen.get("x-kept"), "2")
        self.assertNotIn("x_smuggle", seen)
        c.close()

    def test_chunked_body_with_extensions_and_trailers_passes(self):
        c = Client(self.px.port)
        c.send("POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               "3 ; a = \"q\"\r\nabc\r\n2;b\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
        r = c.response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body"], "abcde")
        c.close()

    def test_upstream_bad_framing_is_502(self):
        for kind in ("cl_te", "dup_cl", "te_gzip", "bad_chunk", "space_colon", "fold", "nul", "version"):
            c = Client(self.px.port)
            c.send("GET /bad?kind=%s HTTP/1.1\r\nHost: a.test\r\n\r\n" % kind)
            r = c.response()
            self.assertEqual(r.status, 502, kind)
            c.close()


def make_case(name, raw):
    def t(self):
        self.check_rejected(name, raw)
    return t


for _name, _raw in BAD_REQUESTS.items():
    setattr(FramingTest, "test_rejects_" + _name, make_case(_name, _raw))


if __name__ == "__main__":
    unittest.main()
