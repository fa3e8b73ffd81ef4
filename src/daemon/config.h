// pxd's bootstrap configuration (pxd.conf): what the process needs before it can
// read routes from the store. Routes themselves live in the store, not here.
//
// Syntax: one directive per line, `name value…`, `#` starts a comment.
// Durations take ms, s, m, h (bare number = seconds); sizes take k, m, g (binary).
// Every error names the file, the line and the problem.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "net/cidr.h"

namespace px {

struct ListenAddr {
  std::string host;         // numeric IPv4/IPv6 address
  uint16_t port = 0;        // 0 = choose at run time (every worker shares the chosen port)
  bool tls = false;         // `listen ADDRESS:PORT tls`: TLS terminates here
  bool proxy = false;       // `... proxy_protocol`: each connection opens with a PROXY header (trusted_proxies only)
  bool h2c = false;         // `... h2c`: a cleartext listener also takes HTTP/2 with prior knowledge
  bool http1_only = false;  // `... tls http1-only`: ALPN offers only http/1.1
  std::string str() const;
};
// "ADDRESS:PORT" (IPv6 in brackets) → host and port.
bool parse_listen_addr(std::string_view v, ListenAddr* out, std::string* error);
// What identifies a listener across reloads: the configured address (port 0 included) and tls.
std::string listen_key(const ListenAddr& la);

struct Config {
  std::string source = "<defaults>";
  std::vector<ListenAddr> listen;
  int workers = 0;  // 0 = one per core
  std::string data_dir = "/var/lib/px";
  std::string default_route;  // route name that answers when no route matches
  // The route whose response-phase filters (error_pages) dress px's 404 for a request no route matches.
  std::string not_found_route;
  uint64_t grace_period_ms = 30000;
  uint64_t client_header_timeout_ms = 10000;
  uint64_t client_body_timeout_ms = 60000;
  uint64_t keepalive_timeout_ms = 75000;
  uint64_t send_timeout_ms = 60000;
  uint64_t upstream_connect_timeout_ms = 5000;
  uint64_t upstream_read_timeout_ms = 60000;
  uint64_t upstream_keepalive = 64;  // max idle connections per peer per worker
  uint64_t upstream_keepalive_timeout_ms = 60000;
  uint64_t max_fails = 3;                // passive health: consecutive failures
  uint64_t fail_timeout_ms = 10000;      // ... take a peer out for this long
  uint64_t max_header_size = 16 * 1024;  // whole request head (431)
  uint64_t max_headers = 100;            // header count (431)
  uint64_t max_uri_length = 8 * 1024;    // request target (414)
  bool underscores_in_headers = false;   // off: request header names with "_" are dropped (as nginx)
  uint64_t max_body_size = 0;            // default per route, 0 = unlimited (413)
  uint64_t max_connections = 10000;      // client connections per worker (503 past it)
  uint64_t store_poll_ms = 50;           // fallback poll of the store generation
  net::CidrSet trusted_proxies;
  std::string log_level = "info";
  std::string status_file;           // where pxd publishes its applied generation
  std::string access_log;            // "" = off
  std::string metrics_listen;        // "127.0.0.1:9145": Prometheus /metrics; "" = off
  bool access_log_combined = false;  // else JSON lines
  uint32_t access_log_fields = 0;    // JSON fields (access_log.h); 0 = all
  std::string filters_dir;           // operator's filters (override built-ins by name)
  std::string geoip_database;        // a MaxMind DB with country.iso_code (req:country()); "" = none
  std::string geoip_asn_database;    // a MaxMind DB with autonomous_system_number (req:asn()); "" = none
  std::vector<std::string> global_filters = {"acme"};  // their early_request hooks run for every request
  // Upstream connections' and px.fetch's sockets: "uring" (io_uring), "epoll", or "auto" (io_uring when the
  // kernel can run it). Set at a start (a reload keeps the running one).
  std::string io_engine = "auto";  // io_uring where the kernel runs it (bench/README: it wins), else epoll
  bool use_uring = false;          // what io_engine came to at the start (pxd's Server decides; not a directive)
  uint64_t shared_slots = 65536;   // px.shared and px.limit: 16 bytes each, host-wide (core/shared_table.h)
  // The response cache (routes with "cache"; pxd.conf(5)): objects are files under cache_dir ("" = <data_dir>/cache,
  // "off" = no cache); set at a start (a reload keeps the running ones).
  std::string cache_dir;
  uint64_t cache_max_size = 1ull << 30;              // bytes of files; past it the least recently used go
  uint64_t cache_max_object = 64ull << 20;           // larger responses are relayed unstored (a route may say less)
  uint64_t cache_memory = 64ull << 20;               // per worker: small objects kept in memory
  uint64_t cache_index_slots = 262144;               // objects the index can name (16 bytes each)
  uint64_t lua_phase_budget_ms = 50;                 // wall-clock budget of one phase's filters
  uint64_t lua_memory_limit = 256ull * 1024 * 1024;  // per worker's Lua state
  // TLS listeners (listen ... tls). Versions are 0x0303 (TLSv1.2) and 0x0304 (TLSv1.3).
  uint16_t tls_min_version = 0x0303, tls_max_version = 0x0304;
  std::string tls_ciphers;               // TLS 1.2 suites; "" = Mozilla intermediate (tls/context.h)
  std::string tls_curves;                // "" = X25519:P-256:P-384
  std::string tls_default_certificate;   // serves handshakes whose name matches no certificate
  bool tls_reject_unknown_name = false;  // ... or refuse them with unrecognized_name
  uint64_t tls_handshake_timeout_ms = 10000;
  // HTTP/2 to clients (pxd.conf(5): the h2_ directives).
  uint64_t h2_max_concurrent_streams = 128;  // advertised; more are refused (REFUSED_STREAM)
  uint64_t h2_max_requests = 1000;           // streams per connection, then GOAWAY
  uint64_t h2_max_continuations = 8;         // CONTINUATION frames after one HEADERS
  uint64_t h2_max_glitches = 200;            // resets and protocol anomalies per connection, then GOAWAY
  uint64_t h2_max_queued_control = 1000;     // PING and SETTINGS answers queued while the client does not read
  bool has_tls() const {
    for (const auto& l : listen)
      if (l.tls) return true;
    return false;
  }
};

// Parses `text` (named `source` in errors). On failure returns false and sets
// *error to "source:line: problem".
bool parse_config(std::string_view text, const std::string& source, Config* out, std::string* error);
bool load_config_file(const std::string& path, Config* out, std::string* error);

}  // namespace px
