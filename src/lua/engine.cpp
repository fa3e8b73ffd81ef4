#include "lua/engine.h"

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
}
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/config.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/h1.h"
#include "route/acl.h"
#include "route/snapshot.h"

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

// The table of API functions lua/px.lua is loaded with (defined with them, below).
void push_api(lua_State* L);
std::vector<std::string_view>& edit_scratch();

// ---- the current request, for the API functions ----

namespace {
// Plain data, so that reading it costs no thread-local initialisation check (and
// the watchdog's signal handler may read it).
struct Current {
  RequestView* v;  // the request being processed, nullptr outside one
  Engine* eng;
  int phase;
  bool active;
};
constinit thread_local Current t_cur{};
constinit thread_local char t_err[512];  // the message of a refused call
constinit thread_local uint64_t t_check_deadline = 0;  // check_filter's budget

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

// ---- the time budget ----
// Filter code is interpreted (the JIT is off for it), so a hook stops it at its
// next instruction wherever it loops. The hook is not set while filters run
// normally (a count hook slows every instruction): a watchdog thread sees a
// phase that has run past its budget and signals the worker, whose handler sets
// a hook that fires at once (lua_sethook may be called asynchronously; LuaJIT's
// own interpreter does it from a SIGINT handler). The hook checks that the same
// phase is still running before it raises the error.

int watchdog_signal() { return SIGRTMIN + 4; }

void budget_hook(lua_State* L, lua_Debug*) {
  lua_sethook(L, nullptr, 0, 0);
  if (t_cur.active && t_cur.eng && t_cur.eng->overrun()) luaL_error(L, "time budget exceeded (runaway filter?)");
}

void on_watchdog_signal(int) {
  int saved = errno;
  if (t_cur.active && t_cur.eng) lua_sethook(t_cur.eng->state(), budget_hook, LUA_MASKCOUNT, 1);
  errno = saved;
}

// check_filter's scratch state runs once, not per request: a plain count hook.
constexpr uint64_t kCheckBudgetMs = 2000;
void check_hook(lua_State* L, lua_Debug*) {
  if (t_check_deadline && now_ns() > t_check_deadline) luaL_error(L, "time budget exceeded (runaway filter?)");
}

struct Watchdog {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Engine*> engines;
  bool running = false;

  void loop() {
    std::unique_lock<std::mutex> lk(mu);
    while (!engines.empty()) {
      uint64_t tick = 20;
      for (Engine* e : engines) tick = std::min(tick, std::max<uint64_t>(1, e->budget_ms() / 4));
      cv.wait_for(lk, std::chrono::milliseconds(tick));
      auto now = std::chrono::steady_clock::now();
      for (Engine* e : engines) e->watch(now);
    }
    running = false;
  }
  void add(Engine* e) {
    static std::once_flag once;
    std::call_once(once, [] {
      struct sigaction sa {};
      sa.sa_handler = on_watchdog_signal;
      sa.sa_flags = SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(watchdog_signal(), &sa, nullptr);
    });
    std::lock_guard<std::mutex> lk(mu);
    engines.push_back(e);
    if (!running) {
      running = true;
      std::thread([this] { loop(); }).detach();
    }
    cv.notify_all();
  }
  void remove(Engine* e) {
    std::lock_guard<std::mutex> lk(mu);
    engines.erase(std::remove(engines.begin(), engines.end(), e), engines.end());
    cv.notify_all();
  }
};
Watchdog& watchdog() {
  static auto* w = new Watchdog;  // never destroyed: its thread may outlive static destructors
  return *w;
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
  if (watched_) watchdog().remove(this);
  if (L_) lua_close(L_);
}

void Engine::watch(std::chrono::steady_clock::time_point now) {
  uint64_t s = wd_seq_.load(std::memory_order_acquire);
  if (!s) {
    wd_last_ = 0;
    return;
  }
  if (s != wd_last_) {
    wd_last_ = s;
    wd_since_ = now;
    return;
  }
  if (now - wd_since_ >= std::chrono::milliseconds(budget_ms())) {
    // Signalled again on every tick until the phase ends, in case a signal
    // arrived while the state could not take the hook.
    wd_kill_.store(s, std::memory_order_relaxed);
    pthread_kill(thread_, watchdog_signal());
  }
}

// Stack slots the engine keeps in its state for the whole run.
constexpr int kTracebackSlot = 1, kRunSlot = 2;

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
  lua_getfield(L_, -1, "run");  // kRunSlot
  lua_replace(L_, kRunSlot);
  lua_settop(L_, kRunSlot);
  thread_ = pthread_self();
  watchdog().add(this);
  watched_ = true;
  load(read_filter_files(cfg));
  return true;
}

