#include "lua/engine.h"

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
}
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/config.h"
#include "core/log.h"
#include "core/strings.h"
#include "proxy/worker.h"

namespace px::lua {

using json = nlohmann::json;

const char* phase_name(int p) {
  static const char* names[] = {"early_request", "request", "upstream_peer", "upstream_request", "response", "logging"};
  return p >= 0 && p < kPhases ? names[p] : "?";
}

std::string lua_dir() {
  struct stat st;
  std::string src = std::string(PX_SOURCE_ROOT) + "/lua/px.lua";
  if (::stat(src.c_str(), &st) == 0) return std::string(PX_SOURCE_ROOT) + "/lua";
  return std::string(PX_DATADIR) + "/lua";
}

std::string builtin_filters_dir() {
  struct stat st;
  std::string src = std::string(PX_SOURCE_ROOT) + "/filters";
  if (::stat(src.c_str(), &st) == 0) return src;
  return std::string(PX_DATADIR) + "/filters";
}

static bool read_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

std::vector<std::pair<std::string, std::string>> read_filter_files(const Config& cfg) {
  std::map<std::string, std::pair<std::string, std::string>> byname;  // name -> (path, source)
  std::vector<std::string> dirs = {builtin_filters_dir()};
  if (!cfg.filters_dir.empty()) dirs.push_back(cfg.filters_dir);
  for (const auto& d : dirs) {
    DIR* dir = opendir(d.c_str());
    if (!dir) continue;
    while (dirent* e = readdir(dir)) {
      std::string n = e->d_name;
      if (n.size() < 5 || n.compare(n.size() - 4, 4, ".lua") != 0 || n[0] == '.') continue;
      std::string path = d + "/" + n, src;
      if (read_file(path, &src)) byname[n.substr(0, n.size() - 4)] = {path, src};
    }
    closedir(dir);
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, ps] : byname) out.push_back(ps);
  return out;
}

static std::string name_of(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string base = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (base.size() > 4 && base.compare(base.size() - 4, 4, ".lua") == 0) base.resize(base.size() - 4);
  return base;
}

// ---- the current request, for the FFI functions ----

