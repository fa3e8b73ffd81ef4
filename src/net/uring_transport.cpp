#include "net/uring_transport.h"

#include <fcntl.h>
#include <poll.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace px::net {

namespace {
constexpr unsigned kEntries = 1024;  // submission queue; the completion queue is twice that
constexpr uint64_t kOpMask = 7;

// One thread submits (the worker's), and the ring's work for it runs only when that thread asks for
// completions (DEFER_TASKRUN: in the io_uring_enter it sleeps in, or submits with), never as an interrupt in
// the middle of its other work; TASKRUN_FLAG says when such work waits (liburing's peek then enters).
// Made disabled: the worker's thread enables it (and so becomes its one submitter) at its first submission.
// A kernel before 6.1 has no DEFER_TASKRUN: the ring's work then runs whenever the thread enters the kernel
// (COOP_TASKRUN), which wakes it from its sleep in the ring just the same.
int setup(io_uring* ring) {
  constexpr unsigned kFlags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SINGLE_ISSUER |
                              IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED;
  int r = -EINVAL;
  for (unsigned flags : {kFlags | IORING_SETUP_DEFER_TASKRUN, kFlags}) {
    if (r != -EINVAL) break;
    io_uring_params p{};
    p.flags = flags;
    r = io_uring_queue_init_params(kEntries, ring, &p);
  }
  return r;
}
}  // namespace

// ---- UringSet ----

std::string UringSet::probe() {
  int disabled = 0;
  if (FILE* f = fopen("/proc/sys/kernel/io_uring_disabled", "r")) {
    if (fscanf(f, "%d", &disabled) != 1) disabled = 0;
    fclose(f);
  }
  if (disabled == 2) return "io_uring is disabled (kernel.io_uring_disabled = 2)";
  io_uring ring;
  int r = setup(&ring);
  if (r < 0)
    return std::string("io_uring_setup: ") + strerror(-r) + (disabled == 1 ? " (kernel.io_uring_disabled = 1)" : "");
  std::string why;
  io_uring_probe* pr = io_uring_get_probe_ring(&ring);
  if (!pr) {
    why = "the kernel cannot say which io_uring operations it has";
  } else {
    for (int op :
         {IORING_OP_RECV, IORING_OP_SEND, IORING_OP_CONNECT, IORING_OP_ACCEPT, IORING_OP_ASYNC_CANCEL, IORING_OP_CLOSE})
      if (!io_uring_opcode_supported(pr, op)) why = "the kernel's io_uring lacks an operation px needs";
    io_uring_free_probe(pr);
  }
  if (why.empty() && !(ring.features & IORING_FEAT_NODROP)) why = "the kernel's io_uring may drop completions";
  if (why.empty()) {  // a provided buffer ring (5.19) and multishot receive (6.0)
    io_uring_buf_reg reg{};
    void* mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    reg.ring_addr = reinterpret_cast<uint64_t>(mem);
    reg.ring_entries = 8;
    reg.bgid = 1;
    if (mem == MAP_FAILED || io_uring_register_buf_ring(&ring, &reg, 0) != 0)
      why = "the kernel's io_uring has no provided buffer rings (5.19)";
    if (mem != MAP_FAILED) munmap(mem, 4096);
  }
  io_uring_queue_exit(&ring);
  return why;
}

UringSet::~UringSet() {
  if (ring_open_) {
    submit();  // (sockets' closes still queued)
    io_uring_queue_exit(&ring_);
  }
  if (br_) munmap(br_, br_bytes_);
  if (bufs_) munmap(bufs_, bufs_bytes_);
}

