// px::proxy cache stage — the response cache (RFC 9111) as a stage of the stream, for every codec: a stored
// response answers through the stream's Downstream as a relayed one would (the response phase included), and a
// relayed response is stored as it passes through stream_response_*. The rules are cache/policy.h's; the
// objects and the host's index are cache/store.h's.
//
// A request on a route with "cache" (a GET or HEAD without a body):
//   - fresh stored response: answered from the cache (a 304 when the client's validators match, a HEAD without
//     its body); Cache-Status "px; hit; ttl=N";
//   - stale, or no-cache: the upstream is asked with the stored validators; its 304 refreshes the object and the
//     client gets the stored response (Cache-Status "px; fwd=stale; fwd-status=304"), anything else replaces it;
//   - none: the first request for the key fills it (claims the key); others for the same key wait up to the
//     route's lock_timeout for that fill, then are answered from what it stored or go upstream themselves.
// Unsafe methods (POST, PUT, PATCH, DELETE) that succeed drop the target's stored response (RFC 9111 4.4).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "cache/store.h"
#include "observe/metrics.h"
#include "stream/stream.h"

namespace px::proxy {

class Worker;
struct Stream;
struct CacheCtx;

// What the cache did with a request, by route (counted per worker; pxd's metrics and the stats file that
// pxctl cache stats reads sum them): served from the cache (hit, stale, revalidated), or asked upstream (miss,
// bypass), or a background refresh.
inline constexpr int kCacheResults = 6;
inline constexpr const char* kCacheResultNames[kCacheResults] = {"hit",  "stale",  "revalidated",
                                                                 "miss", "bypass", "refresh"};
struct CacheRouteCounts {
  MetricCounter results[kCacheResults];
  MetricCounter served_bytes;  // bytes sent to clients from the cache (hit, stale, revalidated)
};

// One worker's cache stage: its view of the objects, the requests waiting for a fill, and the pools.
class CacheStage {
 public:
  CacheStage(Worker* w, cache::Store* store, uint64_t memory, uint64_t max_object);
  ~CacheStage();
  cache::Local local;
  cache::Store* store;
  Worker* w;
  uint64_t max_object;                       // pxd.conf cache_max_object
  CacheRouteCounts counts[kRouteSlots + 2];  // by the route's metrics slot (written by this worker only)
  // Requests waiting for another's fill of their key (polled: a fill on another worker is seen within 10 ms).
  void wait(CacheCtx* c);
  void unwait(CacheCtx* c);
  void wake_soon();  // a fill ended here: look at the waiters now
  CacheCtx* take();
  void give(CacheCtx* c);
  void close();                    // the worker stops: background refreshes end, the timer closes with the loop
  std::vector<Stream*> refreshes;  // stale-while-revalidate refreshes under way (their streams)

 private:
  void tick();
  uv_timer_t timer_;
  bool running_ = false;
  CacheCtx* waiters_ = nullptr;
  CacheCtx* free_ = nullptr;
  size_t free_count_ = 0;
};

// The stage's hooks in the stream (stream.cpp). cache_begin: after the request phase and limits; true when the
// cache answered the stream or it waits for a fill, false when it goes upstream (perhaps as a fill).
bool cache_begin(Stream* st);
// At the upstream's response head (before the response phase): whether it is stored, its Cache-Status; false
// when the cache answers instead (a 304 that refreshed the stored response: sent at cache_response_end).
// (cache_response_body and cache_response_end are declared in stream.h, whose inline relay calls them.)
bool cache_response_head(Stream* st, http::Head& h);
void cache_end(Stream* st);  // the stream ends (end_stream): an unfinished fill is dropped
// px is about to answer `status` (502, 503, 504: the upstream failed): true when a stale stored response
// answered instead (stale-if-error: the response's, else the route's).
bool cache_stale_if_error(Stream* st, int status);
// A response filter said req:cache_no_store(): the response being stored is not (its Cache-Status says so).
void cache_no_store(Stream* st);
// The request head sent upstream: the client's conditional fields are left out of a fill (whose response is
// stored whole) and a revalidation's own are added (write_request, upconn.cpp).
bool cache_drops_field(const Stream* st, std::string_view name);
template <class W>
void cache_add_fields(const Stream* st, W& wr);
// What the cache did, for the end record: "hit", "miss", "stale", "revalidated", "bypass" ("" none), and why a
// response was not stored ("" when it was, or none was asked for).
std::string_view cache_result(const Stream* st);
std::string_view cache_detail(const Stream* st);

// ---- the per-stream state (cache.cpp uses it; the inline hooks above read it) ----

struct CacheCtx {
  Stream* st = nullptr;
  CacheCtx* next = nullptr;  // the free list, or the waiters' list
  CacheCtx* prev = nullptr;
  std::string key;               // route "\n" scheme "://" host target
  size_t target_at = 0;          // where the target starts in key (what pxctl cache purge patterns match)
  std::string vkey;              // the variant's key (key and the Vary'd request values), when the object varies
  uint64_t hash = 0;             // key's
  uint64_t fill_hash = 0;        // the key a fill claims and stores under
  cache::Object* obj = nullptr;  // the stored response served or revalidated (held)
  cache::Writer writer;
  std::string vary;           // a fill's Vary names
  http::Head head;            // the stored response as sent after a revalidation (st->resp keeps the upstream's 304)
  std::string field;          // the Cache-Status value
  std::string validators[2];  // a revalidation's If-None-Match and If-Modified-Since
  uint64_t wait_until = 0;
  int64_t request_time = 0;
  const char* result = "";
  const char* detail = "";
  class CacheRead* reader = nullptr;
  bool claimed = false;
  bool waiting = false;
  bool waited = false;
  bool revalidating = false;
  bool absorb = false;      // the upstream's 304 is not relayed: the stored response is
  bool invalidate = false;  // an unsafe method: a success drops the stored response
  bool fill = false;        // the request's conditionals are left out upstream
  void reset();
};

template <class W>
void cache_add_fields(const Stream* st, W& wr) {
  const CacheCtx* c = st->cache;
  if (!c->revalidating) return;
  if (!c->validators[0].empty()) wr.field("If-None-Match", c->validators[0]);
  if (!c->validators[1].empty()) wr.field("If-Modified-Since", c->validators[1]);
}

}  // namespace px::proxy