bool Engine::compile(const std::string& name, const std::string& path, const std::string& src, std::string* err) {
  lua_rawgeti(L_, LUA_REGISTRYINDEX, compile_ref_);
  lua_pushlstring(L_, name.data(), name.size());
  lua_pushlstring(L_, src.data(), src.size());
  lua_pushlstring(L_, path.data(), path.size());
  t_cur = Current{};
  t_cur.eng = this;
  t_cur.active = true;
  enter(budget_ms_ * 4);  // loading may take a little longer
  int rc = lua_pcall(L_, 3, 2, 0);
  leave();
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
  bool ok = call_filter_code(1, "global filters");
  lua_rawgeti(L_, LUA_REGISTRYINDEX, mask_ref_);
  lua_pushinteger(L_, -1);
  lua_call(L_, 1, 1);
  early_mask_ = static_cast<uint16_t>(lua_tointeger(L_, -1)) & ((1 << kEarly) | kMissingFilter);
  if (!ok) early_mask_ = kMissingFilter;
  early_prefixes_.clear();
  early_gated_ = false;
  lua_rawgeti(L_, LUA_REGISTRYINDEX, early_prefixes_ref_);
  lua_call(L_, 0, 1);
  if (lua_istable(L_, -1)) {
    early_gated_ = true;
    for (int i = 1;; i++) {
      lua_rawgeti(L_, -1, i);
      if (!lua_isstring(L_, -1)) {
        lua_pop(L_, 1);
        break;
      }
      early_prefixes_.emplace_back(lua_tostring(L_, -1));
      lua_pop(L_, 1);
    }
  }
  lua_pop(L_, 1);
  lua_pop(L_, 1);
  if (snap_) install(*snap_, masks_);
}

void Engine::install(const route::Snapshot& snap, std::vector<uint16_t>* masks) {
  snap_ = &snap;
  masks_ = masks;
  const auto& routes = snap.routes();
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
    lua_pushstring(L_, routes[i]->spec.name.c_str());
    bool ok = call_filter_code(3, routes[i]->spec.name.c_str());
    lua_rawgeti(L_, LUA_REGISTRYINDEX, mask_ref_);
    lua_pushinteger(L_, static_cast<lua_Integer>(i));
    lua_call(L_, 1, 1);
    (*masks)[i] = ok ? static_cast<uint16_t>(lua_tointeger(L_, -1)) : kMissingFilter;
    lua_pop(L_, 1);
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
  bool fresh = false;
  if (!v.fs) {
    if (!free_states_.empty()) {
      v.fs = std::move(free_states_.back());
      free_states_.pop_back();
    } else {
      v.fs = std::make_unique<FilterState>();
    }
    fresh = true;
  }
  FilterState& fs = *v.fs;
  lua_State* L = L_;
  if (fs.req_ref == -2) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, new_req_ref_);
    lua_call(L, 0, 1);
    fs.req_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fresh = false;
  }
  lua_pushvalue(L, kTracebackSlot);
  int msgh = lua_gettop(L);
  lua_pushvalue(L, kRunSlot);
  lua_pushinteger(L, p);
  lua_pushinteger(L, route_index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, fs.req_ref);
  lua_pushboolean(L, fresh);  // a pooled request object: engine.run clears what the last request left
  t_cur.v = &v;
  t_cur.eng = this;
  t_cur.phase = p;
  t_cur.active = true;
  enter(budget_ms_);
  int rc = lua_pcall(L, 4, 1, msgh);
  leave();
  t_cur.active = false;
  t_cur.v = nullptr;
  Verdict out;
  if (rc != 0) {
    errors_++;
    if (error_counter_) error_counter_->fetch_add(1, std::memory_order_relaxed);
    const char* route = v.route ? v.route->spec.name.c_str() : "(before routing)";
    const char* msg = lua_tostring(L, -1);
    PX_ERR("filter error: route %s, phase %s: %s", route, phase_name(p), msg ? msg : "?");
    if (rc == LUA_ERRMEM || mem_used > mem_limit / 2) lua_gc(L, LUA_GCCOLLECT, 0);
    out = Verdict::failed;
  } else {
    out = lua_toboolean(L, -1) ? Verdict::answered : Verdict::next;
  }
  lua_settop(L, msgh - 1);
  return out;
}

