// px::net::UvTransport — a Transport over a libuv stream: TCP (accepted or
// connected) or a unix socket. Reads land in a per-thread 64 KiB buffer; writes
// try uv_try_write on the whole chain first (one writev) and queue only the
// rest, in recycled write requests.
#pragma once
#include <uv.h>

#include <sys/socket.h>

#include "net/cidr.h"
#include "net/transport.h"

namespace px::net {

class UvTransport final : public Transport {
 public:
  UvTransport() = default;
  UvTransport(const UvTransport&) = delete;
  UvTransport& operator=(const UvTransport&) = delete;

  void init_tcp(uv_loop_t* loop);
  void init_pipe(uv_loop_t* loop);
  int accept(uv_stream_t* server);
  int connect(const sockaddr* addr);  // TCP: on_connected() or on_error() follows
  void nodelay();
  IpAddr peer_ip();                    // TCP: the peer's address
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&h_); }
  uv_loop_t* loop() { return h_.tcp.loop; }

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  size_t queued() const override { return h_.tcp.write_queue_size; }
  void shutdown(bool then_close = false) override;
  void close() override;

  static constexpr size_t kReadBuf = 64 * 1024;

 private:
  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void on_connect(uv_connect_t* req, int status);
  static void on_close(uv_handle_t* h);
  friend void on_written(uv_write_t* req, int status);
  void written(int status);

  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h_;
};

// Frees this thread's read buffer and write-request cache (a loop's thread calls it as it ends).
void release_thread_buffers();
// After a spike: keeps only a few cached write requests.
void trim_thread_buffers();

}  // namespace px::net
