#include "lua/engine.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/log.h"
#include "daemon/config.h"
#include "http/client.h"
#include "http/parser.h"
#include "lua/internal.h"
#include "route/snapshot.h"

namespace px::lua {

using json = nlohmann::json;

namespace {
void* lalloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* e = static_cast<Engine*>(ud);
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    e->mem_used -= old;
    free(ptr);
    return nullptr;
  }
  if (nsize > old && e->mem_limit && e->mem_used + (nsize - old) > e->mem_limit) return nullptr;
  void* p = realloc(ptr, nsize);
  if (p) e->mem_used = e->mem_used - old + nsize;
  return p;
}

// The px function at the top of the stack, by its name in the API ("px.respond", "req:set_header"), or "".
std::string api_name(lua_State* L) {
  std::string found;
  int fn = lua_gettop(L);
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return found;
  }
  lua_getfield(L, -1, "loaded");
  lua_getfield(L, -1, "px");
  for (int pass = 0; pass < 2 && found.empty() && lua_istable(L, -1); pass++) {
    if (pass == 1) {  // the request methods
      lua_getfield(L, -1, "req");
      lua_replace(L, -2);
      if (!lua_istable(L, -1)) break;
    }
    for (lua_pushnil(L); lua_next(L, -2) != 0; lua_pop(L, 1))
      if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, fn)) {
        found = std::string(pass ? "req:" : "px.") + lua_tostring(L, -2);
        lua_pop(L, 2);
        break;
      }
  }
  lua_pop(L, 3);  // the table, package.loaded, package
  return found;
}

// An error whose position is px.lua's own: a filter's last call was a tail call into the px API (`return
// px.respond(...)`: Lua keeps no frame for the filter), or px.lua refused what a phase function returned. The
// message then names the filter's file and the line its phase function starts at, and the px function by
// its name, so that it points at the user's code.
std::string locate(lua_State* L, std::string msg) {
  static const std::string source = "@" + lua_dir() + "/px.lua";
  std::string at = source.substr(1) + ":";
  if (msg.compare(0, at.size(), at) != 0) return msg;
  size_t rest = msg.find(": ", at.size());
  if (rest == std::string::npos) return msg;
  lua_Debug ar;
  std::string api;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Sf", &ar)) break;
    if (api.empty() && std::strcmp(ar.what, "C") == 0) api = api_name(L);
    lua_pop(L, 1);
    if (source != ar.source) continue;
    std::string name, phase;
    for (int n = 1; const char* var = lua_getlocal(L, &ar, n); n++) {
      if (std::strcmp(var, "phase") == 0 && lua_isnumber(L, -1))
        phase = phase_name(static_cast<int>(lua_tointeger(L, -1)));
      if (std::strcmp(var, "f") == 0 && lua_istable(L, -1)) {  // the filter run's loop variable
        lua_getfield(L, -1, "name");
        if (lua_isstring(L, -1)) name = lua_tostring(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, -1, "fn");
        lua_Debug fi;
        bool found = lua_isfunction(L, -1) && !name.empty();
        if (found)
          found = lua_getinfo(L, ">S", &fi) != 0;  // (pops fn)
        else
          lua_pop(L, 1);
        if (found) {
          lua_pop(L, 1);  // f
          std::string text = msg.substr(rest + 2);
          size_t fn = text.find(" to 'fn'");
          if (!api.empty() && fn != std::string::npos) text.replace(fn + 5, 2, api);
          return std::string(fi.short_src) + ":" + std::to_string(fi.linedefined) + ": " + text + " (filter '" + name +
                 "', its " + (phase.empty() ? "phase" : phase) + " function)";
        }
      }
      lua_pop(L, 1);
    }
  }
  return msg;
}

// An http(s) URL's origin, "scheme://host:port" (host lower case); "" when it is not one.
std::string origin_of(std::string_view url) {
  bool tls;
  std::string host, target;
  uint16_t port;
  if (!http::split_url(url, &tls, &host, &port, &target)) return "";
  for (char& c : host) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return std::string(tls ? "https://" : "http://") + host + ":" + std::to_string(port);
}

void collect_origins(const json& j, std::vector<std::string>* out) {
  if (j.is_string()) {
    std::string o = origin_of(j.get_ref<const std::string&>());
    if (!o.empty() && std::find(out->begin(), out->end(), o) == out->end()) out->push_back(std::move(o));
  } else if (j.is_structured()) {
    for (const auto& v : j) collect_origins(v, out);
  }
}

}  // namespace

