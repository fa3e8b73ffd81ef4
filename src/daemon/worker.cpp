#include "daemon/worker.h"

#include <fcntl.h>
#include "conn/session.h"
#include "core/block_pool.h"
#include "stream/cache.h"
#include "stream/stream.h"
#include "upstream/h2up.h"
#include "upstream/upconn.h"

#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "codec/h2.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/h1.h"
#include "net/proxy_in.h"
#include "tls/transport.h"
#include "upstream/balancer.h"
#include "upstream/upstream.h"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

namespace px::proxy {

Worker::Worker(int id, const Config& cfg) : id_(id), cfg_(cfg) {
  req_limits.max_head = cfg.max_header_size;
  req_limits.max_headers = cfg.max_headers;
  req_limits.max_uri = cfg.max_uri_length;
  req_limits.underscores = cfg.underscores_in_headers;
  resp_limits.max_head = 64 * 1024;
  resp_limits.max_headers = 256;
  resp_limits.max_uri = 0;
}

Worker::~Worker() {
  if (thread_.joinable()) thread_.join();
}

void Worker::start(std::vector<ListenFd> fds) {
  fds_ = std::move(fds);
  refresh_geo();
  uv_loop_init(&loop_);
  loop_.data = this;
  uv_async_init(&loop_, &async_, [](uv_async_t* a) { static_cast<Worker*>(a->data)->on_async(); });
  async_.data = this;
  uv_timer_init(&loop_, &tick_);
  tick_.data = this;
  uv_check_init(&loop_, &h2_check_);
  h2_check_.data = this;
  uv_idle_init(&loop_, &h2_idle_);
  h2_idle_.data = this;
  if (int r = epoll_.open(&loop_)) PX_ERR("worker %d: epoll: %s (TCP streams cannot run)", id_, uv_strerror(r));
  if (cfg_.use_uring) {
    std::string why;
    if (uring_.open(&loop_, kUringBuffers, kUringBufferSize, &why) != 0)
      PX_ERR("worker %d: io_uring: %s (this worker's sockets use epoll)", id_, why.c_str());
  }
  apply_timeouts();
  if (cache_store_) cache_ = std::make_unique<CacheStage>(this, cache_store_, cache_memory_, cache_max_object_);
  for (auto& l : fds_) add_listener(l);
  started_ = true;
  if (inline_) return;  // start_inline(): the caller runs the loop on its own thread
  thread_ = std::thread([this] { run(); });
}

std::unique_ptr<net::SocketTransport> Worker::new_socket() {
  if (uring_.is_open()) {
    auto t = std::make_unique<net::UringTransport>();
    t->init(&uring_);
    return t;
  }
  if (epoll_.is_open()) {
    auto t = std::make_unique<net::EpollTransport>();
    t->init(&epoll_);
    return t;
  }
  return nullptr;
}

void Worker::start_inline() {
  inline_ = true;
  start({});
  on_async();
}

Session* Worker::adopt(net::Transport* t, const net::IpAddr& peer) {
  auto* s = new Session();
  s->w = this;
  s->tr = t;
  t->set_user(s);
  s->client.peer_ip = peer;
  s->client.trusted_peer = cfg_.trusted_proxies.contains(peer);
  begin_session(s);
  return s;
}

// A session the worker takes: counted, in the list drain and stop walk, started.
void Worker::begin_session(Session* s) {
  sessions.inc();
  s->counted = true;
  s->next = sessions_head_;
  if (sessions_head_) sessions_head_->prev = s;
  sessions_head_ = s;
  s->start();
}

void Worker::finish_inline() {
  on_async();
  stop_everything();
  uv_run(&loop_, UV_RUN_DEFAULT);
  teardown();
}

// After the loop ran dry: prove nothing leaked, and free what the worker kept.
void Worker::teardown() {
  if (uv_loop_close(&loop_) != 0) PX_ERR("worker %d: loop closed with handles still open", id_);
  cache_.reset();
  if (current_) {
    current_->retired = true;
    if (current_->refs == 0) delete current_;
    current_ = nullptr;
  }
  while (free_streams_) {
    Stream* s = free_streams_;
    free_streams_ = s->next_free;
    delete s;
  }
  net::release_thread_buffers();
  release_h1_exchanges();
  release_h2_upstreams();
  block_pool::release();
}

namespace {
// An end-record observer: one debug line per stream (log_level debug).
struct DebugStreamLog final : EndObserver {
  void on_stream_end(const EndRecord& r) override {
    char ip[64];
    size_t n = r.client.format(ip);
    PX_DEBUG(
        "stream end: client=%.*s method=%.*s host=%.*s target=%.*s route=%.*s peer=%.*s status=%u "
        "upstream_status=%u attempts=%u in=%llu out=%llu ms=%llu reason=%s",
        static_cast<int>(n), ip, static_cast<int>(r.method.size()), r.method.data(), static_cast<int>(r.host.size()),
        r.host.data(), static_cast<int>(r.target.size()), r.target.data(), static_cast<int>(r.route.size()),
        r.route.data(), static_cast<int>(r.peer.size()), r.peer.data(), r.status, r.upstream_status, r.attempts,
        static_cast<unsigned long long>(r.bytes_in), static_cast<unsigned long long>(r.bytes_out),
        static_cast<unsigned long long>(r.duration_ms), termination_name(r.reason));
  }
};
DebugStreamLog g_debug_stream_log;
}  // namespace

void Worker::run() {
  if (log::level() == log::Level::debug) add_observer(&g_debug_stream_log);
  engine_ = std::make_unique<lua::Engine>();
  std::string err;
  if (!engine_->init(cfg_, &filter_errors_, &err)) {
    // Routes with filters then answer 500: a filter that cannot run must not be skipped.
    PX_ERR("worker %d: Lua filters unavailable: %s", id_, err.c_str());
    engine_.reset();
  }
  if (engine_ && metrics_) engine_->set_timing(true);
  if (engine_) engine_->shared = shared_;
  on_async();  // a snapshot may be waiting already
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Everything is closed; let the close callbacks run, then prove nothing leaked.
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (EndObserver* o : observers_) o->flush();
  teardown();
  engine_.reset();
  if (on_exit) on_exit();
}

// The client timeouts and the tick that checks them (an eighth of the shortest, 5 to 100 ms).
void Worker::apply_timeouts() {
  tlists_[static_cast<int>(Timeout::header)].duration = cfg_.client_header_timeout_ms;
  tlists_[static_cast<int>(Timeout::body)].duration = cfg_.client_body_timeout_ms;
  tlists_[static_cast<int>(Timeout::keepalive)].duration = cfg_.keepalive_timeout_ms;
  tlists_[static_cast<int>(Timeout::handshake)].duration = cfg_.tls_handshake_timeout_ms;
  cert_source_.reject_unknown_name = cfg_.tls_reject_unknown_name;
  uint64_t shortest = std::min({cfg_.client_header_timeout_ms, cfg_.client_body_timeout_ms, cfg_.keepalive_timeout_ms,
                                cfg_.tls_handshake_timeout_ms});
  uint64_t tick = std::clamp<uint64_t>(shortest / 8, 5, 100);
  uv_timer_start(
      &tick_, [](uv_timer_t* t) { static_cast<Worker*>(t->data)->on_tick(); }, tick, tick);
}

void Worker::add_listener(const ListenFd& l) {
  auto* x = new Listener;
  x->w = this;
  x->info = l;
  x->info.fd = -1;
  int r;
  if (uring_.is_open()) {  // the io_uring engine: the ring accepts, and the connection's socket is a UringTransport
    x->ring.start(&uring_, l.fd, x);
    r = 0;
  } else {
    x->tcp = new uv_tcp_t;
    uv_tcp_init(&loop_, x->tcp);
    x->tcp->data = x;
    r = uv_tcp_open(x->tcp, l.fd);
    if (r == 0)
      r = uv_listen(reinterpret_cast<uv_stream_t*>(x->tcp), 4096, [](uv_stream_t* s, int status) {
        auto* x = static_cast<Listener*>(s->data);
        if (status == 0) x->w->on_accept(x);
      });
  }
  if (r != 0) PX_ERR("worker %d: listen: %s", id_, uv_strerror(r));
  listeners_.push_back(x);
}

void Worker::close_listener(Listener* l) {
  if (l->tcp) {
    uv_close(reinterpret_cast<uv_handle_t*>(l->tcp), [](uv_handle_t* x) { delete reinterpret_cast<uv_tcp_t*>(x); });
    delete l;
  } else if (l->ring.close()) {
    delete l;
  } else {
    acceptors_closing_++;  // freed when the ring has answered: on_acceptor_closed
  }
}

// What the ring accepted until then was served (a drain waits for this: the connections are this worker's).
void Worker::Listener::on_acceptor_closed() {
  Worker* x = w;
  delete this;
  x->acceptors_closing_--;
  if (x->draining_) x->maybe_finish_drain();
}

// (Accepting stopped: the worker's tick arms it again.)
void Worker::Listener::on_accept_error(int err) {
  uint64_t t = w->now();
  if (warned_ms && t - warned_ms < 1000) return;
  warned_ms = t;
  PX_WARN("worker %d: accept: %s (accepting again at the next tick)", w->id_, strerror(-err));
}

void Worker::post_config(Reconfig r) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (mail_config_) {
      // Two reloads before this worker looked: the second's listeners build on the first's.
      for (auto& a : mail_config_->add)
        if (std::find(r.remove.begin(), r.remove.end(), a.key) == r.remove.end())
          r.add.insert(r.add.begin(), a);
        else
          ::close(a.fd);
      for (auto& k : mail_config_->remove) r.remove.push_back(k);
    }
    mail_config_ = std::make_unique<Reconfig>(std::move(r));
    wake_locked();
  }
}