namespace {
struct Current {
  proxy::Stream* st = nullptr;
  Engine* eng = nullptr;
  int phase = -1;
  bool active = false;
  uint64_t deadline_ns = 0;
  const http::Head* resp = nullptr;  // upstream response head, in response/logging
  int resp_status = 0;
  std::string err, scratch;
};
thread_local Current t_cur;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

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

void hook(lua_State* L, lua_Debug*) {
  if (t_cur.active && now_ns() > t_cur.deadline_ns) luaL_error(L, "time budget exceeded (runaway filter?)");
}

int traceback(lua_State* L) {
  const char* msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
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
}  // namespace

Engine::~Engine() {
  if (L_) lua_close(L_);
}

bool Engine::init(const Config& cfg, proxy::Worker* w, std::string* error) {
  w_ = w;
  budget_ms_ = cfg.lua_phase_budget_ms;
  mem_limit = cfg.lua_memory_limit;
  global_ = cfg.global_filters;
  L_ = lua_newstate(lalloc, this);
  if (!L_) {
    *error = "cannot create a Lua state";
    return false;
  }
  luaL_openlibs(L_);
  std::string dir = lua_dir();
  if (luaL_loadfile(L_, (dir + "/px.lua").c_str()) != 0 || lua_pcall(L_, 0, 1, 0) != 0) {
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
  run_ref_ = ref("run");
  new_req_ref_ = ref("new_req");
  compile_ref_ = ref("compile");
  install_ref_ = ref("install");
  chain_ref_ = ref("set_chain");
  mask_ref_ = ref("mask");
  early_ref_ = ref("set_early");
  clear_ref_ = ref("clear_chains");
  lua_pop(L_, 2);
  lua_pushcfunction(L_, traceback);
  traceback_ref_ = luaL_ref(L_, LUA_REGISTRYINDEX);
  lua_sethook(L_, hook, LUA_MASKCOUNT, 1000);
  load(read_filter_files(cfg));
  return true;
}

bool Engine::compile(const std::string& name, const std::string& path, const std::string& src, std::string* err) {
  lua_rawgeti(L_, LUA_REGISTRYINDEX, compile_ref_);
  lua_pushlstring(L_, name.data(), name.size());
  lua_pushlstring(L_, src.data(), src.size());
  lua_pushlstring(L_, path.data(), path.size());
  t_cur = Current{};
  t_cur.active = true;
  t_cur.deadline_ns = now_ns() + budget_ms_ * 1000000ull * 4;  // loading may take a little longer
  int rc = lua_pcall(L_, 3, 2, 0);
  t_cur.active = false;
  if (rc != 0) {
    *err = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "error";
    lua_pop(L_, 1);
    return false;
  }
  if (lua_isnil(L_, -2)) {
    *err = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "error";
    lua_pop(L_, 2);
    return false;
  }
  lua_pop(L_, 1);  // the nil error
  lua_rawgeti(L_, LUA_REGISTRYINDEX, install_ref_);
  lua_pushlstring(L_, name.data(), name.size());
  lua_pushvalue(L_, -3);
  lua_call(L_, 2, 0);
  lua_pop(L_, 1);
  return true;
}

void Engine::load(const std::vector<std::pair<std::string, std::string>>& files) {
  for (const auto& [path, src] : files) {
    std::string name = name_of(path), err;
    auto it = std::find_if(infos_.begin(), infos_.end(), [&](const FilterInfo& f) { return f.name == name; });
    if (it == infos_.end()) {
      infos_.push_back(FilterInfo{name, path, false, ""});
      it = infos_.end() - 1;
    }
    it->path = path;
    if (compile(name, path, src, &err)) {
      it->ok = true;
      it->error.clear();
    } else {
      it->ok = false;
      it->error = err;
      PX_ERR("filter %s (%s): %s; %s", name.c_str(), path.c_str(), err.c_str(),
             "the previous version, if any, keeps serving");
    }
  }
  // Global filters: their early_request hooks run for every request, before routing.
  lua_rawgeti(L_, LUA_REGISTRYINDEX, early_ref_);
  lua_createtable(L_, static_cast<int>(global_.size()), 0);
  for (size_t i = 0; i < global_.size(); i++) {
    lua_pushstring(L_, global_[i].c_str());
    lua_rawseti(L_, -2, static_cast<int>(i + 1));
  }
  lua_call(L_, 1, 0);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, mask_ref_);
  lua_pushinteger(L_, -1);
  lua_call(L_, 1, 1);
  early_mask_ = static_cast<uint16_t>(lua_tointeger(L_, -1)) & ((1 << kEarly) | kMissingFilter);
  lua_pop(L_, 1);
  if (snap_) {
    std::vector<uint16_t> masks;
    install(snap_, &masks);
    snap_->masks = std::move(masks);
  }
}

void Engine::install(proxy::SnapRef* snap, std::vector<uint16_t>* masks) {
  snap_ = snap;
  const auto& routes = snap->snap->routes();
  masks->assign(routes.size(), 0);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, clear_ref_);
  lua_call(L_, 0, 0);
  for (size_t i = 0; i < routes.size(); i++) {
    const auto& fl = routes[i]->spec.filters;
    if (fl.empty()) continue;
    lua_rawgeti(L_, LUA_REGISTRYINDEX, chain_ref_);
    lua_pushinteger(L_, static_cast<lua_Integer>(i));
    lua_createtable(L_, static_cast<int>(fl.size()), 0);
    for (size_t k = 0; k < fl.size(); k++) {
      lua_createtable(L_, 2, 0);
      lua_pushstring(L_, fl[k].name.c_str());
      lua_rawseti(L_, -2, 1);
      push_json(L_, json::parse(fl[k].config_json, nullptr, false));
      lua_rawseti(L_, -2, 2);
      lua_rawseti(L_, -2, static_cast<int>(k + 1));
    }
    lua_call(L_, 2, 0);
    lua_rawgeti(L_, LUA_REGISTRYINDEX, mask_ref_);
    lua_pushinteger(L_, static_cast<lua_Integer>(i));
    lua_call(L_, 1, 1);
    (*masks)[i] = static_cast<uint16_t>(lua_tointeger(L_, -1));
    lua_pop(L_, 1);
  }
}

