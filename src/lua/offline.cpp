// pxctl filter test: a route's filter run offline, with px's real engine and phases, over recorded requests.
#include <nlohmann/json.hpp>

#include <sstream>

#include "daemon/config.h"
#include "http/parser.h"
#include "lua/internal.h"
#include "route/acl.h"
#include "route/route.h"
#include "route/snapshot.h"

namespace px::lua {

using json = nlohmann::json;

namespace {
// Parses a head written from a recorded request or response into h (its fields point into h.buf).
struct HeadOnly final : http::Sink {
  int on_head(http::Head&) override { return 0; }
  int on_body(const char*, size_t) override { return 0; }
  int on_complete() override { return kPause; }
};

bool parse_head(http::Kind kind, const std::string& text, http::Head* h, std::string* error) {
  HeadOnly sink;
  http::Limits limits;
  limits.max_head = 256 * 1024;
  limits.max_headers = 1000;
  limits.max_uri = 64 * 1024;
  http::Parser p;
  p.init(kind, &sink, &limits);
  p.attach(h);
  http::Parsed r = p.execute(text.data(), text.size());
  if (r != http::Parsed::ok && r != http::Parsed::paused) {
    *error = p.error_reason();
    return false;
  }
  return true;
}

// A recorded field list: an object {"Name": "value" | ["v1", "v2"]} or an array [["Name", "value"], ...].
bool fields(const json& j, std::string* out, std::string* error) {
  auto one = [&](const std::string& n, const json& v) {
    if (!v.is_string()) return false;
    out->append(n).append(": ").append(v.get<std::string>()).append("\r\n");
    return true;
  };
  if (j.is_null()) return true;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.value().is_array()) {
        for (const auto& v : it.value())
          if (!one(it.key(), v)) return *error = "header values must be strings", false;
      } else if (!one(it.key(), it.value())) {
        return *error = "header values must be strings", false;
      }
    }
    return true;
  }
  if (j.is_array()) {
    for (const auto& f : j)
      if (!f.is_array() || f.size() != 2 || !f[0].is_string() || !one(f[0].get<std::string>(), f[1]))
        return *error = "headers must be an object, or a list of [name, value]", false;
    return true;
  }
  *error = "headers must be an object, or a list of [name, value]";
  return false;
}

json edits_json(const std::vector<HeaderEdit>& edits) {
  static const char* modes[] = {"set", "add", "remove"};
  json out = json::array();
  for (const auto& e : edits) {
    json x = {{"op", modes[e.mode]}, {"name", e.name}};
    if (e.mode != 2) x["value"] = e.value;
    out.push_back(x);
  }
  return out;
}

json answer_json(const FilterState& fs) {
  json h = json::array();
  for (const auto& [n, v] : fs.respond_headers) h.push_back({n, v});
  return {{"status", fs.respond_status}, {"headers", h}, {"body", fs.respond_body}};
}
}  // namespace

