// net::EpollTransport and net::UringTransport (pxd.conf io_engine) over real loopback sockets, driven by a
// real libuv loop: every case runs on both engines (io_uring's only where the kernel runs it).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>
#include "net/epoll_transport.h"
#include "net/uring_transport.h"

using namespace px;

namespace {

// The two engines: a set and its transport.
struct Epoll {
  using Set = net::EpollSet;
  using T = net::EpollTransport;
  static int open(Set& s, uv_loop_t* loop) { return s.open(loop); }
};
struct Uring {
  using Set = net::UringSet;
  using T = net::UringTransport;
  static int open(Set& s, uv_loop_t* loop) {
    std::string why;
    return s.open(loop, 64, 4096, &why);
  }
};
bool uring_runs() {
  static const bool ok = net::UringSet::probe().empty();
  return ok;
}

template <class E>
struct Rec final : net::TransportUser {
  typename E::T t;
  std::string got;
  int eofs = 0, errors = 0, last_error = 0, drained = 0, connected = 0, shutdowns = 0;
  bool closed = false;
  bool stop_after_data = false;
  std::function<void()> eof_hook;  // runs in on_eof
  bool* freed = nullptr;           // set: the Rec deletes itself in on_closed and says so here
  void on_data(const char* d, size_t n) override {
    got.append(d, n);
    if (stop_after_data) t.read_stop();
  }
  void on_eof() override {
    eofs++;
    if (eof_hook) eof_hook();
  }
  void on_error(int e) override {
    errors++;
    last_error = e;
  }
  void on_drained() override { drained++; }
  void on_connected() override { connected++; }
  void on_shutdown() override { shutdowns++; }
  void on_closed() override {
    closed = true;
    if (freed) {
      *freed = true;
      delete this;
    }
  }
};

template <class E>
struct Loop {
  uv_loop_t loop;
  typename E::Set set;
  uv_timer_t tick;  // so that until() sees its deadline even when nothing else happens (a set may sleep till then)
  Loop() {
    uv_loop_init(&loop);
    REQUIRE(E::open(set, &loop) == 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 5000, 5000);
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    set.close();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Runs the loop for `ms` (what is due happens meanwhile; an io_uring set sleeps between its events).
  void run_for(uint64_t ms) {
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    bool done = false;
    t.data = &done;
    uv_timer_start(
        &t, [](uv_timer_t* h) { *static_cast<bool*>(h->data) = true; }, ms, 0);
    REQUIRE(until([&] { return done; }));
    close_now(&t);
  }
  // Closes a handle on the caller's frame and runs the loop until libuv is done with it.
  template <class H>
  void close_now(H* h) {
    h->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* h) { h->data = h; });
    REQUIRE(until([&] { return h->data != nullptr; }));
  }
  // Runs the loop until cond() holds (or a generous deadline passes). A turn at a time, waiting for
  // something to happen (UV_RUN_ONCE: its timers run again at the turn's end, so a timer that woke the loop
  // has run before cond() is asked; a NOWAIT turn would go on to sleep again first).
  bool until(const std::function<bool()>& cond) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!cond()) {
      if (std::chrono::steady_clock::now() > end) return false;
      uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
  }
};

int listener(sockaddr_in* addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(addr), sizeof *addr) == 0);
  socklen_t len = sizeof *addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(addr), &len);
  REQUIRE(listen(fd, 16) == 0);
  return fd;
}

// A connected pair: `c` connected through the set, `s` the accepted side adopted into it.
template <class E>
void pair(Loop<E>& L, Rec<E>& c, Rec<E>& s) {
  sockaddr_in a;
  int lfd = listener(&a);
  c.t.init(&L.set);
  c.t.set_user(&c);
  s.t.init(&L.set);
  s.t.set_user(&s);
  REQUIRE(c.t.connect(reinterpret_cast<sockaddr*>(&a)) == 0);
  REQUIRE(L.until([&] { return c.connected == 1; }));
  int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  REQUIRE(fd >= 0);
  close(lfd);
  REQUIRE(s.t.adopt(fd) == 0);
}

