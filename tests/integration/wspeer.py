#!/usr/bin/env python3
"""A real WebSocket server (python3-websockets, RFC 6455 over HTTP/1.1) for px's tests: it echoes every message,
answers the close handshake, and checks the opening handshake itself (Sec-WebSocket-Key and -Version).

  wspeer.py        prints "listening on 127.0.0.1:PORT"; GET /ws upgrades, anything else is refused
"""
import asyncio
import sys

try:
    import websockets
except ImportError:  # a python3 other than Debian's first on PATH: Debian's python3-websockets
    sys.path.append("/usr/lib/python3/dist-packages")
    import websockets


async def echo(ws, path=None):
    async for msg in ws:
        await ws.send(msg)


async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print("listening on 127.0.0.1:%d" % port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
