#include "net/uv_transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>
#include <memory>

namespace px::net {

namespace {
struct WriteReq {
  uv_write_t req;
  void* owner;  // the UvTransportT that queued it
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

template <class H>
struct Cb {
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    static_cast<UvTransportT<H>*>(s->data)->read(n, buf);
  }
  static void on_connect(uv_connect_t* req, int status) {
    auto* t = static_cast<UvTransportT<H>*>(req->data);
    delete req;
    t->connected(status);
  }
  static void on_close(uv_handle_t* h) { static_cast<UvTransportT<H>*>(h->data)->closed(); }
  static void on_written(uv_write_t* req, int status) {
    WriteReq* r = reinterpret_cast<WriteReq*>(req);
    auto* t = static_cast<UvTransportT<H>*>(r->owner);
    put_req(r);
    t->written(status);
  }
};

char* thread_read_buffer() {
  if (!t_read_buf) t_read_buf = new char[kReadBuf];
  return t_read_buf;
}

static void alloc_read_buffer(uv_buf_t* buf) { *buf = uv_buf_init(thread_read_buffer(), kReadBuf); }
template <class H>
void Cb<H>::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  alloc_read_buffer(buf);
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

template <>
void UvTransportT<uv_tcp_t>::init(uv_loop_t* loop) {
  uv_tcp_init(loop, &h_);
  h_.data = this;
}

template <>
void UvTransportT<uv_pipe_t>::init(uv_loop_t* loop) {
  uv_pipe_init(loop, &h_, 0);
  h_.data = this;
}

template <class H>
int UvTransportT<H>::accept(uv_stream_t* server) {
  return uv_accept(server, stream());
}

template <class H>
void UvTransportT<H>::connected(int status) {
  if (closing_) return;
  if (status < 0)
    user_->on_error(status);
  else
    user_->on_connected();
}

template <>
int UvTransportT<uv_tcp_t>::connect(const sockaddr* addr) {
  auto* req = new uv_connect_t;
  req->data = this;
  int r = uv_tcp_connect(req, &h_, addr, Cb<uv_tcp_t>::on_connect);
  if (r != 0) delete req;
  return r;
}

template <>
void UvTransportT<uv_pipe_t>::connect_path(const char* path) {
  auto* req = new uv_connect_t;
  req->data = this;
  uv_pipe_connect(req, &h_, path, Cb<uv_pipe_t>::on_connect);
}

template <>
void UvTransportT<uv_tcp_t>::nodelay() {
  uv_tcp_nodelay(&h_, 1);
}

template <>
IpAddr UvTransportT<uv_tcp_t>::peer_ip() {
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&h_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return IpAddr();
  return IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

template <class H>
void UvTransportT<H>::read(ssize_t n, const uv_buf_t* buf) {
  if (closing_) return;
  if (n > 0) {
    user_->on_data(buf->base, static_cast<size_t>(n));
  } else if (n == UV_EOF) {
    read_stop();
    user_->on_eof();
  } else if (n < 0) {
    read_stop();
    user_->on_error(static_cast<int>(n));
  }
}

template <class H>
void UvTransportT<H>::read_start() {
  if (reading_ || closing_) return;
  if (uv_read_start(stream(), Cb<H>::on_alloc, Cb<H>::on_read) == 0) reading_ = true;
}

template <class H>
void UvTransportT<H>::read_stop() {
  if (!reading_) return;
  uv_read_stop(stream());
  reading_ = false;
}

template <class H>
int UvTransportT<H>::write(Output& out) {
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
    if (r >= 0)
      done = static_cast<size_t>(r);
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
  int r = uv_write(&wr->req, stream(), &b, 1, Cb<H>::on_written);
  if (r != 0) {
    put_req(wr);
    return r;
  }
  return 0;
}

template <class H>
void UvTransportT<H>::written(int status) {
  if (closing_) return;
  if (status < 0)
    user_->on_error(status);
  else if (queued() < kLowWater)
    user_->on_drained();
}

template <class H>
void UvTransportT<H>::shutdown(bool then_close) {
  if (closing_) return;
  uv_os_fd_t fd;
  if (!then_close && h_.write_queue_size == 0 && uv_fileno(reinterpret_cast<uv_handle_t*>(&h_), &fd) == 0 &&
      ::shutdown(fd, SHUT_WR) == 0) {
    // Nothing queued: the FIN goes now, not after a turn of the loop waiting for "writable".
    shut();
    return;
  }
  auto* req = new uv_shutdown_t;
  req->data = then_close ? this : nullptr;
  int r = uv_shutdown(req, stream(), [](uv_shutdown_t* sr, int) {
    auto* t = static_cast<UvTransportT<H>*>(sr->data);
    auto* owner = static_cast<UvTransportT<H>*>(sr->handle->data);
    delete sr;
    if (t && !t->closing())
      t->close();
    else if (!t && !owner->closing())
      owner->shut();
  });
  if (r != 0) {
    delete req;
    if (then_close)
      close();
    else
      shut();  // not connected any more: nothing can be sent, so the shutdown is "done"
  }
}

template <class H>
void UvTransportT<H>::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&h_), Cb<H>::on_close);
}

template <class H>
void UvTransportT<H>::ack_now() {
  uv_os_fd_t fd;
  int one = 1;
  if (!closing_ && uv_fileno(reinterpret_cast<uv_handle_t*>(&h_), &fd) == 0)
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);  // a unix socket says no: harmless
}

void close_all_handles(uv_loop_t* loop) {
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(loop, UV_RUN_DEFAULT);
}

template <class H>
int64_t UvTransportT<H>::send_file(int, uint64_t, size_t) {
  return -ENOTSUP;
}

template <>
int64_t UvTransportT<uv_tcp_t>::send_file(int fd, uint64_t off, size_t len) {
  uv_os_fd_t sock;
  if (closing_ || h_.write_queue_size > 0 || uv_fileno(reinterpret_cast<uv_handle_t*>(&h_), &sock) != 0)
    return -ENOTSUP;
  int64_t n = sendfile_once(sock, fd, off, len);  // (libuv's sockets are non-blocking)
  return n == -EAGAIN ? -ENOTSUP : n;
}

template class UvTransportT<uv_tcp_t>;
template class UvTransportT<uv_pipe_t>;

}  // namespace px::net
