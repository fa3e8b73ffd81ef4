// pxctl trace, pxadmind's side (observe/trace.h draws the whole path): tokens
// signed with each running pxd's trace key, and the records pxd wrote.
#include <openssl/rand.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "admin/model.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/client.h"
#include "observe/trace.h"

namespace px::admin {

Result route_records(const std::vector<std::string>& status_files, const std::string& route) {
  json out = json::array();
  if (route.empty() || route.find('/') != std::string::npos || route[0] == '.')
    return Result::error(404, "name", "no route named '" + route + "'");
  for (const auto& f : status_files) {
    std::ifstream in(f + ".records/" + route + ".jsonl");
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object()) out.push_back(std::move(j));
    }
  }
  Result r;
  r.body = {{"route", route}, {"records", out}};
  return r;
}

Result create_trace(const std::vector<std::string>& status_files, const std::string& who) {
  uint8_t raw[16];
  RAND_bytes(raw, sizeof raw);
  std::string id = to_hex(raw, sizeof raw);
  int64_t expires = time(nullptr) + 60;
  std::string token, err;
  for (const auto& f : status_files) {
    json s = pxd_status(f);
    if (!s["running"].get<bool>()) continue;
    proxy::TraceKey key;
    if (!proxy::trace_key_file(f + ".trace-key", false, &key, &err)) continue;
    token += (token.empty() ? "" : ",") + proxy::trace_token(key, id, expires);
  }
  if (token.empty())
    return Result::error(409, "", "no running pxd to trace through" + (err.empty() ? std::string() : ": " + err));
  PX_INFO("%s: trace %s issued", who.c_str(), id.c_str());
  Result r;
  r.status = 201;
  r.body = {{"id", id}, {"header", "X-Px-Trace"}, {"token", token}, {"expires", expires}};
  return r;
}

Result take_trace(const std::vector<std::string>& status_files, const std::string& id) {
  bool ok = !id.empty() && id.size() <= 32;
  for (char c : id) ok = ok && isxdigit(static_cast<unsigned char>(c));
  if (!ok) return Result::error(400, "id", "expected the hexadecimal id POST /v1/traces gave");
  for (const auto& f : status_files) {
    std::string path = f + ".traces/" + id + ".json";
    std::ifstream in(path);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    ::unlink(path.c_str());
    Result r;
    r.body = json::parse(ss.str(), nullptr, false);
    if (r.body.is_discarded()) return Result::error(500, "", path + ": not JSON");
    return r;
  }
  return Result::error(404, "id", "no record for trace " + id + " (yet: pxd writes it when the request ends)");
}

// ---- live traffic for the dashboard ----

namespace {
// GET /metrics from a pxd's metrics listener (on this host), through the project's HTTP client on a loop
// of its own, waiting at most a second; "" on failure.
std::string fetch_metrics(std::string addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  http::ClientRequest rq;
  rq.url = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port + "/metrics";
  rq.user_agent = "pxadmind/" PX_VERSION;
  http::ClientResponse resp = http::Client::fetch_now(std::move(rq), [](http::Client& c) {
    c.timeout_ms = 1000;
    c.max_body = 64u << 20;
  });
  return resp.status == 200 ? std::move(resp.body) : "";
}

// A label's value in a Prometheus sample's label set ("" when absent).
std::string label(std::string_view labels, std::string_view name) {
  std::string key = std::string(name) + "=\"";
  size_t at = labels.find(key);
  if (at == std::string_view::npos || (at > 0 && labels[at - 1] != '{' && labels[at - 1] != ',')) return "";
  size_t start = at + key.size(), end = labels.find('"', start);
  return end == std::string_view::npos ? "" : std::string(labels.substr(start, end - start));
}
}  // namespace

Result traffic(const std::vector<std::string>& status_files) {
  json routes = json::object();
  int read = 0;
  for (const auto& f : status_files) {
    json s = pxd_status(f);
    if (!s.value("running", false) || !s.contains("metrics") || !s["metrics"].is_string()) continue;
    std::string text = fetch_metrics(s["metrics"].get<std::string>());
    if (text.empty()) continue;
    read++;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("px_requests_total{", 0) != 0) continue;
      size_t close = line.find("} ");
      if (close == std::string::npos) continue;
      std::string_view labels(line.data(), close + 1);
      double v = std::strtod(line.c_str() + close + 2, nullptr);
      std::string route = label(labels, "route");
      json& r = routes[route.empty() ? "(none)" : route];
      if (!r.is_object()) r = {{"requests", 0.0}, {"errors", 0.0}};
      r["requests"] = r["requests"].get<double>() + v;
      if (label(labels, "code") == "5xx") r["errors"] = r["errors"].get<double>() + v;
    }
  }
  Result r;
  int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  r.body = {{"time_ms", now_ms}, {"pxd_read", read}, {"routes", routes}};
  return r;
}

}  // namespace px::admin