bool Engine::fetch_allowed(const route::Route* r, std::string_view url) const {
  if (!r || r->index >= fetch_origins_.size()) return false;
  std::string o = origin_of(url);
  const auto& list = fetch_origins_[r->index];
  return !o.empty() && std::find(list.begin(), list.end(), o) != list.end();
}

int traceback(lua_State* L) {
  if (lua_istable(L, 1)) {  // a waiting filter's error: its traceback was made in its coroutine (px.lua)
    lua_rawgeti(L, 1, 1);
    return 1;
  }
  const char* msg = lua_tostring(L, 1);
  std::string m = msg ? locate(L, msg) : "(error object is not a string)";
  luaL_traceback(L, L, m.c_str(), 1);
  return 1;
}

void push_json(lua_State* L, const json& j) {
  switch (j.type()) {
    case json::value_t::object:
      lua_createtable(L, 0, static_cast<int>(j.size()));
      for (auto it = j.begin(); it != j.end(); ++it) {
        lua_pushlstring(L, it.key().data(), it.key().size());
        push_json(L, it.value());
        lua_rawset(L, -3);
      }
      break;
    case json::value_t::array: {
      lua_createtable(L, static_cast<int>(j.size()), 0);
      int i = 1;
      for (const auto& v : j) {
        push_json(L, v);
        lua_rawseti(L, -2, i++);
      }
      break;
    }
    case json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      lua_pushlstring(L, s.data(), s.size());
      break;
    }
    case json::value_t::boolean: lua_pushboolean(L, j.get<bool>()); break;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: lua_pushnumber(L, j.get<double>()); break;
    default: lua_pushnil(L); break;
  }
}

Engine::~Engine() {
  if (watched_) watchdog_remove(this);
  if (L_) lua_close(L_);
}

bool Engine::init(const Config& cfg, std::atomic<uint64_t>* error_counter, std::string* error) {
  error_counter_ = error_counter;
  budget_ms_ = cfg.lua_phase_budget_ms;
  mem_limit = cfg.lua_memory_limit;
  global_ = cfg.global_filters;
  L_ = lua_newstate(lalloc, this);
  if (!L_) {
    *error = "cannot create a Lua state";
    return false;
  }
  luaL_openlibs(L_);
  lua_pushcfunction(L_, traceback);  // kTracebackSlot
  std::string dir = lua_dir();
  if (luaL_loadfile(L_, (dir + "/px.lua").c_str()) != 0) {
    *error = std::string("lua/px.lua: ") + lua_tostring(L_, -1);
    return false;
  }
  push_api(L_);
  if (lua_pcall(L_, 1, 1, 0) != 0) {
    *error = std::string("lua/px.lua: ") + lua_tostring(L_, -1);
    return false;
  }
  lua_getglobal(L_, "package");
  lua_getfield(L_, -1, "loaded");
  lua_pushvalue(L_, -3);
  lua_setfield(L_, -2, "px");
  lua_pop(L_, 2);
  lua_getfield(L_, -1, "_engine");
  auto ref = [&](const char* f) {
    lua_getfield(L_, -1, f);
    return luaL_ref(L_, LUA_REGISTRYINDEX);
  };
  new_req_ref_ = ref("new_req");
  compile_ref_ = ref("compile");
  install_ref_ = ref("install");
  chain_ref_ = ref("set_chain");
  mask_ref_ = ref("mask");
  early_ref_ = ref("set_early");
  clear_ref_ = ref("clear_chains");
  early_prefixes_ref_ = ref("early_prefixes");
  failed_ref_ = ref("failed");
  stats_ref_ = ref("stats");
  run_timed_ref_ = ref("run_timed");
  take_trace_ref_ = ref("take_trace");
  resume_ref_ = ref("resume");
  cancel_ref_ = ref("cancel");
  phase_fns_ref_ = ref("phase_fns");
  lua_getfield(L_, -1, "run");  // kRunSlot
  lua_replace(L_, kRunSlot);
  lua_settop(L_, kRunSlot);
  thread_ = pthread_self();
  watchdog_add(this);
  watched_ = true;
  load(read_filter_files(cfg));
  return true;
}

