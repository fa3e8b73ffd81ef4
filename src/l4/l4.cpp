// L4 streams: the TCP relay and UDP sessions (l4.h says what each piece is).
#include "l4/l4.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "core/log.h"
#include "daemon/worker.h"
#include "net/proxy_in.h"
#include "tls/context.h"
#include "tls/transport.h"
#include "upstream/balancer.h"

namespace px::proxy {

// ---- PROXY protocol (haproxy's proxy-protocol.txt) ----

namespace {
void addr_text(const sockaddr* sa, char* host, uint16_t* port) {
  if (sa->sa_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &a->sin6_addr, host, INET6_ADDRSTRLEN);
    *port = ntohs(a->sin6_port);
  } else {
    auto* a = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &a->sin_addr, host, INET6_ADDRSTRLEN);
    *port = ntohs(a->sin_port);
  }
}
}  // namespace

void proxy_v1(std::string* out, const sockaddr* src, const sockaddr* dst) {
  if (src->sa_family != dst->sa_family || (src->sa_family != AF_INET && src->sa_family != AF_INET6)) {
    out->append("PROXY UNKNOWN\r\n");
    return;
  }
  char sh[INET6_ADDRSTRLEN], dh[INET6_ADDRSTRLEN];
  uint16_t sp, dp;
  addr_text(src, sh, &sp);
  addr_text(dst, dh, &dp);
  out->append(src->sa_family == AF_INET ? "PROXY TCP4 " : "PROXY TCP6 ");
  out->append(sh).append(" ").append(dh).append(" ");
  out->append(std::to_string(sp)).append(" ").append(std::to_string(dp)).append("\r\n");
}

void proxy_v2(std::string* out, const sockaddr* src, const sockaddr* dst, bool udp) {
  static const char kSig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
  out->append(kSig, sizeof kSig);
  out->push_back('\x21');  // version 2, PROXY
  bool same = src->sa_family == dst->sa_family;
  if (same && src->sa_family == AF_INET) {
    out->push_back(udp ? '\x12' : '\x11');
    out->append("\x00\x0c", 2);
    auto* s = reinterpret_cast<const sockaddr_in*>(src);
    auto* d = reinterpret_cast<const sockaddr_in*>(dst);
    out->append(reinterpret_cast<const char*>(&s->sin_addr), 4);
    out->append(reinterpret_cast<const char*>(&d->sin_addr), 4);
    out->append(reinterpret_cast<const char*>(&s->sin_port), 2);  // already in network order
    out->append(reinterpret_cast<const char*>(&d->sin_port), 2);
  } else if (same && src->sa_family == AF_INET6) {
    out->push_back(udp ? '\x22' : '\x21');
    out->append("\x00\x24", 2);
    auto* s = reinterpret_cast<const sockaddr_in6*>(src);
    auto* d = reinterpret_cast<const sockaddr_in6*>(dst);
    out->append(reinterpret_cast<const char*>(&s->sin6_addr), 16);
    out->append(reinterpret_cast<const char*>(&d->sin6_addr), 16);
    out->append(reinterpret_cast<const char*>(&s->sin6_port), 2);
    out->append(reinterpret_cast<const char*>(&d->sin6_port), 2);
  } else {
    out->push_back('\x00');  // UNSPEC: the receiver uses the connection's own addresses
    out->append("\x00\x00", 2);
  }
}

