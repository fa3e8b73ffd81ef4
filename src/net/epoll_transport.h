// px::net::EpollTransport — a Transport over a TCP socket that a worker's EpollSet drives itself,
// edge-triggered, instead of through a libuv handle. L4 streams and pxd's upstream HTTP connections use
// it: a short connection costs one epoll registration per socket (libuv's level-triggered handles add a
// change after a connect, a lazy removal after an end of file and another at the close), no getsockopt
// after a connect, and each read and write is one recv() or send() with nothing of libuv's around it.
//
// EpollSet: one per worker. Its epoll descriptor is itself watched by the worker's libuv loop (a
// uv_poll_t), so everything still runs on that loop's thread, between its other callbacks.
//   - Each socket is added once, for reading and writing, edge-triggered; closing the socket removes
//     it (the kernel does, when no other descriptor shares it; `shared` adopts do it themselves).
//   - A side that stops reading remembers an unread edge; reading again reads without waiting for one.
//   - on_closed() comes from the set after close() returns (never during it), as libuv's does.
#pragma once
#include <uv.h>

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "net/transport.h"
#include "net/turns.h"

namespace px::net {

class EpollTransport;

class EpollSet {
 public:
  EpollSet() = default;
  EpollSet(const EpollSet&) = delete;
  EpollSet& operator=(const EpollSet&) = delete;
  ~EpollSet();

  // Creates the epoll descriptor and watches it from `loop`; 0 or a libuv error code.
  int open(uv_loop_t* loop);
  // Closes the set's handles; the on_closed() still owed come after this returns (the loop must run once
  // more). Safe from inside the set's own callbacks.
  void close();
  bool is_open() const { return epfd_ >= 0; }

  // For EpollTransport.
  int add(int fd, EpollTransport* t);
  void remove(int fd);
  void want_turn(EpollTransport* t) { turns_.want_turn(t); }  // read (or connect) next turn, without an edge
  void closed(EpollTransport* t) { turns_.closed(t); }        // on_closed() is owed

 private:
  void run();  // one batch of events, then the turns and closes they caused

  int epfd_ = -1;
  uv_poll_t poll_;
  Turns<EpollTransport> turns_;
  bool handles_ = false;
};

class EpollTransport final : public SocketTransport {
 public:
  EpollTransport() = default;
  EpollTransport(const EpollTransport&) = delete;
  EpollTransport& operator=(const EpollTransport&) = delete;
  ~EpollTransport() override;

  void init(EpollSet* set) { set_ = set; }
  // Takes a connected, non-blocking socket. shared: another descriptor refers to the same socket
  // (a duplicate), so closing this one must remove it from the set explicitly. 0 or a libuv error.
  int adopt(int fd, bool shared = false) override;
  // Connects a new socket to addr: on_connected() or on_error() follows (0 returned), or a libuv
  // error code now.
  int connect(const sockaddr* addr) override;
  void nodelay() override;
  int fd() const override { return fd_; }
  bool connecting() const override { return connecting_; }

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  int64_t send_file(int fd, uint64_t off, size_t len) override;
  size_t queued() const override { return wq_.size() - wq_off_; }
  void close() override;
  void ack_now() override;

  // For EpollSet.
  void on_events(uint32_t ev);
  void on_turn();
  void on_closed_now() { user_->on_closed(); }
  EpollTransport* next_turn = nullptr;
  EpollTransport* next_closed = nullptr;
  bool in_turns = false;

 private:
  void do_read();
  bool flush();             // false: the transport failed (the user heard of it)
  bool file_wait_ = false;  // a send_file met a full socket: on_drained() once it is writable
  void fail(int err);

  EpollSet* set_ = nullptr;
  int fd_ = -1;
  bool shared_ = false;
  bool connecting_ = false;
  bool readable_ = false;  // an edge said so and no read has found the socket empty since
  bool writable_ = false;
  bool fin_ = false;  // the peer's FIN was seen (EPOLLRDHUP): a read that empties the socket ends it
  bool hup_ = false;  // an error or hang-up was seen: read on until read() says which
  bool eof_ = false;  // read() said 0
  std::string wq_;    // what the kernel did not take yet, from wq_off_
  size_t wq_off_ = 0;
};

}  // namespace px::net