void Engine::done(RequestView& v) {
  if (!v.fs) return;
  v.fs->clear();
  if (free_states_.size() < 256) {
    free_states_.push_back(std::move(v.fs));
  } else {
    if (v.fs->req_ref >= 0) luaL_unref(L_, LUA_REGISTRYINDEX, v.fs->req_ref);
    v.fs.reset();
  }
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

void append_edited(http::HeadWriter& out, const http::Head& h, const std::vector<HeaderEdit>& edits) {
  auto line = [&out](std::string_view n, std::string_view v) { out.field(n, v); };
  for (size_t k = 0; k < edits.size(); k++) {
    const std::string& name = edits[k].name;
    bool first = true;
    for (size_t j = 0; j < k && first; j++) first = !iequals(edits[j].name, name);
    if (!first) continue;  // this name was handled at its first edit
    // The last set or remove of the name decides where its values start.
    size_t base = edits.size();
    for (size_t j = k; j < edits.size(); j++)
      if (edits[j].mode != 1 && iequals(edits[j].name, name)) base = j;
    size_t adds_from = k;
    if (base == edits.size()) {
      for (size_t i = 0; i < h.headers.size(); i++)
        if (iequals(h.name(i), name)) line(name, h.value(i));
    } else {
      if (edits[base].mode == 0) line(name, edits[base].value);
      adds_from = base + 1;
    }
    for (size_t j = adds_from; j < edits.size(); j++)
      if (edits[j].mode == 1 && iequals(edits[j].name, name)) line(name, edits[j].value);
  }
}

// ---- the API (lua/px.lua hands these to filters as req methods and px functions) ----
//
// Plain Lua C functions: from interpreted code (filter code always is) they cost
// a fraction of an FFI call. Each acts on the request this worker is running
// (t_cur) and checks the phase first.

namespace {
constexpr int kAll = 0x3f, kEditReq = 0x0f, kReadResp = 0x30, kEditResp = 0x10, kAnswer = 0x03, kPeerOnly = 0x04;

// Raises t_err as a Lua error at the filter's line.
int refuse(lua_State* L) {
  luaL_where(L, 1);
  lua_pushstring(L, t_err);
  lua_concat(L, 2);
  return lua_error(L);
}
template <class... A>
int refuse(lua_State* L, const char* fmt, A... a) {
  snprintf(t_err, sizeof t_err, fmt, a...);
  return refuse(L);
}

bool refused_call(int mask, const char* call);
// May `call` run now? Otherwise t_err says why (for refuse()).
inline bool allowed(int mask, const char* call) {
  if (t_cur.active && t_cur.v && (mask & (1 << t_cur.phase))) [[likely]] return true;
  return refused_call(mask, call);
}
bool refused_call(int mask, const char* call) {
  if (!t_cur.active || !t_cur.v) {
    snprintf(t_err, sizeof t_err, "%s: not inside a request (call it from a phase function)", call);
    return false;
  }
  if (!(mask & (1 << t_cur.phase))) {
    int n = snprintf(t_err, sizeof t_err, "%s: not allowed in phase '%s' (allowed in ", call, phase_name(t_cur.phase));
    const char* sep = "";
    for (int p = 0; p < kPhases; p++)
      if (mask & (1 << p)) {
        n += snprintf(t_err + n, sizeof t_err - static_cast<size_t>(n), "%s%s", sep, phase_name(p));
        sep = ", ";
      }
    snprintf(t_err + n, sizeof t_err - static_cast<size_t>(n), ")");
    return false;
  }
  return true;
}
#define PX_ALLOWED(mask, call) \
  if (!allowed(mask, call)) return refuse(L)

// RFC 9110 token characters.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> t{};
  for (int c = 33; c < 127; c++) t[static_cast<size_t>(c)] = true;
  for (char c : std::string_view("()<>@,;:\\\"/[]?={}")) t[static_cast<unsigned char>(c)] = false;
  return t;
}();
bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!kTokenChars[static_cast<unsigned char>(c)]) return false;
  return true;
}
// Framing and connection headers belong to px: filters may not edit them.
// The parser's header kinds name them (Expect and other Proxy-* headers are
// not framing: filters may set those).
bool framing(std::string_view v) {
  using http::Hdr;
  switch (http::classify(v)) {
    case Hdr::te: case Hdr::upgrade: case Hdr::trailer: case Hdr::connection: case Hdr::keep_alive:
    case Hdr::content_length: case Hdr::proxy_connection: case Hdr::transfer_encoding:
      return true;
    default:
      return false;
  }
}
bool valid_value(std::string_view v) { return !contains_any<'\r', '\n', '\0'>(v); }

