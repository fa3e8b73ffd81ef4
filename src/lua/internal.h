// What the Lua engine's files share (src/lua only): the request being run, the
// refusal message, the budget's pieces, and the API table.
//
//   engine.cpp    the state: creating it, binding routes to chains, running a phase
//   loader.cpp    filter files: finding, compiling, live reload, pxctl filter check
//   watchdog.cpp  the time budget: the watchdog thread and its hooks
//   api.cpp       the px API filters call (req methods and px functions)
//   edits.cpp     header edits (set/add/remove) applied to a head
#pragma once
extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
}

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/shared_table.h"
#include "lua/engine.h"

namespace px::lua {

// The request being run. Plain data, so that reading it costs no thread-local
// initialisation check (and the watchdog's signal handler may read it).
struct Current {
  RequestView* v;  // the request being processed, nullptr outside one
  Engine* eng;
  int phase;
  bool active;
};
extern constinit thread_local Current t_cur;
extern constinit thread_local char t_err[512];            // the message of a refused call
extern constinit thread_local uint64_t t_check_deadline;  // check_filter's budget

// Stack slots the engine keeps in its state for the whole run.
inline constexpr int kTracebackSlot = 1, kRunSlot = 2;
// check_filter's scratch state runs once, not per request: a plain count hook.
inline constexpr uint64_t kCheckBudgetMs = 2000;

uint64_t now_ns();
void check_hook(lua_State* L, lua_Debug*);
void watchdog_add(Engine* e);
void watchdog_remove(Engine* e);
// A JSON value as a Lua value (objects and arrays as tables, null as nil).
void push_json(lua_State* L, const nlohmann::json& j);
// The table of API functions lua/px.lua is loaded with.
void push_api(lua_State* L);
// The message handler of every phase call: the message, located in the user's filter (engine.cpp), and a
// traceback.
int traceback(lua_State* L);
std::vector<std::string_view>& edit_scratch();
// px.fetch's fields ("Name: value\r\n" lines): each field of the request with this name, as it came; and
// what an auth service is told of the request (X-Forwarded-Method/-Proto/-Host/-Uri/-For, X-Original-*).
void append_request_field(std::string* fields, const http::Head& h, std::string_view name);
void append_forwarded(std::string* fields, const RequestView& v);
// A field name a filter may set or send: a token, and not one of the framing fields px manages.
bool field_name_ok(std::string_view name);
// One request through the leaky bucket `key` of `zone` (px.limit, and rate_limit run in C++: native.cpp), in
// the host's shared table (the engine's; outside pxd, a scratch one per thread).
SharedTable::Verdict limit_bucket(std::string_view zone, std::string_view key, uint64_t interval, uint64_t burst,
                                  uint64_t delay);

// One header edit applied to the values of its name (set replaces them, add appends, remove clears).
template <class Values>
void apply_edit(Values& vals, const HeaderEdit& e) {
  if (e.mode == 0)
    vals.assign(1, e.value);
  else if (e.mode == 1)
    vals.push_back(e.value);
  else
    vals.clear();
}  // a filter's name: its file name without ".lua"

}  // namespace px::lua
