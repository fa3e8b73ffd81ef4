// px::net::UringTransport — a Transport over a TCP socket driven by the worker's io_uring (UringSet), the
// alternative to EpollTransport (pxd.conf io_engine). Nothing is a system call of its own: receives are
// one multishot recv per socket into the worker's provided buffer ring (no buffer per connection, idle or
// not), sends are queued and submitted with everything else of the loop turn in one io_uring_enter.
//
// UringSet: one per worker. The ring's descriptor is watched by the worker's libuv loop (a uv_poll_t), so
// everything runs on that loop's thread; a uv_prepare_t submits what the turn queued just before the loop
// blocks, and takes the completions that came meanwhile.
//   - Bytes handed to write() are copied (a send is in flight after write() returns); one send per socket
//     is in flight at a time, and what comes meanwhile waits for it.
//   - A side that stops reading keeps what still arrives (up to kHighWater, then its recv is cancelled)
//     and gets it at the next turn after reading again.
//   - close() cancels what is in flight; the socket is closed and on_closed() comes once the ring has
//     answered for all of it, after close() returned (never during it), as libuv's does.
#pragma once
#include <liburing.h>
#include <uv.h>

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "net/transport.h"

namespace px::net {

class UringTransport;

class UringSet {
 public:
  UringSet() = default;
  UringSet(const UringSet&) = delete;
  UringSet& operator=(const UringSet&) = delete;
  ~UringSet();

  // Can this kernel (and its sysctls, seccomp, container) run a ring with what the transport needs? "" when
  // it can, else why not.
  static std::string probe();
  // Creates the ring and the buffer ring (`buffers` of `buffer_size` bytes) and watches it from `loop`;
  // 0 or a libuv error code (*why says what failed).
  int open(uv_loop_t* loop, unsigned buffers, unsigned buffer_size, std::string* why);
  // Closes the set's handles once every transport on it has closed (the loop must run on).
  void close();
  bool is_open() const { return handles_; }

  // For UringTransport.
  io_uring_sqe* sqe();  // a submission entry (the queue is submitted first when it is full)
  void submit();        // what is queued, now (else it goes before the loop next blocks)
  void want_turn(UringTransport* t);
  void closed(UringTransport* t);  // on_closed() is owed
  const char* buffer(unsigned bid) const { return bufs_ + static_cast<size_t>(bid) * buf_size_; }
  void give_back(unsigned bid);  // a received buffer's bytes were used: the ring may fill it again
  static constexpr uint16_t kGroup = 0;
  size_t inflight = 0;  // submissions of all its transports the ring has not answered for yet

 private:
  bool pump();
  int watch();
  bool completions();  // false: there were none
  void turns();
  void reap();
  void arm_idle();
  void on_prepare();

  io_uring ring_{};
  bool ring_open_ = false, handles_ = false, idle_on_ = false, enabled_ = false;
  uv_poll_t poll_;
  uv_prepare_t prepare_;
  uv_idle_t idle_;
  io_uring_buf_ring* br_ = nullptr;
  char* bufs_ = nullptr;
  size_t br_bytes_ = 0, bufs_bytes_ = 0;
  unsigned nbufs_ = 0, buf_size_ = 0;
  UringTransport* turn_head_ = nullptr;
  UringTransport* closed_head_ = nullptr;
};

class UringTransport final : public SocketTransport {
 public:
  UringTransport() = default;
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;
  ~UringTransport() override;

  void init(UringSet* set) { set_ = set; }
  // Takes a connected, non-blocking socket (shared: another descriptor refers to it too). 0.
  int adopt(int fd, bool shared = false) override;
  // Connects a new socket to addr: on_connected() or on_error() follows (0 returned), or a libuv error
  // code now.
  int connect(const sockaddr* addr) override;
  void nodelay() override;
  int fd() const override { return fd_; }

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  size_t queued() const override { return sbuf_.size() - send_off_ + wq_.size(); }
  void shutdown(bool then_close = false) override;
  void close() override;
  void ack_now() override;

  // For UringSet.
  enum Op : uint64_t { kRecv = 1, kSend = 2, kConnect = 3, kCancel = 4 };
  void on_cqe(Op op, int res, uint32_t flags);
  void on_turn();
  void on_closed_now() { user_->on_closed(); }
  UringTransport* next_turn = nullptr;
  UringTransport* next_closed = nullptr;
  bool in_turns = false;

 private:
  void queue(io_uring_sqe* s, Op op) {
    io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(this) | op);
    inflight_++;
    set_->inflight++;
  }
  void answered() {
    inflight_--;
    set_->inflight--;
  }
  void arm_recv();
  void cancel_recv();
  void start_send();
  void sent(int res);
  void received(int res, uint32_t flags);
  void deliver(const char* p, size_t n);
  void end_of_stream();
  void fail(int err);
  void settle();  // closing: the socket and on_closed() once nothing is in flight
  void after_queue();

  UringSet* set_ = nullptr;
  int fd_ = -1;
  int inflight_ = 0;  // submissions the ring has not answered for yet
  bool shared_ = false, connecting_ = false, recv_armed_ = false, recv_cancelled_ = false, sending_ = false;
  bool eof_ = false, eof_owed_ = false, fd_cancelled_ = false, settled_ = false;
  bool shut_pending_ = false, shut_then_close_ = false;
  sockaddr_storage addr_{};
  std::string wq_;    // written while a send is in flight
  std::string sbuf_;  // the send in flight, from send_off_
  size_t send_off_ = 0;
  std::string stash_;  // received while not reading
};

}  // namespace px::net
