// px::http::ClientConn — one HTTP/1 client connection: the transport (TCP, or a
// unix socket), TLS over it when the caller brings an SSL, the response parser
// and the output chain. Every HTTP/1 client in px is one of these with a driver
// on top:
//   - proxy::UpConn (upstream/upconn.h): a proxied exchange, streamed with
//     backpressure, kept alive in its peer's pool (the stream's Upstream);
//   - http::Client (client.h): one request, the answer collected whole (health
//     probes, ACME and OCSP, pxadmind's reads of pxd, pxctl).
// The driver is the transport's user and the parser's sink; it writes the
// request with HeadWriter (h1.h) into `out`.
#pragma once
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <memory>
#include <string>

#include "http/parser.h"
#include "net/epoll_transport.h"
#include "net/output.h"
#include "net/transport.h"
#include "net/uv_transport.h"
#include "tls/transport.h"

namespace px::http {

struct ClientConn {
  net::UvTransport tcp;
  std::unique_ptr<net::UvPipeTransport> pipe;  // a unix socket, in place of tcp
  std::unique_ptr<net::SocketTransport> ep;    // TCP on a worker's own engine (pxd's upstreams), in place of tcp
  std::unique_ptr<tls::TlsTransport> wrap;     // TLS over tcp or pipe (tr points at it)
  net::Transport* tr = &tcp;                   // what the driver reads and writes
  Parser parser;
  net::Output out;

  // The transport, with `user` for its events: TCP, or a unix socket.
  void open_tcp(uv_loop_t* loop, net::TransportUser* user);
  // TCP on a pxd worker's own I/O engine (Worker::new_socket): send and receive without libuv's layer.
  void open_tcp(std::unique_ptr<net::SocketTransport> t, net::TransportUser* user);
  void open_unix(uv_loop_t* loop, net::TransportUser* user);
  // TLS over it, with the caller's SSL (taken): `user` gets the TLS layer's events from now on.
  void start_tls(SSL* ssl, net::TransportUser* user);
  int connect(const sockaddr* addr);
  void nodelay() { ep ? ep->nodelay() : tcp.nodelay(); }  // TCP
  void connect_unix(const char* path) { pipe->connect_path(path); }
  // After an error while connecting: why TLS failed ("certificate verification: …"), or "" when it was not TLS.
  std::string tls_failure() const;
};

}  // namespace px::http