int Engine::run(Phase p, int route_index, proxy::Stream* st) {
  if (!st->fs) {
    if (!free_states_.empty()) {
      st->fs = std::move(free_states_.back());
      free_states_.pop_back();
    } else {
      st->fs = std::make_unique<FilterState>();
    }
  }
  FilterState& fs = *st->fs;
  if (fs.req_ref == -2) {
    lua_rawgeti(L_, LUA_REGISTRYINDEX, new_req_ref_);
    lua_call(L_, 0, 1);
    fs.req_ref = luaL_ref(L_, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L_, LUA_REGISTRYINDEX, traceback_ref_);
  int msgh = lua_gettop(L_);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, run_ref_);
  lua_pushinteger(L_, p);
  lua_pushinteger(L_, route_index);
  lua_rawgeti(L_, LUA_REGISTRYINDEX, fs.req_ref);
  t_cur.st = st;
  t_cur.eng = this;
  t_cur.phase = p;
  t_cur.active = true;
  t_cur.deadline_ns = now_ns() + budget_ms_ * 1000000ull;
  int rc = lua_pcall(L_, 3, 1, msgh);
  t_cur.active = false;
  t_cur.resp = nullptr;
  t_cur.st = nullptr;
  int out;
  if (rc != 0) {
    errors_++;
    w_->filter_errors_.fetch_add(1, std::memory_order_relaxed);
    const char* route = st->route ? st->route->spec.name.c_str() : "(before routing)";
    const char* msg = lua_tostring(L_, -1);
    PX_ERR("filter error: route %s, phase %s: %s", route, phase_name(p), msg ? msg : "?");
    if (rc == LUA_ERRMEM || mem_used > mem_limit / 2) lua_gc(L_, LUA_GCCOLLECT, 0);
    out = -1;
  } else {
    out = lua_toboolean(L_, -1) ? 1 : 0;
  }
  lua_settop(L_, msgh - 1);
  return out;
}

void Engine::done(proxy::Stream* st) {
  if (!st->fs) return;
  if (st->fs->req_ref >= 0) luaL_unref(L_, LUA_REGISTRYINDEX, st->fs->req_ref);
  st->fs->clear();
  if (free_states_.size() < 256) free_states_.push_back(std::move(st->fs));
  st->fs.reset();
}

void set_response_view(const http::Head* resp, int status) {
  t_cur.resp = resp;
  t_cur.resp_status = status;
}

std::vector<std::pair<std::string, std::string>> apply_edits(
    const std::vector<std::pair<std::string, std::string>>& orig, const std::vector<HeaderEdit>& edits) {
  std::vector<std::string> names;
  for (const auto& e : edits) {
    bool seen = false;
    for (const auto& n : names) seen = seen || iequals(n, e.name);
    if (!seen) names.push_back(e.name);
  }
  auto is_edited = [&](std::string_view n) {
    for (const auto& x : names)
      if (iequals(x, n)) return true;
    return false;
  };
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& h : orig)
    if (!is_edited(h.first)) out.push_back(h);
  for (const auto& name : names) {
    std::vector<std::string> vals;
    for (const auto& h : orig)
      if (iequals(h.first, name)) vals.push_back(h.second);
    for (const auto& e : edits) {
      if (!iequals(e.name, name)) continue;
      if (e.mode == 0) vals.assign(1, e.value);
      else if (e.mode == 1) vals.push_back(e.value);
      else vals.clear();
    }
    for (auto& v : vals) out.emplace_back(name, std::move(v));
  }
  return out;
}

void emit_edited(const http::Head& h, const std::vector<HeaderEdit>& edits,
                 const std::function<void(std::string_view, std::string_view)>& emit) {
  thread_local std::vector<std::string_view> vals;
  for (size_t k = 0; k < edits.size(); k++) {
    const std::string& name = edits[k].name;
    bool first = true;
    for (size_t j = 0; j < k && first; j++) first = !iequals(edits[j].name, name);
    if (!first) continue;  // this name was handled at its first edit
    vals.clear();
    for (size_t i = 0; i < h.headers.size(); i++)
      if (iequals(h.name(i), name)) vals.push_back(h.value(i));
    for (size_t j = k; j < edits.size(); j++) {
      const HeaderEdit& e = edits[j];
      if (!iequals(e.name, name)) continue;
      if (e.mode == 0) vals.assign(1, e.value);
      else if (e.mode == 1) vals.push_back(e.value);
      else vals.clear();
    }
    for (std::string_view v : vals) emit(name, v);
  }
}

