#include "net/uv_transport.h"

#include <cstring>
#include <memory>

namespace px::net {

namespace {
struct WriteReq {
  uv_write_t req;
  UvTransport* owner;
  WriteReq* next_free;
  std::string data;
};

// Per thread: the read buffer (data handed to on_data is valid during the call
// only) and recycled write requests (no malloc per queued write in steady state).
thread_local char* t_read_buf = nullptr;
thread_local WriteReq* t_free = nullptr;
thread_local int t_free_count = 0;

WriteReq* get_req() {
  if (WriteReq* r = t_free) {
    t_free = r->next_free;
    t_free_count--;
    return r;
  }
  return new WriteReq();
}

void put_req(WriteReq* r) {
  if (t_free_count >= 256 || r->data.capacity() > 256 * 1024) {
    delete r;
    return;
  }
  r->data.clear();
  r->next_free = t_free;
  t_free = r;
  t_free_count++;
}
}  // namespace

void on_written(uv_write_t* req, int status) {
  WriteReq* r = reinterpret_cast<WriteReq*>(req);
  UvTransport* t = r->owner;
  put_req(r);
  t->written(status);
}

void release_thread_buffers() {
  while (WriteReq* r = t_free) {
    t_free = r->next_free;
    delete r;
  }
  t_free_count = 0;
  delete[] t_read_buf;
  t_read_buf = nullptr;
}

void trim_thread_buffers() {
  while (t_free_count > 16) {
    WriteReq* r = t_free;
    t_free = r->next_free;
    t_free_count--;
    delete r;
  }
}

size_t Output::size() const {
  size_t n = 0;
  for (const auto& p : pieces_) n += p.len;
  return n;
}

void UvTransport::init_tcp(uv_loop_t* loop) {
  uv_tcp_init(loop, &h_.tcp);
  h_.tcp.data = this;
}

void UvTransport::init_pipe(uv_loop_t* loop) {
  uv_pipe_init(loop, &h_.pipe, 0);
  h_.pipe.data = this;
}

int UvTransport::accept(uv_stream_t* server) { return uv_accept(server, stream()); }

void UvTransport::on_connect(uv_connect_t* req, int status) {
  auto* t = static_cast<UvTransport*>(req->data);
  delete req;
  if (t->closing_) return;
  if (status < 0) t->user_->on_error(status);
  else t->user_->on_connected();
}

int UvTransport::connect(const sockaddr* addr) {
  auto* req = new uv_connect_t;
  req->data = this;
  int r = uv_tcp_connect(req, &h_.tcp, addr, on_connect);
  if (r != 0) delete req;
  return r;
}

void UvTransport::nodelay() { uv_tcp_nodelay(&h_.tcp, 1); }

IpAddr UvTransport::peer_ip() {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&h_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return IpAddr();
  return IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

void UvTransport::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  if (!t_read_buf) t_read_buf = new char[kReadBuf];
  *buf = uv_buf_init(t_read_buf, kReadBuf);
}

void UvTransport::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* t = static_cast<UvTransport*>(s->data);
  if (t->closing_) return;
  if (n > 0) {
    t->user_->on_data(buf->base, static_cast<size_t>(n));
  } else if (n == UV_EOF) {
    t->read_stop();
    t->user_->on_eof();
  } else if (n < 0) {
    t->read_stop();
    t->user_->on_error(static_cast<int>(n));
  }
}

void UvTransport::read_start() {
  if (reading_ || closing_) return;
  if (uv_read_start(stream(), on_alloc, on_read) == 0) reading_ = true;
}

void UvTransport::read_stop() {
  if (!reading_) return;
  uv_read_stop(stream());
  reading_ = false;
}

int UvTransport::write(Output& out) {
  if (out.empty()) return 0;
  if (closing_) {
    out.clear();
    return UV_ECANCELED;
  }
  uv_buf_t stackbufs[64];
  std::unique_ptr<uv_buf_t[]> heapbufs;
  uv_buf_t* bufs = stackbufs;
  size_t n = out.count();
  if (n > 64) {
    heapbufs.reset(new uv_buf_t[n]);
    bufs = heapbufs.get();
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    bufs[i] = uv_buf_init(const_cast<char*>(out.data(i)), static_cast<unsigned>(out.len(i)));
    total += out.len(i);
  }
  size_t done = 0;
  if (stream()->write_queue_size == 0) {
    // uv_try_write takes at most IOV_MAX buffers; more than 64 is rare, send them in the queue.
    int r = uv_try_write(stream(), bufs, static_cast<unsigned>(n > 64 ? 64 : n));
    if (r >= 0) done = static_cast<size_t>(r);
    else if (r != UV_EAGAIN) {
      out.clear();
      return r;
    }
  }
  if (done == total) {
    out.clear();
    return 0;
  }
  WriteReq* wr = get_req();
  wr->owner = this;
  wr->data.reserve(total - done);
  size_t skip = done;
  for (size_t i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    wr->data.append(bufs[i].base + skip, len - skip);
    skip = 0;
  }
  out.clear();
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  int r = uv_write(&wr->req, stream(), &b, 1, on_written);
  if (r != 0) {
    put_req(wr);
    return r;
  }
  return 0;
}

void UvTransport::written(int status) {
  if (closing_) return;
  if (status < 0) user_->on_error(status);
  else if (queued() < kLowWater) user_->on_drained();
}

void UvTransport::shutdown(bool then_close) {
  if (closing_) return;
  auto* req = new uv_shutdown_t;
  req->data = then_close ? this : nullptr;
  int r = uv_shutdown(req, stream(), [](uv_shutdown_t* sr, int) {
    auto* t = static_cast<UvTransport*>(sr->data);
    delete sr;
    if (t && !t->closing_) t->close();
  });
  if (r != 0) {
    delete req;
    if (then_close) close();
  }
}

void UvTransport::on_close(uv_handle_t* h) {
  auto* t = static_cast<UvTransport*>(h->data);
  t->user_->on_closed();
}

void UvTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&h_), on_close);
}

}  // namespace px::net
