// px::route streams — L4 proxying (TCP and UDP), as stored under `stream:<name>`.
//
//   {"name": "pg", "listen": "0.0.0.0:5432", "protocol": "tcp" | "udp",
//    "upstreams": [{"url": "tcp://10.0.0.7:5432", "weight": 1}],
//    "lb": "round_robin" | "least_conn" | "hash",   // hash: consistent on the client address
//    "enabled": true,
//    "connect_timeout_ms": 0,     // 0 = pxd.conf's upstream_connect_timeout
//    "idle_timeout_ms": 0,        // 0 = 10 minutes (TCP), 30 seconds (UDP sessions)
//    "max_lifetime_ms": 0,        // 0 = none
//    "max_connections": 0,        // TCP connections or UDP sessions at once; 0 = pxd.conf's limit
//    "rate_bytes_per_s": 0,       // per connection, each way; 0 = unlimited
//    "acl": "office",             // an access list's CIDR rules (its users do not apply)
//    "proxy_protocol": "off" | "v1" | "v2",   // to the upstream (v1: TCP only)
//    "accept_proxy": false,       // TCP: clients open with a PROXY v1/v2 header (from pxd.conf's trusted_proxies)
//    "tls": "off" | "auto" | "<certificate name>",   // TCP only: terminate TLS
//    "hosts": ["mqtt.example.com"],          // the names "tls": "auto" gets a certificate for
//    "health_check": {"interval_ms": 5000, "timeout_ms": 2000, "healthy": 2, "unhealthy": 3},  // TCP connects
//    "access_log": true,
//    "version": 1}
//
// "listen" may carry the protocol: "0.0.0.0:53/udp". Addresses are numeric
// (IPv4, or IPv6 in brackets); upstream hosts may be names.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "route/route.h"

namespace px::route {

enum class StreamBalance : uint8_t { round_robin, least_conn, hash };
enum class ProxyProtocol : uint8_t { off, v1, v2 };

struct StreamListen {
  std::string host;  // numeric, no brackets
  uint16_t port = 0;
  bool udp = false;
  std::string str() const;  // "0.0.0.0:5432", "[::]:53"
  // Could both be bound at once? (same protocol and port, and one address covers the other)
  bool overlaps(const StreamListen& o) const;
};
bool parse_stream_listen(std::string_view text, StreamListen* out, std::string* error);

struct StreamUpstream {
  std::string url;  // tcp://host:port or udp://host:port
  std::string host;
  uint16_t port = 0;
  uint32_t weight = 1;
};

struct StreamSpec {
  std::string name;
  StreamListen listen;
  std::vector<StreamUpstream> upstreams;
  StreamBalance lb = StreamBalance::round_robin;
  bool enabled = true;
  uint64_t connect_timeout_ms = 0, idle_timeout_ms = 0, max_lifetime_ms = 0;
  uint64_t max_connections = 0, rate_bytes_per_s = 0;
  std::string acl;
  ProxyProtocol proxy_protocol = ProxyProtocol::off;
  bool accept_proxy = false;  // PROXY protocol in, from trusted proxies: the header names the client
  std::string tls = "off";
  std::vector<std::string> hosts;
  HealthCheckSpec health;
  bool access_log = true;
  uint64_t version = 0;
};

// Validation answers name the field: "upstreams[0].url: ...".
bool parse_stream_json(std::string_view json, StreamSpec* out, std::string* error);
std::string stream_to_json(const StreamSpec& s);

}  // namespace px::route