void send(net::Transport& t, const std::string& s) {
  net::Output o;
  o.copy(s);
  REQUIRE(t.write(o) == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("transport: bytes both ways, a FIN after them, on_closed only after close() returned", E, Epoll,
                   Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  Rec<E> c, s;
  pair(L, c, s);
  c.t.read_start();
  s.t.read_start();
  send(c.t, "hello ");
  send(c.t, "server");
  REQUIRE(L.until([&] { return s.got == "hello server"; }));
  send(s.t, "hi");
  c.t.shutdown();
  CHECK(c.shutdowns == 1);
  REQUIRE(L.until([&] { return s.eofs == 1 && c.got == "hi"; }));
  CHECK(s.got == "hello server");  // everything before the FIN, then the FIN
  s.t.shutdown(true);              // half-close, then close
  REQUIRE(L.until([&] { return c.eofs == 1 && s.closed; }));
  c.t.close();
  CHECK_FALSE(c.closed);  // never during close()
  REQUIRE(L.until([&] { return c.closed; }));
  CHECK(c.errors + s.errors == 0);
  CHECK(c.eofs == 1);
  CHECK(s.eofs == 1);
}

TEST_CASE_TEMPLATE("transport: a reader that stops gets the rest, and the FIN, when it reads again", E, Epoll, Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  Rec<E> c, s;
  pair(L, c, s);
  s.stop_after_data = true;
  s.t.read_start();
  std::string big(300 * 1000, 'x');
  for (size_t i = 0; i < big.size(); i++) big[i] = static_cast<char>('a' + i % 26);
  send(c.t, big);
  c.t.shutdown();  // waits for the queued bytes, then the FIN
  REQUIRE(L.until([&] { return !s.got.empty(); }));
  // Stopped: more is there (and the FIN), but nothing comes until it reads again.
  size_t had = s.got.size();
  L.run_for(100);  // (what is there would come at once: the receive it needs is not armed)
  CHECK(s.got.size() == had);
  s.stop_after_data = false;
  s.t.read_start();
  REQUIRE(L.until([&] { return s.eofs == 1; }));
  CHECK(s.got == big);
  CHECK(c.shutdowns == 1);
  c.t.close();
  s.t.close();
  REQUIRE(L.until([&] { return c.closed && s.closed; }));
}

TEST_CASE_TEMPLATE("transport: a peer that does not read fills the queue; on_drained once it reads", E, Epoll, Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  Rec<E> c, s;
  pair(L, c, s);
  std::string chunk(64 * 1024, 'z');
  size_t sent = 0;
  while (!c.t.congested()) {
    send(c.t, chunk);
    sent += chunk.size();
    REQUIRE(sent < 64u * 1024 * 1024);  // the kernel's buffers are far smaller
  }
  CHECK(c.t.queued() > net::kHighWater);
  CHECK(c.drained == 0);
  s.t.read_start();
  REQUIRE(L.until([&] { return s.got.size() == sent; }));
  CHECK(c.drained >= 1);
  CHECK(c.t.queued() == 0);
  CHECK(s.got == std::string(sent, 'z'));
  c.t.close();
  s.t.close();
  REQUIRE(L.until([&] { return c.closed && s.closed; }));
}

TEST_CASE_TEMPLATE("transport: a refused connect is an error with its reason, then a close", E, Epoll, Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  sockaddr_in a;
  int lfd = listener(&a);
  close(lfd);  // nothing listens on that port now
  Rec<E> c;
  c.t.init(&L.set);
  c.t.set_user(&c);
  REQUIRE(c.t.connect(reinterpret_cast<sockaddr*>(&a)) == 0);
  REQUIRE(L.until([&] { return c.errors == 1; }));
  CHECK(c.last_error == UV_ECONNREFUSED);
  CHECK(c.connected == 0);
  c.t.close();
  REQUIRE(L.until([&] { return c.closed; }));
}

TEST_CASE_TEMPLATE("transport: a reset peer is an error, not an end of stream", E, Epoll, Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  Rec<E> c, s;
  pair(L, c, s);
  s.t.read_start();
  // The client leaves unread bytes behind and closes: its kernel answers with a reset.
  send(s.t, "unread");
  REQUIRE(L.until([&] {
    char b;
    return recv(c.t.fd(), &b, 1, MSG_PEEK) == 1;
  }));
  linger lg{1, 0};
  setsockopt(c.t.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  c.t.close();
  REQUIRE(L.until([&] { return s.errors == 1; }));
  CHECK(s.last_error == UV_ECONNRESET);
  CHECK(s.eofs == 0);
  s.t.close();
  REQUIRE(L.until([&] { return c.closed && s.closed; }));
}

TEST_CASE_TEMPLATE("transport: everything closed, and the set too, from inside one of its events; each freed once", E,
                   Epoll, Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  // A draining worker's last stream ends during an event and the worker closes the set right there:
  // later events of the same batch, and on_closed, must not touch what is freed.
  Loop<E> L;
  auto* c1 = new Rec<E>;
  auto* s1 = new Rec<E>;
  auto* c2 = new Rec<E>;
  auto* s2 = new Rec<E>;
  pair(L, *c1, *s1);
  pair(L, *c2, *s2);
  bool freed[4] = {false, false, false, false};
  Rec<E>* all[4] = {c1, s1, c2, s2};
  for (int i = 0; i < 4; i++) all[i]->freed = &freed[i];
  bool hooked = false;
  auto end_all = [&] {
    if (hooked) return;
    hooked = true;
    for (Rec<E>* r : all) r->t.close();  // (none is freed during close())
    L.set.close();
  };
  s1->eof_hook = end_all;
  s2->eof_hook = end_all;
  s1->t.read_start();
  s2->t.read_start();
  c1->t.read_start();
  c2->t.read_start();
  c1->t.shutdown();  // both FINs at once: their events likely share a batch
  c2->t.shutdown();
  REQUIRE(L.until([&] { return freed[0] && freed[1] && freed[2] && freed[3]; }));
  CHECK(hooked);
}

TEST_CASE_TEMPLATE("transport: a peer that accepts and closes at once is a connection, then an end of stream", E, Epoll,
                   Uring) {
  if (std::is_same_v<E, Uring> && !uring_runs()) return;
  Loop<E> L;
  sockaddr_in a;
  int lfd = listener(&a);
  Rec<E> c;
  c.t.init(&L.set);
  c.t.set_user(&c);
  REQUIRE(c.t.connect(reinterpret_cast<sockaddr*>(&a)) == 0);
  int fd = accept(lfd, nullptr, nullptr);  // blocking: the kernel completes the handshake by itself
  REQUIRE(fd >= 0);
  close(fd);  // its FIN, before the loop saw the connect finish
  close(lfd);
  c.t.read_start();
  REQUIRE(L.until([&] { return c.eofs + c.errors > 0; }));
  CHECK(c.connected == 1);
  CHECK(c.errors == 0);
  CHECK(c.eofs == 1);
  c.t.close();
  REQUIRE(L.until([&] { return c.closed; }));
}

namespace {
struct AcceptRec final : net::UringAcceptor::User {
  net::UringAcceptor acc;
  std::vector<int> fds;
  int errors = 0;
  bool closed = false;
  uv_loop_t* loop = nullptr;  // when set: the loop's time at each connection
  std::vector<uint64_t> at;
  void on_accepted(int fd) override {
    fds.push_back(fd);
    if (loop) at.push_back(uv_now(loop));
  }
  void on_accept_error(int) override { errors++; }
  void on_acceptor_closed() override { closed = true; }
};
int connect_to(const sockaddr_in& a) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  return fd;
}
// A ring accepting on a new listener at `a`.
struct Accepting {
  Loop<Uring> L;
  sockaddr_in a;
  AcceptRec r;
  Accepting() { r.acc.start(&L.set, listener(&a), &r); }
};
}  // namespace

TEST_CASE("uring acceptor: every connection once, non-blocking; close() stops accepting and closes the socket") {
  if (!uring_runs()) return;
  Accepting x;
  auto& L = x.L;
  auto& a = x.a;
  auto& r = x.r;
  std::vector<int> clients;
  for (int i = 0; i < 5; i++) clients.push_back(connect_to(a));
  REQUIRE(L.until([&] { return r.fds.size() == 5; }));
  for (int fd : r.fds) {
    CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    sockaddr_in peer{}, mine{};
    socklen_t len = sizeof peer;
    REQUIRE(getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0);
    bool found = false;
    for (int c : clients) {  // each accepted socket is one of the clients' connections
      len = sizeof mine;
      getsockname(c, reinterpret_cast<sockaddr*>(&mine), &len);
      found = found || mine.sin_port == peer.sin_port;
    }
    CHECK(found);
  }
  CHECK(r.errors == 0);
  CHECK_FALSE(r.acc.close());  // armed: the ring's answer comes later, never during close()
  CHECK_FALSE(r.closed);
  REQUIRE(L.until([&] { return r.closed; }));
  // The listening socket is closed: a new connection is refused.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0);
  CHECK(errno == ECONNREFUSED);
  close(fd);
  CHECK(r.fds.size() == 5);
  for (int c : clients) close(c);
  for (int f : r.fds) close(f);
}

TEST_CASE("uring acceptor: a connection taken while closing is still handed over, and the set closes after it") {
  if (!uring_runs()) return;
  Accepting x;
  auto& L = x.L;
  auto& a = x.a;
  auto& r = x.r;
  int c = connect_to(a);
  r.acc.close();  // in the same turn as the connection's arrival: it is accepted or left, never lost open
  REQUIRE(L.until([&] { return r.closed; }));
  CHECK(r.fds.size() <= 1);
  char b;
  if (r.fds.empty()) {  // left in the closed listener's queue: the client is reset
    CHECK(read(c, &b, 1) <= 0);
  } else {
    close(r.fds[0]);  // ours: closing it is the client's end of stream
    CHECK(read(c, &b, 1) == 0);
  }
  close(c);
}

TEST_CASE("uring acceptor: out of descriptors is an error that stops accepting; rearm() takes the connection after") {
  if (!uring_runs()) return;
  Loop<Uring> L;
  sockaddr_in a;
  int lfd = listener(&a);
  AcceptRec r;
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // made before the limit leaves no descriptor free
  rlimit was{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &was) == 0);
  int lowest = dup(0);  // the lowest free number: a limit there leaves none free
  REQUIRE(lowest >= 0);
  close(lowest);
  rlimit tight = was;
  tight.rlim_cur = static_cast<rlim_t>(lowest);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &tight) == 0);
  r.acc.start(&L.set, lfd, &r);  // (the kernel reads the limit when the accept is armed)
  REQUIRE(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  bool failed = L.until([&] { return r.errors > 0; });
  REQUIRE(setrlimit(RLIMIT_NOFILE, &was) == 0);
  REQUIRE(failed);
  CHECK(r.fds.empty());
  r.acc.rearm();
  REQUIRE(L.until([&] { return r.fds.size() == 1; }));
  r.acc.close();
  REQUIRE(L.until([&] { return r.closed; }));
  close(r.fds[0]);
  close(c);
}