namespace {

// Picks a usable peer of a stream's pool that `tried` does not have yet (nullptr: none).
PeerState* choose(Worker* w, const route::L4Stream* st, L4Pool* pool, uint64_t* tried, const net::IpAddr& client) {
  thread_local std::vector<PeerLoad> load;
  thread_local uint64_t rotate = 0;
  uint64_t t = w->now();
  load.resize(pool->peers.size());
  for (size_t i = 0; i < pool->peers.size(); i++) {
    const PeerState* p = pool->peers[i];
    load[i] = PeerLoad{p->usable(t), p->active, p->down_until, !p->resolved || p->hc_down};
  }
  long best = pick_peer(st->pool, load, pool->current, *tried, client, rotate++);
  if (best < 0) return nullptr;
  *tried |= uint64_t(1) << best;
  return pool->peers[static_cast<size_t>(best)];
}

// A new connection or session of a stream: may it start? (its access list, then the connection limits)
Termination admit(Worker* w, const route::L4Stream* st, const net::IpAddr& client, uint64_t worker_count) {
  if (!st->spec.acl.empty()) {
    const route::AclSpec* acl = w->current_snap()->snap->acl(st->spec.acl);
    // Credentials cannot be asked for on a byte stream: only the CIDR rules decide.
    if (!acl || route::acl_decide(*acl, client, "", w->auth_cache(), w->now()) != route::AclVerdict::allow)
      return Termination::denied;
  }
  if (worker_count >= w->cfg().max_connections) return Termination::limit;
  if (st->spec.max_connections && st->live &&
      st->live->load(std::memory_order_relaxed) >= static_cast<int64_t>(st->spec.max_connections))
    return Termination::limit;
  return Termination::ok;
}

void emit(Worker* w, const route::L4Stream* st, const char* method, const net::IpAddr& client, PeerState* peer,
          Termination why, uint64_t in, uint64_t out, uint64_t start_ms, uint8_t attempts) {
  EndRecord r;
  r.l4 = true;
  r.route = st->spec.name;
  r.method = method;
  r.peer = peer ? std::string_view(peer->key) : std::string_view();
  r.client = client;
  r.reason = why;
  r.bytes_in = in;
  r.bytes_out = out;
  r.start_ms = start_ms;
  r.duration_ms = w->now() - start_ms;
  r.attempts = attempts;
  r.quiet = !st->spec.access_log;
  r.metrics_slot = st->metrics_slot;
  r.peer_slot = peer ? peer->metrics_slot : static_cast<uint16_t>(kPeerSlotNone);
  for (EndObserver* o : w->observers()) o->on_stream_end(r);
}

}  // namespace

// ---- TCP ----

struct L4Up;

struct L4Conn final : net::TransportUser {
  Worker* w = nullptr;
  SnapRef* snap = nullptr;
  const route::L4Stream* st = nullptr;
  L4Pool* pool = nullptr;
  std::unique_ptr<net::SocketTransport> down;       // the client's socket (the worker's io engine)
  net::Transport* dt = nullptr;                     // the client side: down, or TLS over it on a TLS stream
  std::unique_ptr<tls::TlsTransport> tls;           // a TLS stream's termination
  std::unique_ptr<net::ProxyInTransport> proxy_in;  // accept_proxy: the PROXY header reader over down
  tls::StreamCert cert;                             // ... and the certificate it presents
  L4Up* up = nullptr;
  uv_timer_t timer;
  L4Conn *prev = nullptr, *next = nullptr;  // the worker's list
  PeerState* peer = nullptr;
  uint64_t tried = 0;
  uint8_t attempts = 0;
  net::IpAddr client;
  sockaddr_storage src{}, dst{};
  net::Output out;    // reused: write() empties it and keeps its capacity
  std::string first;  // passthrough: the ClientHello read before the connection came here, for the upstream
  uint64_t start_ms = 0, last_ms = 0, connect_deadline = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  uint64_t resume_down_at = 0, resume_up_at = 0;  // rate limit: a paused side reads again then
  int open = 0;                                   // handles not closed yet (down, timer, the current up)
  bool counted = false, connected = false, ended = false;
  bool handshaking = false;               // a TLS stream before its handshake ended (no upstream yet)
  bool awaiting_proxy = false;            // accept_proxy: before the PROXY header was read (not admitted yet)
  bool client_trusted = false;            // (written by the PROXY reader; unused on streams)
  uint16_t client_port = 0;               // the PROXY header's client port (0: none given)
  bool down_eof = false, up_eof = false;  // that side sent its FIN
  bool down_fin = false, up_fin = false;  // px's FIN to that side went out (after everything before it)
  Termination term = Termination::ok;
  bool term_set = false;

  void end_as(Termination t) {
    if (!term_set) term = t, term_set = true;
  }
  void try_connect();
  void up_failed(Termination why);
  void up_connected();
  void relay(net::Transport* to, net::Transport* from, const char* d, size_t n, uint64_t* count, uint64_t* resume);
  void maybe_done();
  void finish();
  void arm();
  void on_timer();
  void handle_closed();
  void resume(net::Transport* t, bool eof, uint64_t resume_at, net::Transport* other);

  // the client side
  void on_data(const char* d, size_t n) override;
  void on_eof() override;
  // A FIN arrived from one side: pass it to `to`. When `to` already sent its own and nothing waits for
  // it, both directions are over and the close that follows sends the FIN (one system call less).
  void pass_fin(net::Transport* to, bool to_eof, bool* to_fin) {
    if (to_eof && to->queued() == 0)
      *to_fin = true;
    else
      to->shutdown();
  }
  void on_error(int) override {
    end_as(awaiting_proxy ? Termination::bad_request
           : handshaking  ? Termination::tls_handshake
                          : Termination::client_closed);
    finish();
  }
  void on_connected() override;  // the PROXY header was read, or a TLS stream's handshake ended
  void on_drained() override;
  void on_shutdown() override {
    down_fin = true;
    maybe_done();
  }
  void on_closed() override { handle_closed(); }
};

