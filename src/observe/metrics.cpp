#include "observe/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <cassert>
#include <map>
#include <sstream>

#include "codec/h2.h"
#include "daemon/worker.h"

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
  int reason = static_cast<int>(r.reason) < kTerminations ? static_cast<int>(r.reason) : 0;
  if (r.l4) {
    L4Counters& c = l4[r.metrics_slot < kStreamSlots ? r.metrics_slot : kStreamSlots];
    c.ended[reason].inc();
    c.bytes_in.add(r.bytes_in);
    c.bytes_out.add(r.bytes_out);
    return;
  }
  size_t slot = r.metrics_slot;
  RouteCounters& rc = routes[slot < kRouteSlots + 2 ? slot : kSlotOther];
  int sc = r.status >= 100 && r.status < 600 ? r.status / 100 - 1 : 5;
  rc.requests[method_class(r.method)][sc].add(1);
  rc.duration.observe_us(r.duration_ms * 1000, kDurationBuckets);
  if (r.peer_slot < kPeerSlotNone) {
    PeerCounters& pc = peers[r.peer_slot];
    if (r.connect_us >= 0) pc.connect.observe_us(static_cast<uint64_t>(r.connect_us), kUpstreamBuckets);
    if (r.ttfb_us >= 0) pc.ttfb.observe_us(static_cast<uint64_t>(r.ttfb_us), kUpstreamBuckets);
  }
  bytes_in.add(r.bytes_in);
  bytes_out.add(r.bytes_out);
  terminations[reason].add(1);
  by_protocol[r.http_major == 2 ? 2 : r.http_minor == 0 ? 0 : 1].inc();
  if (r.upstream_proto) by_upstream_protocol[r.upstream_proto - 1].inc();
}

