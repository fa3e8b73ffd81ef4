#include "route/route.h"

#include <nlohmann/json.hpp>

#include "core/strings.h"
#include "net/cidr.h"
#include "route/json_fields.h"

namespace px::route {

using json = nlohmann::json;

const char* balance_name(Balance b) {
  switch (b) {
    case Balance::round_robin: return "round_robin";
    case Balance::least_conn: return "least_conn";
    case Balance::ip_hash: return "ip_hash";
  }
  return "?";
}

bool valid_route_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  return true;
}

static bool valid_label(std::string_view l) {
  if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
  for (char c : l)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

bool normalize_hostname(std::string_view in, std::string* out, std::string* error) {
  std::string h = to_lower(in);
  if (!h.empty() && h.back() == '.') h.pop_back();
  std::string_view rest = h;
  if (h.size() > 253 || h.empty()) {
    *error = "'" + std::string(in) + "' is not a valid hostname (1 to 253 characters)";
    return false;
  }
  if (rest.substr(0, 2) == "*.") rest.remove_prefix(2);
  int labels = 0;
  while (true) {
    size_t dot = rest.find('.');
    if (!valid_label(rest.substr(0, dot))) {
      *error = "'" + std::string(in) +
               "' is not a valid hostname (labels of letters, digits and '-', 1 to 63 characters; a wildcard "
               "only as a leading '*.')";
      return false;
    }
    labels++;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  *out = std::move(h);
  return true;
}

bool parse_upstream_url(std::string_view url, UpstreamSpec* out, std::string* error) {
  std::string_view u = url;
  std::string_view scheme;
  for (std::string_view s : {"http://", "https://", "h2c://", "grpc://"})
    if (u.substr(0, s.size()) == s) scheme = s;
  if (scheme.empty()) {
    *error = "'" + std::string(url) + "': the scheme must be http://, https://, h2c:// or grpc://";
    return false;
  }
  bool tls = scheme == "https://";
  u.remove_prefix(scheme.size());
  if (!u.empty() && u.back() == '/') u.remove_suffix(1);
  if (u.find('/') != std::string_view::npos || u.find('?') != std::string_view::npos ||
      u.find('@') != std::string_view::npos) {
    *error = "'" + std::string(url) + "': expected http(s)://HOST[:PORT] with no path, query or user";
    return false;
  }
  std::string_view host = u, port;
  if (!u.empty() && u.front() == '[') {
    size_t close = u.find(']');
    if (close == std::string_view::npos) {
      *error = "'" + std::string(url) + "': unterminated IPv6 address";
      return false;
    }
    host = u.substr(1, close - 1);
    std::string_view after = u.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        *error = "'" + std::string(url) + "': unexpected text after the IPv6 address";
        return false;
      }
      port = after.substr(1);
    }
    net::IpAddr ip;
    if (!net::IpAddr::parse(host, &ip) || ip.is_v4()) {
      *error = "'" + std::string(url) + "': '" + std::string(host) + "' is not an IPv6 address";
      return false;
    }
  } else {
    size_t colon = u.rfind(':');
    if (colon != std::string_view::npos) {
      host = u.substr(0, colon);
      port = u.substr(colon + 1);
    }
    std::string norm, herr;
    net::IpAddr ip;
    if (!net::IpAddr::parse(host, &ip) && !normalize_hostname(host, &norm, &herr)) {
      *error = "'" + std::string(url) + "': host " + herr;
      return false;
    }
    if (host.find('*') != std::string_view::npos) {
      *error = "'" + std::string(url) + "': an upstream host cannot be a wildcard";
      return false;
    }
  }
  uint64_t p = tls ? 443 : 80;
  if (!port.empty() || (u.size() && u.back() == ':')) {
    if (!parse_u64(port, &p) || p < 1 || p > 65535) {
      *error = "'" + std::string(url) + "': port must be 1..65535";
      return false;
    }
  }
  out->host = to_lower(host);
  out->port = static_cast<uint16_t>(p);
  bool v6 = out->host.find(':') != std::string::npos;
  out->tls = tls;
  out->grpc = scheme == "grpc://";
  out->h2 = out->grpc || scheme == "h2c://";
  out->url = std::string(scheme) + (v6 ? "[" + out->host + "]" : out->host) + ":" + std::to_string(p);
  return true;
}