std::string_view arg(lua_State* L, int i) {
  size_t n;
  const char* p = luaL_checklstring(L, i, &n);
  return {p, n};
}
void push(lua_State* L, std::string_view v) { lua_pushlstring(L, v.data(), v.size()); }

// The index-th value (0-based) of `name` after the edits: the original values,
// then set/add/remove in order. Pushes it, or nil.
template <class Each>
int push_lookup(lua_State* L, Each&& each_orig, const std::vector<HeaderEdit>* edits, std::string_view name,
                lua_Integer index) {
  std::vector<std::string_view>& vals = edit_scratch();
  vals.clear();
  each_orig([&](std::string_view n, std::string_view v) {
    if (iequals(n, name)) vals.push_back(v);
  });
  if (edits)
    for (const auto& e : *edits) {
      if (!iequals(e.name, name)) continue;
      if (e.mode == 0) vals.assign(1, e.value);
      else if (e.mode == 1) vals.push_back(e.value);
      else vals.clear();
    }
  if (index < 0 || static_cast<size_t>(index) >= vals.size()) lua_pushnil(L);
  else push(L, vals[static_cast<size_t>(index)]);
  return 1;
}

bool is_https(const RequestView* v) {
  if (v->tls) return true;
  if (!v->trusted_peer) return false;
  std::string_view xfp = v->req->get(http::Hdr::x_forwarded_proto);
  return !xfp.empty() && iequals(trim(xfp.substr(0, xfp.find(','))), "https");
}

// req:method() .. req:scheme(); the upvalue says which.
int api_field(lua_State* L) {
  static const char* calls[] = {"req:method", "req:path", "req:query", "req:host", "req:client_ip",
                                "req:sni", "req:route", "req:uri", "req:scheme"};
  auto which = lua_tointeger(L, lua_upvalueindex(1));
  PX_ALLOWED(kAll, calls[which]);
  const RequestView* v = t_cur.v;
  const http::Head& h = *v->req;
  std::string_view uri = v->uri;
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
      std::string_view host = v->host;
      if (!host.empty() && host.front() == '[') host = host.substr(0, host.find(']') + 1);
      else host = host.substr(0, host.rfind(':') == std::string_view::npos ? host.size() : host.rfind(':'));
      out = host;
      break;
    }
    case 4: {
      char buf[64];
      lua_pushlstring(L, buf, v->client_ip.format(buf));
      return 1;
    }
    case 5: out = v->sni; break;
    case 6: out = v->route ? std::string_view(v->route->spec.name) : std::string_view(); break;
    case 7: out = uri; break;
    case 8: out = is_https(v) ? "https" : "http"; break;
  }
  push(L, out);
  return 1;
}

int api_is_tls(lua_State* L) {
  PX_ALLOWED(kAll, "req:is_tls");
  lua_pushboolean(L, t_cur.v->tls);
  return 1;
}
int api_is_https(lua_State* L) {
  PX_ALLOWED(kAll, "req:is_https");
  lua_pushboolean(L, is_https(t_cur.v));
  return 1;
}

