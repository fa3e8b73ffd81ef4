// px::proxy end records — every stream (one request/response exchange) ends in
// exactly one place, end_stream() (stream.cpp), which fills one EndRecord and hands
// it to the worker's observers: the Lua logging phase first, then whatever
// subscribed (the debug stream log now; metrics and access logs next).
#pragma once
#include <cstdint>
#include <string_view>

#include "net/cidr.h"

namespace px::proxy {

struct Stream;

// Why a stream ended, in the spirit of HAProxy's termination flags: who ended
// it and at which point. One value per stream; the first cause recorded wins.
enum class Termination : uint8_t {
  ok,                        // the exchange completed (upstream answer relayed)
  local,                     // px answered itself (no route, limits, a filter's answer)
  bad_request,               // the client sent something that is not valid HTTP/1
  client_timeout,            // the head or body did not arrive in time (408)
  client_closed,             // the client went away before the exchange completed
  no_upstream,               // no usable peer (502)
  upstream_refused,          // every connect attempt failed (502)
  upstream_connect_timeout,  // (504)
  upstream_timeout,          // no answer within the read timeout (504)
  upstream_closed,           // the upstream closed before a whole answer (502, or a cut response)
  upstream_bad_response,     // the upstream's answer was not valid HTTP/1 (502)
  filter_error,              // a filter failed (500)
  shutdown,                  // pxd stopped while the stream was in flight
  // L4 streams (l4.h) only:
  denied,         // the stream's access list refused the client
  limit,          // the stream's max_connections (or pxd's) was reached
  idle_timeout,   // nothing moved either way for idle_timeout_ms (a UDP session's normal end)
  max_lifetime,   // the connection reached max_lifetime_ms
  tls_handshake,  // a TLS stream's handshake failed or did not finish in tls_handshake_timeout
};
const char* termination_name(Termination t);

struct EndRecord {
  bool l4 = false;         // an L4 stream's connection or UDP session (l4.h): route is the stream, method TCP or UDP
  std::string_view route;  // "" before routing
  std::string_view peer;   // the last upstream peer tried, "" for none
  std::string_view method, host, target;
  std::string_view referer, user_agent;  // the request's fields ("" when absent)
  std::string_view sni;                  // TLS: the name the client asked for
  std::string_view request_id;           // X-Request-ID sent upstream ("" when px answered itself)
  uint8_t http_major = 1, http_minor = 1;
  uint8_t upstream_proto = 0;  // the protocol spoken to the last peer tried: 1 HTTP/1.1, 2 HTTP/2 (0: none)
  bool tls = false;
  bool quiet = false;         // the route turned access logging off
  uint16_t metrics_slot = 0;  // the route's metrics slot (metrics.h)
  uint16_t peer_slot = 0;     // the peer's (metrics.h)
  // Measured only while metrics are on (µs; -1: not measured, or no new connection was made).
  int32_t connect_us = -1;  // a new upstream connection's connect time (TLS included)
  int32_t ttfb_us = -1;     // request sent → first byte of the upstream's answer
  net::IpAddr client;
  uint16_t status = 0;  // sent to the client (0: nothing was sent)
  uint16_t upstream_status = 0;
  uint8_t attempts = 0;  // upstream attempts (retries included)
  // The cache stage (stream/cache.h): "hit", "stale", "miss", "revalidated", "bypass" ("" none), and why the
  // response was not stored ("" when it was, or when nothing was asked of the cache).
  std::string_view cache, cache_detail;
  Termination reason = Termination::ok;
  uint64_t bytes_in = 0;   // bytes of this request read from the client (head and body)
  uint64_t bytes_out = 0;  // bytes written to the client for this stream
  uint64_t start_ms = 0;   // loop time of the first byte of the head
  uint64_t duration_ms = 0;
  uint32_t phase_us[6] = {};       // time spent in each filter phase (lua::Phase order)
  uint32_t wait_us = 0;            // time filters waited (px.sleep, px.fetch): the worker served others
  const Stream* stream = nullptr;  // for in-process observers; valid during the call only
};

class EndObserver {
 public:
  // Called once per stream, on the worker's thread, after the exchange ended.
  virtual void on_stream_end(const EndRecord& r) = 0;
  // Called on every worker tick (≤ 100 ms) and as the worker ends: hand over what is buffered.
  virtual void flush() {}

 protected:
  ~EndObserver() = default;
};

}  // namespace px::proxy