namespace fields {

bool fail(std::string* error, const std::string& field, const std::string& msg) {
  *error = field + ": " + msg;
  return false;
}

bool only_known(const json& j, std::initializer_list<const char*> known, std::string* error) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (auto* k : known) ok = ok || it.key() == k;
    if (!ok) return fail(error, it.key(), "unknown field");
  }
  return true;
}

bool get_uint(const json& j, const char* key, uint64_t* out, uint64_t max, std::string* error,
              const std::string& prefix) {
  if (!j.contains(key)) return true;
  const json& v = j[key];
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    return fail(error, prefix + key, "expected a non-negative whole number");
  uint64_t x = v.get<uint64_t>();
  if (x > max) return fail(error, prefix + key, "must be at most " + std::to_string(max));
  *out = x;
  return true;
}

bool get_duration_ms(const json& j, const char* key, uint64_t* out, uint64_t max_ms, std::string* error,
                     const std::string& prefix) {
  if (!j.contains(key) || !j[key].is_string()) return get_uint(j, key, out, max_ms, error, prefix);
  uint64_t ms;
  if (!parse_duration(j[key].get_ref<const std::string&>(), 1, &ms))
    return fail(error, prefix + key, std::string("expected milliseconds, or ") + kDurationForms);
  if (ms > max_ms) return fail(error, prefix + key, "must be at most " + std::to_string(max_ms) + " ms");
  *out = ms;
  return true;
}

bool get_size(const json& j, const char* key, uint64_t* out, uint64_t max, std::string* error,
              const std::string& prefix) {
  if (!j.contains(key) || !j[key].is_string()) return get_uint(j, key, out, max, error, prefix);
  uint64_t n;
  if (!parse_size(j[key].get_ref<const std::string&>(), &n))
    return fail(error, prefix + key, std::string("expected ") + kSizeForms);
  if (n > max) return fail(error, prefix + key, "must be at most " + std::to_string(max) + " bytes");
  *out = n;
  return true;
}

bool upstream_weight(const json& u, const std::string& field, uint32_t* weight, std::string* error) {
  for (auto it = u.begin(); it != u.end(); ++it)
    if (it.key() != "url" && it.key() != "weight") return fail(error, field + "." + it.key(), "unknown field");
  uint64_t w = 1;
  if (!get_uint(u, "weight", &w, 1000, error, field + ".")) return false;
  if (w < 1) return fail(error, field + ".weight", "must be 1..1000");
  *weight = static_cast<uint32_t>(w);
  return true;
}