int api_header(lua_State* L) {
  PX_ALLOWED(kAll, "req:header");
  std::string_view name = arg(L, 2);
  lua_Integer index = luaL_optinteger(L, 3, 0);
  const FilterState* fs = t_cur.v->fs.get();
  const http::Head& h = *t_cur.v->req;
  if (!fs || fs->req_edits.empty()) {  // the common case: read the head directly
    for (size_t i = 0; i < h.headers.size(); i++)
      if (iequals(h.name(i), name) && index-- == 0) {
        push(L, h.value(i));
        return 1;
      }
    lua_pushnil(L);
    return 1;
  }
  return push_lookup(
      L,
      [&](auto&& f) {
        for (size_t i = 0; i < h.headers.size(); i++) f(h.name(i), h.value(i));
      },
      &fs->req_edits, name, index);
}

// Does the request (or response) head have the header, or did a filter edit it?
bool has_header(bool response, const std::vector<HeaderEdit>& edits, std::string_view name) {
  for (const auto& e : edits)
    if (iequals(e.name, name)) return true;
  const http::Head* h = response ? t_cur.v->resp : t_cur.v->req;
  if (h) {
    return h->find(name) >= 0;
  } else {
    for (const auto& hv : t_cur.v->fs->respond_headers)
      if (iequals(hv.first, name)) return true;
  }
  return false;
}

// One header edit, checked: the call's phase, a token name, not a framing
// header, a value without CR/LF/NUL. Upvalue 1: the mode (0 set, 1 add, 2 remove).
int edit(lua_State* L, const char* const calls[3], int mask, bool response) {
  int mode = static_cast<int>(lua_tointeger(L, lua_upvalueindex(1)));
  PX_ALLOWED(mask, calls[mode]);
  std::string_view name = arg(L, 2), value = mode == 2 ? std::string_view() : arg(L, 3);
  if (!valid_name(name))
    return refuse(L, "%s: '%.*s' is not a valid header name", calls[mode], static_cast<int>(name.size()), name.data());
  if (framing(name))
    return refuse(L, "%s: %.*s is a framing header px manages", calls[mode], static_cast<int>(name.size()),
                  name.data());
  if (!valid_value(value)) return refuse(L, "%s: a header value cannot hold CR, LF or NUL", calls[mode]);
  auto& edits = response ? t_cur.v->fs->resp_edits : t_cur.v->fs->req_edits;
  if (mode == 2 && !has_header(response, edits, name)) return 0;  // removing what is not there changes nothing
  edits.push_back({static_cast<uint8_t>(mode), std::string(name), std::string(value)});
  return 0;
}
int api_req_edit(lua_State* L) {
  static const char* const calls[] = {"req:set_header", "req:add_header", "req:remove_header"};
  return edit(L, calls, kEditReq, false);
}
int api_resp_edit(lua_State* L) {
  static const char* const calls[] = {"req:set_resp_header", "req:add_resp_header", "req:remove_resp_header"};
  return edit(L, calls, kEditResp, true);
}

int api_status(lua_State* L) {
  PX_ALLOWED(kReadResp, "req:status");
  const FilterState* fs = t_cur.v->fs.get();
  lua_pushinteger(L, fs && fs->new_status ? fs->new_status : t_cur.v->status);
  return 1;
}
int api_set_status(lua_State* L) {
  PX_ALLOWED(kEditResp, "req:set_status");
  lua_Integer status = luaL_checkinteger(L, 2);
  if (status < 200 || status > 599)
    return refuse(L, "req:set_status: %lld is not a final status (200..599)", static_cast<long long>(status));
  t_cur.v->fs->new_status = static_cast<int>(status);
  return 0;
}

int api_resp_header(lua_State* L) {
  PX_ALLOWED(kReadResp, "req:resp_header");
  std::string_view name = arg(L, 2);
  lua_Integer index = luaL_optinteger(L, 3, 0);
  const FilterState* fs = t_cur.v->fs.get();
  const http::Head* resp = t_cur.v->resp;
  return push_lookup(
      L,
      [&](auto&& f) {
        if (resp)
          for (size_t i = 0; i < resp->headers.size(); i++) f(resp->name(i), resp->value(i));
        else if (fs)
          for (const auto& [n, v] : fs->respond_headers) f(n, v);
      },
      fs ? &fs->resp_edits : nullptr, name, index);
}