// The worker sleeps in the ring, not in libuv's epoll_wait: libuv's timers and its own events (an async
// handle another thread signals) must still wake it, a sleep must be one (the loop does not spin), and the
// loop's time must be taken after the sleep, before the callbacks (they start timers from it). Each case
// counts the loop's turns until its event (a handful when the turn sleeps, thousands when it spins) and
// sees its event handled at a loop time before the test loop's 5 s tick was due (else the tick woke it).
TEST_CASE("uring set: the loop sleeps in the ring and wakes for libuv's timers and libuv's own events") {
  if (!uring_runs()) return;
  Accepting x;  // (the ring is enabled by the accept's submission: the set sleeps in it from then on)
  auto& L = x.L;
  int turns = 0;
  uint64_t tick_due = uv_now(&L.loop) + uv_timer_get_due_in(&L.tick);
  auto until_counting = [&](const std::function<bool()>& cond) {
    return L.until([&] {
      turns++;
      return cond();
    });
  };

  SUBCASE("a timer") {
    uv_timer_t timer;
    uv_timer_init(&L.loop, &timer);
    uint64_t fired_at = 0;
    timer.data = &fired_at;
    uv_timer_start(
        &timer, [](uv_timer_t* t) { *static_cast<uint64_t*>(t->data) = uv_now(t->loop); }, 200, 0);
    REQUIRE(until_counting([&] { return fired_at != 0; }));
    CHECK(turns < 50);
    CHECK(fired_at < tick_due);
    L.close_now(&timer);
  }
  SUBCASE("an async handle signalled from another thread") {
    uv_async_t async;
    uint64_t woke_at = 0;
    async.data = &woke_at;
    uv_async_init(&L.loop, &async, [](uv_async_t* a) { *static_cast<uint64_t*>(a->data) = uv_now(a->loop); });
    std::thread t([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      uv_async_send(&async);
    });
    bool ok = until_counting([&] { return woke_at != 0; });
    t.join();
    REQUIRE(ok);
    CHECK(turns < 50);
    CHECK(woke_at < tick_due);
    L.close_now(&async);
  }
  SUBCASE("a connection after a long sleep: the loop's time is taken after the sleep, before its callbacks") {
    x.r.loop = &L.loop;
    uint64_t connect_ms = 0;
    int c = -1;
    std::thread t([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      connect_ms = uv_hrtime() / 1000000;  // (libuv's clock: uv_now counts in its milliseconds)
      c = connect_to(x.a);
    });
    bool ok = until_counting([&] { return !x.r.at.empty(); });
    t.join();
    REQUIRE(ok);
    CHECK(turns < 50);
    CHECK(x.r.at[0] < tick_due);
    // The accept came after the connect began: a loop time from before the sleep would be ~300 ms earlier.
    CHECK(x.r.at[0] >= connect_ms);
    close(c);
    for (int f : x.r.fds) close(f);
  }
  x.r.acc.close();
  REQUIRE(L.until([&] { return x.r.closed; }));
}