struct L4Up final : net::TransportUser {
  std::unique_ptr<net::SocketTransport> t;
  L4Conn* c = nullptr;  // nullptr once the attempt was given up
  void on_connected() override {
    if (c) c->up_connected();
  }
  void on_data(const char* d, size_t n) override {
    if (c) c->relay(c->dt, t.get(), d, n, &c->bytes_out, &c->resume_up_at);
  }
  void on_eof() override {
    if (!c) return;
    c->up_eof = true;
    c->pass_fin(c->dt, c->down_eof, &c->down_fin);
    c->maybe_done();
  }
  void on_error(int) override {
    if (!c) return;
    if (!c->connected) return c->up_failed(Termination::upstream_refused);
    c->end_as(Termination::upstream_closed);
    c->finish();
  }
  void on_drained() override {
    if (c) c->resume(t.get(), c->down_eof, c->resume_down_at, c->dt);
  }
  void on_shutdown() override {
    if (!c) return;
    c->up_fin = true;
    c->maybe_done();
  }
  void on_closed() override {
    if (c) c->handle_closed();
    delete this;
  }
};

void L4Conn::try_connect() {
  peer = choose(w, st, pool, &tried, client);
  if (!peer) {
    end_as(attempts ? Termination::upstream_refused : Termination::no_upstream);
    finish();
    return;
  }
  attempts++;
  auto t = w->new_socket();
  if (!t) {
    end_as(Termination::upstream_refused);
    finish();
    return;
  }
  up = new L4Up();
  up->c = this;
  up->t = std::move(t);
  up->t->set_user(up);
  open++;
  connect_deadline = w->now() + st->connect_timeout_ms;
  arm();
  if (up->t->connect(reinterpret_cast<const sockaddr*>(&peer->addr)) != 0) {
    up_failed(Termination::upstream_refused);
    return;
  }
  // Reading is asked for with the connect: one registration for both (nothing is read before it
  // completes), instead of a second one after it.
  up->t->read_start();
}

void L4Conn::on_eof() {
  down_eof = true;
  if (up) pass_fin(up->t.get(), up_eof, &up_fin);
  maybe_done();
}

// This attempt failed: passive health hears of it, and the next untried peer gets a turn.
namespace {
void l4_admit(L4Conn* c);  // (below, with the accept path)
}  // namespace

// The PROXY header was read: the client it names is admitted (or not) as if it had connected itself.
// Or a TLS stream's client finished its handshake: only now is an upstream contacted (what the client
// sends meanwhile waits in the TLS layer).
void L4Conn::on_connected() {
  if (awaiting_proxy) {
    awaiting_proxy = false;
    dt->read_stop();  // what followed the header in the same read still comes (held until connected)
    last_ms = w->now();
    if (client_port) {  // the header named a client: the PROXY header to the upstream names it too
      if (client.is_v4()) {
        auto* a = reinterpret_cast<sockaddr_in*>(&src);
        *a = sockaddr_in{};
        a->sin_family = AF_INET;
        std::memcpy(&a->sin_addr, client.b.data() + 12, 4);
        a->sin_port = htons(client_port);
      } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&src);
        *a = sockaddr_in6{};
        a->sin6_family = AF_INET6;
        std::memcpy(&a->sin6_addr, client.b.data(), 16);
        a->sin6_port = htons(client_port);
      }
    }
    l4_admit(this);
    return;
  }
  handshaking = false;
  dt->read_stop();
  last_ms = w->now();
  try_connect();
}

void L4Conn::up_failed(Termination why) {
  w->peer_failed(peer);
  L4Up* u = up;
  up = nullptr;
  u->c = nullptr;
  open--;
  u->t->close();
  if (ended) return;
  if (attempts < 64 && attempts < st->pool.peers.size()) {
    try_connect();
    return;
  }
  end_as(why);
  finish();
}

