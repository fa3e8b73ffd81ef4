#include "route/stream.h"

#include <nlohmann/json.hpp>

#include "core/strings.h"
#include "net/cidr.h"
#include "route/json_fields.h"

namespace px::route {

using json = nlohmann::json;

namespace {

using fields::fail;
using fields::get_duration_ms;
using fields::get_size;
using fields::get_uint;

bool is_any(const std::string& h) { return h == "0.0.0.0" || h == "::"; }

}  // namespace

std::string StreamListen::str() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool StreamListen::overlaps(const StreamListen& o) const {
  if (udp != o.udp || port != o.port) return false;
  if (host == o.host) return true;
  bool v6 = host.find(':') != std::string::npos, ov6 = o.host.find(':') != std::string::npos;
  // A wildcard covers its family (and [::] covers IPv4 too, unless the socket is v6-only: assume not).
  if (host == "::" || o.host == "::") return true;
  if (is_any(host) && !ov6) return true;
  if (is_any(o.host) && !v6) return true;
  return false;
}

bool parse_stream_listen(std::string_view text, StreamListen* out, std::string* error) {
  StreamListen l;
  std::string_view t = text;
  size_t slash = t.rfind('/');
  if (slash != std::string_view::npos) {
    std::string_view proto = t.substr(slash + 1);
    if (proto == "udp")
      l.udp = true;
    else if (proto != "tcp") {
      *error = "'" + std::string(text) + "': the protocol after '/' is tcp or udp";
      return false;
    }
    t = t.substr(0, slash);
  }
  size_t colon = t.rfind(':');
  if (colon == std::string_view::npos) {
    *error = "'" + std::string(text) + "': expected ADDRESS:PORT (e.g. 0.0.0.0:5432, [::]:53/udp)";
    return false;
  }
  std::string_view host = t.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  net::IpAddr ip;
  if (!net::IpAddr::parse(host, &ip)) {
    *error = "'" + std::string(text) + "': the address must be numeric (IPv4, or IPv6 in brackets)";
    return false;
  }
  uint64_t port = 0;
  if (!parse_u64(t.substr(colon + 1), &port) || port < 1 || port > 65535) {
    *error = "'" + std::string(text) + "': the port must be 1..65535";
    return false;
  }
  l.host = std::string(host);
  l.port = static_cast<uint16_t>(port);
  *out = l;
  return true;
}

bool parse_stream_json(std::string_view text, StreamSpec* out, std::string* error) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(error, "stream", "not valid JSON");
  if (!j.is_object()) return fail(error, "stream", "expected a JSON object");
  if (!fields::only_known(j,
                          {"name", "listen", "protocol", "upstreams", "lb", "enabled", "connect_timeout_ms",
                           "idle_timeout_ms", "max_lifetime_ms", "max_connections", "rate_bytes_per_s", "acl",
                           "proxy_protocol", "accept_proxy", "tls", "hosts", "health_check", "access_log", "version"},
                          error))
    return false;
  StreamSpec s;
  if (!j.contains("name") || !j["name"].is_string()) return fail(error, "name", "required, a string");
  s.name = j["name"].get<std::string>();
  if (!valid_route_name(s.name)) return fail(error, "name", "1 to 64 characters of letters, digits, '.', '_', '-'");
  if (!j.contains("listen") || !j["listen"].is_string())
    return fail(error, "listen", "required, ADDRESS:PORT (e.g. 0.0.0.0:5432, 0.0.0.0:53/udp)");
  std::string err;
  if (!parse_stream_listen(j["listen"].get<std::string>(), &s.listen, &err)) return fail(error, "listen", err);
  if (j.contains("protocol")) {
    if (!j["protocol"].is_string() || (j["protocol"] != "tcp" && j["protocol"] != "udp"))
      return fail(error, "protocol", "tcp or udp");
    bool udp = j["protocol"] == "udp";
    if (j["listen"].get<std::string>().find('/') != std::string::npos && udp != s.listen.udp)
      return fail(error, "protocol", "differs from the one in listen");
    s.listen.udp = udp;
  }
  const char* scheme = s.listen.udp ? "udp://" : "tcp://";
  if (!j.contains("upstreams") || !j["upstreams"].is_array() || j["upstreams"].empty())
    return fail(error, "upstreams", "required, a non-empty array");
  if (j["upstreams"].size() > 64) return fail(error, "upstreams", "at most 64 peers per stream");
  for (size_t i = 0; i < j["upstreams"].size(); i++) {
    const json& u = j["upstreams"][i];
    std::string field = "upstreams[" + std::to_string(i) + "]";
    std::string url;
    if (u.is_string())
      url = u.get<std::string>();
    else if (u.is_object() && u.contains("url") && u["url"].is_string())
      url = u["url"].get<std::string>();
    else
      return fail(error, field, "expected a URL string or {\"url\": ..., \"weight\": ...}");
    if (url.rfind(scheme, 0) != 0)
      return fail(
          error, field + ".url",
          "'" + url + "': a " + (s.listen.udp ? "UDP" : "TCP") + " stream's upstreams are " + scheme + "HOST:PORT");
    // The host and port are checked as an http:// URL's would be (a port is required here).
    std::string rest = url.substr(6);
    if (rest.find('/') != std::string::npos || rest.rfind(':') == std::string::npos || rest.back() == ']')
      return fail(error, field + ".url", "'" + url + "': expected " + scheme + "HOST:PORT");
    UpstreamSpec hs;
    if (!parse_upstream_url("http://" + rest, &hs, &err)) {
      size_t q = err.find("': ");
      return fail(error, field + ".url", "'" + url + "'" + (q == std::string::npos ? ": " + err : err.substr(q + 1)));
    }
    StreamUpstream su;
    su.host = hs.host;
    su.port = hs.port;
    su.url = scheme + (hs.host.find(':') != std::string::npos ? "[" + hs.host + "]" : hs.host) + ":" +
             std::to_string(hs.port);
    if (u.is_object() && !fields::upstream_weight(u, field, &su.weight, error)) return false;
    s.upstreams.push_back(su);
  }
  if (j.contains("lb")) {
    std::string lb = j["lb"].is_string() ? j["lb"].get<std::string>() : "";
    if (lb == "round_robin")
      s.lb = StreamBalance::round_robin;
    else if (lb == "least_conn")
      s.lb = StreamBalance::least_conn;
    else if (lb == "hash")
      s.lb = StreamBalance::hash;
    else
      return fail(error, "lb", "one of round_robin, least_conn, hash");
  }
  if (j.contains("enabled")) {
    if (!j["enabled"].is_boolean()) return fail(error, "enabled", "expected true or false");
    s.enabled = j["enabled"].get<bool>();
  }
  if (j.contains("access_log")) {
    if (!j["access_log"].is_boolean()) return fail(error, "access_log", "expected true or false");
    s.access_log = j["access_log"].get<bool>();
  }
  const uint64_t day = 86400000;
  if (!get_duration_ms(j, "connect_timeout_ms", &s.connect_timeout_ms, day, error)) return false;
  if (!get_duration_ms(j, "idle_timeout_ms", &s.idle_timeout_ms, 7 * day, error)) return false;
  if (!get_duration_ms(j, "max_lifetime_ms", &s.max_lifetime_ms, 365 * day, error)) return false;
  if (!get_uint(j, "max_connections", &s.max_connections, 10000000, error)) return false;
  if (!get_size(j, "rate_bytes_per_s", &s.rate_bytes_per_s, UINT64_MAX, error)) return false;
  if (!get_uint(j, "version", &s.version, UINT64_MAX, error)) return false;
  if (j.contains("acl")) {
    if (!j["acl"].is_string() || !valid_route_name(j["acl"].get<std::string>()))
      return fail(error, "acl", "expected the name of an access list");
    s.acl = j["acl"].get<std::string>();
  }
  if (j.contains("proxy_protocol")) {
    std::string p = j["proxy_protocol"].is_string() ? j["proxy_protocol"].get<std::string>() : "";
    if (p == "off")
      s.proxy_protocol = ProxyProtocol::off;
    else if (p == "v1")
      s.proxy_protocol = ProxyProtocol::v1;
    else if (p == "v2")
      s.proxy_protocol = ProxyProtocol::v2;
    else
      return fail(error, "proxy_protocol", "one of off, v1, v2");
    if (s.listen.udp && s.proxy_protocol == ProxyProtocol::v1)
      return fail(error, "proxy_protocol", "v1 carries TCP only: use v2 for a UDP stream");
  }
  if (j.contains("accept_proxy")) {
    if (!j["accept_proxy"].is_boolean()) return fail(error, "accept_proxy", "expected true or false");
    s.accept_proxy = j["accept_proxy"].get<bool>();
    if (s.accept_proxy && s.listen.udp)
      return fail(error, "accept_proxy", "PROXY headers are read on TCP streams only");
  }
  if (j.contains("hosts")) {
    if (!j["hosts"].is_array()) return fail(error, "hosts", "expected an array of hostnames");
    for (size_t i = 0; i < j["hosts"].size(); i++) {
      std::string field = "hosts[" + std::to_string(i) + "]", norm;
      if (!j["hosts"][i].is_string()) return fail(error, field, "expected a string");
      if (!normalize_hostname(j["hosts"][i].get<std::string>(), &norm, &err)) return fail(error, field, err);
      s.hosts.push_back(norm);
    }
  }
  if (j.contains("tls")) {
    std::string v = j["tls"].is_string() ? j["tls"].get<std::string>() : "";
    if (v != "auto" && v != "off" && !valid_route_name(v))
      return fail(error, "tls", "expected \"auto\", \"off\" or the name of a stored certificate");
    if (v != "off" && s.listen.udp) return fail(error, "tls", "TLS is for TCP streams (DTLS is not supported)");
    if (v == "auto" && s.hosts.empty()) return fail(error, "hosts", "\"tls\": \"auto\" needs the names to certify");
    s.tls = v;
  }
  if (j.contains("health_check")) {
    if (s.listen.udp) return fail(error, "health_check", "active checks are TCP connects: not for UDP streams");
    if (!fields::health_check(j["health_check"], false, &s.health, error)) return false;
  }
  *out = std::move(s);
  return true;
}

