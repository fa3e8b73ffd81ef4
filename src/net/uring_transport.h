// px::net::UringTransport — a Transport over a TCP socket driven by the worker's io_uring (UringSet), the
// alternative to EpollTransport (pxd.conf io_engine). Nothing is a system call of its own: receives are
// one multishot recv per socket into the worker's provided buffer ring (no buffer per connection, idle or
// not), sends are queued and submitted with everything else of the loop turn in one io_uring_enter.
//
// UringSet: one per worker, on the worker's libuv loop's thread. The worker sleeps in the ring, not in
// libuv's epoll_wait: a uv_prepare_t submits what the turn queued and, when libuv has nothing due (no timer,
// idle handle or closing handle), waits in the same io_uring_enter for a completion or libuv's next timer,
// with a poll of libuv's own epoll descriptor in the ring for libuv's events; a uv_idle_t that is always on
// then keeps libuv's own poll from blocking (it looks, with no timeout, once per turn). So the ring's work for
// the thread runs in the call that sleeps (DEFER_TASKRUN), where a sleep in epoll_wait was interrupted by it
// and made again for the ring's descriptor. (So a uv_run(UV_RUN_NOWAIT) may sleep, until libuv's next timer
// or an event: pxd's loops run UV_RUN_DEFAULT.)
//   - Bytes handed to write() are copied (a send is in flight after write() returns); one send per socket
//     is in flight at a time, and what comes meanwhile waits for it.
//   - A side that stops reading keeps what still arrives (up to kHighWater, then its recv is cancelled)
//     and gets it at the next turn after reading again.
//   - close() cancels what is in flight; the socket is closed and on_closed() comes once the ring has
//     answered for all of it, after close() returned (never during it), as libuv's does.
//
// UringAcceptor: a listening socket's connections, taken by one multishot accept on the same ring (no
// system call per accepted connection but the getpeername the user may make).
#pragma once
#include <liburing.h>
#include <uv.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

#include "net/transport.h"
#include "net/turns.h"

namespace px::net {

class UringTransport;
class UringAcceptor;

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
  io_uring_sqe* sqe();                   // a submission entry (the queue is submitted first when it is full)
  void submit(bool get_events = false);  // what is queued, now (else it goes before the loop next blocks)
  void want_turn(UringTransport* t) { turns_.want_turn(t); }
  void closed(UringTransport* t) { turns_.closed(t); }  // on_closed() is owed
  const char* buffer(unsigned bid) const { return bufs_ + static_cast<size_t>(bid) * buf_size_; }
  void give_back(unsigned bid);  // a received buffer's bytes were used: the ring may fill it again
  // Send buffers: a transport borrows one for what it writes and gives it back once all of it was sent, so
  // an idle connection holds none and a busy one allocates none (up to kSpares of up to kSpareSize kept).
  void lend(std::string& s);       // s (empty) gets a spare buffer, if there is one
  void take_back(std::string& s);  // s is left empty, holding no memory
  static constexpr size_t kSpares = 256, kSpareSize = 64 * 1024;
  static constexpr size_t kDirectWrite = 32 * 1024;  // writes this large try a direct sendmsg first (write())
  static constexpr uint16_t kGroup = 0;
  static constexpr uint64_t kAcceptOp = 5;  // a completion's tag for an UringAcceptor (UringTransport::Op)
  static constexpr uint64_t kLoopOp = 7;    // the poll of libuv's epoll descriptor
  size_t inflight = 0;                      // submissions of all its transports the ring has not answered for yet

 private:
  bool pump();
  bool completions();  // false: there were none
  void on_prepare();
  void sleep();        // until a completion, libuv's next timer or one of libuv's events
  void stay_awake() {  // libuv's own poll does not block while awake_ is on (it does nothing)
    uv_idle_start(&awake_, [](uv_idle_t*) {});
  }

  io_uring ring_{};
  bool ring_open_ = false, handles_ = false, enabled_ = false, loop_polled_ = false;
  uv_loop_t* loop_ = nullptr;
  uv_idle_t awake_;  // on while the set is open: libuv's poll does not block (the set sleeps in the ring)
  uv_prepare_t prepare_;
  io_uring_buf_ring* br_ = nullptr;
  char* bufs_ = nullptr;
  size_t br_bytes_ = 0, bufs_bytes_ = 0;
  unsigned nbufs_ = 0, buf_size_ = 0;
  Turns<UringTransport> turns_;
  std::vector<std::string> spare_;
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
  bool connecting() const override { return connecting_; }

  void read_start() override;
  void read_stop() override;
  int write(Output& out) override;
  size_t queued() const override { return sbuf_.size() - send_off_ + wq_.size(); }
  void close() override;
  void ack_now() override;

  // For UringSet.
  enum Op : uint64_t { kRecv = 1, kSend = 2, kConnect = 3, kCancel = 4, kPollOut = 6 };  // (5: UringSet::kAcceptOp)
  int64_t send_file(int fd, uint64_t off, size_t len) override;
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
  bool cancel(Op op);
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
  bool polling_out_ = false,
       nonblocking_ = false;  // a send_file met a full socket: a POLLOUT in flight, then on_drained()
  bool eof_ = false, eof_owed_ = false, fd_cancelled_ = false, settled_ = false;
  sockaddr_in6 addr_{};  // the connect's address (IPv4 or IPv6), read by the kernel when it is submitted
  std::string wq_;       // written while a send is in flight
  std::string sbuf_;     // the send in flight, from send_off_
  size_t send_off_ = 0;
  // Received while not reading, in pieces of up to kLowWater: never one string that doubles (and copies) as
  // it grows; an idle connection holds none.
  std::vector<std::string> stash_;
  size_t stash_bytes_ = 0;
};

class UringAcceptor {
 public:
  struct User {
    virtual ~User() = default;
    virtual void on_accepted(int fd) = 0;       // a connected, non-blocking socket, the user's from now on
    virtual void on_accept_error(int err) = 0;  // a negative errno (EMFILE, ENOBUFS, ...)
    virtual void on_acceptor_closed() = 0;      // after close(), once the ring answered: the listening socket is closed
  };
  UringAcceptor() = default;
  UringAcceptor(const UringAcceptor&) = delete;
  UringAcceptor& operator=(const UringAcceptor&) = delete;

  // Accepts from `fd` (a listening socket, owned from now on) until close().
  void start(UringSet* set, int fd, User* user);
  // Accepting again when the kernel ended it (an error such as EMFILE stops a multishot accept); called
  // from the worker's tick, so a lack of descriptors is retried at that pace, not in a loop.
  void rearm();
  // Stops accepting. true: done now (the socket is closed; no on_acceptor_closed() follows). false: the
  // ring's answer is awaited, and on_acceptor_closed() comes from it.
  bool close();

  // For UringSet.
  void on_cqe(int res, uint32_t flags);

 private:
  UringSet* set_ = nullptr;
  User* user_ = nullptr;
  int fd_ = -1;
  bool armed_ = false, closing_ = false, cancelled_ = false;
};

}  // namespace px::net