void Engine::install(const route::Snapshot& snap, std::vector<uint16_t>* masks) {
  snap_ = &snap;
  masks_ = masks;
  const auto& routes = snap.routes();
  masks->assign(routes.size(), 0);
  fetch_origins_.assign(routes.size(), {});
  native_.assign(routes.size(), {});
  lua_rawgeti(L_, LUA_REGISTRYINDEX, clear_ref_);
  lua_call(L_, 0, 0);
  for (size_t i = 0; i < routes.size(); i++) {
    const auto& fl = routes[i]->spec.filters;
    if (fl.empty()) continue;
    lua_rawgeti(L_, LUA_REGISTRYINDEX, chain_ref_);
    lua_pushinteger(L_, static_cast<lua_Integer>(i));
    lua_createtable(L_, static_cast<int>(fl.size()), 0);
    for (size_t k = 0; k < fl.size(); k++) {
      json conf = json::parse(fl[k].config_json, nullptr, false);
      collect_origins(conf, &fetch_origins_[i]);
      lua_createtable(L_, 2, 0);
      lua_pushstring(L_, fl[k].name.c_str());
      lua_rawseti(L_, -2, 1);
      push_json(L_, conf);
      lua_rawseti(L_, -2, 2);
      lua_rawseti(L_, -2, static_cast<int>(k + 1));
    }
    lua_pushstring(L_, routes[i]->spec.name.c_str());
    bool ok = call_filter_code(3, routes[i]->spec.name.c_str());
    lua_rawgeti(L_, LUA_REGISTRYINDEX, mask_ref_);
    lua_pushinteger(L_, static_cast<lua_Integer>(i));
    lua_call(L_, 1, 1);
    (*masks)[i] = ok ? static_cast<uint16_t>(lua_tointeger(L_, -1)) : kMissingFilter;
    lua_pop(L_, 1);
    if (((*masks)[i] & (1 << kRequest)) && !((*masks)[i] & kMissingFilter)) bind_native(i);
  }
}

// Building a chain runs filter code (prepare, phases): under the budget, like a phase.
bool Engine::call_filter_code(int nargs, const char* what) {
  t_cur = Current{};
  t_cur.eng = this;
  t_cur.active = true;
  enter(budget_ms_ * 4);
  int rc = lua_pcall(L_, nargs, 0, 0);
  leave();
  t_cur.active = false;
  if (rc == 0) return true;
  PX_ERR("filters of %s: %s (failing closed: 500)", what, lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "error");
  lua_pop(L_, 1);
  return false;
}

Verdict Engine::run(Phase p, int route_index, RequestView& v) {
  if (!v.fs) {
    if (!free_states_.empty()) {
      v.fs = std::move(free_states_.back());
      free_states_.pop_back();
    } else {
      v.fs = std::make_unique<FilterState>();
    }
  }
  FilterState& fs = *v.fs;
  if (p == kRequest && route_index >= 0 && static_cast<size_t>(route_index) < native_.size() &&
      !native_[static_cast<size_t>(route_index)].empty() && !v.trace && fs.req_edits.empty())
    return run_native(native_[static_cast<size_t>(route_index)], 0, v);
  bool fresh = !fs.renewed;  // the request's first Lua phase: engine.run clears what the last request left
  fs.renewed = true;
  lua_State* L = L_;
  if (fs.req_ref == -2) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, new_req_ref_);
    lua_call(L, 0, 1);
    fs.req_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fresh = false;
  }
  lua_pushvalue(L, kTracebackSlot);
  int msgh = lua_gettop(L);
  bool timed = timing_ || v.trace;  // engine.run_timed: each filter timed (metrics, pxctl trace)
  if (timed)
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_timed_ref_);
  else
    lua_pushvalue(L, kRunSlot);
  lua_pushinteger(L, p);
  lua_pushinteger(L, route_index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fs.req_ref);
  lua_pushboolean(L, fresh);  // a pooled request object: engine.run clears what the last request left
  if (timed) lua_pushboolean(L, v.trace);
  return call_phase(p, v, timed ? 5 : 4, msgh);
}