void L4Conn::up_connected() {
  connected = true;
  w->peer_ok(peer);
  peer->active++;
  up->t->nodelay();
  if (st->spec.proxy_protocol != route::ProxyProtocol::off) {
    net::Output o;
    std::string& s = o.begin_scratch();
    if (st->spec.proxy_protocol == route::ProxyProtocol::v1)
      proxy_v1(&s, reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst));
    else
      proxy_v2(&s, reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst), false);
    o.end_scratch();
    up->t->write(o);
  }
  if (!first.empty()) {
    out.ref(first.data(), first.size());
    up->t->write(out);
    std::string().swap(first);
  }
  arm();
  dt->read_start();
  up->t->read_start();
}

// Bytes from one side to the other; the reading side pauses while the other's queue is full or
// while it is over the stream's rate.
void L4Conn::relay(net::Transport* to, net::Transport* from, const char* d, size_t n, uint64_t* count,
                   uint64_t* resume_at) {
  *count += n;
  last_ms = w->now();
  out.ref(d, n);
  if (to->write(out) != 0) {
    end_as(to == dt ? Termination::client_closed : Termination::upstream_closed);
    finish();
    return;
  }
  if (to->congested()) from->read_stop();
  if (uint64_t rate = st->spec.rate_bytes_per_s) {
    // One second's worth of burst, then rate bytes per second since the connection began.
    uint64_t allowed = rate + rate * (last_ms - start_ms) / 1000;
    if (*count > allowed) {
      *resume_at = last_ms + (*count - allowed) * 1000 / rate + 1;
      from->read_stop();
      arm();
    }
  }
}

void L4Conn::on_data(const char* d, size_t n) {
  if (!connected) {  // what followed a PROXY header, before the upstream answered: sent once it does
    first.append(d, n);
    bytes_in += n;
    return;
  }
  relay(up->t.get(), dt, d, n, &bytes_in, &resume_down_at);
}

// `to`'s queue drained below the low watermark, or a rate pause ended: read `from` (which feeds it) again.
void L4Conn::resume(net::Transport* to, bool from_eof, uint64_t resume_at, net::Transport* from) {
  if (ended || from_eof || resume_at || to->congested()) return;
  from->read_start();
}

void L4Conn::on_drained() {
  if (up) resume(dt, up_eof, resume_up_at, up->t.get());
}

// Both directions ended (each FIN received and passed on): a clean end.
void L4Conn::maybe_done() {
  if (down_eof && up_eof && down_fin && up_fin) finish();
}

void L4Conn::finish() {
  if (ended) return;
  ended = true;
  if (connected) peer->active--;
  if (counted && st->live) st->live->fetch_sub(1, std::memory_order_relaxed);
  w->l4_unlink(this);
  emit(w, st, "TCP", client, peer, term, bytes_in, bytes_out, start_ms, attempts);
  dt->close();
  if (up) up->t->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer),
           [](uv_handle_t* h) { static_cast<L4Conn*>(h->data)->handle_closed(); });
}

void L4Conn::handle_closed() {
  if (--open > 0) return;
  if (snap) w->release_snap(snap);
  delete this;
}

// One timer per connection, at the earliest of: the connect deadline, the idle deadline, the end
// of its lifetime, the end of a rate pause. Activity only moves last_ms; the timer looks again.
void L4Conn::arm() {
  if (ended) return;
  uint64_t next = last_ms + st->idle_timeout_ms;
  if (!connected) next = std::min(next, connect_deadline);  // (the handshake's deadline, while handshaking)
  if (st->spec.max_lifetime_ms) next = std::min(next, start_ms + st->spec.max_lifetime_ms);
  if (resume_down_at) next = std::min(next, resume_down_at);
  if (resume_up_at) next = std::min(next, resume_up_at);
  uint64_t now = w->now();
  uv_timer_start(
      &timer, [](uv_timer_t* t) { static_cast<L4Conn*>(t->data)->on_timer(); }, next > now ? next - now : 0, 0);
}

void L4Conn::on_timer() {
  uint64_t now = w->now();
  if ((handshaking || awaiting_proxy) && now >= connect_deadline) {
    end_as(awaiting_proxy ? Termination::client_timeout : Termination::tls_handshake);
    return finish();
  }
  if (!connected && now >= connect_deadline) return up_failed(Termination::upstream_connect_timeout);
  if (now >= last_ms + st->idle_timeout_ms) {
    end_as(Termination::idle_timeout);
    return finish();
  }
  if (st->spec.max_lifetime_ms && now >= start_ms + st->spec.max_lifetime_ms) {
    end_as(Termination::max_lifetime);
    return finish();
  }
  if (resume_down_at && now >= resume_down_at) {
    resume_down_at = 0;
    if (up) resume(up->t.get(), down_eof, 0, dt);
  }
  if (resume_up_at && now >= resume_up_at) {
    resume_up_at = 0;
    if (up) resume(dt, up_eof, 0, up->t.get());
  }
  arm();
}

