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

// H is uv_tcp_t (UvTransport) or uv_pipe_t (UvPipeTransport): the handle lives
// inside the transport, so a connection costs one allocation.
template <class H>
class UvTransportT final : public Transport {
 public:
  UvTransportT() = default;
  UvTransportT(const UvTransportT&) = delete;
  UvTransportT& operator=(const UvTransportT&) = delete;

  void init(uv_loop_t* loop);
  int accept(uv_stream_t* server);
  int connect(const sockaddr* addr);    // TCP: on_connected() or on_error() follows
  void connect_path(const char* path);  // a unix socket: on_connected() or on_error() follows
  void nodelay();                       // TCP
  IpAddr peer_ip();                     // TCP: the peer's address
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&h_); }
  uv_loop_t* loop() { return h_.loop; }

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  size_t queued() const override { return h_.write_queue_size; }
  // TCP: sendfile(2) while the socket takes it; once it is full, -ENOTSUP (libuv tells no writability without a
  // write of its own: the caller writes the rest).
  int64_t send_file(int fd, uint64_t off, size_t len) override;
  void shutdown(bool then_close = false) override;
  void close() override;
  void ack_now() override;

  // Called by the libuv callbacks (uv_transport.cpp).
  void written(int status);
  void connected(int status);
  void closed() { user_->on_closed(); }
  void shut() { user_->on_shutdown(); }
  void read(ssize_t n, const uv_buf_t* buf);

 private:
  H h_;
};

using UvTransport = UvTransportT<uv_tcp_t>;
using UvPipeTransport = UvTransportT<uv_pipe_t>;
template <>
void UvTransportT<uv_tcp_t>::init(uv_loop_t* loop);
template <>
void UvTransportT<uv_pipe_t>::init(uv_loop_t* loop);
template <>
int UvTransportT<uv_tcp_t>::connect(const sockaddr* addr);
template <>
void UvTransportT<uv_pipe_t>::connect_path(const char* path);
template <>
void UvTransportT<uv_tcp_t>::nodelay();
template <>
IpAddr UvTransportT<uv_tcp_t>::peer_ip();
template <>
int64_t UvTransportT<uv_tcp_t>::send_file(int fd, uint64_t off, size_t len);
extern template class UvTransportT<uv_tcp_t>;
extern template class UvTransportT<uv_pipe_t>;

inline constexpr size_t kReadBuf = 64 * 1024;  // the per-thread read buffer

// This thread's read buffer (kReadBuf bytes): what on_data() hands over is valid during the call only.
char* thread_read_buffer();
// Frees this thread's read buffer and write-request cache (a loop's thread calls it as it ends).
void release_thread_buffers();
// After a spike: keeps only a few cached write requests.
void trim_thread_buffers();
// As a loop ends: closes every handle still open on it and runs it until they are closed.
void close_all_handles(uv_loop_t* loop);

}  // namespace px::net