// New connections get the new settings; open ones finish under what they started with (their
// timeouts excepted: those are the worker's). A removed listener stops accepting; its connections stay.
void Worker::apply_config(Reconfig r) {
  cfg_ = std::move(r.cfg);
  req_limits.max_head = cfg_.max_header_size;
  req_limits.max_headers = cfg_.max_headers;
  req_limits.max_uri = cfg_.max_uri_length;
  req_limits.underscores = cfg_.underscores_in_headers;
  tls_ctx_ = r.tls_ctx;
  apply_timeouts();
  for (size_t i = listeners_.size(); i-- > 0;) {
    if (std::find(r.remove.begin(), r.remove.end(), listeners_[i]->info.key) == r.remove.end()) continue;
    close_listener(listeners_[i]);
    listeners_.erase(listeners_.begin() + static_cast<long>(i));
  }
  for (auto& l : r.add) add_listener(l);
}

// Stream listeners come and go with the store: open what was added, close what was removed (open
// connections stay; UDP sessions end with their socket).
void Worker::apply_l4(L4Change& ch) {
  for (const auto& key : ch.remove)
    for (size_t i = l4_listeners_.size(); i-- > 0;)
      if (l4_listeners_[i]->key == key) {
        l4_close_listener(l4_listeners_[i]);
        l4_listeners_.erase(l4_listeners_.begin() + static_cast<long>(i));
      }
  for (auto& a : ch.add) l4_listeners_.push_back(l4_listen(this, a.fd, a.key, a.udp));
  ch.add.clear();
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

// Under mu_: the worker's loop looks at its mailbox soon (unless it has not started, or has ended: a
// worker that drained and exited must not be woken, its async handle is closed).
void Worker::wake_locked() {
  if (started_ && !ended_) uv_async_send(&async_);
}

void Worker::post_snapshot(std::shared_ptr<const route::Snapshot> s, L4Change l4) {
  {
    std::lock_guard<std::mutex> g(mu_);
    mail_snap_ = std::move(s);
    if (!l4.add.empty() || !l4.remove.empty()) mail_l4_.push_back(std::move(l4));
    wake_locked();
  }
}

void Worker::post_filters(std::vector<std::pair<std::string, std::string>> files) {
  {
    std::lock_guard<std::mutex> g(mu_);
    mail_filters_ = std::move(files);
    mail_has_filters_ = true;
    wake_locked();
  }
}

void Worker::post_drain() {
  {
    std::lock_guard<std::mutex> g(mu_);
    mail_drain_ = true;
    wake_locked();
  }
}

void Worker::post_stop() {
  {
    std::lock_guard<std::mutex> g(mu_);
    mail_stop_ = true;
    wake_locked();
  }
}

void Worker::on_async() {
  std::shared_ptr<const route::Snapshot> snap;
  bool drain_now, stop_now;
  std::vector<std::pair<std::string, std::string>> files;
  bool reload = false;
  std::unique_ptr<Reconfig> config;
  std::vector<L4Change> l4;
  {
    std::lock_guard<std::mutex> g(mu_);
    l4.swap(mail_l4_);
    config = std::move(mail_config_);
    files = std::move(mail_filters_);
    reload = mail_has_filters_;
    mail_has_filters_ = false;
    snap = std::move(mail_snap_);
    mail_snap_.reset();
    drain_now = mail_drain_;
    stop_now = mail_stop_;
    mail_drain_ = mail_stop_ = false;
  }
  if (stopping_ || draining_)
    for (auto& ch : l4)
      for (auto& a : ch.add) ::close(a.fd);
  if (stopping_) {
    if (config)
      for (auto& a : config->add) ::close(a.fd);
    return;
  }
  if (config && draining_)
    for (auto& a : config->add) ::close(a.fd);
  else if (config)
    apply_config(std::move(*config));
  if (reload && engine_) engine_->load(files);
  if (snap) install(std::move(snap));
  if (!draining_)
    for (auto& ch : l4) apply_l4(ch);  // after the snapshot: a new listener's first accept finds its stream
  if (stop_now)
    stop_everything();
  else if (drain_now)
    drain();
}

PeerState* Worker::peer_for(const route::PeerAddr& a) {
  auto& p = peers_[a.key];
  if (!p) {
    p = std::make_unique<PeerState>();
    p->key = a.key;
  }
  p->metrics_slot = a.metrics_slot;
  p->resolved = a.resolved;
  p->tls = a.tls;
  p->h2 = a.h2;
  p->grpc = a.grpc;
  p->tls_spec = a.tls_spec;
  p->host = a.host;
  if (a.resolved) {
    p->addr = a.addr;
    p->addr_len = a.addr_len;
  }
  return p.get();
}

SSL* Worker::new_upstream_ssl(PeerState* p) {
  SSL* ssl = new_client_ssl(p->tls_spec, p->tls_spec.sni.empty() ? p->host : p->tls_spec.sni, p->key);
  if (!ssl) return nullptr;
  SSL_set_app_data(ssl, p);  // PeerStates live as long as the worker
  if (p->session) SSL_set_session(ssl, p->session.get());
  return ssl;
}

// A client connection's TLS with a route's upstream settings (verification, CAs, a client certificate),
// naming and verifying `name`. `who` names it in the log.
SSL* Worker::new_client_ssl(const route::UpstreamTlsSpec& t, const std::string& name, const std::string& who) {
  std::string key = (t.verify ? "v:" : "n:") + t.ca_file;
  auto& ctx = client_ctx_[key];
  if (!ctx) {
    ctx.reset(SSL_CTX_new(TLS_method()));
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    // Sessions (TLS 1.3: tickets, which arrive after the handshake) are kept per peer, to resume with.
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx.get(), [](SSL* ssl, SSL_SESSION* sess) {
      auto* p = static_cast<PeerState*>(SSL_get_app_data(ssl));
      if (!p) return 0;  // not a peer's connection (px.fetch): not kept
      p->session.reset(sess);
      return 1;  // the peer holds the reference now
    });
    if (t.verify) {
      const char* bundle = t.ca_file.empty() ? "/etc/ssl/certs/ca-certificates.crt" : t.ca_file.c_str();
      if (!SSL_CTX_load_verify_locations(ctx.get(), bundle, nullptr)) {
        ERR_clear_error();
        PX_ERR("upstream %s: cannot load the CA bundle %s", who.c_str(), bundle);
        ctx.reset();
        return nullptr;
      }
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    } else {
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
  }
  SSL* ssl = SSL_new(ctx.get());
  if (!ssl) return nullptr;
  SSL_set_connect_state(ssl);
  net::IpAddr ip;
  bool is_ip = net::IpAddr::parse(name, &ip);
  if (!is_ip) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (t.verify) {
    X509_VERIFY_PARAM* vp = SSL_get0_param(ssl);
    if (is_ip)
      X509_VERIFY_PARAM_set1_ip_asc(vp, name.c_str());
    else
      X509_VERIFY_PARAM_set1_host(vp, name.data(), name.size());
  }
  static const uint8_t kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_set_alpn_protos(ssl, kAlpn, sizeof kAlpn);
  if (!t.client_cert.empty()) {
    // mTLS: the stored certificate of that name, as the current generation has it.
    const tls::Cert* c =
        current_ && current_->snap->certs() ? current_->snap->certs()->by_name(t.client_cert) : nullptr;
    if (!c) {
      PX_ERR("upstream %s: client certificate '%s' is not in the store", who.c_str(), t.client_cert.c_str());
      SSL_free(ssl);
      return nullptr;
    }
    tls::use_cert(ssl, *c);
  }
  return ssl;
}

void Worker::install(std::shared_ptr<const route::Snapshot> s) {
  auto* r = new SnapRef();
  r->snap = std::move(s);
  const auto& routes = r->snap->routes();
  r->pools.resize(routes.size());
  for (size_t i = 0; i < routes.size(); i++) {
    PoolView& pv = r->pools[i];
    pv.route = routes[i].get();
    for (const auto& pa : routes[i]->pool.peers) pv.peers.push_back(peer_for(pa));
    pv.current.assign(pv.peers.size(), 0);
  }
  if (engine_) {
    engine_->install(*r->snap, &r->masks);
  } else {
    r->masks.assign(routes.size(), 0);
    for (size_t i = 0; i < routes.size(); i++)
      if (!routes[i]->spec.filters.empty()) r->masks[i] = lua::kMissingFilter;
  }
  const auto& streams = r->snap->streams();
  r->l4_pools.resize(streams.size());
  for (size_t i = 0; i < streams.size(); i++) {
    for (const auto& pa : streams[i]->pool.peers) r->l4_pools[i].peers.push_back(peer_for(pa));
    r->l4_pools[i].current.assign(streams[i]->pool.peers.size(), 0);
  }
  if (current_) {
    current_->retired = true;
    if (current_->refs == 0) delete current_;
  }
  current_ = r;
  cert_source_.certs = r->snap->certs();  // the next handshakes use these; open connections keep theirs
  sync_health_checks();
  applied_gen_.store(r->snap->generation(), std::memory_order_release);
  if (on_applied) on_applied();
  PX_DEBUG("worker %d: generation %llu applied (%zu routes)", id_,
           static_cast<unsigned long long>(r->snap->generation()), routes.size());
}

void Worker::release_snap(SnapRef* r) {
  if (--r->refs == 0 && r->retired) delete r;
}

Stream* Worker::get_stream() {
  if (++streams_in_use_ > streams_peak_) streams_peak_ = streams_in_use_;
  if (Stream* s = free_streams_) {
    free_streams_ = s->next_free;
    free_stream_count_--;
    s->next_free = nullptr;
    return s;
  }
  auto* s = new Stream();
  s->w = this;
  return s;
}

void Worker::put_stream(Stream* s) {
  streams_in_use_--;
  s->reset();
  if (free_stream_count_ >= kMaxFreeStreams) {
    delete s;
    return;
  }
  s->next_free = free_streams_;
  free_streams_ = s;
  free_stream_count_++;
}

void Worker::new_request_id(char out[32]) {
  static const char* hex = "0123456789abcdef";
  if (!rid_prefix_[0]) {  // once per worker: 16 random hex digits
    uint8_t r[8];
    RAND_bytes(r, sizeof r);
    for (int i = 0; i < 8; i++) {
      rid_prefix_[2 * i] = hex[r[i] >> 4];
      rid_prefix_[2 * i + 1] = hex[r[i] & 15];
    }
  }
  memcpy(out, rid_prefix_, 16);
  hex16(++rid_counter_, out + 16);
}

std::string_view Worker::date() {
  uint64_t sec = static_cast<uint64_t>(time(nullptr));
  if (sec != date_sec_) {
    date_sec_ = sec;
    time_t t = static_cast<time_t>(sec);
    tm g;
    gmtime_r(&t, &g);
    strftime(date_buf_, sizeof date_buf_, "%a, %d %b %Y %H:%M:%S GMT", &g);
  }
  return date_buf_;
}

// ---- accepting ----

void Worker::on_accept(Listener* l) {
  auto* s = new Session();
  s->w = this;
  if (s->accept_from(reinterpret_cast<uv_stream_t*>(l->tcp), s, false) != 0) {
    s->closing = true;
    s->tr->close();
    return;
  }
  s->client.peer_ip = s->sock.uv.peer_ip();
  accepted(s, l->info);
}

// The io_uring engine: a connection the ring accepted from l, on a UringTransport.
void Worker::on_ring_accept(Listener* l, int fd) {
  sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {  // (reset before it was seen)
    ::close(fd);
    return;
  }
  auto* s = new Session();
  s->w = this;
  s->adopt_ring(&uring_, fd, s);
  s->client.peer_ip = net::IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa));
  accepted(s, l->info, /*taken=*/!stopping_);
}