bool health_check(const json& h, bool with_path, HealthCheckSpec* out, std::string* error) {
  if (!h.is_object()) return fail(error, "health_check", "expected an object");
  std::string e;
  if (!(with_path ? only_known(h, {"path", "interval_ms", "timeout_ms", "healthy", "unhealthy"}, &e)
                  : only_known(h, {"interval_ms", "timeout_ms", "healthy", "unhealthy"}, &e)))
    return fail(error, "health_check." + e.substr(0, e.find(':')), "unknown field");
  HealthCheckSpec r = *out;
  r.enabled = true;
  if (h.contains("path")) {
    if (!h["path"].is_string() || h["path"].get<std::string>().empty() || h["path"].get<std::string>()[0] != '/')
      return fail(error, "health_check.path", "expected a path starting with '/'");
    r.path = h["path"].get<std::string>();
    for (char ch : r.path)
      if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f)
        return fail(error, "health_check.path", "must not contain spaces or control characters");
  }
  const uint64_t day = 86400000;
  struct {
    const char* key;
    uint64_t min, max;
  } nums[] = {{"interval_ms", 10, day}, {"timeout_ms", 1, day}, {"healthy", 1, 100}, {"unhealthy", 1, 100}};
  uint64_t v[4] = {r.interval_ms, r.timeout_ms, r.healthy, r.unhealthy};
  for (int i = 0; i < 4; i++) {
    if (!(i < 2 ? get_duration_ms(h, nums[i].key, &v[i], nums[i].max, error, "health_check.")
                : get_uint(h, nums[i].key, &v[i], nums[i].max, error, "health_check.")))
      return false;
    if (v[i] < nums[i].min)
      return fail(error, std::string("health_check.") + nums[i].key,
                  nums[i].max == 100 ? "must be 1..100" : "must be at least " + std::to_string(nums[i].min));
  }
  r.interval_ms = v[0];
  r.timeout_ms = v[1];
  r.healthy = static_cast<uint32_t>(v[2]);
  r.unhealthy = static_cast<uint32_t>(v[3]);
  *out = r;
  return true;
}

json health_check_json(const HealthCheckSpec& h, bool with_path) {
  json j = {
      {"interval_ms", h.interval_ms}, {"timeout_ms", h.timeout_ms}, {"healthy", h.healthy}, {"unhealthy", h.unhealthy}};
  if (with_path) j["path"] = h.path;
  return j;
}

}  // namespace fields

