// px::route — the route model, as stored under `route:<name>` in the store.
//
// A route sends requests for some hostnames (and optionally a path prefix) to
// an upstream pool. JSON form (every field but name/hosts/upstreams optional):
//
//   {"name": "shop", "hosts": ["shop.example.com", "*.shop.example.com"],
//    "path": "/", "strip_path": false,
//    "upstreams": [{"url": "http://10.0.0.5:8080", "weight": 1}],
//    "lb": "round_robin" | "least_conn" | "ip_hash",
//    "enabled": true,
//    "connect_timeout_ms": 0, "read_timeout_ms": 0,    // 0 = pxd.conf default
//    "max_body_size": -1,                              // -1 = pxd.conf default, 0 = unlimited
//    "health_check": {"path": "/healthz", "interval_ms": 5000, "timeout_ms": 2000,
//                     "healthy": 2, "unhealthy": 3},
//    "filters": [{"name": "acl", "config": {...}}],
//    "upstream_tls": {"verify": true, "ca_file": "/etc/ssl/my-ca.pem", "sni": "api.internal",
//                     "client_cert": "px-client"},
//                                                      // for https:// upstreams
//    "tls": "auto" | "off" | "<certificate name>",      // HTTPS (pxadmind: ACME for "auto")
//    "access_log": true,                               // false: not in pxd's access log
//    "passthrough": false,                             // true: SNI passthrough to tcp:// upstreams
//    "cache": true | {"max_size": "2g", "default_ttl": 0, "stale_while_revalidate": 30, "stale_if_error": 600,
//                     "max_object_size": "64m", "lock_timeout": "5s", "store_set_cookie": false},
//    "version": 1}
//
// Hostnames match case-insensitively and ignore a port. `*.example.com`
// matches any name ending in `.example.com` (the longest wildcard wins; an
// exact name beats any wildcard). Path prefixes match whole segments: "/api"
// matches "/api", "/api/x" and "/api?q", never "/apix"; the longest prefix wins.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px::route {

enum class Balance : uint8_t { round_robin, least_conn, ip_hash };
const char* balance_name(Balance b);

struct UpstreamSpec {
  std::string url;    // as given, normalised to SCHEME://host:port (http, https, h2c or grpc)
  bool tls = false;   // https://
  bool h2 = false;    // HTTP/2 to the peer: h2c:// and grpc:// (cleartext, prior knowledge), or https:// with the
                      // route's upstream_proto "h2" (ALPN)
  bool grpc = false;  // grpc://: px's own answers to the route's requests are gRPC statuses
  std::string host;   // DNS name or numeric address (no brackets)
  uint16_t port = 80;
  uint32_t weight = 1;
};

struct HealthCheckSpec {
  bool enabled = false;
  std::string path = "/";
  uint64_t interval_ms = 5000;
  uint64_t timeout_ms = 2000;
  uint32_t healthy = 2;    // consecutive successes to mark a peer up
  uint32_t unhealthy = 3;  // consecutive failures to mark it down
};

// How px talks TLS to a route's https:// upstreams.
struct UpstreamTlsSpec {
  bool verify = true;       // the peer's certificate must chain to ca_file (or the system's CAs) and name the host
  std::string ca_file;      // PEM bundle; "" = the system's (/etc/ssl/certs/ca-certificates.crt)
  std::string sni;          // server name sent and verified; "" = the upstream's host (none for an IP address)
  std::string client_cert;  // mTLS: a stored certificate (cert:<name>) px presents; "" = none
  bool operator==(const UpstreamTlsSpec&) const = default;
};

// The route's response cache (RFC 9111; pxd(8) "Caching"): `"cache": true`, or an object of these fields.
struct CacheSpec {
  bool enabled = false;
  uint64_t max_size = 0;               // the route's share of the cache: past it its least recently used go; 0 = none
  uint64_t max_object_size = 0;        // larger responses stream to the client unstored; 0 = pxd.conf cache_max_object
  int64_t default_ttl = 0;             // seconds of freshness for a response that states none; 0 = RFC 9111's heuristic
  int64_t stale_while_revalidate = 0;  // seconds a stale response answers while one refresh runs
  int64_t stale_if_error = 0;          // seconds a stale response answers while the upstream fails
  uint64_t lock_timeout_ms = 5000;     // a request waits this long for another's fill of its key, then goes on
  bool store_set_cookie = false;       // store responses with Set-Cookie (the stored copy has no Set-Cookie)
  bool operator==(const CacheSpec&) const = default;
};

struct FilterSpec {
  std::string name;
  std::string config_json = "{}";
};

struct RouteSpec {
  std::string name;
  std::vector<std::string> hosts;  // lower case
  std::string path = "/";
  bool strip_path = false;
  std::vector<UpstreamSpec> upstreams;
  Balance lb = Balance::round_robin;
  bool enabled = true;
  uint64_t connect_timeout_ms = 0;
  uint64_t read_timeout_ms = 0;
  int64_t max_body_size = -1;
  HealthCheckSpec health;
  std::vector<FilterSpec> filters;
  UpstreamTlsSpec upstream_tls;
  CacheSpec cache;
  // The protocol towards http(s):// upstreams: "http/1.1" (the default) or "h2" (https: ALPN h2; http: HTTP/2
  // with prior knowledge, as h2c://). h2c:// and grpc:// upstreams are HTTP/2 whatever this says.
  std::string upstream_proto = "http/1.1";
  // HTTPS for the route's hosts: "off" (none managed), "auto" (pxadmind gets and
  // renews a certificate from the ACME CA) or the name of a stored certificate.
  std::string tls = "off";
  bool access_log = true;  // pxd's access_log writes this route's requests
  // SNI passthrough: on pxd's TLS listeners, a ClientHello naming one of the hosts is relayed as raw
  // bytes to the tcp:// upstreams, which do their own TLS. Only name, hosts, upstreams, lb, enabled,
  // connect_timeout_ms, health_check (a TCP connect) and access_log apply.
  bool passthrough = false;
  // pxctl route set --record N: pxd writes the next N requests' heads (no bodies; Authorization, Cookie,
  // Proxy-Authorization and the `mask` headers masked) to its records, for pxctl filter test. A new id starts
  // a new count.
  struct Record {
    uint32_t count = 0;
    std::vector<std::string> mask;
    std::string id;
    bool operator==(const Record&) const = default;
  } record;
  uint64_t version = 0;
};

// Validation answers name the field: "hosts[1]: 'a..b' is not a valid hostname".
bool parse_route_json(std::string_view json, RouteSpec* out, std::string* error);
std::string route_to_json(const RouteSpec& r);

bool valid_route_name(std::string_view name);
bool normalize_hostname(std::string_view in, std::string* out, std::string* error);
bool parse_upstream_url(std::string_view url, UpstreamSpec* out, std::string* error);

}  // namespace px::route