void Worker::l4_link(L4Conn* c) {
  c->next = l4_head_;
  if (l4_head_) l4_head_->prev = c;
  l4_head_ = c;
  l4_open.inc();
}

void Worker::l4_unlink(L4Conn* c) {
  (c->prev ? c->prev->next : l4_head_) = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  l4_open.dec();
  if (draining_) maybe_finish_drain();
}

void l4_close_conn(L4Conn* c) {
  c->end_as(Termination::shutdown);
  c->finish();
}

namespace {

// A connection of `st` whose client side is open in c->down: admitted, it goes to TLS (a TLS stream)
// or to its first upstream attempt. `client` is who it is from (a PROXY header may have said).
void l4_start(L4Conn* c, SnapRef* ref, const route::L4Stream* st, const net::IpAddr& client) {
  Worker* w = c->w;
  c->snap = ref;
  ref->refs++;
  c->st = st;
  c->pool = &ref->l4_pools[st->index];
  c->client = client;
  w->l4_link(c);
  c->start_ms = c->last_ms = w->now();
  uv_timer_init(w->loop(), &c->timer);
  c->timer.data = c;
  c->open++;
  if (st->spec.accept_proxy) {
    // Only a trusted balancer may say who the client is; the header is read before anything else.
    if (!w->cfg().trusted_proxies.contains(client)) {
      c->end_as(Termination::denied);
      c->finish();
      return;
    }
    c->proxy_in = std::make_unique<net::ProxyInTransport>(c->down.get(), &c->client, &c->client_trusted,
                                                          &w->cfg().trusted_proxies);
    c->proxy_in->set_user(c);
    c->proxy_in->announce(&c->client_port);
    c->dt = c->proxy_in.get();
    c->awaiting_proxy = true;
    c->connect_deadline = c->start_ms + w->cfg().client_header_timeout_ms;
    c->arm();
    c->dt->read_start();
    return;
  }
  l4_admit(c);
}

// The access list and the limits, for the client as known now; then TLS, or the first upstream.
void l4_admit(L4Conn* c) {
  Worker* w = c->w;
  const route::L4Stream* st = c->st;
  Termination t = admit(w, st, c->client, w->sessions.get() + w->l4_conns() - 1);  // not counting this one
  if (t == Termination::ok && st->live) {
    st->live->fetch_add(1, std::memory_order_relaxed);
    c->counted = true;
  }
  if (t != Termination::ok) {
    c->end_as(t);
    c->finish();
    return;
  }
  if (st->spec.tls != "off") {
    c->cert.cert = st->spec.tls == "auto" ? std::string_view() : std::string_view(st->spec.tls);
    c->cert.hosts = &st->spec.hosts;
    SSL* ssl = w->tls_ctx() ? tls::new_stream_ssl(w->tls_ctx(), w->cert_source(), &c->cert) : nullptr;
    if (!ssl) {
      c->end_as(Termination::tls_handshake);
      c->finish();
      return;
    }
    c->tls = std::make_unique<tls::TlsTransport>(ssl, c->dt);  // over TCP, or over the PROXY reader
    c->tls->set_user(c);
    c->dt = c->tls.get();
    c->handshaking = true;
    c->connect_deadline = w->now() + w->cfg().tls_handshake_timeout_ms;
    c->arm();
    c->dt->read_start();
    return;
  }
  c->try_connect();
}

// One accepted connection (fd, non-blocking, TCP_NODELAY from the listening socket).
void on_tcp_accept(L4Listener* l, int fd) {
  Worker* w = l->w;
  auto t = w->new_socket();
  if (!t) {
    ::close(fd);
    return;
  }
  auto* c = new L4Conn();
  c->w = w;
  c->down = std::move(t);
  c->dt = c->down.get();
  c->down->set_user(c);
  c->open = 1;
  SnapRef* ref = w->current_snap();
  const route::L4Stream* st = ref ? ref->snap->stream_by_key(l->key) : nullptr;
  if (c->down->adopt(fd) != 0 || !st || w->draining()) {
    c->ended = true;
    c->down->close();  // on_closed frees it (no snapshot held yet)
    return;
  }
  // The client's address is asked for only when something reads it: its access list, hash balancing,
  // a PROXY header, or an observer of end records (the access log).
  bool proxy = st->spec.proxy_protocol != route::ProxyProtocol::off;
  bool need_client = proxy || st->spec.accept_proxy || !st->spec.acl.empty() ||
                     st->spec.lb == route::StreamBalance::hash || (st->spec.access_log && w->clients_observed());
  socklen_t len = sizeof c->src;
  if (need_client) {
    getpeername(fd, reinterpret_cast<sockaddr*>(&c->src), &len);
    len = sizeof c->dst;
    if (proxy)  // only the PROXY header needs it
      getsockname(fd, reinterpret_cast<sockaddr*>(&c->dst), &len);
  }
  l4_start(c, ref, st, net::IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&c->src)));
}

