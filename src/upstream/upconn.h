// px::proxy::UpConn — one connection to an upstream peer (upconn.cpp): the
// HTTP/1 client side. Idle ones wait in their peer's keep-alive pool (peer.h).
#pragma once
#include <uv.h>

#include <cstdint>
#include <memory>

#include "http/parser.h"
#include "net/output.h"
#include "net/transport.h"
#include "net/uv_transport.h"

namespace px::proxy {

class Worker;
struct PeerState;
struct Stream;

struct UpConn final : http::Sink, net::TransportUser {
  net::UvTransport tcp;
  net::Transport* tr = &tcp;
  std::unique_ptr<net::Transport> wrap;  // TLS over tcp, for https:// peers (tr points at it)
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;
  Stream* stream = nullptr;
  UpConn* prev = nullptr;  // in the peer's idle list
  UpConn* next = nullptr;
  http::Parser parser;
  net::Output out;
  uint8_t pending_closes = 0;
  enum class State : uint8_t { connecting, active, idle, closing } state = State::connecting;
  bool reused = false;
  bool got_bytes = false;  // some response byte arrived
  bool bp_paused = false;
  bool eof = false;
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

  void ended(bool error);  // the upstream stopped sending (EOF or an error)
  void start_reading();
  void close();
  void arm_timer(uint64_t ms);  // 0: no timeout
  void on_timer();
  void on_timeout();
};

}  // namespace px::proxy
