// px::route::Snapshot — an immutable routing table built from one generation of
// the store. Built once by pxd's main thread, shared read-only by every worker;
// a worker keeps the snapshot a request started on until that request ends.
//
// Lookup cost does not grow with the number of routes: a hash on the exact
// host, then on each wildcard suffix of the host (a few labels at most), then
// a walk down a tree of path segments (as deep as the request path).
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "daemon/config.h"
#include "net/cidr.h"
#include "route/acl.h"
#include "route/route.h"
#include "route/stream.h"

namespace px::tls {
class CertTable;
}

namespace px::route {

struct PeerAddr {
  std::string key;  // "host:port" (https: "https://host:port", and its TLS settings when not the defaults)
  bool tls = false;
  bool h2 = false;           // HTTP/2 (route.h UpstreamSpec::h2): its own connections, multiplexed
  bool grpc = false;         // grpc:// (its health checks speak gRPC's health protocol)
  UpstreamTlsSpec tls_spec;  // the route's upstream_tls, for https:// peers
  std::string host;
  uint16_t port = 0;
  uint32_t weight = 1;
  bool resolved = false;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  mutable uint16_t metrics_slot = 0;  // pxd's metrics: this peer's slot (observe/metrics.h)
};

struct Pool {
  std::vector<PeerAddr> peers;
  Balance lb = Balance::round_robin;
  HealthCheckSpec health;
  std::vector<std::pair<uint32_t, uint16_t>> ring;  // ip_hash: (point, peer index), sorted
};

// pxctl cache purge: a route's stored responses written at or before `at` (unix time, ms) whose target matches
// `pattern` ('*' any run of characters) count as absent (stream/cache.cpp).
struct CachePurge {
  std::string pattern;
  int64_t at = 0;
};
bool purge_matches(std::string_view pattern, std::string_view target);
// {"purges": [...]} as stored under cache:purge:<route> (store/keys.h); false: not that.
bool parse_purges(std::string_view json, std::vector<CachePurge>* out);

struct Route {
  explicit Route(std::shared_ptr<const RouteSpec> s) : spec_ptr(std::move(s)), spec(*spec_ptr) {}
  std::shared_ptr<const RouteSpec> spec_ptr;  // shared with pxd's parse cache and older snapshots
  const RouteSpec& spec;
  Pool pool;
  uint32_t index = 0;
  uint64_t connect_timeout_ms = 0;  // effective values (route or pxd.conf)
  uint64_t read_timeout_ms = 0;
  uint64_t max_body_size = 0;      // 0 = unlimited
  size_t prefix_len = 0;           // bytes of spec.path that strip_path removes ("/" → 0)
  std::vector<CachePurge> purges;  // pxctl cache purge (cache routes only)
  // pxd's metrics label slot (observe/metrics.h), set on the main thread before the snapshot is published.
  mutable uint16_t metrics_slot = 0;
};

// One enabled L4 stream (route/stream.h), as pxd serves it.
struct L4Stream {
  explicit L4Stream(std::shared_ptr<const StreamSpec> s) : spec_ptr(std::move(s)), spec(*spec_ptr) {}
  std::shared_ptr<const StreamSpec> spec_ptr;
  const StreamSpec& spec;
  std::string key;                                       // its listening socket's identity: l4_listen_key()
  Pool pool;                                             // peer keys "tcp://host:port" or "udp://host:port"
  uint64_t connect_timeout_ms = 0, idle_timeout_ms = 0;  // effective values
  uint32_t index = 0;
  bool passthrough = false;           // a passthrough route's (key ""): reached from a TLS listener by SNI
  mutable uint16_t metrics_slot = 0;  // pxd's metrics label slot (observe/metrics.h)
  // Connections (TCP) or sessions (UDP) open now in every worker, for max_connections: pxd's main
  // thread keeps one counter per stream name across snapshots. The only state workers share, touched
  // once per connection, never per byte.
  mutable std::shared_ptr<std::atomic<int64_t>> live;
};
// "stream tcp 0.0.0.0:5432" / "stream udp [::]:53": distinct from pxd.conf's listen keys.
std::string l4_listen_key(const StreamListen& l);

// What a snapshot carries besides routes.
struct SnapshotExtras {
  std::unordered_map<std::string, std::vector<CachePurge>> purges;  // by route name
  std::vector<std::shared_ptr<const StreamSpec>> streams;
  std::vector<AclSpec> acls;
  std::vector<std::pair<std::string, std::string>> challenges;  // ACME token -> key authorization
  std::shared_ptr<const tls::CertTable> certs;                  // the certificates TLS listeners serve
};

// Resolves host:port to an address; false when it cannot (the peer stays
// unresolved and counts as down).
using Resolver = std::function<bool(const std::string& host, uint16_t port, sockaddr_storage*, socklen_t*)>;

// What a build found wrong with one route or stream. An error leaves part of it unserved on this host (a
// peer that does not resolve, a host or listen address another one holds); the rest is a caution. pxd logs
// each, and lists the errors in its status file, where pxadmind shows them with the route or stream.
struct BuildWarning {
  bool stream = false;  // a stream's, else a route's (passthrough routes are routes)
  std::string name;
  std::string text;
  bool error = true;
  std::string str() const { return (stream ? "stream " : "route ") + name + ": " + text; }
};
using BuildWarnings = std::vector<BuildWarning>;

class Snapshot {
 public:
  // Do two pxd.conf versions build the same snapshot from the same store? (A reload that changes one of the
  // settings build() reads rebuilds the snapshot at once: default_route, the upstream timeouts, max_body_size.)
  static bool same_build_settings(const Config& a, const Config& b);
  // Builds from route specs; disabled routes are left out. Conflicting routes
  // (same host and prefix) keep the first by name and log the others.
  static std::shared_ptr<const Snapshot> build(uint64_t generation, std::vector<std::shared_ptr<const RouteSpec>> specs,
                                               const Config& cfg, const Resolver& resolve, BuildWarnings* warnings,
                                               SnapshotExtras extras = {});
  static std::shared_ptr<const Snapshot> build(uint64_t generation, std::vector<RouteSpec> specs, const Config& cfg,
                                               const Resolver& resolve, BuildWarnings* warnings);
  const AclSpec* acl(std::string_view name) const {
    auto it = acls_.find(std::string(name));
    return it == acls_.end() ? nullptr : &it->second;
  }
  const std::string* challenge(std::string_view token) const {
    auto it = challenges_.find(std::string(token));
    return it == challenges_.end() ? nullptr : &it->second;
  }

