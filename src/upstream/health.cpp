// Active health checks: one probe at a time per peer that a route's pool
// checks, on a timer. An HTTP probe is a GET through px's HTTP/1 client
// (http/client.h), with the peer's own TLS settings for https:// peers; an L4
// stream's peer is probed by a TCP connect.
#include <arpa/inet.h>
#include <uv.h>

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

void Worker::probe_abandon(PeerState* p) {
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
  if (p->probe || p->hc_call || !p->resolved || stopping_) return;
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