namespace {
struct Ctx {
  std::string* error;
  bool fail(const std::string& field, const std::string& msg) { return fields::fail(error, field, msg); }
};

bool get_uint(const json& j, const char* key, uint64_t* out, uint64_t max, Ctx& c, const std::string& prefix = "") {
  return fields::get_uint(j, key, out, max, c.error, prefix);
}

// A cache duration in whole seconds, as Cache-Control counts them: a number of seconds, or a string with a unit.
bool get_seconds(const json& j, const char* key, int64_t* out, Ctx& c) {
  if (!j.contains(key)) return true;
  uint64_t v = 0;
  constexpr uint64_t kMax = 365ull * 86400;
  if (j[key].is_string()) {
    if (!fields::get_duration_ms(j, key, &v, kMax * 1000, c.error, "cache.")) return false;
    v /= 1000;
  } else if (!fields::get_uint(j, key, &v, kMax, c.error, "cache.")) {
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

// "cache": true / false, or an object (route.h CacheSpec): the cache is on unless it says "enabled": false.
bool cache_spec(const json& v, CacheSpec* out, Ctx& c) {
  CacheSpec s;
  if (v.is_boolean()) {
    s.enabled = v.get<bool>();
    *out = s;
    return true;
  }
  if (!v.is_object()) return c.fail("cache", "expected true, false or an object");
  if (!fields::only_known(v,
                          {"enabled", "max_size", "max_object_size", "default_ttl", "stale_while_revalidate",
                           "stale_if_error", "lock_timeout", "store_set_cookie"},
                          c.error)) {
    *c.error = "cache." + *c.error;
    return false;
  }
  s.enabled = true;
  for (const char* k : {"enabled", "store_set_cookie"})
    if (v.contains(k)) {
      if (!v[k].is_boolean()) return c.fail(std::string("cache.") + k, "expected true or false");
      (k == std::string_view("enabled") ? s.enabled : s.store_set_cookie) = v[k].get<bool>();
    }
  if (!fields::get_size(v, "max_size", &s.max_size, uint64_t(1) << 50, c.error, "cache.") ||
      !fields::get_size(v, "max_object_size", &s.max_object_size, uint64_t(1) << 40, c.error, "cache.") ||
      !get_seconds(v, "default_ttl", &s.default_ttl, c) ||
      !get_seconds(v, "stale_while_revalidate", &s.stale_while_revalidate, c) ||
      !get_seconds(v, "stale_if_error", &s.stale_if_error, c) ||
      !fields::get_duration_ms(v, "lock_timeout", &s.lock_timeout_ms, 600000, c.error, "cache."))
    return false;
  *out = s;
  return true;
}

json cache_json(const CacheSpec& s) {
  json j = {{"enabled", s.enabled}};
  if (s.max_size) j["max_size"] = s.max_size;
  if (s.max_object_size) j["max_object_size"] = s.max_object_size;
  if (s.default_ttl) j["default_ttl"] = s.default_ttl;
  if (s.stale_while_revalidate) j["stale_while_revalidate"] = s.stale_while_revalidate;
  if (s.stale_if_error) j["stale_if_error"] = s.stale_if_error;
  if (s.lock_timeout_ms != CacheSpec().lock_timeout_ms) j["lock_timeout"] = std::to_string(s.lock_timeout_ms) + "ms";
  if (s.store_set_cookie) j["store_set_cookie"] = true;
  return j;
}
}  // namespace

bool parse_route_json(std::string_view text, RouteSpec* out, std::string* error) {
  Ctx c{error};
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return c.fail("route", "not valid JSON");
  if (!j.is_object()) return c.fail("route", "expected a JSON object");
  if (!fields::only_known(j,
                          {"name",
                           "hosts",
                           "path",
                           "strip_path",
                           "upstreams",
                           "lb",
                           "enabled",
                           "connect_timeout_ms",
                           "read_timeout_ms",
                           "max_body_size",
                           "health_check",
                           "filters",
                           "upstream_tls",
                           "tls",
                           "access_log",
                           "passthrough",
                           "record",
                           "version",
                           "upstream_proto",
                           "cache"},
                          error))
    return false;
  RouteSpec r;
  if (!j.contains("name") || !j["name"].is_string()) return c.fail("name", "required, a string");
  r.name = j["name"].get<std::string>();
  if (!valid_route_name(r.name)) return c.fail("name", "1 to 64 characters of letters, digits, '.', '_', '-'");
  if (!j.contains("hosts") || !j["hosts"].is_array() || j["hosts"].empty())
    return c.fail("hosts", "required, a non-empty array of hostnames");
  for (size_t i = 0; i < j["hosts"].size(); i++) {
    const json& h = j["hosts"][i];
    std::string field = "hosts[" + std::to_string(i) + "]";
    if (!h.is_string()) return c.fail(field, "expected a string");
    std::string norm, err;
    if (!normalize_hostname(h.get<std::string>(), &norm, &err)) return c.fail(field, err);
    r.hosts.push_back(norm);
  }
  if (j.contains("path")) {
    if (!j["path"].is_string()) return c.fail("path", "expected a string");
    r.path = j["path"].get<std::string>();
    if (r.path.empty() || r.path[0] != '/') return c.fail("path", "must start with '/'");
    for (char ch : r.path)
      if (ch == '?' || ch == '#' || static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f)
        return c.fail("path", "must not contain '?', '#', spaces or control characters");
  }
  if (j.contains("strip_path")) {
    if (!j["strip_path"].is_boolean()) return c.fail("strip_path", "expected true or false");
    r.strip_path = j["strip_path"].get<bool>();
  }
  if (j.contains("enabled")) {
    if (!j["enabled"].is_boolean()) return c.fail("enabled", "expected true or false");
    r.enabled = j["enabled"].get<bool>();
  }
  if (j.contains("passthrough")) {
    if (!j["passthrough"].is_boolean()) return c.fail("passthrough", "expected true or false");
    r.passthrough = j["passthrough"].get<bool>();
  }
  if (!j.contains("upstreams") || !j["upstreams"].is_array() || j["upstreams"].empty())
    return c.fail("upstreams", "required, a non-empty array");
  if (j["upstreams"].size() > 64) return c.fail("upstreams", "at most 64 peers per route");
  for (size_t i = 0; i < j["upstreams"].size(); i++) {
    const json& u = j["upstreams"][i];
    std::string field = "upstreams[" + std::to_string(i) + "]";
    UpstreamSpec us;
    std::string url;
    if (u.is_string())
      url = u.get<std::string>();
    else if (u.is_object() && u.contains("url") && u["url"].is_string())
      url = u["url"].get<std::string>();
    else
      return c.fail(field, "expected a URL string or {\"url\": ..., \"weight\": ...}");
    std::string err;
    if (r.passthrough) {
      // Raw TLS bytes go to the peer: tcp://HOST:PORT, checked as an http:// URL's host and port would be.
      std::string_view rest = std::string_view(url).substr(std::min<size_t>(6, url.size()));
      if (url.rfind("tcp://", 0) != 0 || rest.find('/') != std::string_view::npos ||
          rest.rfind(':') == std::string_view::npos || rest.back() == ']')
        return c.fail(field + ".url", "'" + url + "': a passthrough route's upstreams are tcp://HOST:PORT");
      if (!parse_upstream_url("http://" + std::string(rest), &us, &err)) return c.fail(field + ".url", err);
      us.url = "tcp://" + (us.host.find(':') != std::string::npos ? "[" + us.host + "]" : us.host) + ":" +
               std::to_string(us.port);
    } else if (!parse_upstream_url(url, &us, &err)) {
      return c.fail(field + ".url", err);
    }
    if (u.is_object() && !fields::upstream_weight(u, field, &us.weight, error)) return false;
    r.upstreams.push_back(us);
  }
  if (j.contains("lb")) {
    if (!j["lb"].is_string()) return c.fail("lb", "expected a string");
    std::string lb = j["lb"].get<std::string>();
    if (lb == "round_robin")
      r.lb = Balance::round_robin;
    else if (lb == "least_conn")
      r.lb = Balance::least_conn;
    else if (lb == "ip_hash")
      r.lb = Balance::ip_hash;
    else
      return c.fail("lb", "'" + lb + "' is not one of round_robin, least_conn, ip_hash");
  }
  const uint64_t day = 86400000;
  if (!fields::get_duration_ms(j, "connect_timeout_ms", &r.connect_timeout_ms, day, c.error)) return false;
  if (!fields::get_duration_ms(j, "read_timeout_ms", &r.read_timeout_ms, day, c.error)) return false;
  if (!get_uint(j, "version", &r.version, UINT64_MAX, c)) return false;
  if (j.contains("max_body_size")) {
    const json& v = j["max_body_size"];
    uint64_t n;
    if (v.is_string() && parse_size(v.get_ref<const std::string&>(), &n) && n <= uint64_t(INT64_MAX))
      r.max_body_size = static_cast<int64_t>(n);
    else if (v.is_number_integer() && v.get<int64_t>() >= -1)
      r.max_body_size = v.get<int64_t>();
    else
      return c.fail("max_body_size",
                    std::string("expected ") + kSizeForms + "; 0 = unlimited, -1 = the pxd.conf default");
  }
  if (j.contains("access_log")) {
    if (!j["access_log"].is_boolean()) return c.fail("access_log", "expected true or false");
    r.access_log = j["access_log"].get<bool>();
  }
  if (j.contains("record") && !j["record"].is_null()) {
    const json& rec = j["record"];
    if (!rec.is_object()) return c.fail("record", "expected {\"count\": N, \"mask\": [header names]}");
    if (!fields::only_known(rec, {"count", "mask", "id"}, error)) return false;
    if (!rec.contains("count") || !rec["count"].is_number_unsigned() || rec["count"].get<uint64_t>() > 10000)
      return c.fail("record.count", "expected a whole number of requests, 0 to 10000");
    r.record.count = static_cast<uint32_t>(rec["count"].get<uint64_t>());
    if (rec.contains("mask")) {
      if (!rec["mask"].is_array()) return c.fail("record.mask", "expected a list of header names");
      for (size_t i = 0; i < rec["mask"].size(); i++) {
        const json& m = rec["mask"][i];
        if (!m.is_string() || m.get<std::string>().empty() ||
            m.get<std::string>().find_first_of(" :\t\r\n") != std::string::npos)
          return c.fail("record.mask[" + std::to_string(i) + "]", "expected a header name");
        r.record.mask.push_back(m.get<std::string>());
      }
    }
    if (rec.contains("id")) {
      if (!rec["id"].is_string() || rec["id"].get<std::string>().size() > 64)
        return c.fail("record.id", "expected a string of at most 64 characters");
      r.record.id = rec["id"].get<std::string>();
    }
  }
  if (j.contains("tls")) {
    const json& t = j["tls"];
    if (!t.is_string()) return c.fail("tls", "expected \"auto\", \"off\" or the name of a stored certificate");
    std::string v = t.get<std::string>();
    if (v != "auto" && v != "off" && !valid_route_name(v))
      return c.fail("tls", "expected \"auto\", \"off\" or the name of a stored certificate");
    r.tls = v;
  }
  if (j.contains("upstream_tls")) {
    const json& t = j["upstream_tls"];
    if (!t.is_object()) return c.fail("upstream_tls", "expected an object");
    for (auto it = t.begin(); it != t.end(); ++it) {
      const std::string& k = it.key();
      if (k == "verify") {
        if (!it->is_boolean()) return c.fail("upstream_tls.verify", "expected true or false");
        r.upstream_tls.verify = it->get<bool>();
      } else if (k == "client_cert") {
        if (!it->is_string() || !valid_route_name(it->get<std::string>()))
          return c.fail("upstream_tls.client_cert", "expected the name of a stored certificate");
        r.upstream_tls.client_cert = it->get<std::string>();
      } else if (k == "ca_file" || k == "sni") {
        if (!it->is_string()) return c.fail("upstream_tls." + k, "expected a string");
        std::string v = it->get<std::string>();
        if (k == "ca_file" && (v.empty() || v[0] != '/'))
          return c.fail("upstream_tls.ca_file", "expected an absolute path");
        if (k == "sni") {
          std::string norm, err;
          if (!normalize_hostname(v, &norm, &err) || norm.find('*') != std::string::npos)
            return c.fail("upstream_tls.sni", "'" + v + "' is not a hostname");
          v = norm;
        }
        (k == "sni" ? r.upstream_tls.sni : r.upstream_tls.ca_file) = v;
      } else {
        return c.fail("upstream_tls." + k, "unknown field");
      }
    }
  }
  if (j.contains("health_check") && !fields::health_check(j["health_check"], true, &r.health, error)) return false;
  if (j.contains("cache") && !cache_spec(j["cache"], &r.cache, c)) return false;
  if (j.contains("filters")) {
    if (!j["filters"].is_array()) return c.fail("filters", "expected an array");
    for (size_t i = 0; i < j["filters"].size(); i++) {
      const json& f = j["filters"][i];
      std::string field = "filters[" + std::to_string(i) + "]";
      FilterSpec fs;
      if (f.is_string())
        fs.name = f.get<std::string>();
      else if (f.is_object() && f.contains("name") && f["name"].is_string()) {
        fs.name = f["name"].get<std::string>();
        if (f.contains("config")) fs.config_json = f["config"].dump();
      } else
        return c.fail(field, "expected a filter name or {\"name\": ..., \"config\": {...}}");
      if (!valid_route_name(fs.name)) return c.fail(field + ".name", "not a valid filter name");
      r.filters.push_back(fs);
    }
  }
  if (j.contains("upstream_proto")) {
    const json& v = j["upstream_proto"];
    if (!v.is_string() || (v.get<std::string>() != "http/1.1" && v.get<std::string>() != "h2"))
      return c.fail("upstream_proto", "expected \"http/1.1\" or \"h2\"");
    r.upstream_proto = v.get<std::string>();
  }
  if (r.upstream_proto == "h2")
    for (auto& u : r.upstreams) u.h2 = true;
  // One protocol per route: a retry or a balancer's choice goes to any of its peers with the same request.
  for (size_t i = 1; i < r.upstreams.size(); i++)
    if (r.upstreams[i].h2 != r.upstreams[0].h2 || r.upstreams[i].grpc != r.upstreams[0].grpc)
      return c.fail("upstreams[" + std::to_string(i) + "].url",
                    "'" + r.upstreams[i].url + "': a route's upstreams all speak one protocol (" +
                        r.upstreams[0].url.substr(0, r.upstreams[0].url.find("://")) + ":// here)");
  if (r.passthrough) {
    // px never sees inside a passthrough route's connections: what works on requests cannot apply.
    const char* http_only[] = {"path",          "strip_path",      "filters",        "upstream_tls",
                               "max_body_size", "read_timeout_ms", "upstream_proto", "cache"};
    for (const char* k : http_only)
      if (j.contains(k) && !(k == std::string_view("path") && r.path == "/") &&
          !(k == std::string_view("strip_path") && !r.strip_path) &&
          !(k == std::string_view("filters") && r.filters.empty()) &&
          !(k == std::string_view("max_body_size") && r.max_body_size == -1) &&
          !(k == std::string_view("read_timeout_ms") && r.read_timeout_ms == 0) &&
          !(k == std::string_view("upstream_proto") && r.upstream_proto == "http/1.1") &&
          !(k == std::string_view("cache") && !r.cache.enabled))
        return c.fail(k, "does not apply to a passthrough route (px relays its TLS bytes without reading them)");
    if (r.tls != "off")
      return c.fail("tls", "a passthrough route's upstream terminates TLS itself: px holds no certificate for it");
  }
  *out = std::move(r);
  return true;
}

std::string route_to_json(const RouteSpec& r) {
  json j;
  j["name"] = r.name;
  j["hosts"] = r.hosts;
  j["path"] = r.path;
  j["strip_path"] = r.strip_path;
  json ups = json::array();
  for (const auto& u : r.upstreams) ups.push_back({{"url", u.url}, {"weight", u.weight}});
  j["upstreams"] = ups;
  j["lb"] = balance_name(r.lb);
  j["enabled"] = r.enabled;
  if (r.tls != "off") j["tls"] = r.tls;
  if (!r.access_log) j["access_log"] = false;
  if (r.passthrough) j["passthrough"] = true;
  if (r.upstream_proto != "http/1.1") j["upstream_proto"] = r.upstream_proto;
  if (r.record.count) j["record"] = {{"count", r.record.count}, {"mask", r.record.mask}, {"id", r.record.id}};
  j["connect_timeout_ms"] = r.connect_timeout_ms;
  j["read_timeout_ms"] = r.read_timeout_ms;
  j["max_body_size"] = r.max_body_size;
  if (r.health.enabled) j["health_check"] = fields::health_check_json(r.health, true);
  if (!(r.cache == CacheSpec())) j["cache"] = cache_json(r.cache);
  json fl = json::array();
  for (const auto& f : r.filters) fl.push_back({{"name", f.name}, {"config", json::parse(f.config_json)}});
  j["filters"] = fl;
  bool any_tls = false;
  for (const auto& u : r.upstreams) any_tls = any_tls || u.tls;
  if (any_tls || !(r.upstream_tls == UpstreamTlsSpec())) {
    json t = {{"verify", r.upstream_tls.verify}};
    if (!r.upstream_tls.ca_file.empty()) t["ca_file"] = r.upstream_tls.ca_file;
    if (!r.upstream_tls.sni.empty()) t["sni"] = r.upstream_tls.sni;
    if (!r.upstream_tls.client_cert.empty()) t["client_cert"] = r.upstream_tls.client_cert;
    j["upstream_tls"] = t;
  }
  j["version"] = r.version;
  return j.dump();
}

}  // namespace px::route
