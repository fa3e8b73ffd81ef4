#include "admin/metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace px::admin {

namespace {

std::string method_class(std::string_view m) {
  for (const char* k : {"GET", "POST", "PUT", "PATCH", "DELETE"})
    if (m == k) return k;
  return "other";
}

// A bounded label for a problem type: RFC 8555's registered ones and px's own by their short name.
std::string problem_label(const std::string& type) {
  static const std::string acme = "urn:ietf:params:acme:error:";
  std::string s = type.rfind(acme, 0) == 0 ? type.substr(acme.size()) : type;
  if (s.empty() || s.size() > 40) return "other";
  for (char c : s)
    if (!isalnum(static_cast<unsigned char>(c)) && c != ':' && c != '_') return "other";
  return s;
}

}  // namespace

AdminMetrics::AdminMetrics()
    : api_(prometheus::BuildCounter()
               .Name("px_admin_api_requests_total")
               .Help("pxadmind API requests by method and status class")
               .Register(reg_)),
      orders_(prometheus::BuildCounter()
                  .Name("px_acme_orders_total")
                  .Help("ACME orders that ended, by result (issued, failed)")
                  .Register(reg_)),
      failures_(prometheus::BuildCounter()
                    .Name("px_acme_failures_total")
                    .Help("ACME orders that failed, by problem type (RFC 8555, or px:...)")
                    .Register(reg_)) {
  orders_.Add({{"result", "issued"}});
  orders_.Add({{"result", "failed"}});
}

void AdminMetrics::api_request(std::string_view method, int status) {
  std::string code = status >= 100 && status < 600 ? std::to_string(status / 100) + "xx" : "none";
  api_.Add({{"method", method_class(method)}, {"code", code}}).Increment();
}

void AdminMetrics::acme_order(bool issued, const std::string& problem_type) {
  orders_.Add({{"result", issued ? "issued" : "failed"}}).Increment();
  if (!issued) failures_.Add({{"type", problem_label(problem_type)}}).Increment();
}

std::string AdminMetrics::text(Admin& admin, const std::vector<std::string>& pxd_status_files) {
  using prometheus::ClientMetric;
  using prometheus::MetricFamily;
  using prometheus::MetricType;
  std::vector<MetricFamily> fams = reg_.Collect();
  auto gauge = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    f.metric.push_back(std::move(m));
  };
  uint64_t gen = admin.generation();
  MetricFamily g{"px_admin_store_generation", "The store's generation (every change adds one)", MetricType::Gauge, {}};
  gauge(g, {}, static_cast<double>(gen));
  MetricFamily na{
      "px_certificate_not_after_seconds", "When each stored certificate expires (unix time)", MetricType::Gauge, {}};
  MetricFamily st{
      "px_acme_certificate_failing", "1 while ACME's last attempt for this certificate failed", MetricType::Gauge, {}};
  Result certs = admin.list_certs();
  if (certs.status == 200)
    for (const auto& c : certs.body) {
      std::string name = c.value("name", std::string());
      if (c.contains("not_after")) gauge(na, {{"name", name}}, c.value("not_after", 0.0));
      if (c.value("managed", std::string()) == "acme")
        gauge(st, {{"name", name}}, c.value("status", std::string()) == "failed" ? 1 : 0);
    }
  MetricFamily sync{"px_pxd_in_sync",
                    "1 while this pxd serves the store's current generation (by status file)",
                    MetricType::Gauge,
                    {}};
  for (const auto& f : pxd_status_files) {
    json s = pxd_status(f);
    gauge(sync, {{"status_file", f}}, s["running"].get<bool>() && s.value("generation", uint64_t(0)) == gen ? 1 : 0);
  }
  MetricFamily info{"px_admin_build_info", "pxadmind's version", MetricType::Gauge, {}};
  gauge(info, {{"version", PX_VERSION}}, 1);
  for (auto* f : {&g, &na, &st, &sync, &info}) fams.push_back(std::move(*f));
  // In a fleet: whether etcd answers and since when, the revision this host applied, resyncs, refused keys.
  if (json fl = admin.fleet_self(); fl.is_object()) {
    const json& e = fl["etcd"];
    std::vector<ClientMetric::Label> l = {{"fleet", fl.value("name", "")}, {"host", fl.value("host", "")}};
    MetricFamily up{"px_fleet_etcd_reachable", "1 while etcd answers this host", MetricType::Gauge, {}};
    gauge(up, l, e.value("reachable", false) ? 1 : 0);
    MetricFamily since{"px_fleet_etcd_state_since_seconds",
                       "When etcd last became reachable or unreachable for this host (unix time)",
                       MetricType::Gauge,
                       {}};
    gauge(since, l, e.value("since_unix", 0.0));
    MetricFamily rev{"px_fleet_applied_revision",
                     "The etcd revision this host's store holds (it serves it when pxd is in sync)",
                     MetricType::Gauge,
                     {}};
    gauge(rev, l, fl.value("applied_revision", 0.0));
    MetricFamily resyncs{
        "px_fleet_resyncs_total", "Full resynchronisations from etcd since pxadmind started", MetricType::Counter, {}};
    ClientMetric rm;
    rm.label = l;
    rm.counter.value = fl.value("resyncs", 0.0);
    resyncs.metric.push_back(std::move(rm));
    MetricFamily refused{
        "px_fleet_refused_keys", "Keys under the fleet's prefix this host refused (not valid)", MetricType::Gauge, {}};
    gauge(refused, l, static_cast<double>(fl.value("rejected", json::object()).size()));
    for (auto* f : {&up, &since, &rev, &resyncs, &refused}) fams.push_back(std::move(*f));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, fams);
  return out.str();
}

}  // namespace px::admin
