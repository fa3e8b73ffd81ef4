"""Large bodies stream through with bounded memory, in both directions."""
import socket
import threading
import unittest

from pxtest import Client, Pxd, Upstream, route

GIB = 1 << 30
RSS_LIMIT_KB = 64 * 1024


class StreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("u1")
        cls.px = Pxd(routes=[route("app", ["a.test"], [cls.up], max_body_size=0)])

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        cls.up.stop()

    def sample_rss(self, stop, out):
        while not stop.wait(0.05):
            out.append(self.px.rss_kb())

    def test_1gib_download_streams_with_bounded_memory(self):
        base = self.px.rss_kb()
        stop, samples = threading.Event(), []
        t = threading.Thread(target=self.sample_rss, args=(stop, samples))
        t.start()
        c = Client(self.px.port)
        c.send("GET /download?bytes=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % GIB)
        got = [0]
        r = c.response(sink=lambda b: got.__setitem__(0, got[0] + len(b)))
        stop.set()
        t.join()
        c.close()
        self.assertEqual(r.status, 200)
        self.assertEqual(got[0], GIB)
        self.assertLess(max(samples + [0]) - base, RSS_LIMIT_KB)

    def test_1gib_upload_streams_with_bounded_memory(self):
        base = self.px.rss_kb()
        stop, samples = threading.Event(), []
        t = threading.Thread(target=self.sample_rss, args=(stop, samples))
        t.start()
        c = Client(self.px.port)
        c.send("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % GIB)
        block = b"z" * (1 << 20)
        for _ in range(GIB // len(block)):
            c.sock.sendall(block)
        r = c.response()
        stop.set()
        t.join()
        c.close()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["body_len"], GIB)
        self.assertLess(max(samples + [0]) - base, RSS_LIMIT_KB)

    def test_slow_reader_does_not_grow_memory(self):
        # The client stops reading: pxd must stop reading the upstream, not buffer 256 MiB.
        base = self.px.rss_kb()
        c = Client(self.px.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send("GET /download?bytes=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (256 << 20))
        c.sock.recv(1000)
        import time
        for _ in range(20):
            time.sleep(0.05)
            self.assertLess(self.px.rss_kb() - base, RSS_LIMIT_KB)
        c.close()


if __name__ == "__main__":
    unittest.main()
