// px::http::ServerConn — one HTTP/1 server connection: the accepted transport
// (TCP, or a unix socket), TLS over it when the listener asks, and the bytes
// read but not parsed yet. Every HTTP/1 server connection in px is one of these
// with a driver on top:
//   - proxy::Session (conn/session.h), pxd's client connections: it adds the
//     PROXY header and ClientHello layers, the timeouts and SNI, and hands the
//     bytes to its codec (H1Server, or H2Conn after ALPN h2);
//   - http::Server (server.h): whole requests for pxadmind's API, its dashboard
//     and the metrics listeners of pxd and pxadmind.
// Both read requests with http::Parser and write answers with HeadWriter (h1.h).
// The mirror of ClientConn (client_conn.h).
#pragma once
#include <uv.h>

#include <memory>
#include <string>

#include "net/pending.h"
#include "net/transport.h"
#include "net/uring_transport.h"
#include "net/uv_transport.h"

namespace px::http {

// An accepted TCP connection's transport: libuv's, or one on pxd's io_uring engine in the same memory (an
// idle connection pays for one of them, not both).
struct AcceptedSocket {
  AcceptedSocket() { new (&uv) net::UvTransport(); }
  ~AcceptedSocket() {
    if (on_ring)
      std::destroy_at(&ring);
    else
      std::destroy_at(&uv);
  }
  AcceptedSocket(const AcceptedSocket&) = delete;
  AcceptedSocket& operator=(const AcceptedSocket&) = delete;
  net::UringTransport* make_ring() {  // before anything used uv
    std::destroy_at(&uv);
    new (&ring) net::UringTransport();
    on_ring = true;
    return &ring;
  }
  union {
    net::UvTransport uv;
    net::UringTransport ring;
  };
  bool on_ring = false;
};

struct ServerConn {
  AcceptedSocket sock;                   // an accepted TCP connection
  std::unique_ptr<net::Transport> wrap;  // the transport over sock (TLS), or in its place (a unix socket's)
  net::Transport* tr = &sock.uv;         // what the driver reads from and writes to
  net::Pending leftover;  // bytes read but not parsed yet (pipelining, tunnel data, an h2c preface's start)

  // Accepts a connection from `listener` (a uv_pipe_t when unix, else a uv_tcp_t), `user` getting its
  // events. 0, or a libuv error (the caller then closes tr).
  int accept_from(uv_stream_t* listener, net::TransportUser* user, bool unix);
  // A connection pxd accepted itself (fd), on the io_uring engine's `set`.
  void adopt_ring(net::UringSet* set, int fd, net::TransportUser* user);
  // The TCP connection's descriptor, or -1.
  int fd() const;
  // A unix socket peer's "uid:N" (SO_PEERCRED), or a TCP peer's address.
  std::string peer_name(bool unix);
};

}  // namespace px::http