int start_accepting(L4Listener* l);

// The listening socket is readable: accept what waits (a bounded batch; the level-triggered poll
// comes back for the rest). Out of descriptors, accepting pauses for a while instead of spinning.
void on_listener_readable(L4Listener* l) {
  for (int i = 0; i < 64 && !l->closing; i++) {
    int fd = accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_tcp_accept(l, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    PX_WARN("worker %d: %s: accept: %s (accepting again in 100 ms)", l->w->id(), l->key.c_str(), strerror(errno));
    uv_poll_stop(&l->tcp);
    uv_timer_start(
        &l->pause,
        [](uv_timer_t* t) {
          auto* ll = static_cast<L4Listener*>(t->data);
          if (!ll->closing) start_accepting(ll);
        },
        100, 0);
    return;
  }
}

int start_accepting(L4Listener* l) {
  return uv_poll_start(&l->tcp, UV_READABLE,
                       [](uv_poll_t* h, int, int) { on_listener_readable(static_cast<L4Listener*>(h->data)); });
}

}  // namespace

bool l4_passthrough(Worker* w, int from, const net::IpAddr& client, std::string_view sni, std::string_view hello) {
  SnapRef* ref = w->current_snap();
  const route::L4Stream* st = ref && !w->draining() ? ref->snap->passthrough(sni) : nullptr;
  if (!st) return false;
  // The socket changes hands: the HTTP session that accepted it closes its own descriptor, and this
  // connection carries on with a duplicate (the client sees nothing of it).
  int dup = from >= 0 ? fcntl(from, F_DUPFD_CLOEXEC, 3) : -1;
  if (dup < 0) {
    PX_WARN("route %s: passthrough refused: cannot duplicate the connection (%s)", st->spec.name.c_str(),
            strerror(errno));
    return true;  // taken, and closed with the session: never terminated with a certificate not meant for it
  }
  auto t = w->new_socket();
  if (!t) {
    ::close(dup);
    return true;
  }
  auto* c = new L4Conn();
  c->w = w;
  c->down = std::move(t);
  c->dt = c->down.get();
  c->down->set_user(c);
  c->open = 1;
  if (c->down->adopt(dup, /*shared=*/true) != 0) {  // the session's descriptor may outlive this one
    c->ended = true;
    c->down->close();
    return true;
  }
  c->first.assign(hello);
  c->bytes_in = hello.size();
  l4_start(c, ref, st, client);
  return true;
}

// ---- UDP ----

struct UdpUp {
  uv_udp_t h;
  UdpSession* s = nullptr;  // nullptr once given up
};

struct UdpSession {
  L4Listener* lis = nullptr;
  SnapRef* snap = nullptr;
  const route::L4Stream* st = nullptr;
  L4Pool* pool = nullptr;
  UdpUp* up = nullptr;
  std::string key;           // the client's sockaddr bytes
  std::string proxy_header;  // PROXY v2, made once: every datagram of the session carries the same
  sockaddr_storage addr{};
  net::IpAddr client;
  PeerState* peer = nullptr;
  uint64_t tried = 0;
  uint8_t attempts = 0;
  UdpSession *prev = nullptr, *next = nullptr;  // the listener's LRU
  uint64_t start_ms = 0, last_ms = 0, bytes_in = 0, bytes_out = 0;
  bool replied = false, counted = false;
};

