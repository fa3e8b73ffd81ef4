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
#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/end_record.h"

namespace px::proxy {

class Worker;

struct MetricCounter {
  std::atomic<uint64_t> v{0};
  void add(uint64_t n) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

inline constexpr size_t kRouteSlots = 200;  // named routes; then "other"
inline constexpr size_t kSlotOther = kRouteSlots;
inline constexpr size_t kSlotNone = kRouteSlots + 1;  // no route matched
inline constexpr int kMethodClasses = 4;              // GET/HEAD, POST, PUT/PATCH/DELETE, other
inline constexpr int kStatusClasses = 6;              // 1xx..5xx, and none sent
inline constexpr double kDurationBuckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
inline constexpr int kBuckets = sizeof kDurationBuckets / sizeof kDurationBuckets[0];
inline constexpr int kTerminations = 13;

struct RouteCounters {
  MetricCounter requests[kMethodClasses][kStatusClasses];
  MetricCounter duration[kBuckets + 1];  // per bucket (not cumulative); the last is +Inf
  MetricCounter duration_sum_us;
};

// One worker's counters (observer of its end records).
class WorkerMetrics final : public EndObserver {
 public:
  void on_stream_end(const EndRecord& r) override;
  RouteCounters routes[kRouteSlots + 2];
  MetricCounter bytes_in, bytes_out;
  MetricCounter terminations[kTerminations];
};

// Which slot a route name has (main thread only).
class RouteSlots {
 public:
  uint16_t slot(const std::string& name);
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::unordered_map<std::string, uint16_t> by_name_;
  std::vector<std::string> names_;
};

struct ScrapeInputs {
  const std::vector<Worker*>* workers = nullptr;
  const std::vector<WorkerMetrics*>* metrics = nullptr;
  const RouteSlots* slots = nullptr;
  uint64_t generation = 0;
  double generation_age_s = 0;
  uint64_t access_log_dropped = 0;
  std::vector<std::pair<std::string, int64_t>> cert_not_after;  // certificate name → unix seconds
};

// The text exposition of everything.
std::string scrape(const ScrapeInputs& in);

}  // namespace px::proxy
