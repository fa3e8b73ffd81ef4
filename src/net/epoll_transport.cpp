#include "net/epoll_transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <climits>

#include "net/uv_transport.h"

namespace px::net {

namespace {
constexpr int kBatch = 1024;       // events taken per epoll_wait (as libuv takes them)
constexpr int kReadsPerTurn = 16;  // reads of one socket before the others get their turn
constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
}  // namespace

// ---- EpollSet ----

EpollSet::~EpollSet() {
  if (epfd_ >= 0 && !handles_) ::close(epfd_);
}

int EpollSet::open(uv_loop_t* loop) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return -errno;
  int r = uv_poll_init(loop, &poll_, epfd_);
  if (r != 0) {
    ::close(epfd_);
    epfd_ = -1;
    return r;
  }
  poll_.data = this;
  turns_.init(loop);
  handles_ = true;
  return uv_poll_start(&poll_, UV_READABLE, [](uv_poll_t* h, int, int) { static_cast<EpollSet*>(h->data)->run(); });
}

void EpollSet::close() {
  if (!handles_) return;
  handles_ = false;
  // Nothing is delivered here: this may run inside one of the set's own callbacks (the last stream of a
  // draining worker ends during an event), whose batch still holds pointers to transports. What is owed
  // comes at the end of that callback, or from the poll handle's close callback (the last of the two).
  turns_.close();
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* h) {
    auto* s = static_cast<EpollSet*>(h->data);
    s->turns_.forget_turns();
    s->turns_.reap();
    ::close(s->epfd_);
    s->epfd_ = -1;
  });
}

int EpollSet::add(int fd, EpollTransport* t) {
  epoll_event ev{};
  ev.events = kEvents;
  ev.data.ptr = t;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

void EpollSet::remove(int fd) {
  epoll_event ev{};
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev);
}

void EpollSet::run() {
  epoll_event evs[kBatch];
  int n = epoll_wait(epfd_, evs, kBatch, 0);
  // A transport closed by an earlier event of this batch is still in memory (its on_closed() waits
  // for reap()), so a later event for it finds it closing and is dropped.
  for (int i = 0; i < n; i++) static_cast<EpollTransport*>(evs[i].data.ptr)->on_events(evs[i].events);
  turns_.turns();
  turns_.reap();
}

// ---- EpollTransport ----

EpollTransport::~EpollTransport() {
  if (fd_ >= 0) ::close(fd_);
}

int EpollTransport::adopt(int fd, bool shared) {
  fd_ = fd;
  shared_ = shared;
  writable_ = true;
  return set_->add(fd, this);
}

int EpollTransport::connect(const sockaddr* addr) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::connect(fd, addr, len) != 0 && errno != EINPROGRESS) {
    int err = -errno;
    ::close(fd);
    return err;
  }
  // Done or not, the registration reports "writable" once the connection is up (at once if it is).
  fd_ = fd;
  connecting_ = true;
  int r = set_->add(fd, this);
  if (r != 0) {
    ::close(fd_);
    fd_ = -1;
    connecting_ = false;
  }
  return r;
}

void EpollTransport::nodelay() {
  int one = 1;
  if (fd_ >= 0) setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void EpollTransport::ack_now() {
  int one = 1;
  if (fd_ >= 0 && !closing_) setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

void EpollTransport::on_events(uint32_t ev) {
  if (closing_) return;
  if (connecting_) {
    if (ev & (EPOLLERR | EPOLLHUP)) {
      // Refused or unreachable; or connected and already closed by the peer, which reading will tell.
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err || !(ev & EPOLLOUT)) {
        connecting_ = false;
        return fail(err ? -err : UV_ECONNREFUSED);
      }
    }
    if (!(ev & EPOLLOUT)) return;
    // Writable without an error: the handshake completed (no getsockopt needed to know it).
    connecting_ = false;
    writable_ = true;
    user_->on_connected();
    if (closing_) return;
    if (!wq_.empty() || shut_pending_) {
      if (!flush()) return;
    }
  }
  if (ev & (EPOLLHUP | EPOLLERR)) hup_ = true;
  if (ev & EPOLLRDHUP) fin_ = true;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable_ = true;
  if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && !writable_) {
    writable_ = true;
    if ((!wq_.empty() || shut_pending_) && !flush()) return;
    if (closing_) return;
    if (file_wait_) {  // a send_file waits for room
      file_wait_ = false;
      user_->on_drained();
      if (closing_) return;
    }
  }
  if (reading_ && readable_ && !eof_) do_read();
}

void EpollTransport::on_turn() {
  if (closing_) return;
  if (reading_ && readable_ && !eof_) do_read();
}