std::string check_filter(const std::string& path, const std::string& source, const std::string& ldir) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  std::string err;
  if (luaL_loadfile(L, (ldir + "/px.lua").c_str()) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    err = std::string("lua/px.lua: ") + lua_tostring(L, -1);
  } else {
    lua_getfield(L, -1, "_engine");
    lua_getfield(L, -1, "compile");
    std::string name = name_of(path);
    lua_pushstring(L, name.c_str());
    lua_pushlstring(L, source.data(), source.size());
    lua_pushstring(L, path.c_str());
    if (lua_pcall(L, 3, 2, 0) != 0) err = lua_tostring(L, -1);
    else if (lua_isnil(L, -2)) err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error";
  }
  lua_close(L);
  return err;
}

}  // namespace px::lua

// ---- the FFI API (lua/px.lua declares these) ----

using px::lua::t_cur;
namespace {
constexpr int kAll = 0x3f, kEditReq = 0x0f, kReadResp = 0x30, kEditResp = 0x10, kAnswer = 0x03, kPeerOnly = 0x04;

std::string allowed_list(int mask) {
  std::string s;
  for (int p = 0; p < px::lua::kPhases; p++)
    if (mask & (1 << p)) s += std::string(s.empty() ? "" : ", ") + px::lua::phase_name(p);
  return s;
}

bool allowed(int mask, const char* call) {
  if (!t_cur.active || !t_cur.st) {
    t_cur.err = std::string(call) + ": not inside a request (call it from a phase function)";
    return false;
  }
  if (!(mask & (1 << t_cur.phase))) {
    t_cur.err = std::string(call) + ": not allowed in phase '" + px::lua::phase_name(t_cur.phase) +
                "' (allowed in " + allowed_list(mask) + ")";
    return false;
  }
  return true;
}

// RFC 9110 token characters.
bool valid_name(const char* n, size_t len) {
  static const auto table = [] {
    std::array<bool, 256> t{};
    for (int c = 33; c < 127; c++) t[static_cast<size_t>(c)] = !std::strchr("()<>@,;:\\\"/[]?={}", c);
    return t;
  }();
  if (!len) return false;
  for (size_t i = 0; i < len; i++)
    if (!table[static_cast<unsigned char>(n[i])]) return false;
  return true;
}
// Framing and connection headers belong to px: filters may not edit them.
bool framing(const char* n, size_t len) {
  std::string_view v(n, len);
  for (const char* f : {"content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
                        "keep-alive", "proxy-connection"})
    if (px::iequals(v, f)) return true;
  return false;
}

bool valid_value(const char* v, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) return false;
  return true;
}

// The values of `name` after the edits: the original ones, then set/add/remove in order.
bool lookup(const std::vector<std::pair<std::string_view, std::string_view>>& orig,
            const std::vector<px::lua::HeaderEdit>* edits, std::string_view name, int index, const char** val,
            size_t* len) {
  std::vector<std::string_view> vals;
  for (const auto& [n, v] : orig)
    if (px::iequals(n, name)) vals.push_back(v);
  if (edits)
    for (const auto& e : *edits) {
      if (!px::iequals(e.name, name)) continue;
      if (e.mode == 0) vals.assign(1, e.value);
      else if (e.mode == 1) vals.push_back(e.value);
      else vals.clear();
    }
  if (index < 0 || static_cast<size_t>(index) >= vals.size()) return false;
  *val = vals[static_cast<size_t>(index)].data();
  *len = vals[static_cast<size_t>(index)].size();
  return true;
}

std::vector<std::pair<std::string_view, std::string_view>> headers_of(const px::http::Head& h) {
  std::vector<std::pair<std::string_view, std::string_view>> v;
  v.reserve(h.headers.size());
  for (size_t i = 0; i < h.headers.size(); i++) v.emplace_back(h.name(i), h.value(i));
  return v;
}
}  // namespace

#define PX_API extern "C" __attribute__((visibility("default"), used))

PX_API const char* px_req_field(int which, size_t* len);
PX_API int px_phase(void) { return t_cur.active ? t_cur.phase : -1; }
PX_API const char* px_error(void) { return t_cur.err.c_str(); }
PX_API double px_now(void) { return static_cast<double>(px::lua::now_ns()) / 1e9; }
PX_API int px_is_tls(void) { return allowed(kAll, "req:is_tls") ? 0 : -1; }
PX_API int px_is_https(void) {
  if (!allowed(kAll, "req:is_https")) return -1;
  size_t len;
  const char* s = px_req_field(8, &len);
  return len == 5 && std::memcmp(s, "https", 5) == 0 ? 1 : 0;
}