std::string test_filter(const std::string& filter, const std::string& config_json, const std::string& requests,
                        std::string* error) {
  Config cfg;
  std::string name = filter;
  if (filter.size() > 4 && filter.ends_with(".lua")) {
    size_t slash = filter.rfind('/');
    cfg.filters_dir = slash == std::string::npos ? "." : filter.substr(0, slash);
    name = filter_name(filter);
  }
  cfg.lua_phase_budget_ms = 2000;
  Engine eng;
  if (!eng.init(cfg, nullptr, error)) return "";
  bool found = false;
  for (const auto& f : eng.filters())
    if (f.name == name) {
      if (!f.ok) return *error = f.path + ": " + f.error, "";
      found = true;
    }
  if (!found) return *error = "no filter named '" + name + "' (a built-in, or a path to a .lua file)", "";
  json conf = json::parse(config_json.empty() ? "{}" : config_json, nullptr, false);
  if (!conf.is_object()) return *error = "--config: expected a JSON object", "";
  for (const auto& f : eng.filters()) {  // the config is checked as pxadmind checks it before a write
    std::string src;
    if (f.name != name || !read_source(f.path, &src)) continue;
    ConfigCheck c = check_config(f.path, src, conf.dump(), lua_dir());
    if (!c.error.empty()) return *error = "--config" + (c.key.empty() ? "" : "." + c.key) + ": " + c.error, "";
  }
  json route = {{"name", "offline"},
                {"hosts", {"offline.test"}},
                {"upstreams", {"http://127.0.0.1:9"}},
                {"filters", {{{"name", name}, {"config", conf}}}}};
  route::RouteSpec spec;
  if (!route::parse_route_json(route.dump(), &spec, error)) return "";
  std::vector<route::RouteSpec> specs{spec};
  auto snap = route::Snapshot::build(
      1, std::move(specs), cfg,
      [](const std::string&, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
        auto* in = reinterpret_cast<sockaddr_in*>(ss);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *in;
        return true;
      },
      nullptr);
  std::vector<uint16_t> masks;
  eng.install(*snap, &masks);
  if (masks.empty() || (masks[0] & kMissingFilter))
    return *error = "filter '" + name + "' refused this config (see the message above)", "";
  const route::Route* r = snap->routes()[0].get();
  route::AuthCache auth;
  std::ostringstream out;
  std::istringstream in(requests);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    n++;
    json rq = json::parse(line, nullptr, false);
    std::string where = "request " + std::to_string(n) + ": ";
    if (!rq.is_object()) return *error = where + "not a JSON object", "";
    std::string method = rq.value("method", "GET"), target = rq.value("uri", rq.value("target", "/"));
    std::string host = rq.value("host", "offline.test"), client = rq.value("client", "127.0.0.1");
    std::string text = method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n";
    std::string ferr;
    if (!fields(rq.contains("headers") ? rq["headers"] : json(), &text, &ferr)) return *error = where + ferr, "";
    text += "\r\n";
    http::Head req, resp;
    if (!parse_head(http::Kind::request, text, &req, &ferr)) return *error = where + "not a valid request: " + ferr, "";
    json rj = rq.contains("response") ? rq["response"] : json::object();
    int status = rj.is_object() ? rj.value("status", 200) : 200;
    std::string rtext = "HTTP/1.1 " + std::to_string(status) + " X\r\n";
    if (!fields(rj.is_object() && rj.contains("headers") ? rj["headers"] : json(), &rtext, &ferr))
      return *error = where + "response: " + ferr, "";
    rtext += "\r\n";
    if (!parse_head(http::Kind::response, rtext, &resp, &ferr))
      return *error = where + "not a valid response: " + ferr, "";

    RequestView v;
    v.req = &req;
    v.uri = req.url();
    v.host = host;
    if (!net::IpAddr::parse(client, &v.client_ip)) return *error = where + "client: not an IP address", "";
    v.tls = rq.value("tls", false);
    v.route = r;
    v.snap = snap.get();
    v.auth_cache = &auth;
    static const std::string id = "offline";
    v.request_id = [](void*) { return std::string_view(id); };
    json phases = json::array();
    bool answered = false;
    for (Phase p : {kRequest, kPeer, kUpstreamRequest, kResponse, kLogging}) {
      if (!(masks[0] & (1 << p))) continue;
      if (answered && (p == kPeer || p == kUpstreamRequest)) continue;
      v.resp = p >= kResponse && !answered ? &resp : nullptr;
      v.status = p >= kResponse ? (answered ? v.fs->respond_status : status) : 0;
      json ph = {{"phase", phase_name(p)}};
      json waits = json::array();
      Verdict vd = eng.run(p, static_cast<int>(r->index), v);
      while (vd == Verdict::wait) {  // offline: nothing is waited for or called
        FilterState& fs = *v.fs;
        if (fs.wait == FilterState::kSleep)
          waits.push_back({{"sleep_ms", fs.wait_ms}});
        else if (fs.wait == FilterState::kFetch)
          waits.push_back({{"fetch", fs.fetch.method + " " + fs.fetch.url}, {"answer", "none (offline)"}});
        else
          waits.push_back({{"reverse_dns", fs.fetch.url}, {"answer", "none (offline)"}});
        FetchResult none;
        none.error = "offline: pxctl filter test calls nothing";
        vd = eng.resume(p, v, fs.wait == FilterState::kSleep ? nullptr : &none);
      }
      if (!waits.empty()) ph["waits"] = waits;
      ph["verdict"] = vd == Verdict::answered ? "answered" : vd == Verdict::failed ? "error" : "next";
      if (vd == Verdict::answered) {
        ph["answer"] = answer_json(*v.fs);
        answered = true;
      }
      if (vd == Verdict::failed) answered = true, v.fs->respond_status = 500;
      phases.push_back(ph);
    }
    json res = {{"request", n}, {"method", method}, {"uri", target}, {"phases", phases}};
    if (v.fs) {
      if (!v.fs->req_edits.empty()) res["request_edits"] = edits_json(v.fs->req_edits);
      if (!v.fs->resp_edits.empty()) res["response_edits"] = edits_json(v.fs->resp_edits);
      if (v.fs->new_status) res["status_set"] = v.fs->new_status;
      if (v.fs->peer >= 0) res["peer"] = v.fs->peer + 1;
      res["result"] = answered ? (v.fs->respond_status ? "answered " + std::to_string(v.fs->respond_status)
                                                       : std::string("answered"))
                               : "upstream";
    } else {
      res["result"] = "upstream";
    }
    eng.done(v);
    out << res.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  return out.str();
}

}  // namespace px::lua
