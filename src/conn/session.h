// px::proxy::Session — one client connection (session.cpp): its transport
// (TCP, PROXY header, TLS), the handshake, SNI, the peer's address and the
// client timeouts; the HTTP/1 server codec for it, or an HTTP/2 one (h2.h)
// after ALPN or the h2c preface.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "codec/h1_server.h"
#include "http/h1.h"
#include "http/parser.h"
#include "http/server_conn.h"
#include "net/cidr.h"
#include "net/transport.h"
#include "net/uv_transport.h"
#include "tls/client_hello.h"

namespace px::proxy {

class Worker;
class H2Conn;
struct Stream;

// Client-side timeouts. Each kind has one duration, so a per-worker FIFO list
// per kind stays sorted by deadline: arming is O(1), expiry walks only what expired.
enum class Timeout : uint8_t { none, header, body, keepalive, handshake };

// One client connection: its transport (TCP, a PROXY header reader, TLS, a
// ClientHello reader), the handshake and SNI, the peer's address, the client
// timeouts, reading and closing. Its codec speaks HTTP: H1Server (h1_server.h),
// or H2Conn (h2.h) once ALPN chose h2 or an h2c listener saw the preface.
// The connection itself (tcp, the TLS layer `wrap`, `tr`, `leftover`) is an http::ServerConn, as every
// HTTP/1 server connection's is.
struct Session final : net::TransportUser, tls::HelloDecider, http::ServerConn {
  std::unique_ptr<net::Transport> proxy_in;  // PROXY header reader over tcp (below TLS), on such a listener
  std::unique_ptr<net::Transport> peek;      // ClientHello reader below TLS, while passthrough routes exist
  Worker* w = nullptr;
  Session* prev = nullptr;  // the worker's list of sessions
  Session* next = nullptr;
  Session* tprev = nullptr;  // the worker's list for `timeout`
  Session* tnext = nullptr;
  uint64_t deadline = 0;
  ClientFacts client;  // who the client is, for the codecs' streams (stream/downstream.h)
  Timeout timeout = Timeout::none;
  bool got_bytes = false;  // any byte ever arrived on this connection
  bool want_read = true;   // false while a request waits for its response
  bool closing = false;
  bool eof = false;
  bool writes_done_close = false;  // close once the write queue drains
  bool counted = false;            // in the worker's list of sessions
  bool h2_allowed = false;         // the listener takes HTTP/2 (TLS: by ALPN; cleartext: h2c prior knowledge)
  bool h2_decided = false;         // cleartext: the first bytes said which protocol
  H1Server h1{this, &client};      // the HTTP/1 codec (idle while h2 is set)
  H2Conn* h2 = nullptr;            // the HTTP/2 codec, when the connection speaks it (h2.h)

  // net::TransportUser (the client connection)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;  // TLS: the handshake is done
  void on_closed() override;
  // tls::HelloDecider: a passthrough route for this SNI takes the connection (l4.h).
  bool on_client_hello(std::string_view sni, std::string_view hello) override;

  void start();
  void update_reading();
  void close();
  void close_when_written();
  void set_timeout(Timeout t);
  void on_timeout(Timeout t);
  bool idle() const;
  void start_h2();
};

}  // namespace px::proxy
