// px::proxy::Stream — one request/response exchange, knowing no wire format: its
// Downstream (downstream.h) is the client side, its Upstream (upstream.h) the upstream side.
// The functions below are the stream's life (stream.cpp): begin, body, px's own
// answers, the relayed response, and end_stream(), the one place it ends.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/h1.h"
#include "http/parser.h"
#include "lua/engine.h"
#include "net/cidr.h"
#include "net/output.h"
#include "observe/end_record.h"
#include "observe/trace.h"
#include "stream/downstream.h"

namespace px::route {
struct Route;
}

namespace px::proxy {

class Worker;
struct SnapRef;
struct PoolView;
class Upstream;
struct PeerState;
struct UpstreamRequest;
struct CacheCtx;

struct Stream {
  Worker* w = nullptr;         // the worker whose pool holds this stream (set once)
  Downstream* down = nullptr;  // the client side (downstream.h)
  Stream* next_free = nullptr;
  http::Head req;
  http::Head resp;
  UpstreamRequest* upreq = nullptr;  // the request as the upstream side writes it (upstream.h), kept for a retry
  SnapRef* snap = nullptr;
  const route::Route* route = nullptr;
  PoolView* pool = nullptr;
  Upstream* up = nullptr;  // the upstream exchange (upstream.h), while the stream has one
  PeerState* peer = nullptr;
  net::IpAddr client_ip;  // real client (behind trusted proxies)
  uint64_t tried = 0;     // bitmask of peers tried
  uint64_t body_received = 0;
  uint64_t max_body = 0;
  uint64_t start_ms = 0;
  // Upstream timing, kept only while metrics are on (Worker::timing()): µs, -1 for none.
  uint64_t up_sent_us = 0;                       // when the request head went to the upstream
  int32_t connect_us = -1;                       // this stream's new upstream connection took this long (TLS included)
  int32_t ttfb_us = -1;                          // request sent → the upstream's first byte
  http::Framing req_body = http::Framing::none;  // none, a known length, or not known (chunked)
  uint16_t status = 0;                           // status sent to the client
  uint8_t attempts = 0;
  uint8_t request_id_len = 0;  // X-Request-ID sent upstream (kept from a trusted proxy, or made here)
  char request_id[64];
  bool fresh_retry_used = false;  // the same peer was retried once on a new connection (retry.h)
  bool req_complete = false;
  bool resp_head_sent = false;
  bool resp_complete = false;
  bool local = false;  // answered by px itself, the request body is discarded
  bool head_request = false;
  bool body_bytes_sent = false;  // some request body byte went to the upstream
  bool up_written = false;       // the request head went to the upstream
  bool upgrade = false;          // request asked for an Upgrade
  bool tunnel = false;           // 101 passed: bytes flow raw both ways
  bool interim = false;          // current upstream message is a 1xx
  std::string_view abs_path;     // path of an absolute-form target (into req.buf)
  std::string_view host;         // Host (or the absolute-form authority), into req.buf
  uint16_t mask = 0;             // filter phases of this stream's route
  bool filter_failed = false;    // a response-phase filter failed: answer 500
  bool resp_phase_ran = false;   // the response phase ran (once per stream: a filter's answer there is final)
  bool head_refused = false;     // stream_response_head refused the upstream's head (a filter failed or answered)
  bool no_route = false;         // no route matched: `route` is only pxd.conf's not_found_route, for its 404 page
  bool term_set = false;
  Termination term = Termination::ok;  // why it ended (the first cause recorded)
  uint64_t bytes_in = 0;               // request bytes read from the client
  uint64_t bytes_out = 0;              // bytes written to the client
  uint32_t phase_us[lua::kPhases] = {};
  uint32_t wait_us = 0;               // time filters waited (px.sleep, px.fetch)
  struct FilterWait* wait = nullptr;  // a filter's wait in progress (stream.cpp)
  std::string held;                   // request body that came while a filter waited (sent once it goes on)
  bool held_paused = false;           // reading paused: `held` is full (kHoldMax)
  lua::RequestView view;              // what filters see, and their state (only for routes with filters)
  std::unique_ptr<Trace> trace;       // pxctl trace (trace.h): only for a request with a valid token
  CacheCtx* cache = nullptr;          // the cache stage's state (stream/cache.h): routes with "cache" only
  uint64_t refresh = 0;               // a stale-while-revalidate refresh of this cache key (no client: cache.cpp)
  net::IpAddr peer_text_of;  // a cache, kept across reuse: the client address last formatted for X-Forwarded-For
  char peer_text[46];
  uint8_t peer_text_len = 0;
  void end_as(Termination t) {
    if (!term_set) term = t, term_set = true;
  }
  void reset();
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
};

// ---- the stream (stream.cpp): one exchange, knowing no wire format ----

// Request body held while a filter waits, before reading pauses.
inline constexpr size_t kHoldMax = 64 * 1024;

// The request head arrived (the downstream filled st->req, req_body, head_request,
// upgrade): the phases, routing, limits, and the upstream exchange.
void stream_begin(Stream* st);
// A piece of the request body. unwanted: px answered already (the downstream may
// drop it); too_large: over the route's limit (413).
enum class BodyTake : uint8_t { taken, unwanted, too_large };
BodyTake stream_body(Stream* st, const char* data, size_t len);
void stream_body_end(Stream* st);  // the request is complete
// The request's trailer fields (an HTTP/2 client's trailing HEADERS), just before its stream_body_end.
void stream_body_trailers(Stream* st, const Fields& trailers);
// px's own answer (running the response phase first). drop_body: the rest of
// the request body will not be read.
void reply(Stream* st, int status, const Fields* fields, std::string_view body, bool drop_body);
void reply_text(Stream* st, int status, std::string_view text, bool drop_body);
// gRPC (reply() uses these): is px's answer to this stream a gRPC status (a route with grpc:// peers, or a
// request of content-type application/grpc)? Which gRPC status stands for an HTTP one (pxd(8)), and the
// trailers-only fields that carry it (`fields` kept but for the content's type and length).
bool grpc_answer(const Stream* st);
int grpc_status_for(int http_status);
void grpc_fields(int status, std::string_view text, const Fields* fields, Fields* out);
// The upstream's answer, relayed (the upstream side calls these; the stream runs the response phase and hands
// the result to its Downstream). false: a response filter failed or answered instead (px.respond in the
// response phase): the upstream side drops the upstream's response, unsent, and calls stream_answer_instead.
// (The upstream's head is the stream's st->resp; the cache stage may add its Cache-Status to it.)
bool stream_response_head(Stream* st, const http::Head& h);
// Sends what replaces an upstream response stream_response_head refused: the filter's answer, or a 500.
void stream_answer_instead(Stream* st);
// The response phase and the Downstream's send_head, for a relayed head or one the cache answers with.
bool stream_send_head(Stream* st, const http::Head& h);
// The cache stage (stream/cache.h) sees the relayed body and its end; false: the body is not the client's.
bool cache_response_body(Stream* st, const char* data, size_t len);
void cache_response_end(Stream* st);
inline void stream_response_body(Stream* st, const char* data, size_t len) {  // by reference, until the flush
  if (st->cache && !cache_response_body(st, data, len)) [[unlikely]]
    return;
  st->down->send_body(st, data, len);
}
inline void stream_response_end(Stream* st) {
  if (st->cache) [[unlikely]]
    cache_response_end(st);
  st->resp_complete = true;
  st->down->send_end(st);
}
// After the request phase, the limits and the cache: phases 3 and 4, then the upstream exchange.
void stream_go_upstream(Stream* st);
// The one place a stream ends: its end record, the logging phase and the
// observers, then the stream goes back to the pool. cut: its connection is closing.
void end_stream(Stream* st, bool cut);

// The request's X-Request-ID, made on first use: a trusted proxy's, when it is 1 to 64 of [A-Za-z0-9._-], else
// px's own (the worker's prefix and a counter).
void make_request_id(Stream* st);
inline std::string_view stream_request_id(Stream* st) {
  if (st->request_id_len == 0) make_request_id(st);
  return {st->request_id, st->request_id_len};
}
// A trusted proxy's X-Request-ID becomes the request's when it is valid (the request head's writer, as it
// walks the fields: make_request_id then has nothing left to do).
void adopt_request_id(Stream* st, std::string_view v);

// Runs one filter phase for a stream, timing it into the stream's end record.
lua::Verdict run_phase(lua::Engine* eng, lua::Phase p, int route_index, Stream* st, const http::Head* resp = nullptr,
                       int status = 0);

}  // namespace px::proxy