PX_API const char* px_req_field(int which, size_t* len) {
  static const char* calls[] = {"req:method", "req:path", "req:query", "req:host", "req:client_ip",
                                "req:sni", "req:route", "req:uri", "req:scheme"};
  if (which < 0 || which > 8 || !allowed(kAll, calls[which])) return nullptr;
  px::proxy::Stream* st = t_cur.st;
  const px::http::Head& h = st->req;
  std::string_view uri = st->abs_path.empty() ? h.url() : st->abs_path;
  std::string_view out;
  switch (which) {
    case 0: out = h.method_name(); break;
    case 1: out = uri.substr(0, uri.find('?')); break;
    case 2: {
      size_t q = uri.find('?');
      out = q == std::string_view::npos ? std::string_view() : uri.substr(q + 1);
      break;
    }
    case 3: {
      std::string_view host = st->host;
      if (!host.empty() && host.front() == '[') host = host.substr(0, host.find(']') + 1);
      else host = host.substr(0, host.rfind(':') == std::string_view::npos ? host.size() : host.rfind(':'));
      out = host;
      break;
    }
    case 4: {
      char buf[64];
      t_cur.scratch.assign(buf, st->client_ip.format(buf));
      out = t_cur.scratch;
      break;
    }
    case 5: out = ""; break;
    case 6: out = st->route ? std::string_view(st->route->spec.name) : std::string_view(); break;
    case 7: out = uri; break;
    case 8: {
      out = "http";
      std::string_view xfp = h.get("x-forwarded-proto");
      if (!xfp.empty() && st->session->w->cfg().trusted_proxies.contains(st->session->peer_ip)) {
        xfp = px::trim(xfp.substr(0, xfp.find(',')));
        if (px::iequals(xfp, "https")) out = "https";
      }
      break;
    }
  }
  *len = out.size();
  return out.data() ? out.data() : "";
}

PX_API int px_req_header(const char* name, size_t nlen, int index, const char** val, size_t* vlen) {
  if (!allowed(kAll, "req:header")) return -1;
  auto* fs = t_cur.st->fs.get();
  if (!fs || fs->req_edits.empty()) {
    // The common case: no edits, read the head directly.
    const px::http::Head& h = t_cur.st->req;
    std::string_view n(name, nlen);
    for (size_t i = 0; i < h.headers.size(); i++)
      if (px::iequals(h.name(i), n) && index-- == 0) {
        *val = h.value(i).data();
        *vlen = h.value(i).size();
        return 1;
      }
    return 0;
  }
  return lookup(headers_of(t_cur.st->req), fs ? &fs->req_edits : nullptr, std::string_view(name, nlen), index, val,
                vlen)
             ? 1
             : 0;
}

// One header edit from a filter, checked: the call's phase, a token name, not a
// framing header, a value without CR/LF/NUL.
static int record_edit(const char* const calls[3], int mask, bool response, int mode, const char* name, size_t nlen,
                       const char* val, size_t vlen) {
  if (mode < 0 || mode > 2 || !allowed(mask, calls[mode])) return -1;
  if (!valid_name(name, nlen)) {
    t_cur.err = std::string(calls[mode]) + ": '" + std::string(name, nlen) + "' is not a valid header name";
    return -1;
  }
  if (framing(name, nlen)) {
    t_cur.err = std::string(calls[mode]) + ": " + std::string(name, nlen) + " is a framing header px manages";
    return -1;
  }
  if (mode != 2 && !valid_value(val, vlen)) {
    t_cur.err = std::string(calls[mode]) + ": a header value cannot hold CR, LF or NUL";
    return -1;
  }
  auto& edits = response ? t_cur.st->fs->resp_edits : t_cur.st->fs->req_edits;
  edits.push_back({static_cast<uint8_t>(mode), std::string(name, nlen), mode == 2 ? std::string() : std::string(val, vlen)});
  return 0;
}

PX_API int px_req_header_edit(int mode, const char* name, size_t nlen, const char* val, size_t vlen) {
  static const char* const calls[] = {"req:set_header", "req:add_header", "req:remove_header"};
  return record_edit(calls, kEditReq, false, mode, name, nlen, val, vlen);
}

PX_API int px_resp_status(void) {
  if (!allowed(kReadResp, "req:status")) return -1;
  return t_cur.st->fs && t_cur.st->fs->new_status ? t_cur.st->fs->new_status : t_cur.resp_status;
}

PX_API int px_resp_set_status(int status) {
  if (!allowed(kEditResp, "req:set_status")) return -1;
  if (status < 200 || status > 599) {
    t_cur.err = "req:set_status: " + std::to_string(status) + " is not a final status (200..599)";
    return -1;
  }
  t_cur.st->fs->new_status = status;
  return 0;
}