  // host: as sent (any case, may carry a port); path: the request target's path (query allowed).
  const Route* match(std::string_view host, std::string_view path) const;

  uint64_t generation() const { return generation_; }
  const std::shared_ptr<const tls::CertTable>& certs() const { return certs_; }
  const std::vector<std::unique_ptr<Route>>& routes() const { return routes_; }
  const std::vector<std::unique_ptr<L4Stream>>& streams() const { return streams_; }
  // The passthrough route for a ClientHello's SNI (lower case): exact name, then the longest wildcard.
  const L4Stream* passthrough(std::string_view sni) const;
  bool has_passthrough() const { return !pass_exact_.empty() || !pass_wild_.empty(); }
  const L4Stream* stream_by_key(std::string_view key) const {
    for (const auto& s : streams_)
      if (s->key == key) return s.get();
    return nullptr;
  }

  // Path sent upstream for `path` on `r` (strip_path applied).
  static std::string_view strip(const Route& r, std::string_view path, bool* need_slash);

 private:
  struct Node {
    std::unordered_map<std::string, std::unique_ptr<Node>> children;
    const Route* route = nullptr;
  };
  bool insert(Node& root, const Route* r, std::string* conflict);
  const Route* walk(const Node& root, std::string_view path) const;

  uint64_t generation_ = 0;
  std::vector<std::unique_ptr<Route>> routes_;
  std::vector<std::unique_ptr<L4Stream>> streams_;
  std::unordered_map<std::string, Node> exact_;
  std::unordered_map<std::string, Node> wildcard_;                           // key: the suffix after "*."
  std::unordered_map<std::string, const L4Stream*> pass_exact_, pass_wild_;  // passthrough routes by host
  const Route* default_route_ = nullptr;
  std::unordered_map<std::string, AclSpec> acls_;
  std::unordered_map<std::string, std::string> challenges_;
  std::shared_ptr<const tls::CertTable> certs_;
};

uint32_t hash_bytes(const void* data, size_t len, uint32_t seed = 2166136261u);

}  // namespace px::route