int UringSet::open(uv_loop_t* loop, unsigned buffers, unsigned buffer_size, std::string* why) {
  int r = setup(&ring_);
  if (r < 0) {
    *why = std::string("io_uring_setup: ") + strerror(-r);
    return r;
  }
  ring_open_ = true;
  nbufs_ = 1;
  while (nbufs_ < buffers && nbufs_ < 32768) nbufs_ <<= 1;  // a power of two
  buf_size_ = buffer_size;
  br_bytes_ = (sizeof(io_uring_buf) * nbufs_ + 4095) & ~size_t(4095);
  bufs_bytes_ = static_cast<size_t>(nbufs_) * buf_size_;
  void* ring_mem = mmap(nullptr, br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  void* buf_mem = mmap(nullptr, bufs_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (ring_mem == MAP_FAILED || buf_mem == MAP_FAILED) {
    if (ring_mem != MAP_FAILED) munmap(ring_mem, br_bytes_);
    if (buf_mem != MAP_FAILED) munmap(buf_mem, bufs_bytes_);
    *why = "cannot map the receive buffers";
    return UV_ENOMEM;
  }
  br_ = static_cast<io_uring_buf_ring*>(ring_mem);
  bufs_ = static_cast<char*>(buf_mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(br_);
  reg.ring_entries = nbufs_;
  reg.bgid = kGroup;
  if ((r = io_uring_register_buf_ring(&ring_, &reg, 0)) != 0) {
    *why = std::string("io_uring_register_buf_ring: ") + strerror(-r);
    return r;
  }
  io_uring_buf_ring_init(br_);
  int mask = io_uring_buf_ring_mask(nbufs_);
  for (unsigned i = 0; i < nbufs_; i++)
    io_uring_buf_ring_add(br_, bufs_ + size_t(i) * buf_size_, buf_size_, i, mask, i);
  io_uring_buf_ring_advance(br_, static_cast<int>(nbufs_));
  loop_ = loop;
  uv_idle_init(loop, &awake_);
  awake_.data = this;
  uv_prepare_init(loop, &prepare_);
  prepare_.data = this;
  turns_.init(loop);
  handles_ = true;
  uv_prepare_start(&prepare_, [](uv_prepare_t* h) { static_cast<UringSet*>(h->data)->on_prepare(); });
  return 0;  // the set sleeps in the ring once the ring is enabled (submit())
}

void UringSet::close() {
  if (!handles_) return;
  handles_ = false;
  // As EpollSet::close: nothing is delivered here. Transports still closing keep their on_closed() owed
  // until the ring answers; the worker closes every transport before this.
  submit();
  turns_.close();
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&awake_), [](uv_handle_t* h) {
    auto* s = static_cast<UringSet*>(h->data);
    // What is still in flight (the cancels of transports that closed last) is waited for here, a
    // second at most: their on_closed() comes from the answers.
    for (int i = 0; i < 100 && s->inflight > 0; i++) {
      io_uring_cqe* cqe;
      __kernel_timespec ts{0, 10 * 1000 * 1000};
      s->submit();
      io_uring_wait_cqe_timeout(&s->ring_, &cqe, &ts);
      s->completions();
    }
    s->turns_.forget_turns();
    s->turns_.reap();
    s->submit();  // the closes of the last sockets
  });
}

io_uring_sqe* UringSet::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (!s) {
    submit();
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void UringSet::submit(bool get_events) {
  if (io_uring_sq_ready(&ring_) == 0) return;
  if (!enabled_) {
    // (liburing 2.3 declares io_uring_enable_rings but does not export it)
    syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
    enabled_ = true;
    // (From the first submission on: nothing completes before it.)
    if (handles_) stay_awake();
  }
  int r;
  do {
    r = get_events ? io_uring_submit_and_get_events(&ring_) : io_uring_submit(&ring_);
  } while (r == -EINTR);
}

// One batch: what was queued meanwhile (a cancel, a send) goes to the kernel before more is taken, so that
// a socket whose data keeps coming cannot hold the loop here (nor fill a stopped reader's stash: its recv's
// cancel waits for the submission).
bool UringSet::completions() {
  io_uring_cqe* cqes[256];
  unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 256);
  for (unsigned i = 0; i < n; i++) {
    uint64_t ud = io_uring_cqe_get_data64(cqes[i]);
    uint64_t op = ud & kOpMask;
    if (op == kLoopOp)
      loop_polled_ = false;  // libuv's events are taken by its own poll, next in this turn
    else if (op == kAcceptOp)
      reinterpret_cast<UringAcceptor*>(ud & ~kOpMask)->on_cqe(cqes[i]->res, cqes[i]->flags);
    else if (auto* t = reinterpret_cast<UringTransport*>(ud & ~kOpMask))
      t->on_cqe(static_cast<UringTransport::Op>(op), cqes[i]->res, cqes[i]->flags);
  }
  io_uring_cq_advance(&ring_, n);
  return n > 0;
}

// Before libuv's poll: what this turn queued goes to the kernel, in the same call as the wait when nothing
// else is due (it returns at once when completions are there: most sends complete during the submission),
// then what came is taken.
void UringSet::on_prepare() {
  sleep();
  pump();
}

// Submits what is queued and, when libuv has nothing due, waits in the ring for a completion, libuv's next
// timer or one of libuv's events.
void UringSet::sleep() {
  if (!handles_ || !enabled_) return submit();
  // Due now, without the set's own idle handle: libuv's timers, its other idle handles (Turns', HTTP/2's
  // deferred work), closing handles. (It counts from the loop's time, taken at this turn's start.)
  uv_idle_stop(&awake_);
  int ms = uv_backend_timeout(loop_);
  stay_awake();
  if (ms == 0) return submit();
  if (!loop_polled_) {  // one-shot: it answers at once when libuv's descriptor is ready already
    io_uring_sqe* s = sqe();
    if (!s) return submit();
    io_uring_prep_poll_add(s, uv_backend_fd(loop_), POLLIN);
    io_uring_sqe_set_data64(s, kLoopOp);
    loop_polled_ = true;
  }
  io_uring_cqe* cqe;
  int r;
  if (ms > 0) {
    __kernel_timespec ts{ms / 1000, (ms % 1000) * 1000000LL};
    r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  } else {
    r = io_uring_submit_and_wait(&ring_, 1);
  }
  if (r < 0 && r != -ETIME && r != -EINTR) submit();  // (the wait failed: what is queued still goes)
  uv_update_time(loop_);  // what the completions start counts from now, not from before the sleep
}

// Completions are taken (liburing's peek enters the kernel first when the ring's work waits for this
// thread), and what they queued submitted, until a round brings none. false: nothing came.
bool UringSet::pump() {
  bool any = false;
  for (int round = 0; round < 64; round++) {
    bool got = completions();
    turns_.turns();
    turns_.reap();
    if (!got) break;
    any = true;
    submit(true);
  }
  return any;
}

void UringSet::lend(std::string& s) {
  if (spare_.empty()) return;
  s.swap(spare_.back());
  spare_.pop_back();
}

void UringSet::take_back(std::string& s) {
  if (s.capacity() <= kSpareSize && spare_.size() < kSpares && s.capacity() > std::string().capacity()) {
    s.clear();
    spare_.emplace_back().swap(s);
  }
  std::string().swap(s);
}

void UringSet::give_back(unsigned bid) {
  io_uring_buf_ring_add(br_, bufs_ + size_t(bid) * buf_size_, buf_size_, static_cast<unsigned short>(bid),
                        io_uring_buf_ring_mask(nbufs_), 0);
  io_uring_buf_ring_advance(br_, 1);
}

// ---- UringTransport ----

UringTransport::~UringTransport() {
  if (fd_ >= 0) ::close(fd_);
}

int UringTransport::adopt(int fd, bool shared) {
  fd_ = fd;
  shared_ = shared;
  return 0;
}

int UringTransport::connect(const sockaddr* addr) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (len > sizeof addr_) {
    ::close(fd);
    return UV_EAFNOSUPPORT;
  }
  memcpy(&addr_, addr, len);
  io_uring_sqe* s = set_->sqe();
  if (!s) {
    ::close(fd);
    return UV_ENOBUFS;
  }
  fd_ = fd;
  connecting_ = true;
  io_uring_prep_connect(s, fd_, reinterpret_cast<const sockaddr*>(&addr_), len);
  queue(s, kConnect);
  set_->submit();  // the SYN leaves now, as with a connect() of its own (rare: connections are kept)
  return 0;
}