PX_API int px_resp_header(const char* name, size_t nlen, int index, const char** val, size_t* vlen) {
  if (!allowed(kReadResp, "req:resp_header")) return -1;
  std::vector<std::pair<std::string_view, std::string_view>> orig;
  if (t_cur.resp) orig = headers_of(*t_cur.resp);
  else if (t_cur.st->fs)
    for (const auto& [n, v] : t_cur.st->fs->respond_headers) orig.emplace_back(n, v);
  auto* fs = t_cur.st->fs.get();
  return lookup(orig, fs ? &fs->resp_edits : nullptr, std::string_view(name, nlen), index, val, vlen) ? 1 : 0;
}

PX_API int px_resp_header_edit(int mode, const char* name, size_t nlen, const char* val, size_t vlen) {
  static const char* const calls[] = {"req:set_resp_header", "req:add_resp_header", "req:remove_resp_header"};
  return record_edit(calls, kEditResp, true, mode, name, nlen, val, vlen);
}

PX_API int px_respond_header(const char* name, size_t nlen, const char* val, size_t vlen) {
  if (!allowed(kAnswer, "px.respond")) return -1;
  if (!valid_name(name, nlen) || !valid_value(val, vlen)) {
    t_cur.err = "px.respond: invalid header '" + std::string(name, nlen) + "'";
    return -1;
  }
  t_cur.st->fs->respond_headers.emplace_back(std::string(name, nlen), std::string(val, vlen));
  return 0;
}

PX_API int px_respond(int status, const char* body, size_t blen) {
  if (!allowed(kAnswer, "px.respond")) return -1;
  if (status < 200 || status > 599) {
    t_cur.err = "px.respond: " + std::to_string(status) + " is not a final status (200..599)";
    return -1;
  }
  t_cur.st->fs->respond_status = status;
  t_cur.st->fs->respond_body.assign(body, blen);
  return 0;
}

PX_API int px_peer_count(void) {
  if (!allowed(kAll, "px.peer_count")) return -1;
  return t_cur.st->route ? static_cast<int>(t_cur.st->route->pool.peers.size()) : 0;
}

PX_API int px_set_peer(int index) {
  if (!allowed(kPeerOnly, "px.set_peer")) return -1;
  int n = t_cur.st->route ? static_cast<int>(t_cur.st->route->pool.peers.size()) : 0;
  if (index < 1 || index > n) {
    t_cur.err = "px.set_peer: " + std::to_string(index) + " is not a peer of this route (1.." + std::to_string(n) + ")";
    return -1;
  }
  t_cur.st->fs->peer = index - 1;
  return 0;
}

PX_API void px_log(int level, const char* msg, size_t len) {
  if (level < 0 || level > 3) level = 2;
  const char* route = t_cur.st && t_cur.st->route ? t_cur.st->route->spec.name.c_str() : "-";
  PX_LOG(static_cast<px::log::Level>(level), "filter (route %s, phase %s): %.*s", route,
         px::lua::phase_name(t_cur.active ? t_cur.phase : -1), static_cast<int>(len), msg);
}

PX_API int px_acl_check(const char* name, size_t nlen, const char* auth, size_t alen, const char** realm,
                        size_t* rlen) {
  if (!allowed(kAnswer, "px.acl_check")) return -1;
  px::proxy::Stream* st = t_cur.st;
  const auto* acl = st->snap ? st->snap->snap->acl(std::string_view(name, nlen)) : nullptr;
  if (!acl) {
    t_cur.err = "px.acl_check: no access list named '" + std::string(name, nlen) + "'";
    return -1;
  }
  *realm = acl->realm.c_str();
  *rlen = acl->realm.size();
  int decision = st->session->w->acl_decide(*acl, st->client_ip, std::string_view(auth, alen));
  return decision | (acl->pass_authorization ? 0x10 : 0);
}

PX_API int px_acme_lookup(const char* token, size_t tlen, const char** val, size_t* vlen) {
  if (!allowed(kAnswer, "px.acme_challenge")) return -1;
  const auto* snap = t_cur.st->session->w->current_snap();
  if (!snap) return 0;
  const std::string* v = snap->snap->challenge(std::string_view(token, tlen));
  if (!v) return 0;
  *val = v->data();
  *vlen = v->size();
  return 1;
}