int respond_header(lua_State* L, std::string_view name, std::string_view value) {
  if (!valid_name(name) || !valid_value(value))
    return refuse(L, "px.respond: invalid header '%.*s'", static_cast<int>(name.size()), name.data());
  t_cur.v->fs->respond_headers.emplace_back(std::string(name), std::string(value));
  return 0;
}

// px.respond(status, headers, body): answers the request; returns px.DONE (upvalue 1).
int api_respond(lua_State* L) {
  PX_ALLOWED(kAnswer, "px.respond");
  lua_Integer status = luaL_checkinteger(L, 1);
  size_t blen = 0;
  const char* body = luaL_optlstring(L, 3, "", &blen);
  if (status < 200 || status > 599)
    return refuse(L, "px.respond: %lld is not a final status (200..599)", static_cast<long long>(status));
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))  // isstring: a string or a number
        return refuse(L, "px.respond: headers must map names to strings or numbers");
      lua_pushvalue(L, -1);  // tolstring converts a number in place: not the key lua_next needs
      size_t nl, vl;
      const char* n = lua_tolstring(L, -3, &nl);
      const char* v = lua_tolstring(L, -1, &vl);
      respond_header(L, {n, nl}, {v, vl});
      lua_pop(L, 2);
    }
  }
  t_cur.v->fs->respond_status = static_cast<int>(status);
  t_cur.v->fs->respond_body.assign(body, blen);
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

// px.redirect(url, status): a redirect answer; returns px.DONE (upvalue 1).
int api_redirect(lua_State* L) {
  PX_ALLOWED(kAnswer, "px.redirect");
  std::string_view url = arg(L, 1);
  lua_Integer status = luaL_optinteger(L, 2, 302);
  if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308)
    return refuse(L, "px.redirect: status must be 301, 302, 303, 307 or 308");
  respond_header(L, "Location", url);
  t_cur.v->fs->respond_status = static_cast<int>(status);
  t_cur.v->fs->respond_body.clear();
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

int peers(const RequestView* v) { return v->route ? static_cast<int>(v->route->pool.peers.size()) : 0; }
int api_peer_count(lua_State* L) {
  PX_ALLOWED(kAll, "px.peer_count");
  lua_pushinteger(L, peers(t_cur.v));
  return 1;
}
int api_set_peer(lua_State* L) {
  PX_ALLOWED(kPeerOnly, "px.set_peer");
  lua_Integer index = luaL_checkinteger(L, 1);
  int n = peers(t_cur.v);
  if (index < 1 || index > n)
    return refuse(L, "px.set_peer: %lld is not a peer of this route (1..%d)", static_cast<long long>(index), n);
  t_cur.v->fs->peer = static_cast<int>(index - 1);
  return 0;
}

// log(level 0..3, message): px.log in lua/px.lua builds the message.
int api_log(lua_State* L) {
  int level = static_cast<int>(luaL_checkinteger(L, 1));
  std::string_view msg = arg(L, 2);
  if (level < 0 || level > 3) level = 2;
  const char* route = t_cur.v && t_cur.v->route ? t_cur.v->route->spec.name.c_str() : "-";
  PX_LOG(static_cast<log::Level>(level), "filter (route %s, phase %s): %.*s", route,
         phase_name(t_cur.active ? t_cur.phase : -1), static_cast<int>(msg.size()), msg.data());
  return 0;
}

int api_now(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(now_ns()) / 1e9);
  return 1;
}

const route::AclSpec* acl_named(lua_State* L, const char* call, std::string_view name) {
  if (!allowed(kAnswer, call)) {
    refuse(L);
    return nullptr;
  }
  const RequestView* v = t_cur.v;
  const auto* acl = v->snap ? v->snap->acl(name) : nullptr;
  if (!acl) refuse(L, "%s: no access list named '%.*s'", call, static_cast<int>(name.size()), name.data());
  return acl;
}
// px.acl_check(list [, authorization]): 0 allow, 1 needs credentials (401), 2
// denied (403); and whether the request's Authorization header may stay (the
// list passes it upstream, or there is none: nothing for the filter to remove).
// Without an authorization argument, the request's Authorization header counts.
int api_acl_check(lua_State* L) {
  std::string_view name = arg(L, 1);
  const auto* acl = acl_named(L, "px.acl_check", name);  // refuses outside E and R
  const RequestView* v = t_cur.v;
  int own = v->req->find(http::Hdr::authorization);
  std::string_view auth;
  if (lua_isnoneornil(L, 2)) {
    if (own >= 0) auth = v->req->value(static_cast<size_t>(own));
  } else {
    auth = arg(L, 2);
  }
  lua_pushinteger(L, static_cast<int>(route::acl_decide(*acl, v->client_ip, auth, *v->auth_cache, v->now_ms)));
  lua_pushboolean(L, acl->pass_authorization || own < 0);
  return 2;
}
int api_acl_realm(lua_State* L) {
  push(L, acl_named(L, "px.acl_realm", arg(L, 1))->realm);
  return 1;
}

