#include "net/memory_transport.h"

#include <uv.h>

namespace px::net {

void MemoryTransport::pair(uv_loop_t* loop, MemoryTransport& a, MemoryTransport& b) {
  for (MemoryTransport* t : {&a, &b}) {
    uv_timer_init(loop, &t->timer_);
    t->timer_.data = t;
  }
  a.peer_ = &b;
  b.peer_ = &a;
}

void MemoryTransport::schedule() {
  if (closing_ || uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) return;
  uv_timer_start(
      &timer_, [](uv_timer_t* t) { static_cast<MemoryTransport*>(t->data)->deliver(); }, 0, 0);
}

void MemoryTransport::deliver() {
  if (closing_) return;
  if (reading_ && !inbox_.empty()) {
    std::string data;
    data.swap(inbox_);
    user_->on_data(data.data(), data.size());
    if (peer_ && !peer_->closing_ && peer_->user_) peer_->user_->on_drained();
    if (closing_) return;
  }
  if (reading_ && inbox_.empty() && eof_pending_ && !eof_sent_) {
    eof_sent_ = true;
    reading_ = false;
    user_->on_eof();
  }
}

void MemoryTransport::read_start() {
  if (closing_) return;
  reading_ = true;
  if (!inbox_.empty() || (eof_pending_ && !eof_sent_)) schedule();
}

void MemoryTransport::read_stop() { reading_ = false; }

int MemoryTransport::write(Output& out) {
  if (closing_ || !peer_ || peer_->closing_ || peer_->eof_pending_) {
    out.clear();
    return UV_EPIPE;
  }
  for (size_t i = 0; i < out.count(); i++) peer_->inbox_.append(out.data(i), out.len(i));
  out.clear();
  peer_->schedule();
  return 0;
}

void MemoryTransport::shutdown(bool then_close) {
  if (closing_ || !peer_) return;
  peer_->eof_pending_ = true;
  peer_->schedule();
  if (then_close) close();
}

void MemoryTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  if (peer_) {
    peer_->eof_pending_ = true;
    peer_->schedule();
    peer_->peer_ = nullptr;
    peer_ = nullptr;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* t = static_cast<MemoryTransport*>(h->data);
    if (t->user_) t->user_->on_closed();
  });
}

}  // namespace px::net
