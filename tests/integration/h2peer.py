#!/usr/bin/env python3
"""An HTTP/2 upstream for px's tests (python3-h2, cleartext with prior knowledge): it counts its connections and
the streams open on each, answers after a delay when asked, sends GOAWAY after a number of streams, and
misbehaves on request, so that px's HTTP/2 upstream side can be shown against a real peer.

  h2peer.py [--max-streams N] [--goaway-after N] [--no-window]

Prints "listening on 127.0.0.1:PORT". Paths:
  /stats                 {"connections": accepted, "max_open": the most streams open at once on one connection}
  /echo                  the request's fields, body length, trailers and connection number as JSON, with a
                         trailer x-trailer
  /slow?ms=N             /echo after N ms
  /bad/frame             a DATA frame on stream 0 (a connection error, RFC 9113 6.1)
  /bad/conn-header       a response carrying "connection: close" (malformed, RFC 9113 8.2.2)
  /bad/trailer-pseudo    trailers carrying ":status" (malformed, RFC 9113 8.1)
--no-window: SETTINGS_INITIAL_WINDOW_SIZE 0 and never a WINDOW_UPDATE: a request body can never be sent.
"""
import argparse
import json
import select
import socket
import struct
import sys
import threading
import time

try:
    import h2  # noqa: F401
except ImportError:  # a python3 other than Debian's first on PATH: Debian's python3-h2
    sys.path.append("/usr/lib/python3/dist-packages")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402

lock = threading.Lock()
stats = {"connections": 0, "max_open": 0}


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def drain(sock, seconds=10):
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def serve(sock, n, args):
    cfg = h2.config.H2Configuration(client_side=False, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=True)
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: args.max_streams}
    if args.no_window:
        settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = 0
    c.update_settings(settings)
    sock.sendall(c.data_to_send())
    reqs = {}  # stream id -> {"headers": ..., "body": n}
    due = []  # (time, stream id)
    open_streams = set()
    seen = 0
    goaway_sent = False
    last_allowed = None
    while True:
        timeout = max(0.0, min(t for t, _ in due) - time.monotonic()) if due else 0.5
        r, _, _ = select.select([sock], [], [], timeout)
        if r:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                events = c.receive_data(data)
            except Exception:
                sock.sendall(c.data_to_send())
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    if last_allowed is not None and ev.stream_id > last_allowed:
                        continue  # above our GOAWAY: never processed (px retries it elsewhere)
                    reqs[ev.stream_id] = {"headers": [(k.decode(), v.decode()) for k, v in ev.headers], "body": 0}
                    open_streams.add(ev.stream_id)
                    seen += 1
                    with lock:
                        stats["max_open"] = max(stats["max_open"], len(open_streams))
                    if args.goaway_after and seen == args.goaway_after and not goaway_sent:
                        # Written by hand: the h2 library would close the connection to the open streams too.
                        goaway_sent = True
                        last_allowed = ev.stream_id
                        sock.sendall(c.data_to_send() + frame(7, 0, 0, struct.pack(">II", ev.stream_id, 0)))
                elif isinstance(ev, h2.events.TrailersReceived):
                    if ev.stream_id in reqs:
                        reqs[ev.stream_id]["trailers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id in reqs:
                        reqs[ev.stream_id]["body"] += len(ev.data)
                    if not args.no_window:
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    if ev.stream_id not in reqs:
                        continue
                    path = dict(reqs[ev.stream_id]["headers"]).get(":path", "/")
                    delay = 0.0
                    if path.startswith("/slow?ms="):
                        delay = int(path.split("=")[1]) / 1000.0
                    due.append((time.monotonic() + delay, ev.stream_id))
                elif isinstance(ev, h2.events.StreamReset):
                    reqs.pop(ev.stream_id, None)
                    open_streams.discard(ev.stream_id)
                    due = [(t, s) for t, s in due if s != ev.stream_id]
        now = time.monotonic()
        ready = [s for t, s in due if t <= now]
        due = [(t, s) for t, s in due if t > now]
        for sid in ready:
            rq = reqs.pop(sid)
            open_streams.discard(sid)
            path = dict(rq["headers"]).get(":path", "/")
            if path == "/stats":
                with lock:
                    body = json.dumps(stats).encode()
                c.send_headers(sid, [(":status", "200"), ("content-type", "application/json")])
                c.send_data(sid, body, end_stream=True)
            elif path == "/bad/frame":
                sock.sendall(c.data_to_send() + frame(0, 0, 0, b"junk"))
                drain(sock)  # (closing with unread bytes would reset the connection before px read the frame)
                return
            elif path == "/bad/conn-header":
                c.send_headers(sid, [(":status", "200"), ("connection", "close")], end_stream=True)
            elif path == "/bad/trailer-pseudo":
                c.send_headers(sid, [(":status", "200")])
                c.send_data(sid, b"body")
                c.send_headers(sid, [(":status", "200")], end_stream=True)
            else:
                body = json.dumps({"headers": rq["headers"], "body": rq["body"], "trailers": rq.get("trailers", []),
                                   "conn": n, "stream": sid}).encode()
                c.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                     ("content-length", str(len(body)))])
                c.send_data(sid, body)
                c.send_headers(sid, [("x-trailer", "yes")], end_stream=True)
        out = c.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                return
        if goaway_sent and not reqs and not due:
            time.sleep(0.2)  # the last frames leave before the close
            return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-streams", type=int, default=100)
    ap.add_argument("--goaway-after", type=int, default=0)
    ap.add_argument("--no-window", action="store_true")
    args = ap.parse_args()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    while True:
        s, _ = ls.accept()
        with lock:
            stats["connections"] += 1
            n = stats["connections"]

        def run(s=s, n=n):
            try:
                serve(s, n, args)
            finally:
                s.close()

        threading.Thread(target=run, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
