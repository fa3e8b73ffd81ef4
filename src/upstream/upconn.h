// px::proxy::UpConn — one connection to an upstream peer (upconn.cpp): the
// HTTP/1 client side, and the first implementation of the Upstream interface
// (upstream.h): one exchange at a time. Idle ones wait in their peer's keep-alive
// pool (peer.h).
#pragma once
#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "http/client_conn.h"
#include "upstream/upstream.h"

namespace px::proxy {

class Worker;
struct PeerState;
struct Stream;

// What the HTTP/1 side keeps of a stream's request (Stream::upreq): its text.
struct UpstreamRequest {
  std::string head;          // the request head towards the upstream (kept for a retry); HTTP/2: names and values
  std::vector<uint32_t> nv;  // HTTP/2: offsets into head (name, length, value, length, ...)
  std::string pending_body;  // request body that arrived before the upstream was ready, framed
};
// The request head for the upstream (into st->upreq), written once per stream, in the route's upstream protocol
// (HTTP/1 text, or HTTP/2 fields: h2up.h): dispatch() calls it before the first attempt.
void write_request_head(Stream* st);

// A new upstream connection's transport (on the worker's engine), TLS over it when ssl, and its timer (the
// caller's, with data = c): UpConn's and H2Up's. Counted in the worker's upstream connections.
void open_upstream(Worker* w, http::ClientConn* c, net::TransportUser* user, SSL* ssl, uv_timer_t* timer);

// dispatch()'s HTTP/1 part: binds the stream to an idle keep-alive connection to
// p (unless fresh) or to a new one, and sends the request when it can.
enum class Bind : uint8_t { bound, connect_failed, no_tls, no_upgrade };
Bind bind_http1(Stream* st, PeerState* p, bool fresh);

// The connection (transport, TLS, parser, output) is an http::ClientConn, as every HTTP/1 client's is.
struct UpConn final : http::Sink, net::TransportUser, http::ClientConn, Upstream {
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;
  Stream* stream = nullptr;
  UpConn* prev = nullptr;  // in the peer's idle list
  UpConn* next = nullptr;
  uint8_t pending_closes = 0;
  enum class State : uint8_t { connecting, active, idle, closing } state = State::connecting;
  bool reused = false;
  bool got_bytes = false;  // some response byte arrived
  bool bp_paused = false;
  bool eof = false;
  bool trailers_sent = false;     // the request's last chunk went with its trailers
  uint64_t connect_start_us = 0;  // when the connect began (only while metrics are on)
  uint64_t requests = 0;
  uint64_t deadline = 0;   // loop time (ms) of the current timeout; 0: none
  uint64_t armed_for = 0;  // when the uv timer fires; 0: not armed

  int on_head(http::Head& h) override;
  int on_body(const char* data, size_t len) override;
  int on_complete() override;

  // net::TransportUser (the upstream connection)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;
  void on_closed() override;

  // Upstream (the stream's exchange on this connection)
  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_trailers(Stream* st, const Fields& trailers) override;
  void flush(Stream* st) override;
  void abort(Stream* st) override;
  void pause_response(Stream* st) override;
  void resume_response(Stream* st) override;
  void tunnel_send(Stream* st, const char* data, size_t len) override;
  void tunnel_end(Stream* st) override;

  void unbind();           // the stream and this connection part
  void failed(Fail why);   // an attempt failed: upstream_failed() with this connection's facts
  void ended(bool error);  // the upstream stopped sending (EOF or an error)
  void start_reading();
  void close();
  void arm_timer(uint64_t ms);  // 0: no timeout
  void on_timer();
  void on_timeout();
};

}  // namespace px::proxy