namespace {

thread_local char t_dgram[65536];

void udp_alloc(uv_handle_t*, size_t, uv_buf_t* b) { *b = uv_buf_init(t_dgram, sizeof t_dgram); }

void lru_unlink(L4Listener* l, UdpSession* s) {
  (s->prev ? s->prev->next : l->lru_head) = s->next;
  (s->next ? s->next->prev : l->lru_tail) = s->prev;
  s->prev = s->next = nullptr;
}

void lru_push(L4Listener* l, UdpSession* s) {
  s->prev = l->lru_tail;
  s->next = nullptr;
  (l->lru_tail ? l->lru_tail->next : l->lru_head) = s;
  l->lru_tail = s;
}

void drop_up(UdpSession* s) {
  if (!s->up) return;
  s->up->s = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->up->h), [](uv_handle_t* h) { delete static_cast<UdpUp*>(h->data); });
  s->up = nullptr;
}

void udp_end(UdpSession* s, Termination why) {
  L4Listener* l = s->lis;
  Worker* w = l->w;
  lru_unlink(l, s);
  l->sessions.erase(s->key);
  drop_up(s);
  if (s->counted && s->st->live) s->st->live->fetch_sub(1, std::memory_order_relaxed);
  emit(w, s->st, "UDP", s->client, s->peer, why, s->bytes_in, s->bytes_out, s->start_ms, s->attempts);
  w->release_snap(s->snap);
  delete s;
}

void on_upstream_dgram(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned);

// A connected socket to the next untried peer (false: none left).
bool udp_connect(UdpSession* s) {
  Worker* w = s->lis->w;
  drop_up(s);
  while ((s->peer = choose(w, s->st, s->pool, &s->tried, s->client))) {
    s->attempts++;
    auto* u = new UdpUp();
    u->s = s;
    uv_udp_init(w->loop(), &u->h);
    u->h.data = u;
    int r = uv_udp_connect(&u->h, reinterpret_cast<const sockaddr*>(&s->peer->addr));
    if (r == 0) r = uv_udp_recv_start(&u->h, udp_alloc, on_upstream_dgram);
    s->up = u;
    if (r == 0) return true;
    w->peer_failed(s->peer);
    drop_up(s);
  }
  return false;
}

void udp_send_up(UdpSession* s, const char* d, size_t n) {
  uv_buf_t bufs[2];
  unsigned nb = 0;
  // Every datagram carries the header: the upstream cannot tell a session's first one.
  if (!s->proxy_header.empty())
    bufs[nb++] = uv_buf_init(s->proxy_header.data(), static_cast<unsigned>(s->proxy_header.size()));
  bufs[nb++] = uv_buf_init(const_cast<char*>(d), static_cast<unsigned>(n));
  int r = uv_udp_try_send(&s->up->h, bufs, nb, nullptr);
  if (r == UV_ECONNREFUSED) {
    // The peer's port answered a previous datagram with "unreachable": try the next peer with this one.
    s->lis->w->peer_failed(s->peer);
    if (udp_connect(s)) r = uv_udp_try_send(&s->up->h, bufs, nb, nullptr);
  }
  if (r < 0) s->lis->dropped++;
}

void on_upstream_dgram(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned) {
  auto* u = static_cast<UdpUp*>(h->data);
  UdpSession* s = u->s;
  if (!s || n == 0) return;
  Worker* w = s->lis->w;
  if (n < 0) {
    // ICMP port unreachable: this peer is not there. The next datagram goes to another one.
    w->peer_failed(s->peer);
    if (!udp_connect(s)) udp_end(s, Termination::upstream_refused);
    return;
  }
  if (!s->replied) w->peer_ok(s->peer);
  s->replied = true;
  s->bytes_out += static_cast<uint64_t>(n);
  s->last_ms = w->now();
  lru_unlink(s->lis, s);
  lru_push(s->lis, s);
  uv_buf_t b = uv_buf_init(buf->base, static_cast<unsigned>(n));
  // Replies leave from the listening socket, so the client sees the address it sent to.
  if (uv_udp_try_send(&s->lis->udph, &b, 1, reinterpret_cast<const sockaddr*>(&s->addr)) < 0) s->lis->dropped++;
}