void UringTransport::nodelay() {
  int one = 1;
  if (fd_ >= 0) setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void UringTransport::ack_now() {
  int one = 1;
  if (fd_ >= 0 && !closing_) setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

void UringTransport::arm_recv() {
  if (recv_armed_ || eof_ || closing_ || fd_ < 0 || connecting_) return;
  io_uring_sqe* s = set_->sqe();
  if (!s) return fail(UV_ENOBUFS);
  io_uring_prep_recv_multishot(s, fd_, nullptr, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = UringSet::kGroup;
  queue(s, kRecv);
  recv_armed_ = true;
  recv_cancelled_ = false;
}

// By its tag: the kernel finds it in a hash (a cancel by descriptor walks every request of the ring).
bool UringTransport::cancel(Op op) {
  io_uring_sqe* s = set_->sqe();
  if (!s) return false;
  io_uring_prep_cancel64(s, reinterpret_cast<uint64_t>(this) | op, 0);
  queue(s, kCancel);
  return true;
}

void UringTransport::cancel_recv() {
  if (!recv_armed_ || recv_cancelled_) return;
  if (!cancel(kRecv)) return;
  recv_cancelled_ = true;
  set_->submit();  // now: what the ring has not received yet stays in the socket (the peer feels the window)
}

void UringTransport::read_start() {
  if (reading_ || closing_) return;
  reading_ = true;
  // What came while not reading is delivered at the next turn (not during this call).
  if (!stash_.empty() || eof_owed_)
    set_->want_turn(this);
  else
    arm_recv();
}

void UringTransport::read_stop() { reading_ = false; }

void UringTransport::on_turn() {
  if (closing_ || !reading_) return;
  if (!stash_.empty()) {
    // Piece by piece, so that a reader that stops midway (its other side filled up) leaves the rest here
    // rather than in that side's queue. (Nothing adds to the stash meanwhile: only completions do.)
    size_t done = 0;
    while (reading_ && done < stash_.size()) {
      const std::string& piece = stash_[done++];
      stash_bytes_ -= piece.size();
      user_->on_data(piece.data(), piece.size());
      if (closing_) return;
    }
    if (done < stash_.size()) {
      stash_.erase(stash_.begin(), stash_.begin() + static_cast<ptrdiff_t>(done));
      return;  // the rest when it reads again
    }
    std::vector<std::string>().swap(stash_);
  }
  if (eof_owed_ && reading_) {
    eof_owed_ = false;
    reading_ = false;
    user_->on_eof();
    return;
  }
  if (reading_) arm_recv();
}

void UringTransport::deliver(const char* p, size_t n) {
  if (reading_ && stash_.empty()) {
    user_->on_data(p, n);
    return;
  }
  if (stash_.empty() || stash_.back().size() + n > kLowWater) stash_.emplace_back();
  stash_.back().append(p, n);
  stash_bytes_ += n;
  // Not reading (the side it goes to is full, say): no more until it reads again; what the ring took already
  // waits here. (A reader only waiting for its turn keeps receiving, up to the high mark.)
  if (!reading_ || stash_bytes_ > kHighWater) cancel_recv();
}

void UringTransport::end_of_stream() {
  eof_ = true;
  if (reading_ && stash_.empty()) {
    reading_ = false;
    user_->on_eof();
  } else {
    eof_owed_ = true;
  }
}

void UringTransport::received(int res, uint32_t flags) {
  bool more = flags & IORING_CQE_F_MORE;
  if (!more) recv_armed_ = false;
  if (res > 0) {
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (!closing_) deliver(set_->buffer(bid), static_cast<size_t>(res));
    set_->give_back(bid);
  } else if (res == 0) {
    if (!closing_) end_of_stream();
    return;
  } else if (res == -ENOBUFS) {  // every buffer in use for a moment: receive again at the next turn
    if (!closing_) set_->want_turn(this);
    return;
  } else if (res != -ECANCELED && !closing_) {
    return fail(res);
  }
  if (!recv_armed_ && reading_ && !closing_ && stash_.empty()) arm_recv();
}

void UringTransport::fail(int err) {
  reading_ = false;
  user_->on_error(err);
}

int UringTransport::write(Output& out) {
  if (out.empty()) return 0;
  if (closing_ || fd_ < 0) {
    out.clear();
    return UV_ECANCELED;
  }
  size_t i = 0, skip = 0;
  if (!sending_ && !connecting_ && wq_.empty() && send_off_ == sbuf_.size() && out.size() >= UringSet::kDirectWrite) {
    // A large write on an idle connection (a big body): what the kernel takes now goes straight from the
    // caller's memory (one sendmsg, as the epoll engine's writev), and only the rest is copied for the ring.
    iovec iov[64];
    size_t k = 0;
    for (; k < out.count() && k < 64; k++) {
      iov[k].iov_base = const_cast<char*>(out.data(k));
      iov[k].iov_len = out.len(k);
    }
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = k;
    ssize_t r = ::sendmsg(fd_, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r > 0) {  // (an error, EAGAIN included: the ring's send meets it, or waits)
      size_t done = static_cast<size_t>(r);
      while (i < out.count() && done >= out.len(i)) done -= out.len(i++);
      skip = done;
    }
  }
  if (i < out.count() && wq_.empty()) set_->lend(wq_);
  for (; i < out.count(); i++, skip = 0) wq_.append(out.data(i) + skip, out.len(i) - skip);
  out.clear();
  if (!sending_ && !connecting_) start_send();
  return 0;
}

int64_t UringTransport::send_file(int fd, uint64_t off, size_t len) {
  if (closing_ || fd_ < 0) return -ECANCELED;
  if (polling_out_) return -EAGAIN;
  // (The caller waits for queued() 0.)
  if (sending_ || connecting_ || !wq_.empty() || send_off_ != sbuf_.size()) return -ENOTSUP;
  // On a non-blocking socket sendfile takes what fits now; a full socket is watched by one POLLOUT through the
  // ring. (Accepted sockets are non-blocking already; the ring's own operations do not mind either way.)
  if (!nonblocking_) {
    int fl = fcntl(fd_, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
    nonblocking_ = true;
  }
  int64_t n = sendfile_once(fd_, fd, off, len);
  if (n != -EAGAIN) return n;
  io_uring_sqe* s = set_->sqe();
  if (!s) return -ENOTSUP;
  io_uring_prep_poll_add(s, fd_, POLLOUT);
  queue(s, kPollOut);
  polling_out_ = true;
  return -EAGAIN;
}

// The next send: what is left of the one in flight's buffer, else what was written since.
void UringTransport::start_send() {
  if (send_off_ == sbuf_.size()) {
    if (wq_.empty()) {  // everything sent: the buffers go back to the set (an idle connection holds none)
      set_->take_back(sbuf_);
      set_->take_back(wq_);
      send_off_ = 0;
      return;
    }
    sbuf_.clear();
    sbuf_.swap(wq_);
    send_off_ = 0;
  }
  io_uring_sqe* s = set_->sqe();
  if (!s) return fail(UV_ENOBUFS);
  io_uring_prep_send(s, fd_, sbuf_.data() + send_off_, sbuf_.size() - send_off_, MSG_NOSIGNAL);
  queue(s, kSend);
  sending_ = true;
}

void UringTransport::sent(int res) {
  sending_ = false;
  if (closing_) return;
  if (res < 0) return fail(res);
  send_off_ += static_cast<size_t>(res);
  if (send_off_ < sbuf_.size()) return start_send();  // the kernel took part: the rest goes next
  start_send();                                       // what was written meanwhile
  after_queue();
}

// The queue went down: on_drained() below the low mark, then a pending shutdown once it is empty.
void UringTransport::after_queue() {
  if (queued() < kLowWater) {
    user_->on_drained();
    if (closing_) return;
  }
  if (shut_pending_ && queued() == 0) shut_now();
}

void UringTransport::on_cqe(Op op, int res, uint32_t flags) {
  if (op == kRecv) {
    if (!(flags & IORING_CQE_F_MORE)) answered();
    received(res, flags);
  } else {
    answered();
    if (op == kSend) {
      sent(res);
    } else if (op == kPollOut) {
      polling_out_ = false;
      if (!closing_) user_->on_drained();  // room for the next send_file
    } else if (op == kConnect) {
      connecting_ = false;
      if (!closing_) {
        if (res < 0) {
          fail(res);
        } else {
          user_->on_connected();
          if (!closing_ && !sending_ && !wq_.empty()) start_send();  // (what was written before it connected)
          if (!closing_ && reading_) arm_recv();
          if (!closing_ && shut_pending_ && queued() == 0) after_queue();
        }
      }
    }
  }
  if (closing_) settle();
}

void UringTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  settle();
}

// Closing: what is in flight is cancelled; once the ring has answered for all of it, the socket is closed
// and on_closed() is owed (from the set, after this call).
void UringTransport::settle() {
  if (settled_) return;
  if (inflight_ > 0) {
    if (!fd_cancelled_ && fd_ >= 0) {  // what is in flight of its own (cancels answer by themselves)
      if (recv_armed_ && !recv_cancelled_) recv_cancelled_ = cancel(kRecv);
      if (sending_) cancel(kSend);
      if (polling_out_) cancel(kPollOut);
      if (connecting_) cancel(kConnect);
      fd_cancelled_ = true;
    }
    return;
  }
  settled_ = true;
  if (fd_ >= 0) {
    // Closed with the turn's submission, not a system call of its own (its answer is dropped: nothing is
    // in flight on it any more).
    io_uring_sqe* s = set_->sqe();
    if (s) {
      io_uring_prep_close(s, fd_);
      io_uring_sqe_set_data64(s, 0);
    } else {
      ::close(fd_);
    }
    fd_ = -1;
  }
  set_->closed(this);
}

// ---- UringAcceptor ----

void UringAcceptor::start(UringSet* set, int fd, User* user) {
  set_ = set;
  fd_ = fd;
  user_ = user;
  rearm();
}

void UringAcceptor::rearm() {
  if (armed_ || closing_ || fd_ < 0) return;
  io_uring_sqe* s = set_->sqe();
  if (!s) return;  // (the next tick tries again)
  io_uring_prep_multishot_accept(s, fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(this) | UringSet::kAcceptOp);
  set_->inflight++;
  armed_ = true;
}

bool UringAcceptor::close() {
  if (closing_) return false;
  closing_ = true;
  if (!armed_) {
    ::close(fd_);
    fd_ = -1;
    return true;
  }
  if (io_uring_sqe* s = set_->sqe()) {
    io_uring_prep_cancel64(s, reinterpret_cast<uint64_t>(this) | UringSet::kAcceptOp, 0);
    io_uring_sqe_set_data64(s, 0);  // (its own answer is dropped: the accept's last one follows)
    cancelled_ = true;
    set_->submit();  // now: a connection the kernel queues from here on is left to the socket's other owners
  }
  return false;
}

void UringAcceptor::on_cqe(int res, uint32_t flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    armed_ = false;
    set_->inflight--;
  }
  if (res >= 0) {
    user_->on_accepted(res);  // (while closing too: the connection was taken from the queue already)
  } else if (res != -ECANCELED && res != -EAGAIN && res != -EINTR && !closing_) {
    user_->on_accept_error(res);  // (accepting stopped, if the kernel ended it: rearm() starts it again)
  }
  if (!armed_ && closing_) {
    ::close(fd_);
    fd_ = -1;
    user_->on_acceptor_closed();  // may free this
  }
}

}  // namespace px::net