// A connection accepted from a listener: its layers (PROXY header, ClientHello, TLS) as the listener says.
void Worker::accepted(Session* s, const ListenFd& l, bool taken) {
  // TCP_NODELAY comes from the listening socket (Server's make_listener).
  s->client.trusted_peer = cfg_.trusted_proxies.contains(s->client.peer_ip);
  bool tls = l.tls, proxy = l.proxy, h2 = tls ? l.h2 : l.h2c;
  s->h2_allowed = h2;
  if (proxy && !s->client.trusted_peer) {
    // Only a trusted balancer may say who the client is: anyone else is closed unanswered.
    s->closing = true;
    s->tr->close();
    return;
  }
  if (sessions.get() >= cfg_.max_connections || (draining_ && !taken)) {
    if (!tls) {  // a TLS client could not read a plain 503: it is just closed
      net::Output o;
      http::write_busy(o);
      s->tr->write(o);
    }
    s->closing = true;
    s->tr->close();
    return;
  }
  if (proxy) {
    s->proxy_in = std::make_unique<net::ProxyInTransport>(s->tr, &s->client.peer_ip, &s->client.trusted_peer,
                                                          &cfg_.trusted_proxies);
    s->tr = s->proxy_in.get();
  }
  if (tls && current_ && current_->snap->has_passthrough()) {
    s->peek = std::make_unique<tls::HelloPeekTransport>(s->tr, s);
    s->tr = s->peek.get();
  }
  if (tls) {
    SSL* ssl = tls_ctx_ ? tls::new_server_ssl(tls_ctx_, &cert_source_, h2) : nullptr;
    if (!ssl) {
      s->closing = true;
      s->tr->close();
      return;
    }
    auto* t = new tls::TlsTransport(ssl, s->tr);
    s->wrap.reset(t);
    s->tr = t;
    s->client.tls = true;
  }
  if (draining_) s->h1.close_after = true;  // (one taken before its listener closed: its answer, then the end)
  begin_session(s);
}

