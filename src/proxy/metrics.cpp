#include "proxy/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "proxy/worker.h"

namespace px::proxy {

namespace {

int method_class(std::string_view m) {
  if (m == "GET" || m == "HEAD") return 0;
  if (m == "POST") return 1;
  if (m == "PUT" || m == "PATCH" || m == "DELETE") return 2;
  return 3;
}
const char* kMethodNames[kMethodClasses] = {"get_head", "post", "put_patch_delete", "other"};
const char* kStatusNames[kStatusClasses] = {"1xx", "2xx", "3xx", "4xx", "5xx", "none"};

}  // namespace

void WorkerMetrics::on_stream_end(const EndRecord& r) {
  size_t slot = r.metrics_slot;
  RouteCounters& rc = routes[slot < kRouteSlots + 2 ? slot : kSlotOther];
  int sc = r.status >= 100 && r.status < 600 ? r.status / 100 - 1 : 5;
  rc.requests[method_class(r.method)][sc].add(1);
  double secs = static_cast<double>(r.duration_ms) / 1000.0;
  int b = 0;
  while (b < kBuckets && secs > kDurationBuckets[b]) b++;
  rc.duration[b].add(1);
  rc.duration_sum_us.add(r.duration_ms * 1000);
  bytes_in.add(r.bytes_in);
  bytes_out.add(r.bytes_out);
  terminations[static_cast<int>(r.reason) < kTerminations ? static_cast<int>(r.reason) : 0].add(1);
}

uint16_t RouteSlots::slot(const std::string& name) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  if (names_.size() >= kRouteSlots) return static_cast<uint16_t>(kSlotOther);
  auto s = static_cast<uint16_t>(names_.size());
  names_.push_back(name);
  by_name_[name] = s;
  return s;
}

std::string scrape(const ScrapeInputs& in) {
  using prometheus::ClientMetric;
  using prometheus::MetricFamily;
  using prometheus::MetricType;
  std::vector<MetricFamily> fams;
  auto family = [&](const char* name, const char* help, MetricType t) -> MetricFamily& {
    fams.push_back(MetricFamily{name, help, t, {}});
    return fams.back();
  };
  auto counter = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = v;
    f.metric.push_back(std::move(m));
  };
  auto gauge = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    f.metric.push_back(std::move(m));
  };
  const auto& ws = *in.metrics;
  auto route_name = [&](size_t slot) -> std::string {
    if (slot == kSlotNone) return "";
    if (slot == kSlotOther) return "other";
    return in.slots->names()[slot];
  };
  std::vector<size_t> used;
  for (size_t s = 0; s < in.slots->names().size(); s++) used.push_back(s);
  used.push_back(kSlotOther);
  used.push_back(kSlotNone);

  {
    MetricFamily& f =
        family("px_requests_total", "Requests by route, method class and status class", MetricType::Counter);
    for (size_t s : used)
      for (int m = 0; m < kMethodClasses; m++)
        for (int c = 0; c < kStatusClasses; c++) {
          uint64_t n = 0;
          for (auto* w : ws) n += w->routes[s].requests[m][c].get();
          if (n)
            counter(f, {{"route", route_name(s)}, {"method", kMethodNames[m]}, {"code", kStatusNames[c]}},
                    static_cast<double>(n));
        }
  }
  {
    MetricFamily& f = family("px_request_duration_seconds", "Time from the request's first byte to the stream's end",
                             MetricType::Histogram);
    for (size_t s : used) {
      uint64_t per[kBuckets + 1] = {}, sum_us = 0, count = 0;
      for (auto* w : ws) {
        for (int b = 0; b <= kBuckets; b++) per[b] += w->routes[s].duration[b].get();
        sum_us += w->routes[s].duration_sum_us.get();
      }
      for (int b = 0; b <= kBuckets; b++) count += per[b];
      if (!count) continue;
      ClientMetric m;
      m.label = {{"route", route_name(s)}};
      m.histogram.sample_count = count;
      m.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
      uint64_t cum = 0;
      for (int b = 0; b < kBuckets; b++) {
        cum += per[b];
        m.histogram.bucket.push_back({cum, kDurationBuckets[b]});
      }
      m.histogram.bucket.push_back({count, std::numeric_limits<double>::infinity()});
      f.metric.push_back(std::move(m));
    }
  }
  {
    uint64_t in_b = 0, out_b = 0;
    for (auto* w : ws) {
      in_b += w->bytes_in.get();
      out_b += w->bytes_out.get();
    }
    counter(family("px_received_bytes_total", "Bytes read from clients (heads and bodies)", MetricType::Counter), {},
            static_cast<double>(in_b));
    counter(family("px_sent_bytes_total", "Bytes written to clients", MetricType::Counter), {},
            static_cast<double>(out_b));
  }
  {
    MetricFamily& f = family("px_stream_terminations_total", "Streams by why they ended", MetricType::Counter);
    for (int t = 0; t < kTerminations; t++) {
      uint64_t n = 0;
      for (auto* w : ws) n += w->terminations[t].get();
      counter(f, {{"reason", termination_name(static_cast<Termination>(t))}}, static_cast<double>(n));
    }
  }
  {
    MetricFamily& cc = family("px_client_connections", "Open client connections", MetricType::Gauge);
    MetricFamily& uc = family("px_upstream_connections", "Open upstream connections", MetricType::Gauge);
    MetricFamily& hs = family("px_tls_handshakes_total", "TLS handshakes by outcome", MetricType::Counter);
    double c = 0, u = 0, ok = 0, failed = 0, timeout = 0;
    for (auto* w : *in.workers) {
      c += static_cast<double>(w->m_sessions.get());
      u += static_cast<double>(w->m_upconns.get());
      ok += static_cast<double>(w->m_tls_handshakes.get());
      failed += static_cast<double>(w->m_tls_failures.get());
      timeout += static_cast<double>(w->m_tls_timeouts.get());
    }
    gauge(cc, {}, c);
    gauge(uc, {}, u);
    counter(hs, {{"result", "started"}}, ok);
    counter(hs, {{"result", "failed"}}, failed);
    counter(hs, {{"result", "timeout"}}, timeout);
  }
  gauge(family("px_config_generation", "The store generation every worker serves", MetricType::Gauge), {},
        static_cast<double>(in.generation));
  gauge(family("px_config_generation_age_seconds", "Seconds since that generation was installed", MetricType::Gauge),
        {}, in.generation_age_s);
  counter(family("px_access_log_dropped_total", "Access log lines dropped because the disk fell behind",
                 MetricType::Counter),
          {}, static_cast<double>(in.access_log_dropped));
  {
    MetricFamily& f = family("px_certificate_not_after_seconds", "When each stored certificate expires (unix time)",
                             MetricType::Gauge);
    for (const auto& [name, t] : in.cert_not_after) gauge(f, {{"name", name}}, static_cast<double>(t));
  }
  gauge(family("px_build_info", "pxd's version", MetricType::Gauge), {{"version", PX_VERSION}}, 1);
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, fams);
  return out.str();
}

}  // namespace px::proxy