std::string stream_to_json(const StreamSpec& s) {
  static const char* lbs[] = {"round_robin", "least_conn", "hash"};
  static const char* pps[] = {"off", "v1", "v2"};
  json j;
  j["name"] = s.name;
  j["listen"] = s.listen.str();
  j["protocol"] = s.listen.udp ? "udp" : "tcp";
  json ups = json::array();
  for (const auto& u : s.upstreams) ups.push_back({{"url", u.url}, {"weight", u.weight}});
  j["upstreams"] = ups;
  j["lb"] = lbs[static_cast<int>(s.lb)];
  j["enabled"] = s.enabled;
  j["connect_timeout_ms"] = s.connect_timeout_ms;
  j["idle_timeout_ms"] = s.idle_timeout_ms;
  j["max_lifetime_ms"] = s.max_lifetime_ms;
  j["max_connections"] = s.max_connections;
  j["rate_bytes_per_s"] = s.rate_bytes_per_s;
  if (!s.acl.empty()) j["acl"] = s.acl;
  j["proxy_protocol"] = pps[static_cast<int>(s.proxy_protocol)];
  if (s.accept_proxy) j["accept_proxy"] = true;
  if (s.tls != "off") j["tls"] = s.tls;
  if (!s.hosts.empty()) j["hosts"] = s.hosts;
  if (s.health.enabled) j["health_check"] = fields::health_check_json(s.health, false);
  if (!s.access_log) j["access_log"] = false;
  j["version"] = s.version;
  return j.dump();
}

}  // namespace px::route