void Worker::timeout_link(Session* s, Timeout t) {
  TimeoutList& l = tlists_[static_cast<int>(t)];
  s->timeout = t;
  s->deadline = now() + l.duration;
  s->tnext = nullptr;
  s->tprev = l.tail;
  if (l.tail)
    l.tail->tnext = s;
  else
    l.head = s;
  l.tail = s;
}

void Worker::timeout_unlink(Session* s) {
  TimeoutList& l = tlists_[static_cast<int>(s->timeout)];
  if (s->tprev)
    s->tprev->tnext = s->tnext;
  else
    l.head = s->tnext;
  if (s->tnext)
    s->tnext->tprev = s->tprev;
  else
    l.tail = s->tprev;
  s->tprev = s->tnext = nullptr;
  s->timeout = Timeout::none;
}

// After a spike, give memory back: the pools keep only what the last window
// needed, and when a spike has passed the allocator returns free pages to the
// system (glibc keeps them otherwise). Runs from the tick, once a window.
void Worker::trim() {
  size_t keep = std::clamp<size_t>(streams_peak_, 8, kMaxFreeStreams);
  size_t freed = 0;
  while (free_stream_count_ > keep) {
    Stream* s = free_streams_;
    free_streams_ = s->next_free;
    free_stream_count_--;
    delete s;
    freed++;
  }
  H2Conn::trim_stream_pool(keep);
  bool spike_over =
      (streams_peak_ >= 64 && streams_in_use_ * 4 < streams_peak_) || freed >= 64 || upconns_peak_ > upconns.get() + 64;
  if (spike_over) {
    net::trim_thread_buffers();
    if (engine_) engine_->collect_garbage();
    if (now() - last_malloc_trim_ >= kTrimWindowMs) {
      malloc_trim(0);
      last_malloc_trim_ = now();
    }
  }
  streams_peak_ = streams_in_use_;
  upconns_peak_ = upconns.get();
}