void EpollTransport::do_read() {
  char* buf = thread_read_buffer();
  for (int i = 0; reading_ && !closing_ && readable_; i++) {
    if (i == kReadsPerTurn) {  // others first; this one reads on at the next turn
      set_->want_turn(this);
      return;
    }
    ssize_t n = ::recv(fd_, buf, kReadBuf, 0);
    if (n > 0) {
      // Less than asked for: the socket is empty now (a later arrival makes a new edge). If its FIN
      // was seen, nothing can follow: that is the end of the stream, without the read() of 0 that
      // would say so. After an error, read on to hear which.
      bool empty = static_cast<size_t>(n) < kReadBuf;
      if (empty && !hup_ && !fin_) readable_ = false;
      user_->on_data(buf, static_cast<size_t>(n));
      if (empty && fin_ && !hup_ && reading_ && !closing_) {
        eof_ = true;
        reading_ = false;
        user_->on_eof();
        return;
      }
      continue;
    }
    if (n == 0) {
      readable_ = false;
      eof_ = true;
      reading_ = false;
      user_->on_eof();
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      readable_ = false;
      return;
    }
    int err = -errno;
    readable_ = false;
    reading_ = false;
    return fail(err);
  }
}

void EpollTransport::read_start() {
  if (reading_ || closing_) return;
  reading_ = true;
  // An edge that came while not reading is not repeated: read at the next turn (not during this call).
  if (readable_ && !eof_ && !connecting_) set_->want_turn(this);
}

void EpollTransport::read_stop() { reading_ = false; }

void EpollTransport::fail(int err) {
  reading_ = false;
  user_->on_error(err);
}

int EpollTransport::write(Output& out) {
  if (out.empty()) return 0;
  if (closing_ || fd_ < 0) {
    out.clear();
    return UV_ECANCELED;
  }
  size_t n = out.count(), i = 0, skip = 0;
  if (wq_.empty() && writable_ && !connecting_) {
    // As much as the kernel takes now, in writevs of up to IOV_MAX pieces.
    iovec iov[64];
    while (i < n) {
      size_t k = 0, want = 0;
      for (size_t j = i; j < n && k < 64; j++, k++) {
        iov[k].iov_base = const_cast<char*>(out.data(j));
        iov[k].iov_len = out.len(j);
        want += out.len(j);
      }
      // One piece (a request head, as a rule) goes by send(): no iovec to import, no file layer.
      ssize_t r =
          k == 1 ? ::send(fd_, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL) : ::writev(fd_, iov, static_cast<int>(k));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          writable_ = false;
          break;
        }
        int err = -errno;
        out.clear();
        return err;
      }
      size_t done = static_cast<size_t>(r);
      while (i < n && done >= out.len(i)) done -= out.len(i++);
      if (static_cast<size_t>(r) < want) {  // the send buffer is full
        skip = done;
        writable_ = false;
        break;
      }
    }
  }
  if (i < n) {
    if (wq_off_ && wq_off_ == wq_.size()) wq_.clear(), wq_off_ = 0;
    for (; i < n; i++, skip = 0) wq_.append(out.data(i) + skip, out.len(i) - skip);
  }
  out.clear();
  return 0;
}

int64_t EpollTransport::send_file(int fd, uint64_t off, size_t len) {
  if (closing_ || fd_ < 0) return -ECANCELED;
  if (!wq_.empty() || connecting_ || !writable_) {
    file_wait_ = true;
    return -EAGAIN;
  }
  int64_t n = sendfile_once(fd_, fd, off, len);
  if (n == -EAGAIN || (n > 0 && static_cast<size_t>(n) < len)) {
    writable_ = false;  // full: EPOLLOUT says when
    file_wait_ = true;
  }
  return n;
}

// Writable again: what waits goes out, then a pending shutdown. on_drained() once below the low mark.
bool EpollTransport::flush() {
  bool had = queued() > 0;
  while (wq_off_ < wq_.size()) {
    ssize_t r = ::send(fd_, wq_.data() + wq_off_, wq_.size() - wq_off_, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        writable_ = false;
        return true;
      }
      fail(-errno);
      return false;
    }
    wq_off_ += static_cast<size_t>(r);
    if (wq_off_ < wq_.size()) {
      writable_ = false;
      break;
    }
  }
  if (wq_off_ == wq_.size()) {
    wq_.clear();
    wq_off_ = 0;
    if (wq_.capacity() > kHighWater) std::string().swap(wq_);
  }
  if (had && queued() < kLowWater) {
    user_->on_drained();
    if (closing_) return false;
  }
  if (shut_pending_ && queued() == 0) {
    shut_now();
    return !closing_;
  }
  return true;
}

void EpollTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  if (fd_ >= 0) {
    if (shared_) set_->remove(fd_);  // another descriptor keeps the socket (and its registration) alive
    ::close(fd_);
    fd_ = -1;
  }
  set_->closed(this);
}

}  // namespace px::net
