// px::net::MemoryTransport — one end of an in-memory transport pair, so that
// unit tests can drive a session (or anything holding a Transport) with no
// socket, on a real libuv loop (h2o's loopback connection is the model).
//
// Bytes written at one end arrive at the other on a later loop iteration, as a
// socket would deliver them; queued() counts what the other end has not read
// yet, so watermarks and on_drained() behave as on TCP. close() or shutdown()
// at one end is an EOF at the other.
#pragma once
#include <uv.h>

#include <string>

#include "net/transport.h"

namespace px::net {

class MemoryTransport final : public Transport {
 public:
  MemoryTransport() = default;
  MemoryTransport(const MemoryTransport&) = delete;
  MemoryTransport& operator=(const MemoryTransport&) = delete;
  // Connects a and b on `loop`. Each must be close()d, and live until its on_closed().
  static void pair(uv_loop_t* loop, MemoryTransport& a, MemoryTransport& b);

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  size_t queued() const override { return peer_ ? peer_->inbox_.size() : 0; }
  void shutdown(bool then_close = false) override;
  void close() override;

 private:
  void schedule();
  void deliver();
  uv_timer_t timer_;
  MemoryTransport* peer_ = nullptr;
  std::string inbox_;  // written by the peer, not read yet
  bool eof_pending_ = false;
  bool eof_sent_ = false;
};

}  // namespace px::net