// Once a second: a GeoIP file replaced (a weekly update) is reopened; one that cannot be opened keeps the
// previous database serving, and is logged once per failure.
void Worker::refresh_geo() {
  if (cfg_.geoip_database.empty() && cfg_.geoip_asn_database.empty()) return;
  std::string err;
  if (geo_.refresh(cfg_.geoip_database, cfg_.geoip_asn_database, &err)) {
    geo_error_.clear();
  } else if (err != geo_error_) {
    PX_WARN("geoip: %s (the previous database, if any, keeps serving)", err.c_str());
    geo_error_ = err;
  }
}

void Worker::on_tick() {
  heartbeat_ms.store(uv_hrtime() / 1000000u, std::memory_order_relaxed);
  for (Listener* l : listeners_)
    if (!l->tcp) l->ring.rearm();  // (after the kernel ended its accepting: out of descriptors, say)
  for (EndObserver* o : observers_) o->flush();
  uint64_t t = now();
  if (metrics_) publish_metrics(t);
  if (upconns.get() > upconns_peak_) upconns_peak_ = upconns.get();
  if (t - last_trim_ >= kTrimWindowMs) {
    last_trim_ = t;
    trim();
    refresh_geo();
  }
  for (L4Listener* l : l4_listeners_)
    if (l->udp) l4_tick(l, t);
  H2Conn::release_resting(t);
  for (int k = 1; k < 5; k++) {
    TimeoutList& l = tlists_[k];
    while (l.head && l.head->deadline <= t) {
      Session* s = l.head;
      timeout_unlink(s);
      if (k == static_cast<int>(Timeout::body) && s->h1.bp_paused) {
        // The upstream is slow to take the body, not the client to send it.
        timeout_link(s, Timeout::body);
        continue;
      }
      s->on_timeout(static_cast<Timeout>(k));
    }
  }
}