// The phase's call (engine.run, run_timed or resume) with its arguments on the stack above the message
// handler at msgh: run under the budget, and what it came to.
Verdict Engine::call_phase(Phase p, RequestView& v, int nargs, int msgh) {
  lua_State* L = L_;
  t_cur.v = &v;
  t_cur.eng = this;
  t_cur.phase = p;
  t_cur.active = true;
  enter(budget_ms_);
  int rc = lua_pcall(L, nargs, 1, msgh);
  leave();
  t_cur.active = false;
  t_cur.v = nullptr;
  Verdict out;
  if (rc == 0 && lua_type(L, -1) == LUA_TSTRING && v.fs->wait == FilterState::kNoWait) {
    lua_pushliteral(L, "a filter yielded outside px.sleep and px.fetch");
    rc = LUA_ERRRUN;
  }
  if (rc != 0) {
    errors_++;
    if (error_counter_) error_counter_->fetch_add(1, std::memory_order_relaxed);
    const char* route = v.route ? v.route->spec.name.c_str() : "(before routing)";
    const char* msg = lua_tostring(L, -1);
    PX_ERR("filter error: route %s, phase %s: %s", route, phase_name(p), msg ? msg : "?");
    lua_rawgeti(L, LUA_REGISTRYINDEX, failed_ref_);  // counted against the filter that was running
    if (lua_pcall(L, 0, 0, 0) != 0) lua_pop(L, 1);
    if (rc == LUA_ERRMEM || mem_used > mem_limit / 2) lua_gc(L, LUA_GCCOLLECT, 0);
    if (v.fs->wait != FilterState::kNoWait) cancel(v);
    out = Verdict::failed;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    v.fs->suspended = true;
    out = Verdict::wait;
  } else {
    out = lua_toboolean(L, -1) ? Verdict::answered : Verdict::next;
  }
  lua_settop(L, msgh - 1);
  return out;
}

Verdict Engine::resume(Phase p, RequestView& v, const FetchResult* r) {
  lua_State* L = L_;
  FilterState& fs = *v.fs;
  fs.suspended = false;
  FilterState::WaitKind kind = fs.wait;
  fs.wait = FilterState::kNoWait;
  if (fs.native_next >= 0) {  // a filter run in C++ waited: forward_auth's answer, then the rest of the chain
    size_t at = static_cast<size_t>(fs.native_next), i = v.route ? v.route->index : native_.size();
    fs.native_next = -1;
    if (i >= native_.size() || at >= native_[i].size()) return Verdict::next;  // filters reloaded meanwhile
    if (kind == FilterState::kFetch) {
      Verdict out = auth_answer(native_[i][at], v, r);
      if (out != Verdict::next) return out;
      at++;
    }
    return run_native(native_[i], at, v);
  }
  lua_pushvalue(L, kTracebackSlot);
  int msgh = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, resume_ref_);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fs.req_ref);
  int nargs = 1;
  if (kind == FilterState::kDns) {
    if (r && !r->body.empty())
      lua_pushlstring(L, r->body.data(), r->body.size());
    else
      lua_pushnil(L);
    nargs = 2;
  } else if (kind == FilterState::kFetch) {
    if (r && r->status) {  // { status =, headers = { name = value, ... }, body = [, multi = { name = {...} }] }
      lua_createtable(L, 0, 4);
      lua_pushinteger(L, r->status);
      lua_setfield(L, -2, "status");
      int res = lua_gettop(L);
      size_t n = r->head ? r->head->headers.size() : r->headers.size();
      lua_createtable(L, 0, static_cast<int>(n));  // headers: each name's first value (names lower case)
      lua_pushnil(L);  // multi, made for a name given more than once: all its values, in order
      int headers = res + 1, multi = res + 2;
      char lower[256];
      for (size_t i = 0; i < n; i++) {
        std::string_view name = r->head ? r->head->name(i) : std::string_view(r->headers[i].first);
        std::string_view value = r->head ? r->head->value(i) : std::string_view(r->headers[i].second);
        if (name.size() > sizeof lower) continue;
        for (size_t k = 0; k < name.size(); k++)  // a token: ASCII
          lower[k] = name[k] >= 'A' && name[k] <= 'Z' ? static_cast<char>(name[k] | 0x20) : name[k];
        lua_pushlstring(L, lower, name.size());
        lua_rawget(L, headers);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          lua_pushlstring(L, lower, name.size());
          lua_pushlstring(L, value.data(), value.size());
          lua_rawset(L, headers);
          continue;
        }
        if (lua_isnil(L, multi)) {
          lua_newtable(L);
          lua_replace(L, multi);
        }
        lua_pushlstring(L, lower, name.size());
        lua_rawget(L, multi);
        if (lua_isnil(L, -1)) {  // the list starts with the first value
          lua_pop(L, 1);
          lua_createtable(L, 2, 0);
          lua_pushvalue(L, -2);
          lua_rawseti(L, -2, 1);
          lua_pushlstring(L, lower, name.size());
          lua_pushvalue(L, -2);
          lua_rawset(L, multi);
        }
        lua_pushlstring(L, value.data(), value.size());
        lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
        lua_settop(L, multi);
      }
      if (lua_isnil(L, multi))
        lua_pop(L, 1);
      else
        lua_setfield(L, res, "multi");
      lua_setfield(L, res, "headers");
      lua_pushlstring(L, r->body.data(), r->body.size());
      lua_setfield(L, -2, "body");
      nargs = 2;
    } else {
      lua_pushnil(L);
      std::string why = r ? r->error : "cancelled";
      lua_pushlstring(L, why.data(), why.size());
      nargs = 3;
    }
  }
  return call_phase(p, v, nargs, msgh);
}

