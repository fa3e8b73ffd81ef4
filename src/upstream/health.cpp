// Active health checks: one probe at a time per peer that a route's pool
// checks, on a timer. An HTTP probe is a GET through px's HTTP/1 client
// (http/client.h), with the peer's own TLS settings for https:// peers; an
// HTTP/2 peer's is the same GET over HTTP/2 on a connection of its own, or for
// a grpc:// peer gRPC's health protocol (grpc.health.v1.Health/Check, the
// server's overall health: SERVING passes); an L4 stream's peer is probed by a
// TCP connect.
#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "daemon/worker.h"
#include "http/client.h"
#include "net/uv_transport.h"
#include "upstream/upconn.h"

namespace px::proxy {

// An L4 peer's probe: accepting the connection is all it can show.
struct HealthProbe final : net::TransportUser {
  net::UvTransport tcp;
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;  // null once the peer stopped caring
  int closes = 0;
  bool done = false;

  void finish(bool ok) {
    if (done) return;
    done = true;
    if (peer) {
      peer->probe = nullptr;
      w->health_result(peer, ok);
    }
    closes = 2;
    tcp.close();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { static_cast<HealthProbe*>(h->data)->on_closed(); });
  }
  // net::TransportUser
  void on_connected() override { finish(true); }
  void on_data(const char*, size_t) override {}
  void on_eof() override { finish(false); }
  void on_error(int) override { finish(false); }
  void on_drained() override {}
  void on_closed() override {
    if (--closes == 0) delete this;
  }
};

// An HTTP/2 peer's probe: one stream on a connection of its own (h2c with prior knowledge, or TLS with ALPN h2).
struct H2Probe final : net::TransportUser, http::ClientConn {
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;  // null once the peer stopped caring
  nghttp2_session* ng = nullptr;
  std::string grpc_status, body;
  int status = 0;
  int closes = 0;
  bool grpc = false, done = false;

  void finish(bool ok) {
    if (done) return;
    done = true;
    if (peer) {
      peer->h2_probe = nullptr;
      w->health_result(peer, ok);
    }
    closes = 2;
    tr->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { static_cast<H2Probe*>(h->data)->on_closed(); });
  }
  // The answer: a 2xx or 3xx; for gRPC, status 0 and a HealthCheckResponse saying SERVING (field 1 = 1).
  bool passed() const {
    if (!grpc) return status >= 200 && status < 400;
    if (status != 200 || grpc_status != "0" || body.size() < 5 || body[0] != 0) return false;
    std::string_view msg(body.data() + 5, body.size() - 5);
    for (size_t i = 0; i + 1 < msg.size(); i += 2)
      if (msg[i] == 0x08) return msg[i + 1] == 1;  // (a one-byte tag and value: 0..3)
    return false;
  }
  void send() {
    const uint8_t* p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(ng, &p)) > 0)
      out.copy(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    if (n < 0) return finish(false);
    if (!out.empty() && tr->write(out) != 0) finish(false);
  }
  void on_connected() override {
    if (done) return;
    if (wrap) {
      const uint8_t* proto = nullptr;
      unsigned len = 0;
      SSL_get0_alpn_selected(wrap->ssl(), &proto, &len);
      if (len != 2 || memcmp(proto, "h2", 2) != 0) return finish(false);
    }
    tr->read_start();
    send();
  }
  void on_data(const char* d, size_t n) override {
    if (done) return;
    if (nghttp2_session_mem_recv(ng, reinterpret_cast<const uint8_t*>(d), n) < 0) return finish(false);
    if (!done) send();
  }
  void on_eof() override { finish(false); }
  void on_error(int) override { finish(false); }
  void on_drained() override {}
  void on_closed() override {
    if (--closes == 0) {
      if (ng) nghttp2_session_del(ng);
      delete this;
    }
  }
};

