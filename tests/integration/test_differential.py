"""Differential test of px's HTTP/1 codec against an independent reference
(http_reference.py, regular expressions written from RFC 9112's ABNF): thousands
of malformed requests made by mutating valid ones, fed to px's parser whole and
in pseudo-random pieces. Both must agree on accept/reject and on where each
message ends (and on its decoded body). Deterministic: a fixed seed."""
import os
import random
import subprocess
import unittest

from pxtest import BUILD
from http_reference import parse_requests

CHECK = os.path.join(BUILD, "tests", "px-http-check")
CASES = int(os.environ.get("PX_DIFF_CASES", "12000"))

SEEDS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: a.test\r\nUser-Agent: x/1\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=\"y\"\r\nwiki\r\n5 ; z\r\npedia\r\n"
    b"0\r\nT: v\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\n"
    b"Host: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET http://a.test/x HTTP/1.1\r\nHost: b\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:81\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW BYTES",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
]
BYTES = b"\r\n \t\x00:;=\"\\_#@,/?x0aF9\x7f\x80\xff\x0b\x0c-"
LINES = [b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
         b"Transfer-Encoding: chunked, identity\r\n", b" folded\r\n", b"\tfolded\r\n", b": x\r\n", b"X_Y: 1\r\n",
         b"Host: b\r\n", b"Host: a b\r\n", b"Content-Length: 03\r\n", b"Content-Length: 1, 1\r\n",
         b"Connection: upgrade\r\n", b"Upgrade: x\r\n", b"X: \x01\r\n", b"\r\n", b"\n", b"\r\r\n",
         b"Content_Length: 9\r\n", b"Host: u@a\r\n", b"X-Long: " + b"v" * 300 + b"\r\n"]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0:
            data[pos:pos] = bytes([rng.choice(BYTES)])
        elif op == 1 and data:
            del data[min(pos, len(data) - 1)]
        elif op == 2 and data:
            data[min(pos, len(data) - 1)] = rng.choice(BYTES)
        elif op == 3:
            crlfs = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
            if crlfs:
                i = rng.choice(crlfs)
                data[i:i + 2] = rng.choice([b"\n", b"\r", b"\r\r\n", b"\r\n\r\n", b"\n\r", b" \r\n"])
        elif op == 4:
            starts = [i + 2 for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
            if starts:
                i = rng.choice(starts)
                data[i:i] = rng.choice(LINES)
        elif op == 5:
            hexes = [i for i in range(len(data)) if chr(data[i]) in "0123456789abcdefABCDEF"]
            if hexes:
                data[rng.choice(hexes)] = rng.choice(b"0123456789abcdefABCDEFgx ;")
        else:
            cut = rng.randrange(len(data) + 1)
            data = data[:cut]
    return bytes(data)


def cases():
    rng = random.Random(20261124)
    out = []
    for s in SEEDS:
        out.append(s)
    while len(out) < CASES:
        out.append(mutate(rng, rng.choice(SEEDS)))
    return out


def px_parse(inputs):
    """[(end, [(offset, body)])] for each input, fed whole and fed in pieces."""
    feed = bytearray()
    for i, data in enumerate(inputs):
        for seed in (0, i * 7919 + 1):
            feed += b"request %d %d\n" % (seed, len(data)) + data
    out = subprocess.run([CHECK], input=bytes(feed), stdout=subprocess.PIPE, check=True).stdout.decode()
    lines = out.splitlines()
    results = []
    for line in lines:
        parts = line.split(" ")
        msgs = []
        for m in parts[1:]:
            off, body = m.split(":")
            msgs.append((int(off), b"" if body == "-" else bytes.fromhex(body)))
        results.append((parts[0], msgs))
    return results


class DifferentialTest(unittest.TestCase):
    def test_px_and_the_reference_agree(self):
        inputs = cases()
        got = px_parse(inputs)
        self.assertEqual(len(got), 2 * len(inputs))
        disagreements = []
        kinds = {}
        early = [0]
        for i, data in enumerate(inputs):
            want = parse_requests(data)
            kinds[want[0]] = kinds.get(want[0], 0) + 1
            for k, label in ((0, "whole"), (1, "in pieces")):
                px = got[2 * i + k]
                # px may refuse a message before it is whole when what it has seen can no longer
                # become valid (an unknown method, a second Host); the reference judges whole heads.
                if want[0] == "incomplete" and px == ("reject", want[1]):
                    early[0] += 1
                    continue
                if px != want:
                    disagreements.append("%s %r: px %r, reference %r" % (label, data, got[2 * i + k], want))
        if disagreements and os.environ.get("PX_DIFF_DUMP"):
            with open(os.environ["PX_DIFF_DUMP"], "w") as f:
                f.write("\n".join(disagreements))
        self.assertEqual(disagreements[:5], [], "%d disagreements" % len(disagreements))
        # The mutations must exercise both sides of the grammar, not only one.
        for end in ("end", "reject", "incomplete", "upgrade"):
            self.assertGreater(kinds.get(end, 0), len(inputs) // 100, (end, kinds))


if __name__ == "__main__":
    unittest.main()
