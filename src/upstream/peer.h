// px::proxy peers as one worker sees them: PeerState (an upstream host:port: its keep-alive pool, requests in
// flight, passive and active health), PoolView (a route's peers and balancer state) and SnapRef (a worker's
// hold on one routing Snapshot).
#pragma once
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "http/client.h"
#include "l4/l4.h"
#include "route/snapshot.h"

namespace px::proxy {

struct UpConn;
struct H2Up;
struct HealthProbe;
struct H2Probe;

struct PeerState {
  std::string key;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  bool resolved = false;
  UpConn* idle = nullptr;         // keep-alive pool (intrusive list)
  bool tls = false;               // https://
  bool h2 = false;                // HTTP/2 (h2c://, grpc://, or https:// with ALPN h2): its connections are `h2`
  bool grpc = false;              // grpc://: health checks use gRPC's health protocol
  H2Up* h2_conns = nullptr;       // HTTP/2 connections to this peer (intrusive list), each carrying many streams
  uint32_t h2_concurrency = 100;  // its SETTINGS_MAX_CONCURRENT_STREAMS, as its last connection said (a new one's room)
  route::UpstreamTlsSpec tls_spec;
  std::string host;                      // for SNI and the certificate check
  bssl::UniquePtr<SSL_SESSION> session;  // the last TLS session, to resume with
  uint32_t idle_count = 0;
  uint32_t active = 0;      // streams using this peer now (least_conn)
  uint32_t fails = 0;       // consecutive failures (passive health)
  uint64_t down_until = 0;  // uv_now() ms; passive health cool-down
  // Active health checks (when a route's pool asks for them).
  bool hc_enabled = false;
  bool hc_tcp = false;  // an L4 stream's peer: a probe is a TCP connect
  bool hc_down = false;
  uint32_t hc_ok = 0, hc_bad = 0;
  route::HealthCheckSpec hc;
  std::string hc_host;
  uv_timer_t* hc_timer = nullptr;
  HealthProbe* probe = nullptr;           // an L4 peer's probe in flight
  H2Probe* h2_probe = nullptr;            // an HTTP/2 peer's probe in flight (gRPC's health protocol for grpc://)
  http::Client::Call* hc_call = nullptr;  // an HTTP probe in flight (the worker's client runs it)
  uint16_t metrics_slot = 0;              // observe/metrics.h
  bool usable(uint64_t now) const { return resolved && !hc_down && now >= down_until; }
};

struct PoolView {
  const route::Route* route = nullptr;
  std::vector<PeerState*> peers;
  std::vector<int64_t> current;  // smooth weighted round robin state
};

struct SnapRef {
  std::shared_ptr<const route::Snapshot> snap;
  std::vector<PoolView> pools;   // parallel to snap->routes()
  std::vector<uint16_t> masks;   // per route: the filter phases its chain implements (lua::Engine)
  std::vector<L4Pool> l4_pools;  // parallel to snap->streams()
  uint32_t refs = 0;
  bool retired = false;
};

}  // namespace px::proxy