// What scrapes read that the request path does not count itself: each peer's health, and (once a
// second) the filter engine's counts.
void Worker::publish_metrics(uint64_t t) {
  for (auto& [key, p] : peers_) metrics_->peers[p->metrics_slot].health.v.store(p->usable(t) ? 1 : 2);
  if (engine_ && t - last_filter_stats_ >= 1000) {
    last_filter_stats_ = t;
    engine_->filter_stats(&filter_scratch_);
    std::lock_guard<std::mutex> g(metrics_->filters.mu);
    metrics_->filters.by_filter.swap(filter_scratch_);
  }
}

void Worker::session_closed(Session* s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    sessions_head_ = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
  sessions.dec();
  if (draining_) maybe_finish_drain();
}

// ---- balancing ----

PeerState* Worker::choose_peer(Stream* st) {
  PoolView& pv = *st->pool;
  uint64_t t = now();
  load_.resize(pv.peers.size());
  for (size_t i = 0; i < pv.peers.size(); i++) {
    const PeerState* p = pv.peers[i];
    load_[i] = PeerLoad{p->usable(t), p->active, p->down_until, !p->resolved || p->hc_down};
  }
  long best = pick_peer(st->route->pool, load_, pv.current, st->tried, st->client_ip, rotate_++);
  if (best < 0) return nullptr;
  st->tried |= uint64_t(1) << best;
  return pv.peers[static_cast<size_t>(best)];
}

