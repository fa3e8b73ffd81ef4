// px::proxy metrics — Prometheus series for pxd (metrics_listen in pxd.conf).
//
// The request path only bumps plain per-worker counters (each written by its
// worker alone: relaxed atomic stores, no read-modify-write, nothing shared
// between workers). A scrape, on the main thread, sums the workers and writes
// the text format with prometheus-cpp's serializer.
//
// Routes are labelled by name through a slot each route gets when a snapshot
// is built (main thread); at most kRouteSlots names, later ones count as
// route="other" (the cap keeps the series count bounded; pxd.conf(5)).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "lua/engine.h"
#include "observe/end_record.h"

namespace px::proxy {

class Worker;

// One writer (its worker); any thread may read. Also used for gauges (inc/dec).
struct MetricCounter {
  std::atomic<uint64_t> v{0};
  void add(uint64_t n) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void inc() { add(1); }
  void dec() { v.store(v.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed); }
  uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

inline constexpr size_t kRouteSlots = 200;  // named routes; then "other"
inline constexpr size_t kSlotOther = kRouteSlots;
inline constexpr size_t kSlotNone = kRouteSlots + 1;  // no route matched
inline constexpr int kMethodClasses = 4;              // GET/HEAD, POST, PUT/PATCH/DELETE, other
inline constexpr int kStatusClasses = 6;              // 1xx..5xx, and none sent
inline constexpr double kDurationBuckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
inline constexpr int kBuckets = sizeof kDurationBuckets / sizeof kDurationBuckets[0];
inline constexpr int kTerminations = 18;
inline constexpr size_t kPeerSlots = 200;  // named peers; then "other"
inline constexpr size_t kPeerSlotOther = kPeerSlots;
inline constexpr size_t kPeerSlotNone = kPeerSlots + 1;  // no peer was tried
inline constexpr double kUpstreamBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
inline constexpr int kUpBuckets = sizeof kUpstreamBuckets / sizeof kUpstreamBuckets[0];

// A histogram of one worker: counts per bucket (not cumulative; the last is +Inf) and the sum.
template <int N>
struct WorkerHistogram {
  MetricCounter per[N + 1];
  MetricCounter sum_us;
  void observe_us(uint64_t us, const double (&bounds)[N]) {
    double secs = static_cast<double>(us) / 1e6;
    int b = 0;
    while (b < N && secs > bounds[b]) b++;
    sum_us.add(us);  // before the count, so a scrape that sees the count (x86, in order) sees its sum
    per[b].inc();
  }
};

struct PeerCounters {
  WorkerHistogram<kUpBuckets> connect;  // a new connection's connect time (TLS included)
  WorkerHistogram<kUpBuckets> ttfb;     // request sent → first byte of the answer
  MetricCounter failures;               // passive health: attempts that failed
  MetricCounter health;                 // 0: not used by this worker, 1: usable, 2: out (passive or active)
};

inline constexpr size_t kStreamSlots = 100;  // named L4 streams; then "other"

struct L4Counters {
  MetricCounter ended[kTerminations];  // connections (TCP) or sessions (UDP), by why they ended
  MetricCounter bytes_in, bytes_out;   // from clients, to clients
};

struct RouteCounters {
  MetricCounter requests[kMethodClasses][kStatusClasses];
  WorkerHistogram<kBuckets> duration;
};

// Filter time, calls and errors by filter and phase: the Lua engine keeps them (only while metrics
// are on) and the worker copies them here on its tick, under a mutex only the tick and scrapes take.
struct FilterCounts {
  std::mutex mu;
  lua::FilterStats by_filter;
};

// One worker's counters (observer of its end records).
class WorkerMetrics final : public EndObserver {
 public:
  void on_stream_end(const EndRecord& r) override;
  RouteCounters routes[kRouteSlots + 2];
  PeerCounters peers[kPeerSlots + 2];
  MetricCounter bytes_in, bytes_out;
  FilterCounts filters;
  MetricCounter terminations[kTerminations];
  L4Counters l4[kStreamSlots + 1];
  MetricCounter h2_refused[9];            // HTTP/2 refusals by kind (h2.h: H2Refusal, kH2Refusals)
  MetricCounter by_protocol[3];           // streams by the client's protocol: HTTP/1.0, HTTP/1.1, HTTP/2
  MetricCounter h2_upstream_errors;       // HTTP/2 peers' protocol errors: invalid frames, malformed responses
  MetricCounter by_upstream_protocol[2];  // streams that reached a peer, by the protocol spoken to it: HTTP/1.1, HTTP/2
};

// Which slot a route or a peer has (main thread only); names past the cap share `other`.
class NameSlots {
 public:
  explicit NameSlots(size_t cap) : cap_(cap) {}
  uint16_t slot(const std::string& name);
  const std::vector<std::string>& names() const { return names_; }

 private:
  size_t cap_;
  std::unordered_map<std::string, uint16_t> by_name_;
  std::vector<std::string> names_;
};

// The response cache's totals (cache/store.h) and what it did per route (stream/cache.h: hit, stale,
// revalidated, miss, bypass, refresh, then bytes served from it), summed over the workers.
struct CacheTotals {
  bool on = false;
  uint64_t objects = 0, bytes = 0, max_bytes = 0, stores = 0, stored_bytes = 0, evictions = 0, coalesced = 0,
           errors = 0, sendfile_bytes = 0;
  std::vector<std::pair<std::string, std::array<uint64_t, 7>>> routes;
};

struct ScrapeInputs {
  const std::vector<Worker*>* workers = nullptr;
  const std::vector<WorkerMetrics*>* metrics = nullptr;
  const NameSlots* slots = nullptr;
  const NameSlots* peer_slots = nullptr;
  const NameSlots* stream_slots = nullptr;
  uint64_t generation = 0;
  double generation_age_s = 0;
  uint64_t access_log_dropped = 0;
  std::vector<std::pair<std::string, int64_t>> cert_not_after;  // certificate name → unix seconds
  CacheTotals cache;
};

// The text exposition of everything.
std::string scrape(const ScrapeInputs& in);

}  // namespace px::proxy
