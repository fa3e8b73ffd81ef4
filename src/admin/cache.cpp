// pxctl cache purge and cache stats (admin/model.h): purges are records in the store (cache:purge:<route>, which
// every pxd applies as it meets the stored responses they name); stats are what each pxd last wrote beside its
// status file.
#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>

#include "admin/model.h"
#include "admin/txn.h"
#include "route/route.h"
#include "store/keys.h"

namespace px::admin {

namespace {
constexpr size_t kMaxPurges = 64;  // per route; older ones fold into one that covers them all
}

Result Admin::cache_purge(const json& body, const std::string& who) {
  if (!body.is_object()) return Result::error(400, "", "expected a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "route" && it.key() != "path" && it.key() != "all")
      return Result::error(422, it.key(), "unknown field");
  if (!body.contains("route") || !body["route"].is_string() ||
      !route::valid_route_name(body["route"].get<std::string>()))
    return Result::error(422, "route", "required, a route name");
  std::string name = body["route"].get<std::string>();
  bool all = body.contains("all") && body["all"].is_boolean() && body["all"].get<bool>();
  if (body.contains("all") && !body["all"].is_boolean()) return Result::error(422, "all", "expected true or false");
  std::string pattern = "*";
  if (body.contains("path")) {
    if (all) return Result::error(422, "path", "give a path or all, not both");
    if (!body["path"].is_string()) return Result::error(422, "path", "expected a string");
    pattern = body["path"].get<std::string>();
    if (pattern.empty() || pattern[0] != '/' || pattern.size() > 2048)
      return Result::error(422, "path", "expected a path starting with '/' ('*' matches any run of characters)");
    for (unsigned char ch : pattern)
      if (ch <= 0x20 || ch >= 0x7f) return Result::error(422, "path", "no spaces or control characters");
  } else if (!all) {
    return Result::error(422, "path", "required (or \"all\": true)");
  }
  return in_txn(st_, [&](Tx& tx) {
    json r;
    bool found;
    if (!tx.load(store::keys::route(name), &r, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "route", "no route named '" + name + "'"));
    if (!r.is_object() || !r.contains("cache") ||
        !(r["cache"].is_boolean() ? r["cache"].get<bool>()
                                  : r["cache"].is_object() && r["cache"].value("enabled", true)))
      return tx.fail(
          Result::error(409, "route", "route '" + name + "' has no cache (pxctl route set " + name + " --cache on)"));
    json rec;
    if (!tx.load(store::keys::cache_purge(name), &rec, &found)) return false;
    if (!found || !rec.is_object() || !rec.contains("purges") || !rec["purges"].is_array())
      rec = {{"purges", json::array()}};
    int64_t now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    json& ps = rec["purges"];
    if (pattern == "*") ps = json::array();  // everything before now: the older purges say nothing more
    ps.push_back({{"pattern", pattern}, {"at", now}});
    if (ps.size() > kMaxPurges) {  // the oldest two become one purge of everything before the newer of them
      int64_t at = ps[1]["at"].get<int64_t>();
      ps.erase(ps.begin(), ps.begin() + 2);
      ps.insert(ps.begin(), json{{"pattern", "*"}, {"at", at}});
    }
    if (!tx.w.put(store::keys::cache_purge(name), rec.dump(), tx.err)) return false;
    json after = {{"route", name}, {"pattern", pattern}, {"at", now}};
    if (!tx.audit(who, "cache.purge", "route/" + name, nullptr, after)) return false;
    tx.res.status = 202;
    tx.res.body = after;
    return true;
  });
}

Result cache_stats(const std::vector<std::string>& files, const std::string& route) {
  json pxds = json::array();
  for (const auto& f : files) {
    json s = pxd_status(f);
    if (!s.value("running", false)) continue;
    std::ifstream in(f + ".cache");
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    json c = json::parse(ss.str(), nullptr, false);
    if (!c.is_object()) continue;
    if (!route.empty()) {
      json one = c.contains("routes") && c["routes"].contains(route) ? c["routes"][route] : json::object();
      c.erase("routes");
      c["route"] = route;
      c["requests"] = one;
    }
    c["status_file"] = f;
    pxds.push_back(c);
  }
  Result r;
  if (pxds.empty())
    return Result::error(503, "", "no running pxd has a cache to report (pxd.conf cache_dir, status_file)");
  r.body = {{"pxd", pxds}};
  return r;
}

}  // namespace px::admin