bool Worker::has_untried(const Stream* st) {
  const PoolView& pv = *st->pool;
  uint64_t t = now();
  for (size_t i = 0; i < pv.peers.size() && i < 64; i++)
    if (!(st->tried >> i & 1) && pv.peers[i]->usable(t)) return true;
  return false;
}

void Worker::peer_failed(PeerState* p) {
  if (metrics_) metrics_->peers[p->metrics_slot].failures.inc();
  if (++p->fails >= cfg_.max_fails && cfg_.max_fails > 0) {
    if (now() >= p->down_until)
      PX_WARN("upstream %s: %u consecutive failures, out for %llums", p->key.c_str(), p->fails,
              static_cast<unsigned long long>(cfg_.fail_timeout_ms));
    p->down_until = now() + cfg_.fail_timeout_ms;
    p->fails = 0;
  }
}

void Worker::peer_ok(PeerState* p) {
  p->fails = 0;
  p->down_until = 0;
}

// ---- keep-alive pools ----

UpConn* Worker::take_idle(PeerState* p) {
  UpConn* c = p->idle;
  if (!c) return nullptr;
  unpark(c);
  c->arm_timer(0);
  return c;
}

void Worker::park_idle(UpConn* c) {
  PeerState* p = c->peer;
  if (p->idle_count >= cfg_.upstream_keepalive || draining_ || stopping_) {
    c->close();
    return;
  }
  c->state = UpConn::State::idle;
  c->prev = nullptr;
  c->next = p->idle;
  if (p->idle) p->idle->prev = c;
  p->idle = c;
  p->idle_count++;
  c->start_reading();  // to notice the peer closing it
  c->arm_timer(cfg_.upstream_keepalive_timeout_ms);
}