namespace {
int probe_header(nghttp2_session*, const nghttp2_frame*, const uint8_t* n, size_t nl, const uint8_t* v, size_t vl,
                 uint8_t, void* u) {
  auto* pr = static_cast<H2Probe*>(u);
  std::string_view name(reinterpret_cast<const char*>(n), nl);
  if (name == ":status" && vl == 3) pr->status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
  if (name == "grpc-status") pr->grpc_status.assign(reinterpret_cast<const char*>(v), vl);
  return 0;
}

int probe_data(nghttp2_session*, uint8_t, int32_t, const uint8_t* d, size_t n, void* u) {
  auto* pr = static_cast<H2Probe*>(u);
  if (pr->body.size() < 64) pr->body.append(reinterpret_cast<const char*>(d), std::min<size_t>(n, 64));
  return 0;
}

int probe_closed(nghttp2_session*, int32_t, uint32_t, void* u) {
  auto* pr = static_cast<H2Probe*>(u);
  pr->finish(pr->passed());
  return 0;
}

const nghttp2_session_callbacks* probe_callbacks() {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* c;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_on_header_callback(c, probe_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, probe_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, probe_closed);
    return c;
  }();
  return cbs;
}

// gRPC's HealthCheckRequest with no service (the server's overall health): an empty message, framed.
ssize_t grpc_empty_message(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags, nghttp2_data_source*,
                           void*) {
  if (len < 5) return NGHTTP2_ERR_CALLBACK_FAILURE;
  memset(buf, 0, 5);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return 5;
}

nghttp2_nv nv(const char* n, const std::string& v) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n)),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), strlen(n), v.size(), NGHTTP2_NV_FLAG_NONE};
}
}  // namespace

void Worker::h2_probe(PeerState* p) {
  SSL* ssl = nullptr;
  if (p->tls) {
    if (!(ssl = new_upstream_ssl(p))) return health_result(p, false);
    SSL_set_alpn_protos(ssl, reinterpret_cast<const uint8_t*>("\x02h2"), 3);
  }
  auto* pr = new H2Probe();
  pr->w = this;
  pr->peer = p;
  pr->grpc = p->grpc;
  p->h2_probe = pr;
  pr->open_tcp(&loop_, pr);
  if (ssl) pr->start_tls(ssl, pr);
  uv_timer_init(&loop_, &pr->timer);
  pr->timer.data = pr;
  uv_timer_start(
      &pr->timer, [](uv_timer_t* t) { static_cast<H2Probe*>(t->data)->finish(false); }, p->hc.timeout_ms, 0);
  nghttp2_session_client_new(&pr->ng, probe_callbacks(), pr);
  nghttp2_submit_settings(pr->ng, NGHTTP2_FLAG_NONE, nullptr, 0);
  // (nghttp2 copies the fields as the request is submitted)
  std::string path = pr->grpc ? "/grpc.health.v1.Health/Check" : p->hc.path;
  std::string method = pr->grpc ? "POST" : "GET", scheme = p->tls ? "https" : "http", ua = "px-health-check",
              ct = "application/grpc", te = "trailers";
  std::vector<nghttp2_nv> h = {nv(":method", method), nv(":scheme", scheme), nv(":path", path),
                               nv(":authority", p->hc_host), nv("user-agent", ua)};
  if (pr->grpc) {
    h.push_back(nv("content-type", ct));
    h.push_back(nv("te", te));
  }
  nghttp2_data_provider dp;
  dp.read_callback = grpc_empty_message;
  nghttp2_submit_request(pr->ng, nullptr, h.data(), h.size(), pr->grpc ? &dp : nullptr, nullptr);
  if (pr->connect(reinterpret_cast<const sockaddr*>(&p->addr)) != 0) pr->finish(false);
}

void Worker::probe_abandon(PeerState* p) {
  if (p->h2_probe) {
    p->h2_probe->peer = nullptr;
    p->h2_probe->finish(false);
    p->h2_probe = nullptr;
  }
  if (p->probe) {
    p->probe->peer = nullptr;
    p->probe->finish(false);
    p->probe = nullptr;
  }
  if (p->hc_call) {
    probes_->cancel(p->hc_call);
    p->hc_call = nullptr;
  }
}

// ---- active health checks ----