void on_client_dgram(L4Listener* l, ssize_t n, const uv_buf_t* buf, const sockaddr* addr) {
  if (n < 0 || !addr) return;  // nothing (n == 0 without an address) or a socket error: keep listening
  Worker* w = l->w;
  size_t alen = addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  thread_local std::string key;
  key.assign(reinterpret_cast<const char*>(addr), alen);
  UdpSession* s;
  auto it = l->sessions.find(key);
  if (it != l->sessions.end()) {
    s = it->second;
    lru_unlink(l, s);
  } else {
    SnapRef* ref = w->current_snap();
    const route::L4Stream* st = ref ? ref->snap->stream_by_key(l->key) : nullptr;
    if (!st || w->draining()) return;
    net::IpAddr client = net::IpAddr::from_sockaddr(addr);
    uint64_t cap = st->spec.max_connections ? UINT64_MAX : w->cfg().max_connections;
    Termination t = admit(w, st, client, l->sessions.size() < cap ? 0 : UINT64_MAX);
    if (t != Termination::ok) {
      l->dropped++;
      emit(w, st, "UDP", client, nullptr, t, static_cast<uint64_t>(n), 0, w->now(), 0);
      return;
    }
    s = new UdpSession();
    s->lis = l;
    s->snap = ref;
    ref->refs++;
    s->st = st;
    s->pool = &ref->l4_pools[st->index];
    s->key = key;
    std::memcpy(&s->addr, addr, alen);
    s->client = client;
    if (st->spec.proxy_protocol == route::ProxyProtocol::v2)
      proxy_v2(&s->proxy_header, addr, reinterpret_cast<const sockaddr*>(&l->local), true);
    s->start_ms = w->now();
    if (st->live) {
      st->live->fetch_add(1, std::memory_order_relaxed);
      s->counted = true;
    }
    l->sessions.emplace(s->key, s);
    lru_push(l, s);
    if (!udp_connect(s)) {
      s->bytes_in += static_cast<uint64_t>(n);
      udp_end(s, s->attempts ? Termination::upstream_refused : Termination::no_upstream);
      return;
    }
    lru_unlink(l, s);
  }
  s->bytes_in += static_cast<uint64_t>(n);
  s->last_ms = w->now();
  lru_push(l, s);
  udp_send_up(s, buf->base, static_cast<size_t>(n));
}

}  // namespace

void l4_tick(L4Listener* l, uint64_t now) {
  while (l->lru_head && l->lru_head->last_ms + l->lru_head->st->idle_timeout_ms <= now) {
    UdpSession* s = l->lru_head;
    udp_end(s, s->replied ? Termination::ok : Termination::upstream_timeout);
  }
}

// ---- listeners ----

L4Listener* l4_listen(Worker* w, int fd, const std::string& key, bool udp) {
  auto* l = new L4Listener();
  l->w = w;
  l->key = key;
  l->udp = udp;
  int r;
  if (udp) {
    uv_udp_init(w->loop(), &l->udph);
    l->udph.data = l;
    r = uv_udp_open(&l->udph, fd);
    int len = sizeof l->local;
    if (r == 0) uv_udp_getsockname(&l->udph, reinterpret_cast<sockaddr*>(&l->local), &len);
    if (r == 0)
      r = uv_udp_recv_start(&l->udph, udp_alloc,
                            [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr* a, unsigned) {
                              on_client_dgram(static_cast<L4Listener*>(h->data), n, b, a);
                            });
  } else {
    // (make_listener's socket listens already.) Accepted here rather than by a libuv stream: the
    // connection's socket goes straight to the worker's socket transport (epoll or io_uring).
    l->fd = fd;
    // make_listener's sockets, and those inherited from the pxd this one replaces, listen and do not block
    // already; made sure of here (as libuv's listen did), since a blocking accept4 would stall the worker
    // whenever another worker took the connection first.
    ::listen(fd, 4096);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uv_timer_init(w->loop(), &l->pause);
    l->pause.data = l;
    l->open++;
    r = uv_poll_init_socket(w->loop(), &l->tcp, fd);
    if (r == 0) {
      l->tcp.data = l;
      l->open++;
      r = start_accepting(l);
    } else {
      ::close(fd);
      l->fd = -1;
    }
  }
  if (r != 0) PX_ERR("worker %d: %s: %s", w->id(), key.c_str(), uv_strerror(r));
  return l;
}

void l4_close_listener(L4Listener* l) {
  if (l->closing) return;
  l->closing = true;
  while (l->lru_head) udp_end(l->lru_head, Termination::shutdown);
  if (l->udp) {
    uv_close(reinterpret_cast<uv_handle_t*>(&l->udph),
             [](uv_handle_t* hh) { delete static_cast<L4Listener*>(hh->data); });
    return;
  }
  auto done = [](uv_handle_t* hh) {
    auto* ll = static_cast<L4Listener*>(hh->data);
    if (--ll->open == 0) {
      if (ll->fd >= 0) ::close(ll->fd);  // (a poll handle leaves its descriptor open)
      delete ll;
    }
  };
  if (l->open == 0) {
    delete l;
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&l->pause), done);
  if (l->open == 2) uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), done);
}

}  // namespace px::proxy
