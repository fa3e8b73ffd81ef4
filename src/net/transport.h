// px::net::Transport — a byte stream, knowing nothing of HTTP. Start here for
// the bottom layer (src/README.md draws all of them).
//
//   UvTransport      a TCP connection or a unix socket (libuv stream)
//   EpollTransport   a TCP connection on the worker's own edge-triggered epoll set (L4 streams,
//                    upstream HTTP connections; net/epoll_transport.h)
//   UringTransport   the same on the worker's io_uring (pxd.conf io_engine uring: client connections
//                    too; net/uring_transport.h)
//   MemoryTransport  one end of an in-memory pair, for unit tests without sockets
//   TlsTransport     TLS over another transport (tls/transport.h)
//   LayeredTransport (below) passes through: the PROXY header reader (net/proxy_in.h) and the
//                    ClientHello reader for SNI passthrough (tls/client_hello.h) are two
//
// The layer above (an HTTP session, an upstream connection, a health probe,
// pxadmind's connections) implements TransportUser and holds a Transport.
// Watermarks live here: congested() says "stop feeding me", and on_drained()
// comes when the queue fell below the low watermark.
//
// Lifecycle (libuv's rule): after close(), on_closed() is the last event; the
// user may free the memory holding the transport only then.
#pragma once
#include <sys/sendfile.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>

#include "net/output.h"

namespace px::net {

inline constexpr size_t kHighWater = 256 * 1024;  // stop reading the other side above this
inline constexpr size_t kLowWater = 64 * 1024;    // ... and resume below this

class TransportUser {
 public:
  // Bytes arrived; `data` is valid during the call only.
  virtual void on_data(const char* data, size_t len) = 0;
  // The peer will send nothing more (it half-closed, or the connection ended).
  virtual void on_eof() = 0;
  // Reading, writing or connecting failed (a libuv error code). Close next.
  virtual void on_error(int err) = 0;
  // A queued write completed and fewer than kLowWater bytes wait.
  virtual void on_drained() = 0;
  // A client transport finished connecting (a failure comes as on_error).
  virtual void on_connected() {}
  // A shutdown(false) completed: everything written before it reached the kernel and the FIN followed.
  virtual void on_shutdown() {}
  // The transport released everything; the last event.
  virtual void on_closed() = 0;

 protected:
  ~TransportUser() = default;
};

// One sendfile(2) of `fd`'s bytes from `off` to the non-blocking socket `sock`: the bytes the kernel took (>0),
// -EAGAIN (the socket is full), -EIO (the file is shorter than it said), or another negative errno.
inline int64_t sendfile_once(int sock, int fd, uint64_t off, size_t len) {
  off_t o = static_cast<off_t>(off);
  ssize_t r;
  do r = ::sendfile(sock, fd, &o, len);
  while (r < 0 && errno == EINTR);
  if (r > 0) return r;
  if (r == 0) return -EIO;
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

class Transport {
 public:
  virtual ~Transport() = default;
  void set_user(TransportUser* u) { user_ = u; }
  virtual void read_start() = 0;
  virtual void read_stop() = 0;
  bool reading() const { return reading_; }
  // Sends out's bytes (what the kernel does not take at once is queued) and
  // clears `out`. Returns 0 or a libuv error code.
  virtual int write(Output& out) = 0;
  // Bytes accepted by write() and not yet handed to the kernel.
  virtual size_t queued() const = 0;
  // sendfile(2) of len bytes of file `fd` from `off`, when nothing is queued: the bytes the kernel took (>0),
  // -EAGAIN (none now: on_drained() comes once the socket can take more), -ENOTSUP (this transport cannot: TLS,
  // memory; write the bytes instead), or another negative errno (the connection failed).
  virtual int64_t send_file(int fd, uint64_t off, size_t len) {
    (void)fd, (void)off, (void)len;
    return -ENOTSUP;
  }
  bool congested() const { return queued() > kHighWater; }
  // Half-close once the queued bytes are out; then_close: and close after that. Without then_close,
  // on_shutdown() follows, or comes during this call when nothing was queued.
  virtual void shutdown(bool then_close = false) = 0;
  // Close now (queued bytes are dropped); on_closed() follows.
  virtual void close() = 0;
  bool closing() const { return closing_; }
  // Acknowledge what was read now, not after the delayed-ACK timer (TCP: TCP_QUICKACK).
  virtual void ack_now() {}

 protected:
  TransportUser* user_ = nullptr;
  bool reading_ = false;
  bool closing_ = false;
};

// A TCP socket's transport on a worker's own I/O engine (pxd.conf io_engine): EpollTransport on its epoll
// set, or UringTransport on its io_uring. What the upstream connections, px.fetch and L4 streams hold.
class SocketTransport : public Transport {
 public:
  // Takes a connected, non-blocking socket. shared: another descriptor refers to the same socket. 0 or a
  // libuv error code.
  virtual int adopt(int fd, bool shared = false) = 0;
  // Connects a new socket to addr: on_connected() or on_error() follows (0 returned), or a libuv error now.
  virtual int connect(const sockaddr* addr) = 0;
  virtual void nodelay() = 0;
  virtual int fd() const = 0;

  // The write side ends once what is queued has gone (then_close: and the transport closes): now when nothing
  // waits (or there is no connection to send it on: "done", as UvTransport's), else when the subclass sees its
  // queue empty and calls shut_now().
  void shutdown(bool then_close = false) override {
    if (closing_) return;
    shut_then_close_ = then_close;
    if (fd() < 0 || (queued() == 0 && !connecting()))
      shut_now();
    else
      shut_pending_ = true;
  }

 protected:
  virtual bool connecting() const = 0;
  // SHUT_WR (when there is a socket), then close() or on_shutdown().
  void shut_now() {
    shut_pending_ = false;
    if (fd() >= 0) ::shutdown(fd(), SHUT_WR);
    if (shut_then_close_)
      close();
    else
      user_->on_shutdown();
  }
  bool shut_pending_ = false, shut_then_close_ = false;
};

// A layer over another transport that passes everything through, both ways: a subclass overrides what
// it reads or changes (net::ProxyInTransport, tls::HelloPeekTransport). It becomes `inner`'s user.
class LayeredTransport : public Transport, public TransportUser {
 public:
  explicit LayeredTransport(Transport* inner) : inner_(inner) { inner_->set_user(this); }
  void read_start() override {
    reading_ = true;
    inner_->read_start();
  }
  void read_stop() override {
    reading_ = false;
    inner_->read_stop();
  }
  int write(Output& out) override { return inner_->write(out); }
  size_t queued() const override { return inner_->queued(); }
  void shutdown(bool then_close) override { inner_->shutdown(then_close); }
  void close() override {
    closing_ = true;
    inner_->close();
  }
  void ack_now() override { inner_->ack_now(); }

  void on_data(const char* data, size_t len) override { user_->on_data(data, len); }
  void on_eof() override { user_->on_eof(); }
  void on_error(int err) override { user_->on_error(err); }
  void on_drained() override { user_->on_drained(); }
  void on_connected() override { user_->on_connected(); }
  void on_shutdown() override { user_->on_shutdown(); }
  void on_closed() override { user_->on_closed(); }

 protected:
  Transport* inner_;
};

}  // namespace px::net
