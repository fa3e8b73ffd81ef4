// Filter files: where they are, compiling them into the state (and recompiling
// them live: a file that fails keeps its previous version), and checking one in
// a scratch state for pxctl filter check.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/log.h"
#include "daemon/config.h"
#include "lua/internal.h"

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

bool read_source(const std::string& path, std::string* out) {
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
      if (read_source(path, &src)) byname[n.substr(0, n.size() - 4)] = {path, src};
    }
    closedir(dir);
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, ps] : byname) out.push_back(ps);
  return out;
}

std::string filter_name(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string base = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (base.size() > 4 && base.compare(base.size() - 4, 4, ".lua") == 0) base.resize(base.size() - 4);
  return base;
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
    std::string name = filter_name(path), err;
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

namespace {
// A scratch state for a check that runs once, not per request (pxctl, pxadmind): lua/px.lua loaded, then one
// filter file compiled, under a plain count hook and kCheckBudgetMs (its top level, like its prepare, must not
// hang the checker). On success the stack ends with px.lua's engine table and the module.
struct Scratch {
  lua_State* L = luaL_newstate();
  std::string err;
  Scratch(const std::string& path, const std::string& source, const std::string& ldir) {
    luaL_openlibs(L);
    bool loaded = luaL_loadfile(L, (ldir + "/px.lua").c_str()) == 0;
    if (loaded) push_api(L);
    if (!loaded || lua_pcall(L, 1, 1, 0) != 0) {
      err = std::string("lua/px.lua: ") + lua_tostring(L, -1);
      return;
    }
    lua_getfield(L, -1, "_engine");
    lua_getfield(L, -1, "compile");
    std::string name = filter_name(path);
    lua_pushstring(L, name.c_str());
    lua_pushlstring(L, source.data(), source.size());
    lua_pushstring(L, path.c_str());
    t_check_deadline = now_ns() + kCheckBudgetMs * 1000000ull;
    lua_sethook(L, check_hook, LUA_MASKCOUNT, 1000);
    if (lua_pcall(L, 3, 2, 0) != 0)
      err = lua_tostring(L, -1);
    else if (lua_isnil(L, -2))
      err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error";
    else
      lua_pop(L, 1);  // engine, module
  }
  ~Scratch() {
    t_check_deadline = 0;
    lua_close(L);
  }
};
}  // namespace

std::string check_filter(const std::string& path, const std::string& source, const std::string& ldir) {
  return Scratch(path, source, ldir).err;
}

ConfigCheck check_config(const std::string& path, const std::string& source, const std::string& config_json,
                         const std::string& ldir) {
  ConfigCheck r;
  Scratch s(path, source, ldir);
  if (!s.err.empty()) {
    r.error = s.err;
    r.filter_broken = true;
    return r;
  }
  lua_State* L = s.L;
  lua_getfield(L, -2, "check_config");
  lua_pushstring(L, filter_name(path).c_str());
  lua_pushvalue(L, -3);  // the module
  push_json(L, json::parse(config_json, nullptr, false));
  if (lua_pcall(L, 3, 3, 0) != 0) {
    r.error = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error";
    return r;
  }
  if (lua_isstring(L, -3)) {
    r.key = lua_tostring(L, -3);
    r.error = lua_tostring(L, -2) ? lua_tostring(L, -2) : "error";
  }
  for (int i = 1; lua_istable(L, -1); i++) {
    lua_rawgeti(L, -1, i);
    if (!lua_isstring(L, -1)) break;
    r.acls.emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return r;
}

}  // namespace px::lua