void Worker::unpark(UpConn* c) {
  PeerState* p = c->peer;
  if (c->prev)
    c->prev->next = c->next;
  else
    p->idle = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  p->idle_count--;
  c->state = UpConn::State::active;
}

// ---- draining and stopping ----

void Worker::drain() {
  if (draining_) return;
  draining_ = true;
  for (auto* t : listeners_) close_listener(t);
  listeners_.clear();
  for (L4Listener* l : l4_listeners_) l4_close_listener(l);
  l4_listeners_.clear();
  // Idle keep-alive connections are closed once idle for kDrainIdleMs: a client that sends its next
  // request meanwhile (a load generator always does) gets its answer with Connection: close instead
  // of a connection closed under a request in flight.
  TimeoutList& ka = tlists_[static_cast<int>(Timeout::keepalive)];
  ka.duration = std::min<uint64_t>(ka.duration, kDrainIdleMs);
  std::vector<Session*> idle;
  for (Session* s = sessions_head_; s; s = s->next) {
    s->h1.close_after = true;
    if (s->h2)
      s->h2->shutdown();  // GOAWAY: streams in flight finish
    else if (s->idle())
      idle.push_back(s);
  }
  for (Session* s : idle) {
    timeout_unlink(s);
    timeout_link(s, Timeout::keepalive);
  }
  maybe_finish_drain();
}

void Worker::maybe_finish_drain() {
  if (draining_ && sessions.get() == 0 && l4_open.get() == 0 && acceptors_closing_ == 0 && !stopping_)
    stop_everything();
}

void Worker::stop_everything() {
  if (stopping_) return;
  stopping_ = true;
  draining_ = true;
  for (auto* t : listeners_) close_listener(t);
  listeners_.clear();
  while (sessions_head_) sessions_head_->close();
  for (L4Listener* l : l4_listeners_) l4_close_listener(l);
  l4_listeners_.clear();
  while (l4_head_) l4_close_conn(l4_head_);
  for (auto& kv : peers_) {
    PeerState* p = kv.second.get();
    while (p->idle) p->idle->close();
    h2_close_idle(p, true);
    if (p->hc_timer) {
      uv_close(reinterpret_cast<uv_handle_t*>(p->hc_timer),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      p->hc_timer = nullptr;
    }
    probe_abandon(p);
  }
  if (fetcher_) fetcher_->close_idle();
  epoll_.close();  // after the upstream connections on it closed: their on_closed() comes from it
  uring_.close();
  {
    std::lock_guard<std::mutex> g(mu_);  // no post_*() wakes this loop from here on
    ended_ = true;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&h2_check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&h2_idle_), nullptr);
  if (cache_) cache_->close();
}

// ---- deferred HTTP/2 sends ----

void Worker::defer_h2(DeferredSend* c) {
  if (c->in_deferred) return;
  c->in_deferred = true;
  if (h2_deferred_.empty()) {
    uv_check_start(&h2_check_, [](uv_check_t* h) { static_cast<Worker*>(h->data)->run_deferred_h2(); });
    uv_idle_start(&h2_idle_, [](uv_idle_t* h) { static_cast<Worker*>(h->data)->run_deferred_h2(); });
  }
  h2_deferred_.push_back(c);
}

void Worker::undefer_h2(DeferredSend* c) {
  if (!c->in_deferred) return;
  c->in_deferred = false;
  for (auto& x : h2_deferred_)
    if (x == c) x = nullptr;
}

void Worker::run_deferred_h2() {
  // A send may defer another connection (a stream's upstream on it): loop until none is left.
  while (!h2_deferred_.empty()) {
    std::vector<DeferredSend*> now;
    now.swap(h2_deferred_);
    for (DeferredSend* c : now)
      if (c) {
        c->in_deferred = false;
        c->deferred_send();
      }
  }
  uv_check_stop(&h2_check_);
  uv_idle_stop(&h2_idle_);
}

}  // namespace px::proxy
