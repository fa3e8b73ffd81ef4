// Built-in filters run in C++ (engine.h: NativeFilter): rate_limit and forward_auth. The Lua file stays the
// filter's definition: its prepare checks and shapes the config, and what it prepared is read here when a
// snapshot is installed. A route's request phase runs here only when every filter of it is a built-in
// (loaded from px's own filter directory, not an operator's copy) whose prepared config this covers; traced
// requests and requests whose headers an earlier phase edited take the Lua path, which behaves the same.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/log.h"
#include "core/strings.h"
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
bool read_rate_limit(lua_State* L, int conf, NativeFilter* out) {
  out->kind = NativeFilter::kRateLimit;
  lua_getfield(L, conf, "native");
  int nat = lua_gettop(L);
  bool ok = lua_istable(L, nat);
  if (ok) {
    std::string key = field_string(L, nat, "key");
    out->header = field_string(L, nat, "header");
    if (key == "client")
      out->key = NativeFilter::kClient;
    else if (key == "route")
      out->key = NativeFilter::kRoute;
    else if (key == "header" && !out->header.empty())
      out->key = NativeFilter::kHeader;
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
// A list of strings (t[k] at index `list`), each a field name a filter may send; false otherwise.
bool read_names(lua_State* L, int t, const char* k, std::vector<std::string>* out) {
  lua_getfield(L, t, k);
  bool ok = lua_istable(L, -1);
  for (int j = 1; ok; j++) {
    lua_rawgeti(L, -1, j);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      break;
    }
    ok = lua_type(L, -1) == LUA_TSTRING && field_name_ok(lua_tostring(L, -1));
    if (ok) out->emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return ok;
}

// forward_auth's prepared config (filters/forward_auth.lua): url, copy, timeout, ttl, opts.forward. Its cache
// (ttl above 0) stays in Lua.
bool read_forward_auth(lua_State* L, int conf, NativeFilter* out) {
  out->kind = NativeFilter::kForwardAuth;
  out->url = field_string(L, conf, "url");
  double timeout = field_number(L, conf, "timeout", 0);
  if (out->url.empty() || field_number(L, conf, "ttl", 0) != 0 || !(timeout > 0 && timeout <= 300)) return false;
  out->timeout_ms = static_cast<uint64_t>(timeout * 1000 + 0.5);
  if (!read_names(L, conf, "copy", &out->copy)) return false;
  lua_getfield(L, conf, "opts");
  bool ok = lua_istable(L, -1) && field_true(L, lua_gettop(L), "forwarded") &&
            read_names(L, lua_gettop(L), "forward", &out->forward);
  lua_pop(L, 1);
  return ok;
}

// The first value of a field of a fetch's answer (names case-insensitive); false when it has none.
bool answer_field(const FetchResult& r, std::string_view name, std::string_view* out) {
  if (r.head) {
    int i = r.head->find(name);
    if (i >= 0) *out = r.head->value(static_cast<size_t>(i));
    return i >= 0;
  }
  for (const auto& [n, val] : r.headers)
    if (iequals(n, name)) {
      *out = val;
      return true;
    }
  return false;
}

void respond_unavailable(FilterState& fs) {
  fs.respond_status = 503;
  fs.respond_headers.clear();
  fs.respond_headers.emplace_back("Content-Type", "text/plain");
  fs.respond_body = "authentication service unavailable\n";
}

const char* route_name(const RequestView& v) { return v.route ? v.route->spec.name.c_str() : "-"; }
}  // namespace

void Engine::bind_native(size_t i) {
  static const std::string builtin = builtin_filters_dir() + "/";
  int top = lua_gettop(L_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, phase_fns_ref_);
  lua_pushinteger(L_, static_cast<lua_Integer>(i));
  lua_pushinteger(L_, kRequest);
  lua_call(L_, 2, 1);
  std::vector<NativeFilter> chain;
  int n = lua_istable(L_, -1) ? static_cast<int>(lua_objlen(L_, -1)) : 0;
  for (int k = 1; k <= n; k++) {
    lua_rawgeti(L_, top + 1, k);
    int f = lua_gettop(L_);
    std::string name = field_string(L_, f, "name");
    auto info = std::find_if(infos_.begin(), infos_.end(), [&](const FilterInfo& fi) { return fi.name == name; });
    lua_getfield(L_, f, "prefix");
    bool prefixed = !lua_isnil(L_, -1);
    lua_getfield(L_, f, "conf");
    NativeFilter nl;
    bool ok = !prefixed && info != infos_.end() && info->path.starts_with(builtin) && lua_istable(L_, -1) &&
              (name == "rate_limit"     ? read_rate_limit(L_, lua_gettop(L_), &nl)
               : name == "forward_auth" ? read_forward_auth(L_, lua_gettop(L_), &nl)
                                        : false);
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

namespace {
// rate_limit, as filters/rate_limit.lua's request function does it: the key; no key, no limit; the bucket;
// a refusal (429 with Retry-After), or a wait (px.delay's), or nothing; dry_run logs and lets through.
Verdict rate_limit(const NativeFilter& c, size_t i, RequestView& v) {
  FilterState& fs = *v.fs;
  std::string_view key;
  switch (c.key) {
    case NativeFilter::kClient:
      key = {reinterpret_cast<const char*>(v.client_ip.b.data()), v.client_ip.b.size()};
      break;
    case NativeFilter::kRoute: key = "*"; break;
    case NativeFilter::kHeader: {
      int h = v.req->find(c.header);
      if (h >= 0) key = v.req->value(static_cast<size_t>(h));
      break;
    }
  }
  if (key.empty()) return Verdict::next;
  SharedTable::Verdict b = limit_bucket(c.zone, key, c.interval, c.burst, c.delay);
  if (!b.ok && c.dry_run) {
    std::string who = c.key == NativeFilter::kClient ? v.client_ip.str() : std::string(key);
    PX_INFO("filter (route %s, phase request): rate_limit: would refuse %s (dry run)", route_name(v), who.c_str());
  } else if (!b.ok) {
    uint64_t retry = std::max<uint64_t>(1, (b.wait + 999999999) / 1000000000);
    fs.respond_status = c.status;
    fs.respond_headers.clear();
    fs.respond_headers.emplace_back("Retry-After", std::to_string(retry));
    fs.respond_headers.emplace_back("Content-Type", "text/plain");
    fs.respond_body = "too many requests\n";
    return Verdict::answered;
  } else if (b.wait > 0 && !c.dry_run) {
    fs.wait = FilterState::kSleep;
    fs.wait_ms = (b.wait + 500000) / 1000000;
    fs.native_next = static_cast<int>(i + 1);
    return Verdict::wait;
  }
  return Verdict::next;
}

// forward_auth's subrequest, as filters/forward_auth.lua makes it through px.fetch: a GET with the
// request's `request_headers` and the X-Forwarded fields; the stream waits for it (Engine::auth_answer).
Verdict forward_auth(const NativeFilter& c, size_t i, RequestView& v) {
  FilterState& fs = *v.fs;
  FetchCall& f = fs.fetch;
  f.method.assign("GET");
  f.url.assign(c.url);
  f.body.clear();
  f.fields.clear();
  f.timeout_ms = c.timeout_ms;
  for (const auto& n : c.forward) append_request_field(&f.fields, *v.req, n);
  append_forwarded(&f.fields, v);
  fs.wait = FilterState::kFetch;
  fs.native_next = static_cast<int>(i);
  return Verdict::wait;
}

// Is a request field there, after the filters' edits so far?
bool has_request_field(const RequestView& v, std::string_view name) {
  bool there = v.req->find(name) >= 0;
  for (const auto& e : v.fs->req_edits)
    if (iequals(e.name, name)) there = e.mode != 2;
  return there;
}
}  // namespace

// The auth service's answer: 2xx goes on with copy_headers set from it (and removed where it has none); 401,
// 403 and 3xx go back to the client as given (the fields forward_auth.lua passes back, every Set-Cookie);
// anything else, a failure or a timeout: 503, logged.
Verdict Engine::auth_answer(const NativeFilter& c, RequestView& v, const FetchResult* r) {
  FilterState& fs = *v.fs;
  uint64_t t0 = timing_ ? now_ns() : 0;
  Verdict out = Verdict::answered;
  int s = r ? r->status : 0;
  if (s == 0) {
    PX_WARN("filter (route %s, phase request): forward_auth: %s: %s", route_name(v), c.url.c_str(),
            r ? r->error.c_str() : "cancelled");
    respond_unavailable(fs);
  } else if (s >= 200 && s < 300) {
    out = Verdict::next;
    for (const auto& n : c.copy) {
      std::string_view val;
      if (answer_field(*r, n, &val))  // replaces what the client sent: only the auth service says who this is
        fs.req_edits.push_back({0, n, std::string(val)});
      else if (has_request_field(v, n))
        fs.req_edits.push_back({2, n, std::string()});
    }
  } else if (s == 401 || s == 403 || (s >= 300 && s < 400)) {
    static constexpr std::string_view kPassBack[] = {"location", "www-authenticate", "content-type", "cache-control"};
    fs.respond_status = s;
    fs.respond_headers.clear();
    std::string_view val;
    for (auto n : kPassBack)
      if (answer_field(*r, n, &val)) fs.respond_headers.emplace_back(std::string(n), std::string(val));
    auto cookie = [&](std::string_view name, std::string_view value) {
      if (iequals(name, "set-cookie")) fs.respond_headers.emplace_back("set-cookie", std::string(value));
    };
    if (r->head)
      for (size_t k = 0; k < r->head->headers.size(); k++) cookie(r->head->name(k), r->head->value(k));
    else
      for (const auto& [n, value] : r->headers) cookie(n, value);
    fs.respond_body = r->body;
  } else {
    PX_WARN("filter (route %s, phase request): forward_auth: %s answered %d", route_name(v), c.url.c_str(), s);
    respond_unavailable(fs);
  }
  if (timing_) {
    FilterStat& st = native_stats_[c.stat].second;
    st.seconds += static_cast<double>(now_ns() - t0) / 1e9;
    if (out == Verdict::answered) st.answers++;
  }
  return out;
}

Verdict Engine::run_native(const std::vector<NativeFilter>& chain, size_t from, RequestView& v) {
  for (size_t i = from; i < chain.size(); i++) {
    const NativeFilter& c = chain[i];
    uint64_t t0 = timing_ ? now_ns() : 0;
    Verdict out = c.kind == NativeFilter::kRateLimit ? rate_limit(c, i, v) : forward_auth(c, i, v);
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
