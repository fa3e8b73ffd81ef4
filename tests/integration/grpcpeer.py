#!/usr/bin/env python3
"""A real gRPC server (python3-grpcio) for px's tests: service px.test.Echo, messages as raw bytes (no generated
code), cleartext HTTP/2 or TLS.

  grpcpeer.py [--tls CERT KEY]

Prints "listening on 127.0.0.1:PORT". Methods:
  Unary         b"echo:" + the request, with trailing metadata x-trail: t1; a request b"fail:N" ends with
                status N and the details "failed as asked"; b"sleep:MS" answers after MS milliseconds
  Server        a request b"N": N messages b"part0" ... b"partN-1"
  Client        the requests joined with b"|"
  Bidi          b"re:" + each request, as each arrives
  Meta          the request's metadata as JSON (what px passed on)
  SetHealth     b"1" (SERVING) or b"2" (NOT_SERVING): what grpc.health.v1.Health/Check answers from now on
Also grpc.health.v1.Health/Check (gRPC's health protocol, its protobuf messages written by hand: a
HealthCheckResponse is field 1, a varint status).
"""
import argparse
import json
import sys
import time
from concurrent import futures

try:
    import grpc  # noqa: F401
except ImportError:  # a python3 other than Debian's first on PATH: Debian's python3-grpcio
    sys.path.append("/usr/lib/python3/dist-packages")
    import grpc


def unary(req, ctx):
    if req.startswith(b"fail:"):
        code = int(req[5:])
        ctx.abort(next(c for c in grpc.StatusCode if c.value[0] == code), "failed as asked")
    if req.startswith(b"sleep:"):
        time.sleep(int(req[6:]) / 1000.0)
    ctx.set_trailing_metadata((("x-trail", "t1"),))
    return b"echo:" + req


def server_stream(req, ctx):
    for i in range(int(req)):
        yield b"part%d" % i


def client_stream(it, ctx):
    return b"|".join(it)


def bidi(it, ctx):
    for m in it:
        yield b"re:" + m


HEALTH = [1]


def set_health(req, ctx):
    HEALTH[0] = int(req)
    return b""


def health_check(req, ctx):
    return bytes([0x08, HEALTH[0]])


def meta(req, ctx):
    return json.dumps(dict(ctx.invocation_metadata())).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    handler = grpc.method_handlers_generic_handler("px.test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Server": grpc.unary_stream_rpc_method_handler(server_stream),
        "Client": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Meta": grpc.unary_unary_rpc_method_handler(meta),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health),
    })
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(health_check),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler, health))
    if args.tls:
        with open(args.tls[0], "rb") as f:
            crt = f.read()
        with open(args.tls[1], "rb") as f:
            key = f.read()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, crt)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("listening on 127.0.0.1:%d" % port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
