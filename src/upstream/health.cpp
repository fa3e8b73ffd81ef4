// Active health checks: one probe at a time per peer that a route's pool
// checks, on a timer; a probe is a GET over its own connection, through the
// same transport and HTTP/1 codec as proxied requests.
#include <uv.h>

#include "core/log.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "http/parser.h"
#include "net/uv_transport.h"
#include "upstream/upconn.h"

namespace px::proxy {

struct HealthProbe final : net::TransportUser, http::Sink {
  net::UvTransport tcp;
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;  // null once the peer stopped caring
  http::Parser parser;
  http::Head head;
  http::Limits limits;
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
  void on_connected() override {
    if (done) return;
    if (peer && peer->hc_tcp) return finish(true);  // an L4 stream's peer: accepting is all it can show
    net::Output o;
    http::write_probe_request(o, peer ? peer->hc.path : "/", peer ? peer->hc_host : "localhost");
    tcp.write(o);
    tcp.read_start();
  }
  void on_data(const char* data, size_t len) override {
    if (done) return;
    http::Parsed e = parser.execute(data, len);
    if (e != http::Parsed::ok && e != http::Parsed::paused) finish(false);
  }
  void on_eof() override {
    if (!done) finish(false);
  }
  void on_error(int) override {
    if (!done) finish(false);
  }
  void on_drained() override {}
  void on_closed() override {
    if (--closes == 0) delete this;
  }
  // http::Sink: the status line is all a probe needs.
  int on_head(http::Head& h) override {
    finish(h.status >= 200 && h.status < 400);
    return -1;  // stop here: nothing more is read
  }
  int on_body(const char*, size_t) override { return 0; }
  int on_complete() override { return kPause; }
};

void probe_abandon(HealthProbe* hp) {
  hp->peer = nullptr;
  hp->finish(false);
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
      p->hc_host = pv.route->pool.peers[i].key;
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
      if (p->probe) {
        probe_abandon(p->probe);
        p->probe = nullptr;
      }
    }
  }
}

void Worker::health_probe(PeerState* p) {
  if (p->probe || !p->resolved || stopping_) return;
  auto* hp = new HealthProbe();
  hp->w = this;
  hp->peer = p;
  p->probe = hp;
  hp->limits.max_head = 64 * 1024;
  hp->limits.max_headers = 256;
  hp->parser.init(http::Kind::response, hp, &hp->limits);
  hp->parser.attach(&hp->head);
  hp->tcp.init(&loop_);
  hp->tcp.set_user(hp);
  uv_timer_init(&loop_, &hp->timer);
  hp->timer.data = hp;
  uv_timer_start(
      &hp->timer, [](uv_timer_t* t) { static_cast<HealthProbe*>(t->data)->finish(false); }, p->hc.timeout_ms, 0);
  if (hp->tcp.connect(reinterpret_cast<const sockaddr*>(&p->addr)) != 0) hp->finish(false);
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
