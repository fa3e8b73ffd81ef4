// Built-in filters run in C++ (engine.h: NativeLimit). The Lua file stays the filter's definition: its
// prepare checks and shapes the config, and what it prepared is read here when a snapshot is installed. A
// route's request phase runs here only when every filter of it is a built-in (loaded from px's own filter
// directory, not an operator's copy) whose prepared config says it can (`native`); traced requests and
// requests whose headers an earlier phase edited take the Lua path, which behaves the same.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/log.h"
#include "http/parser.h"
#include "lua/internal.h"
#include "route/snapshot.h"

namespace px::lua {

namespace {
double field_number(lua_State* L, int t, const char* k, double dflt) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}
std::string field_string(lua_State* L, int t, const char* k) {
  lua_getfield(L, t, k);
  std::string v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  lua_pop(L, 1);
  return v;
}
bool field_true(lua_State* L, int t, const char* k) {
  lua_getfield(L, t, k);
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

// rate_limit's prepared config (filters/rate_limit.lua): rate, burst, delay, zone, status, dry_run, and
// `native` = { key = "client" | "route" | "header", header = NAME } when the key is not an expression.
bool read_rate_limit(lua_State* L, int conf, NativeLimit* out) {
  lua_getfield(L, conf, "native");
  int nat = lua_gettop(L);
  bool ok = lua_istable(L, nat);
  if (ok) {
    std::string key = field_string(L, nat, "key");
    out->header = field_string(L, nat, "header");
    if (key == "client")
      out->key = NativeLimit::kClient;
    else if (key == "route")
      out->key = NativeLimit::kRoute;
    else if (key == "header" && !out->header.empty())
      out->key = NativeLimit::kHeader;
    else
      ok = false;
  }
  lua_pop(L, 1);
  double rate = field_number(L, conf, "rate", 0);
  out->zone = field_string(L, conf, "zone");
  if (!ok || !(rate > 0 && rate <= 1e9) || out->zone.empty()) return false;
  out->interval = std::max<uint64_t>(1, static_cast<uint64_t>(1e9 / rate));  // as px.limit
  out->burst = static_cast<uint64_t>(field_number(L, conf, "burst", 0));
  out->delay = std::min(out->burst, static_cast<uint64_t>(field_number(L, conf, "delay", 0)));
  out->status = static_cast<int>(field_number(L, conf, "status", 429));
  out->dry_run = field_true(L, conf, "dry_run");
  return true;
}
}  // namespace

void Engine::bind_native(size_t i) {
  static const std::string builtin = builtin_filters_dir() + "/";
  int top = lua_gettop(L_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, phase_fns_ref_);
  lua_pushinteger(L_, static_cast<lua_Integer>(i));
  lua_pushinteger(L_, kRequest);
  lua_call(L_, 2, 1);
  std::vector<NativeLimit> chain;
  int n = lua_istable(L_, -1) ? static_cast<int>(lua_objlen(L_, -1)) : 0;
  for (int k = 1; k <= n; k++) {
    lua_rawgeti(L_, top + 1, k);
    int f = lua_gettop(L_);
    std::string name = field_string(L_, f, "name");
    auto info = std::find_if(infos_.begin(), infos_.end(), [&](const FilterInfo& fi) { return fi.name == name; });
    lua_getfield(L_, f, "prefix");
    bool prefixed = !lua_isnil(L_, -1);
    lua_getfield(L_, f, "conf");
    NativeLimit nl;
    bool ok = name == "rate_limit" && !prefixed && info != infos_.end() && info->path.starts_with(builtin) &&
              lua_istable(L_, -1) && read_rate_limit(L_, lua_gettop(L_), &nl);
    lua_settop(L_, top + 1);
    if (!ok) {
      chain.clear();
      break;
    }
    auto st = std::find_if(native_stats_.begin(), native_stats_.end(), [&](const auto& e) { return e.first == name; });
    if (st == native_stats_.end()) st = native_stats_.insert(native_stats_.end(), {name, FilterStat{}});
    nl.stat = static_cast<size_t>(st - native_stats_.begin());
    chain.push_back(std::move(nl));
  }
  lua_settop(L_, top);
  native_[i] = std::move(chain);
}

// rate_limit, as filters/rate_limit.lua's request function does it: the key; no key, no limit; the bucket;
// a refusal (429 with Retry-After), or a wait (px.delay's), or nothing; dry_run logs and lets through.
Verdict Engine::run_native(const std::vector<NativeLimit>& chain, size_t from, RequestView& v) {
  FilterState& fs = *v.fs;
  for (size_t i = from; i < chain.size(); i++) {
    const NativeLimit& c = chain[i];
    uint64_t t0 = timing_ ? now_ns() : 0;
    std::string_view key;
    switch (c.key) {
      case NativeLimit::kClient:
        key = {reinterpret_cast<const char*>(v.client_ip.b.data()), v.client_ip.b.size()};
        break;
      case NativeLimit::kRoute: key = "*"; break;
      case NativeLimit::kHeader: {
        int h = v.req->find(c.header);
        if (h >= 0) key = v.req->value(static_cast<size_t>(h));
        break;
      }
    }
    Verdict out = Verdict::next;
    if (!key.empty()) {
      SharedTable::Verdict b = limit_bucket(c.zone, key, c.interval, c.burst, c.delay);
      if (!b.ok && c.dry_run) {
        std::string who = c.key == NativeLimit::kClient ? v.client_ip.str() : std::string(key);
        PX_INFO("filter (route %s, phase request): rate_limit: would refuse %s (dry run)",
                v.route ? v.route->spec.name.c_str() : "-", who.c_str());
      } else if (!b.ok) {
        uint64_t retry = std::max<uint64_t>(1, (b.wait + 999999999) / 1000000000);
        fs.respond_status = c.status;
        fs.respond_headers.clear();
        fs.respond_headers.emplace_back("Retry-After", std::to_string(retry));
        fs.respond_headers.emplace_back("Content-Type", "text/plain");
        fs.respond_body = "too many requests\n";
        out = Verdict::answered;
      } else if (b.wait > 0 && !c.dry_run) {
        fs.wait = FilterState::kSleep;
        fs.wait_ms = (b.wait + 500000) / 1000000;
        fs.native_next = static_cast<int>(i + 1);
        out = Verdict::wait;
      }
    }
    if (timing_) {
      FilterStat& s = native_stats_[c.stat].second;
      s.calls++;
      s.seconds += static_cast<double>(now_ns() - t0) / 1e9;
      if (out == Verdict::answered) s.answers++;
    }
    if (out != Verdict::next) return out;
  }
  return Verdict::next;
}

}  // namespace px::lua