uint16_t NameSlots::slot(const std::string& name) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  if (names_.size() >= cap_) return static_cast<uint16_t>(cap_);
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
  fams.reserve(64);  // family() hands out references: no reallocation
  auto family = [&](const char* name, const char* help, MetricType t) -> MetricFamily& {
    assert(fams.size() < fams.capacity());
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
  // One histogram series: the workers' buckets summed (nothing when empty).
  auto histogram = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, const auto& bounds, auto&& of) {
    constexpr int N = static_cast<int>(std::size(std::remove_reference_t<decltype(bounds)>{}));
    uint64_t per[N + 1] = {}, sum_us = 0, count = 0;
    of([&](const WorkerHistogram<N>& h) {
      for (int b = 0; b <= N; b++) per[b] += h.per[b].get();
      sum_us += h.sum_us.get();
    });
    for (int b = 0; b <= N; b++) count += per[b];
    if (!count) return;
    ClientMetric m;
    m.label = std::move(labels);
    m.histogram.sample_count = count;
    m.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
    uint64_t cum = 0;
    for (int b = 0; b < N; b++) {
      cum += per[b];
      m.histogram.bucket.push_back({cum, bounds[b]});
    }
    m.histogram.bucket.push_back({count, std::numeric_limits<double>::infinity()});
    f.metric.push_back(std::move(m));
  };
  {
    MetricFamily& f = family("px_request_duration_seconds", "Time from the request's first byte to the stream's end",
                             MetricType::Histogram);
    for (size_t s : used)
      histogram(f, {{"route", route_name(s)}}, kDurationBuckets, [&](auto&& add) {
        for (auto* w : ws) add(w->routes[s].duration);
      });
  }
  {
    MetricFamily& cf =
        family("px_upstream_connect_seconds",
               "Time to open a new upstream connection (TLS handshake included), by peer", MetricType::Histogram);
    MetricFamily& tf =
        family("px_upstream_first_byte_seconds", "Time from sending the request to the upstream's first byte, by peer",
               MetricType::Histogram);
    MetricFamily& ff = family("px_upstream_failures_total",
                              "Upstream attempts that failed (passive health: refused, timed out, cut, bad answer)",
                              MetricType::Counter);
    MetricFamily& uf =
        family("px_upstream_up", "1 while the peer is usable, 0 while a failure count or a health check keeps it out",
               MetricType::Gauge);
    std::vector<size_t> peers;
    for (size_t s = 0; s < in.peer_slots->names().size(); s++) peers.push_back(s);
    peers.push_back(kPeerSlotOther);
    for (size_t s : peers) {
      std::string name = s == kPeerSlotOther ? "other" : in.peer_slots->names()[s];
      histogram(cf, {{"peer", name}}, kUpstreamBuckets, [&](auto&& add) {
        for (auto* w : ws) add(w->peers[s].connect);
      });
      histogram(tf, {{"peer", name}}, kUpstreamBuckets, [&](auto&& add) {
        for (auto* w : ws) add(w->peers[s].ttfb);
      });
      uint64_t fails = 0, seen = 0, out = 0;
      for (auto* w : ws) {
        fails += w->peers[s].failures.get();
        uint64_t h = w->peers[s].health.get();
        seen += h != 0;
        out += h == 2;
      }
      if (s == kPeerSlotOther) continue;
      counter(ff, {{"peer", name}}, static_cast<double>(fails));
      if (seen) gauge(uf, {{"peer", name}}, out ? 0 : 1);
    }
  }
  {
    MetricFamily& calls =
        family("px_filter_calls_total", "Filter phase functions run, by filter and phase", MetricType::Counter);
    MetricFamily& secs =
        family("px_filter_seconds_total", "Time in filter phase functions, by filter and phase", MetricType::Counter);
    MetricFamily& errs = family("px_filter_errors_total", "Filter phase functions that failed, by filter and phase",
                                MetricType::Counter);
    MetricFamily& answers = family(
        "px_filter_answers_total",
        "Requests a filter answered itself (a refusal, a redirect, a page), by filter and phase", MetricType::Counter);
    std::map<std::string, std::array<lua::FilterStat, lua::kPhases>> sum;
    for (auto* w : ws) {
      std::lock_guard<std::mutex> g(w->filters.mu);
      for (const auto& [name, per] : w->filters.by_filter)
        for (int p = 0; p < 6; p++) {
          lua::FilterStat& t = sum[name][static_cast<size_t>(p)];
          t.calls += per[static_cast<size_t>(p)].calls;
          t.errors += per[static_cast<size_t>(p)].errors;
          t.answers += per[static_cast<size_t>(p)].answers;
          t.seconds += per[static_cast<size_t>(p)].seconds;
        }
    }
    for (const auto& [name, per] : sum)
      for (int p = 0; p < 6; p++) {
        const lua::FilterStat& t = per[static_cast<size_t>(p)];
        if (!t.calls && !t.errors) continue;
        std::vector<ClientMetric::Label> l = {{"filter", name}, {"phase", lua::phase_name(p)}};
        counter(calls, l, static_cast<double>(t.calls));
        counter(secs, l, t.seconds);
        counter(errs, l, static_cast<double>(t.errors));
        counter(answers, l, static_cast<double>(t.answers));
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
    MetricFamily& f =
        family("px_requests_by_protocol_total", "Streams by the client's HTTP version", MetricType::Counter);
    static const char* const kProtocols[3] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2"};
    for (int p = 0; p < 3; p++) {
      uint64_t n = 0;
      for (auto* w : ws) n += w->by_protocol[p].get();
      counter(f, {{"protocol", kProtocols[p]}}, static_cast<double>(n));
    }
    MetricFamily& h2 = family("px_h2_refused_total",
                              "HTTP/2 frames, streams and connections refused, by kind (pxd.conf(5): the h2_ limits)",
                              MetricType::Counter);
    for (int k = 0; k < kH2Refusals; k++) {
      uint64_t n = 0;
      for (auto* w : ws) n += w->h2_refused[k].get();
      counter(h2, {{"kind", h2_refusal_name(k)}}, static_cast<double>(n));
    }
    MetricFamily& up =
        family("px_upstream_requests_by_protocol_total",
               "Streams that reached an upstream peer, by the protocol spoken to it", MetricType::Counter);
    for (int p = 0; p < 2; p++) {
      uint64_t n = 0;
      for (auto* w : ws) n += w->by_upstream_protocol[p].get();
      counter(up, {{"protocol", p ? "HTTP/2" : "HTTP/1.1"}}, static_cast<double>(n));
    }
    uint64_t n = 0;
    for (auto* w : ws) n += w->h2_upstream_errors.get();
    counter(family("px_upstream_h2_errors_total",
                   "HTTP/2 upstream peers' protocol errors: invalid frames and malformed responses (each ends its "
                   "stream with a 502, or the connection with its streams)",
                   MetricType::Counter),
            {}, static_cast<double>(n));
  }
  if (in.cache.on) {
    const CacheTotals& c = in.cache;
    gauge(family("px_cache_objects", "Responses in the cache", MetricType::Gauge), {}, static_cast<double>(c.objects));
    gauge(family("px_cache_bytes", "Bytes of the cache's files", MetricType::Gauge), {}, static_cast<double>(c.bytes));
    gauge(family("px_cache_max_bytes", "pxd.conf cache_max_size", MetricType::Gauge), {},
          static_cast<double>(c.max_bytes));
    counter(family("px_cache_stored_total", "Responses stored", MetricType::Counter), {},
            static_cast<double>(c.stores));
    counter(family("px_cache_stored_bytes_total", "Bytes written to the cache", MetricType::Counter), {},
            static_cast<double>(c.stored_bytes));
    counter(family("px_cache_evictions_total", "Responses evicted to stay under cache_max_size", MetricType::Counter),
            {}, static_cast<double>(c.evictions));
    counter(family("px_cache_coalesced_total", "Requests that waited for another request's fill of their key",
                   MetricType::Counter),
            {}, static_cast<double>(c.coalesced));
    counter(
        family("px_cache_errors_total",
               "Responses not stored because the cache directory failed (full, read-only, gone)", MetricType::Counter),
        {}, static_cast<double>(c.errors));
    counter(family("px_cache_sendfile_bytes_total",
                   "Bytes of stored bodies sent with sendfile(2) (HTTP/1 over plain TCP; HTTP/2 and TLS write them)",
                   MetricType::Counter),
            {}, static_cast<double>(c.sendfile_bytes));
    MetricFamily& rf = family("px_cache_requests_total",
                              "Requests on routes with a cache, by what the cache did: hit, stale, revalidated (served "
                              "from it), miss, bypass (asked upstream), refresh (background)",
                              MetricType::Counter);
    MetricFamily& bf =
        family("px_cache_served_bytes_total", "Bytes sent to clients from the cache, by route", MetricType::Counter);
    static const char* const kResults[6] = {"hit", "stale", "revalidated", "miss", "bypass", "refresh"};
    for (const auto& [name, v] : c.routes) {
      for (int i = 0; i < 6; i++) counter(rf, {{"route", name}, {"result", kResults[i]}}, static_cast<double>(v[i]));
      counter(bf, {{"route", name}}, static_cast<double>(v[6]));
    }
  }
  if (in.stream_slots) {
    MetricFamily& ended =
        family("px_l4_connections_total", "L4 stream connections (TCP) and sessions (UDP) that ended, by why",
               MetricType::Counter);
    MetricFamily& rx = family("px_l4_received_bytes_total", "Bytes L4 streams read from clients", MetricType::Counter);
    MetricFamily& tx = family("px_l4_sent_bytes_total", "Bytes L4 streams sent to clients", MetricType::Counter);
    size_t named = in.stream_slots->names().size();
    for (size_t s = 0; s <= named; s++) {
      size_t slot = s < named ? s : kStreamSlots;
      std::string name = s < named ? in.stream_slots->names()[s] : "other";
      uint64_t in_b = 0, out_b = 0, any = 0;
      for (int t = 0; t < kTerminations; t++) {
        uint64_t n = 0;
        for (auto* w : ws) n += w->l4[slot].ended[t].get();
        any += n;
        if (n)
          counter(ended, {{"stream", name}, {"termination", termination_name(static_cast<Termination>(t))}},
                  static_cast<double>(n));
      }
      for (auto* w : ws) {
        in_b += w->l4[slot].bytes_in.get();
        out_b += w->l4[slot].bytes_out.get();
      }
      if (!any && s == named) continue;
      counter(rx, {{"stream", name}}, static_cast<double>(in_b));
      counter(tx, {{"stream", name}}, static_cast<double>(out_b));
    }
  }
  {
    MetricFamily& cc = family("px_client_connections", "Open client connections", MetricType::Gauge);
    MetricFamily& lc = family("px_l4_connections", "Open L4 stream connections (TCP)", MetricType::Gauge);
    MetricFamily& uc = family("px_upstream_connections", "Open upstream connections", MetricType::Gauge);
    MetricFamily& hs = family("px_tls_handshakes_total", "TLS handshakes completed", MetricType::Counter);
    MetricFamily& hf =
        family("px_tls_handshake_failures_total", "TLS handshakes that failed, by reason", MetricType::Counter);
    double c = 0, l4c = 0, u = 0, ok = 0, timeout = 0, failed[tls::kHandshakeFailures] = {};
    for (auto* w : *in.workers) {
      c += static_cast<double>(w->sessions.get());
      l4c += static_cast<double>(w->l4_open.get());
      u += static_cast<double>(w->upconns.get());
      ok += static_cast<double>(w->tls_handshakes.get());
      timeout += static_cast<double>(w->tls_handshake_timeouts.get());
      for (int f = 0; f < tls::kHandshakeFailures; f++)
        failed[f] += static_cast<double>(w->tls_handshake_failures[f].get());
    }
    gauge(cc, {}, c);
    gauge(lc, {}, l4c);
    gauge(uc, {}, u);
    counter(hs, {}, ok);
    counter(hf, {{"reason", "timeout"}}, timeout);
    for (int f = 1; f < tls::kHandshakeFailures; f++)
      counter(hf, {{"reason", tls::handshake_failure_name(static_cast<tls::HandshakeFailure>(f))}}, failed[f]);
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