int api_acme_challenge(lua_State* L) {
  PX_ALLOWED(kAnswer, "px.acme_challenge");
  std::string_view token = arg(L, 1);
  const route::Snapshot* snap = t_cur.v->snap;
  const std::string* v = snap ? snap->challenge(token) : nullptr;
  if (v) push(L, *v);
  else lua_pushnil(L);
  return 1;
}

int done_tostring(lua_State* L) {
  lua_pushliteral(L, "px.DONE");
  return 1;
}
}  // namespace

std::vector<std::string_view>& edit_scratch() {
  static thread_local std::vector<std::string_view> v;
  return v;
}

void push_api(lua_State* L) {
  lua_newtable(L);
  lua_newtable(L);  // px.DONE: what respond and redirect return
  lua_newtable(L);
  lua_pushcfunction(L, done_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "DONE");
  int done = lua_gettop(L);
  auto fn = [&](const char* name, lua_CFunction f) {
    lua_pushcfunction(L, f);
    lua_setfield(L, -3, name);
  };
  auto with = [&](const char* name, lua_CFunction f, int up) {
    lua_pushinteger(L, up);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -3, name);
  };
  const char* fields[] = {"method", "path", "query", "host", "client_ip", "sni", "route", "uri", "scheme"};
  for (int i = 0; i < 9; i++) with(fields[i], api_field, i);
  fn("is_tls", api_is_tls);
  fn("is_https", api_is_https);
  fn("header", api_header);
  with("set_header", api_req_edit, 0);
  with("add_header", api_req_edit, 1);
  with("remove_header", api_req_edit, 2);
  fn("status", api_status);
  fn("set_status", api_set_status);
  fn("resp_header", api_resp_header);
  with("set_resp_header", api_resp_edit, 0);
  with("add_resp_header", api_resp_edit, 1);
  with("remove_resp_header", api_resp_edit, 2);
  for (auto [name, f] : {std::pair<const char*, lua_CFunction>{"respond", api_respond}, {"redirect", api_redirect}}) {
    lua_pushvalue(L, done);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -3, name);
  }
  fn("set_peer", api_set_peer);
  fn("peer_count", api_peer_count);
  fn("log", api_log);
  fn("now", api_now);
  fn("acl_check", api_acl_check);
  fn("acl_realm", api_acl_realm);
  fn("acme_challenge", api_acme_challenge);
  lua_pop(L, 1);  // DONE
}

std::string check_filter(const std::string& path, const std::string& source, const std::string& ldir) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  std::string err;
  bool loaded = luaL_loadfile(L, (ldir + "/px.lua").c_str()) == 0;
  if (loaded) push_api(L);
  if (!loaded || lua_pcall(L, 1, 1, 0) != 0) {
    err = std::string("lua/px.lua: ") + lua_tostring(L, -1);
  } else {
    lua_getfield(L, -1, "_engine");
    lua_getfield(L, -1, "compile");
    std::string name = name_of(path);
    lua_pushstring(L, name.c_str());
    lua_pushlstring(L, source.data(), source.size());
    lua_pushstring(L, path.c_str());
    // Loading runs the file's top level: a loop there must not hang the checker.
    t_check_deadline = now_ns() + kCheckBudgetMs * 1000000ull;
    lua_sethook(L, check_hook, LUA_MASKCOUNT, 1000);
    if (lua_pcall(L, 3, 2, 0) != 0) err = lua_tostring(L, -1);
    else if (lua_isnil(L, -2)) err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error";
    t_check_deadline = 0;
  }
  lua_close(L);
  return err;
}

}  // namespace px::lua