void Engine::cancel(RequestView& v) {
  if (!v.fs || !(v.fs->suspended || v.fs->wait)) return;
  v.fs->suspended = false;
  v.fs->wait = FilterState::kNoWait;
  if (v.fs->native_next >= 0) {  // nothing of it is in Lua
    v.fs->native_next = -1;
    return;
  }
  lua_rawgeti(L_, LUA_REGISTRYINDEX, cancel_ref_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, v.fs->req_ref);
  if (lua_pcall(L_, 1, 0, 0) != 0) lua_pop(L_, 1);
}

void Engine::filter_stats(FilterStats* out) {
  out->clear();
  int top = lua_gettop(L_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, stats_ref_);
  lua_call(L_, 0, 1);  // name -> { [phase] = { calls, seconds, errors, answers } }
  lua_pushnil(L_);
  while (lua_next(L_, -2)) {
    if (lua_type(L_, -2) == LUA_TSTRING && lua_istable(L_, -1)) {
      auto& e = out->emplace_back(lua_tostring(L_, -2), std::array<FilterStat, kPhases>{});
      for (int p = 0; p < kPhases; p++) {
        lua_rawgeti(L_, -1, p);
        if (lua_istable(L_, -1)) {
          lua_rawgeti(L_, -1, 1);
          lua_rawgeti(L_, -2, 2);
          lua_rawgeti(L_, -3, 3);
          lua_rawgeti(L_, -4, 4);
          FilterStat& s = e.second[static_cast<size_t>(p)];
          s.calls = static_cast<uint64_t>(lua_tonumber(L_, -4));
          s.seconds = lua_tonumber(L_, -3);
          s.errors = static_cast<uint64_t>(lua_tonumber(L_, -2));
          s.answers = static_cast<uint64_t>(lua_tonumber(L_, -1));
          lua_pop(L_, 4);
        }
        lua_pop(L_, 1);
      }
    }
    lua_pop(L_, 1);
  }
  lua_settop(L_, top);
  for (const auto& ns : native_stats_) {  // filters run in C++ (request phase)
    const std::string& name = ns.first;
    const FilterStat& st = ns.second;
    auto it = std::find_if(out->begin(), out->end(), [&](const auto& e) { return e.first == name; });
    if (it == out->end()) it = out->insert(out->end(), {name, {}});
    FilterStat& s = it->second[kRequest];
    s.calls += st.calls;
    s.seconds += st.seconds;
    s.errors += st.errors;
    s.answers += st.answers;
  }
}

void Engine::take_trace(Phase p, std::vector<FilterTrace>* out) {
  int top = lua_gettop(L_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, take_trace_ref_);
  lua_call(L_, 0, 1);  // { { name, seconds, verdict }, ... }
  int n = static_cast<int>(lua_objlen(L_, -1));
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L_, -1, i);
    lua_rawgeti(L_, -1, 1);
    lua_rawgeti(L_, -2, 2);
    lua_rawgeti(L_, -3, 3);
    FilterTrace t;
    t.filter = lua_isstring(L_, -3) ? lua_tostring(L_, -3) : "?";
    t.phase = p;
    t.ms = lua_tonumber(L_, -2) * 1000.0;
    t.verdict = lua_isstring(L_, -1) ? lua_tostring(L_, -1) : "?";
    out->push_back(std::move(t));
    lua_pop(L_, 4);
  }
  lua_settop(L_, top);
}

void Engine::done(RequestView& v) {
  if (!v.fs) return;
  cancel(v);
  v.fs->clear();
  if (free_states_.size() < 256) {
    free_states_.push_back(std::move(v.fs));
  } else {
    if (v.fs->req_ref >= 0) luaL_unref(L_, LUA_REGISTRYINDEX, v.fs->req_ref);
    v.fs.reset();
  }
}

void Engine::collect_garbage() {
  while (free_states_.size() > 16) {
    if (free_states_.back()->req_ref >= 0) luaL_unref(L_, LUA_REGISTRYINDEX, free_states_.back()->req_ref);
    free_states_.pop_back();
  }
  lua_gc(L_, LUA_GCCOLLECT, 0);
}

}  // namespace px::lua