void Worker::sync_health_checks() {
  for (auto& kv : peers_) kv.second->hc_enabled = false;
  for (const PoolView& pv : current_->pools) {
    const route::HealthCheckSpec& hc = pv.route->pool.health;
    if (!hc.enabled) continue;
    for (size_t i = 0; i < pv.peers.size(); i++) {
      PeerState* p = pv.peers[i];
      if (p->hc_enabled) continue;
      p->hc_enabled = true;
      p->hc = hc;
      const route::PeerAddr& a = pv.route->pool.peers[i];
      bool v6 = a.host.find(':') != std::string::npos;
      p->hc_host = (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);  // the probe's Host
    }
  }
  const auto& streams = current_->snap->streams();
  for (size_t s = 0; s < streams.size(); s++) {
    const route::HealthCheckSpec& hc = streams[s]->pool.health;
    if (!hc.enabled || streams[s]->spec.listen.udp) continue;
    for (PeerState* p : current_->l4_pools[s].peers) {
      if (p->hc_enabled) continue;
      p->hc_enabled = true;
      p->hc_tcp = true;
      p->hc = hc;
    }
  }
  for (auto& kv : peers_) {
    PeerState* p = kv.second.get();
    if (p->hc_enabled && !p->hc_timer) {
      p->hc_timer = new uv_timer_t;
      uv_timer_init(&loop_, p->hc_timer);
      p->hc_timer->data = p;
      struct Ctx {
        static void tick(uv_timer_t* t) {
          PeerState* p = static_cast<PeerState*>(t->data);
          static_cast<Worker*>(t->loop->data)->health_probe(p);
        }
      };
      uv_timer_start(p->hc_timer, Ctx::tick, 0, p->hc.interval_ms);
    } else if (p->hc_enabled && p->hc_timer) {
      uv_timer_set_repeat(p->hc_timer, p->hc.interval_ms);
    } else if (!p->hc_enabled && p->hc_timer) {
      uv_close(reinterpret_cast<uv_handle_t*>(p->hc_timer),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      p->hc_timer = nullptr;
      p->hc_down = false;
      p->hc_ok = p->hc_bad = 0;
      probe_abandon(p);
    }
  }
}

void Worker::health_probe(PeerState* p) {
  if (p->probe || p->hc_call || p->h2_probe || !p->resolved || stopping_) return;
  if (p->h2) return h2_probe(p);
  if (p->hc_tcp) {
    auto* hp = new HealthProbe();
    hp->w = this;
    hp->peer = p;
    p->probe = hp;
    hp->tcp.init(&loop_);
    hp->tcp.set_user(hp);
    uv_timer_init(&loop_, &hp->timer);
    hp->timer.data = hp;
    uv_timer_start(
        &hp->timer, [](uv_timer_t* t) { static_cast<HealthProbe*>(t->data)->finish(false); }, p->hc.timeout_ms, 0);
    if (hp->tcp.connect(reinterpret_cast<const sockaddr*>(&p->addr)) != 0) hp->finish(false);
    return;
  }
  SSL* ssl = nullptr;
  if (p->tls && !(ssl = new_upstream_ssl(p))) {
    health_result(p, false);  // no TLS context for this peer: logged there
    return;
  }
  if (!probes_) probes_ = std::make_unique<http::Client>(&loop_);
  http::ClientRequest rq;
  rq.url = (p->tls ? "https://" : "http://") + p->hc_host + p->hc.path;
  rq.connect_addr = p->addr;  // the peer's resolved address; Host and SNI are the route's
  rq.user_agent = "px-health-check";
  rq.timeout_ms = p->hc.timeout_ms;
  rq.ssl = ssl;
  rq.head_only = true;  // the status line is all a probe needs
  p->hc_call = probes_->fetch(std::move(rq), [this, p](http::ClientResponse r) {
    p->hc_call = nullptr;
    health_result(p, r.status >= 200 && r.status < 400);
  });
}

void Worker::health_result(PeerState* p, bool ok) {
  if (ok) {
    p->hc_bad = 0;
    if (p->hc_down && ++p->hc_ok >= p->hc.healthy) {
      p->hc_down = false;
      p->hc_ok = 0;
      PX_INFO("upstream %s: health check passing, back in service", p->key.c_str());
    }
  } else {
    p->hc_ok = 0;
    if (!p->hc_down && ++p->hc_bad >= p->hc.unhealthy) {
      p->hc_down = true;
      p->hc_bad = 0;
      PX_WARN("upstream %s: health check failing, out of service", p->key.c_str());
      while (p->idle) p->idle->close();
    }
  }
}

}  // namespace px::proxy
