#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "core/log.h"
#include "core/shared_table.h"
#include "core/strings.h"
#include "http/grammar.h"
#include "http/parser.h"
#include "lua/internal.h"
#include "route/acl.h"
#include "route/snapshot.h"

namespace px::lua {

// ---- the API (lua/px.lua hands these to filters as req methods and px functions) ----
//
// Plain Lua C functions: from interpreted code (filter code always is) they cost
// a fraction of an FFI call. Each acts on the request this worker is running
// (t_cur) and checks the phase first.

namespace {
constexpr int kAll = 0x3f, kEditReq = 0x0f, kReadResp = 0x30, kEditResp = 0x10, kAnswer = 0x13, kPeerOnly = 0x04;

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
  if (t_cur.active && t_cur.v && (mask & (1 << t_cur.phase))) [[likely]]
    return true;
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

bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!http::has_class(static_cast<unsigned char>(c), http::kTchar)) return false;
  return true;
}
// Framing and connection headers belong to px: filters may not edit them.
// The parser's header kinds name them (Expect and other Proxy-* headers are
// not framing: filters may set those).
bool framing(std::string_view v) {
  using http::Hdr;
  switch (http::classify(v)) {
    case Hdr::te:
    case Hdr::upgrade:
    case Hdr::trailer:
    case Hdr::connection:
    case Hdr::keep_alive:
    case Hdr::content_length:
    case Hdr::proxy_connection:
    case Hdr::transfer_encoding: return true;
    default: return false;
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
    for (const auto& e : *edits)
      if (iequals(e.name, name)) apply_edit(vals, e);
  if (index < 0 || static_cast<size_t>(index) >= vals.size())
    lua_pushnil(L);
  else
    push(L, vals[static_cast<size_t>(index)]);
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
  static const char* calls[] = {"req:method", "req:path",  "req:query", "req:host",  "req:client_ip",
                                "req:sni",    "req:route", "req:uri",   "req:scheme"};
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
      if (!host.empty() && host.front() == '[')
        host = host.substr(0, host.find(']') + 1);
      else
        host = host.substr(0, host.rfind(':') == std::string_view::npos ? host.size() : host.rfind(':'));
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

// req:http_version(): 1.0, 1.1 or 2, a number (as OpenResty's ngx.req.http_version()).
int api_http_version(lua_State* L) {
  PX_ALLOWED(kAll, "req:http_version");
  const http::Head& h = *t_cur.v->req;
  lua_pushnumber(L, h.major == 2 ? 2.0 : h.minor == 0 ? 1.0 : 1.1);
  return 1;
}

// req:request_id(): the X-Request-ID of this request (the client's, when it sent a valid one, or px's).
int api_request_id(lua_State* L) {
  PX_ALLOWED(kAll, "req:request_id");
  std::string_view id = t_cur.v->request_id ? t_cur.v->request_id(t_cur.v->owner) : std::string_view();
  lua_pushlstring(L, id.data(), id.size());
  return 1;
}

// req:country(): the client's ISO 3166 country code from pxd.conf's geoip_database ("DE"), or nil.
int api_country(lua_State* L) {
  PX_ALLOWED(kAll, "req:country");
  const char* c = t_cur.v->geo ? t_cur.v->geo->lookup(t_cur.v->client_ip).country : "";
  if (*c)
    lua_pushlstring(L, c, 2);
  else
    lua_pushnil(L);
  return 1;
}

// req:asn(): the client's autonomous system number from geoip_asn_database, or nil.
int api_asn(lua_State* L) {
  PX_ALLOWED(kAll, "req:asn");
  uint32_t n = t_cur.v->geo ? t_cur.v->geo->lookup(t_cur.v->client_ip).asn : 0;
  if (n)
    lua_pushinteger(L, n);
  else
    lua_pushnil(L);
  return 1;
}

// req:from_upstream(): whether the response is the upstream's (false: px or a filter answered).
int api_from_upstream(lua_State* L) {
  PX_ALLOWED(kReadResp, "req:from_upstream");
  lua_pushboolean(L, t_cur.v->resp != nullptr);
  return 1;
}

// px.read_file(path): a file's contents (at most 1 MiB), or nil and why. Only outside a request: at a
// filter's top level or in its prepare (once per route), never per request.
int api_read_file(lua_State* L) {
  const char* path = luaL_checkstring(L, 1);
  if (t_cur.v) return refuse(L, "px.read_file: only at a filter's top level or in prepare, not per request");
  FILE* f = std::fopen(path, "rb");
  if (!f) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, std::strerror(errno));
    return 2;
  }
  constexpr size_t kMax = 1 << 20;
  std::string data(kMax + 1, '\0');
  size_t n = std::fread(data.data(), 1, data.size(), f);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed || n > kMax) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, failed ? "read error" : "larger than 1 MiB");
    return 2;
  }
  lua_pushlstring(L, data.data(), n);
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

// The cache stage's hooks (stream/cache.h): a key of the filter's choice, no cache for this request, or this
// response not stored.
int api_cache_key(lua_State* L) {
  PX_ALLOWED(0x02, "req:cache_key");
  std::string_view k = arg(L, 2);
  if (k.empty() || k.size() > 4096) return refuse(L, "req:cache_key: expected 1 to 4096 bytes");
  t_cur.v->fs->cache_key.assign(k);
  return 0;
}
int api_cache_bypass(lua_State* L) {
  PX_ALLOWED(0x02, "req:cache_bypass");
  t_cur.v->fs->cache_bypass = true;
  return 0;
}
int api_cache_no_store(lua_State* L) {
  PX_ALLOWED(kEditResp, "req:cache_no_store");
  t_cur.v->fs->cache_no_store = true;
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
  t_cur.v->fs->respond_headers.clear();  // a new answer replaces any earlier one
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      size_t nl, vl;
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {  // a list: one field per value (Set-Cookie)
        const char* n = lua_tolstring(L, -2, &nl);
        for (int i = 1;; i++) {
          lua_rawgeti(L, -1, i);
          if (lua_isnil(L, -1)) break;
          if (!lua_isstring(L, -1)) return refuse(L, "px.respond: a header's list must hold strings or numbers");
          const char* v = lua_tolstring(L, -1, &vl);
          respond_header(L, {n, nl}, {v, vl});
          lua_pop(L, 1);
        }
        lua_pop(L, 2);
        continue;
      }
      if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))  // isstring: a string or a number
        return refuse(L, "px.respond: headers must map names to strings, numbers or lists of them");
      lua_pushvalue(L, -1);  // tolstring converts a number in place: not the key lua_next needs
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
  t_cur.v->fs->respond_headers.clear();  // a new answer replaces any earlier one
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
  route::AclVerdict verdict;
  if (acl->users.empty()) {
    verdict = route::acl_decide(*acl, v->client_ip, auth, *v->auth_cache, v->now_ms);
  } else {
    Engine* eng = t_cur.eng;
    uint64_t t0 = now_ns();
    eng->slow_call_begin();
    verdict = route::acl_decide(*acl, v->client_ip, auth, *v->auth_cache, v->now_ms);
    eng->slow_call_end((now_ns() - t0) / 1000000 + 1);
  }
  lua_pushinteger(L, static_cast<int>(verdict));
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
  if (v)
    push(L, *v);
  else
    lua_pushnil(L);
  return 1;
}

// ---- the host's shared table (core/shared_table.h): px.limit and px.shared ----

SharedTable& table() {
  static thread_local std::unique_ptr<SharedTable> scratch;  // outside pxd's workers (a check, a test)
  Engine* e = t_cur.eng;
  if (e && e->shared) return *e->shared;
  if (!scratch) scratch = std::make_unique<SharedTable>(4096);
  return *scratch;
}

double number_arg(lua_State* L, int i, const char* call, const char* what) {
  if (lua_type(L, i) != LUA_TNUMBER) refuse(L, "%s: %s must be a number", call, what);
  return lua_tonumber(L, i);
}

// px.limit(zone, key, rate, burst [, delay]): a leaky bucket, exact for the whole host. zone and key name the
// bucket (key nil: the client's address, as bytes: nginx's $binary_remote_addr, without a Lua string). rate:
// requests per second; burst: how many more may queue; delay: how many of those go at once (nginx's delay=;
// default 0; burst or more: nodelay). Returns the seconds the request should wait (0: at once), or nil and
// the seconds until one would pass.
int api_limit(lua_State* L) {
  std::string_view zone = arg(L, 1);
  double rate = number_arg(L, 3, "px.limit", "rate");
  double burst = number_arg(L, 4, "px.limit", "burst");
  double delay = lua_isnoneornil(L, 5) ? 0 : number_arg(L, 5, "px.limit", "delay");
  if (!(rate > 0 && rate <= 1e9)) return refuse(L, "px.limit: rate must be above 0 requests a second");
  if (!(burst >= 0 && burst <= 1e6 && delay >= 0))
    return refuse(L, "px.limit: burst must be 0 to 1000000, delay 0 or more");
  std::string_view key;
  if (lua_isnoneornil(L, 2)) {
    if (!t_cur.v) return refuse(L, "px.limit: no key and no request (the client's address is the default key)");
    key = {reinterpret_cast<const char*>(t_cur.v->client_ip.b.data()), t_cur.v->client_ip.b.size()};
  } else {
    key = arg(L, 2);
  }
  uint64_t interval = static_cast<uint64_t>(1e9 / rate);
  auto v =
      limit_bucket(zone, key, interval, static_cast<uint64_t>(burst), static_cast<uint64_t>(std::min(delay, burst)));
  if (v.ok) {
    lua_pushnumber(L, static_cast<double>(v.wait) / 1e9);
    return 1;
  }
  lua_pushnil(L);
  lua_pushnumber(L, static_cast<double>(v.wait) / 1e9);
  return 2;
}

uint64_t ttl_arg(lua_State* L, int i, const char* call) {
  if (lua_isnoneornil(L, i)) return 0;
  double ttl = number_arg(L, i, call, "ttl");
  if (!(ttl > 0 && ttl < 1e7)) refuse(L, "%s: ttl must be a number of seconds above 0", call);
  return static_cast<uint64_t>(ttl * 1e9);
}
int64_t whole_arg(lua_State* L, int i, const char* call, const char* what) {
  double v = number_arg(L, i, call, what);
  if (v != static_cast<double>(static_cast<int64_t>(v)) || v < -2147483648.0 || v > 2147483647.0)
    refuse(L, "%s: %s must be a whole number (a 32-bit integer)", call, what);
  return static_cast<int64_t>(v);
}

int api_shared_get(lua_State* L) {
  SharedTable& t = table();
  int64_t v;
  if (t.get(t.key(SharedTable::kCounter, arg(L, 1)), t.now(), &v))
    lua_pushinteger(L, static_cast<lua_Integer>(v));
  else
    lua_pushnil(L);
  return 1;
}
int api_shared_set(lua_State* L) {
  SharedTable& t = table();
  uint64_t k = t.key(SharedTable::kCounter, arg(L, 1));
  if (lua_isnil(L, 2)) {
    t.erase(k, t.now());
    return 0;
  }
  int64_t v = whole_arg(L, 2, "px.shared.set", "the value");
  t.set(k, v, ttl_arg(L, 3, "px.shared.set"), t.now());
  return 0;
}
int api_shared_incr(lua_State* L) {
  SharedTable& t = table();
  uint64_t k = t.key(SharedTable::kCounter, arg(L, 1));
  int64_t by = lua_isnoneornil(L, 2) ? 1 : whole_arg(L, 2, "px.shared.incr", "by");
  lua_pushinteger(L, static_cast<lua_Integer>(t.incr(k, by, ttl_arg(L, 3, "px.shared.incr"), t.now())));
  return 1;
}

// ---- waiting (Verdict::wait): the filter's coroutine yields, the stream waits, Engine::resume goes on ----

constexpr int kRequestOnly = 1 << kRequest;

bool in_coroutine(lua_State* L, const char* call) {
  if (lua_pushthread(L) == 0) {
    lua_pop(L, 1);
    return true;
  }
  lua_pop(L, 1);
  snprintf(t_err, sizeof t_err, "%s: the filter must declare `yields = true` in its table to wait", call);
  return false;
}

// px.sleep(seconds): the request waits, the worker does not (up to an hour).
int api_sleep(lua_State* L) {
  PX_ALLOWED(kRequestOnly, "px.sleep");
  double sec = number_arg(L, 1, "px.sleep", "the time");
  if (!(sec >= 0 && sec <= 3600)) return refuse(L, "px.sleep: the time must be 0 to 3600 seconds");
  if (!in_coroutine(L, "px.sleep")) return refuse(L);
  FilterState& fs = *t_cur.v->fs;
  fs.wait = FilterState::kSleep;
  fs.wait_ms = static_cast<uint64_t>(sec * 1000 + 0.5);
  return lua_yield(L, 0);
}

// px.delay(seconds): `return px.delay(s)` ends the filter's turn; the request waits, then the phase's next
// filter runs. Returns px.WAIT (upvalue 1).
int api_delay(lua_State* L) {
  PX_ALLOWED(kRequestOnly, "px.delay");
  double sec = number_arg(L, 1, "px.delay", "the time");
  if (!(sec >= 0 && sec <= 3600)) return refuse(L, "px.delay: the time must be 0 to 3600 seconds");
  FilterState& fs = *t_cur.v->fs;
  fs.wait = FilterState::kSleep;
  fs.wait_ms = static_cast<uint64_t>(sec * 1000 + 0.5);
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

// px.fetch(url [, {method=, headers=, body=, timeout=}]): an outbound HTTP request; the filter waits for its
// answer: { status, headers, body [, multi] }, or nil and why. Only to an origin (scheme, host, port) that
// the route's filter configs name.
int api_fetch(lua_State* L) {
  PX_ALLOWED(kRequestOnly, "px.fetch");
  std::string_view url = arg(L, 1);
  if (!t_cur.eng->fetch_allowed(t_cur.v->route, url))
    return refuse(L, "px.fetch: %.*s is not an origin this route's filter configs name", static_cast<int>(url.size()),
                  url.data());
  FilterState& fs = *t_cur.v->fs;
  FetchCall& c = fs.fetch;  // pooled with the filter state: its strings keep their capacity
  c.method.assign("GET");
  c.url.assign(url);
  c.body.clear();
  c.fields.clear();
  c.timeout_ms = 5000;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "method");
    if (!lua_isnil(L, -1)) {
      std::string_view m = arg(L, -1);
      if (!valid_name(m)) return refuse(L, "px.fetch: method must be a token");
      c.method.assign(m);
    }
    lua_getfield(L, 2, "body");
    if (!lua_isnil(L, -1)) c.body.assign(arg(L, -1));
    lua_getfield(L, 2, "timeout");
    if (!lua_isnil(L, -1)) {
      double t = number_arg(L, -1, "px.fetch", "timeout");
      if (!(t > 0 && t <= 300)) return refuse(L, "px.fetch: timeout must be above 0 and at most 300 seconds");
      c.timeout_ms = static_cast<uint64_t>(t * 1000 + 0.5);
    }
    lua_getfield(L, 2, "headers");
    if (lua_istable(L, -1)) {
      for (lua_pushnil(L); lua_next(L, -2) != 0; lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
          return refuse(L, "px.fetch: headers must map names to strings");
        std::string_view name = arg(L, -2), value = arg(L, -1);
        if (!valid_name(name) || !valid_value(value) || framing(name))
          return refuse(L, "px.fetch: header '%.*s' cannot be sent", static_cast<int>(name.size()), name.data());
        c.fields.append(name).append(": ").append(value).append("\r\n");
      }
    } else if (!lua_isnil(L, -1)) {
      return refuse(L, "px.fetch: headers must be a table");
    }
    lua_pop(L, 4);
    // forward = {names}: those fields of the request, as it came (each one it has); forwarded = true: what
    // an auth service is told of the request (X-Forwarded-*, X-Original-*). Both made here, without Lua
    // strings: forward_auth's subrequest per request.
    const RequestView* v = t_cur.v;
    const http::Head& h = *v->req;
    lua_getfield(L, 2, "forward");
    if (lua_istable(L, -1)) {
      for (int i = 1;; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          break;
        }
        if (lua_type(L, -1) != LUA_TSTRING) return refuse(L, "px.fetch: forward must list header names");
        std::string_view name = arg(L, -1);
        if (!valid_name(name) || framing(name))
          return refuse(L, "px.fetch: header '%.*s' cannot be sent", static_cast<int>(name.size()), name.data());
        append_request_field(&c.fields, h, name);
        lua_pop(L, 1);
      }
    }
    lua_getfield(L, 2, "forwarded");
    if (lua_toboolean(L, -1)) append_forwarded(&c.fields, *v);
    lua_pop(L, 2);
  } else if (!lua_isnoneornil(L, 2)) {
    return refuse(L, "px.fetch: the options must be a table");
  }
  if (!in_coroutine(L, "px.fetch")) return refuse(L);
  fs.wait = FilterState::kFetch;
  return lua_yield(L, 0);
}

// ---- crypto for filters (the challenge filter's proofs and cookies): BoringSSL's ----

int api_sha256(lua_State* L) {  // px.sha256(s): the 32-byte digest
  std::string_view m = arg(L, 1);
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(m.data()), m.size(), d);
  lua_pushlstring(L, reinterpret_cast<const char*>(d), sizeof d);
  return 1;
}
int api_hmac_sha256(lua_State* L) {  // px.hmac_sha256(key, s): the 32-byte MAC
  std::string_view k = arg(L, 1), m = arg(L, 2);
  uint8_t d[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  HMAC(EVP_sha256(), k.data(), k.size(), reinterpret_cast<const uint8_t*>(m.data()), m.size(), d, &n);
  lua_pushlstring(L, reinterpret_cast<const char*>(d), n);
  return 1;
}
int api_random_bytes(lua_State* L) {  // px.random_bytes(n): n bytes from the CSPRNG (at most 1024)
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 0 || n > 1024) return refuse(L, "px.random_bytes: n must be 0 to 1024");
  uint8_t b[1024];
  RAND_bytes(b, static_cast<size_t>(n));
  lua_pushlstring(L, reinterpret_cast<const char*>(b), static_cast<size_t>(n));
  return 1;
}
int api_to_hex(lua_State* L) {  // px.to_hex(s): lower-case hex
  std::string_view m = arg(L, 1);
  static const char digits[] = "0123456789abcdef";
  std::string out(m.size() * 2, '\0');
  for (size_t i = 0; i < m.size(); i++) {
    out[2 * i] = digits[static_cast<uint8_t>(m[i]) >> 4];
    out[2 * i + 1] = digits[static_cast<uint8_t>(m[i]) & 15];
  }
  push(L, out);
  return 1;
}
int api_secure_equal(lua_State* L) {  // px.secure_equal(a, b): compares in time that depends on the length only
  std::string_view a = arg(L, 1), b = arg(L, 2);
  lua_pushboolean(L, a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0);
  return 1;
}
int api_host_secret(lua_State* L) {  // px.host_secret(): 32 random bytes, the same in every worker of this pxd
  static const std::string secret = [] {
    std::string s(32, '\0');
    RAND_bytes(reinterpret_cast<uint8_t*>(s.data()), s.size());
    return s;
  }();
  push(L, secret);
  return 1;
}

// px.reverse_dns(ip): the name the address's PTR record gives, when that name resolves back to the address
// (forward-confirmed, as search engines tell sites to check their crawlers), or nil. The filter waits.
int api_reverse_dns(lua_State* L) {
  PX_ALLOWED(kRequestOnly, "px.reverse_dns");
  net::IpAddr ip;
  if (!net::IpAddr::parse(arg(L, 1), &ip)) return refuse(L, "px.reverse_dns: not an IP address");
  if (!in_coroutine(L, "px.reverse_dns")) return refuse(L);
  FilterState& fs = *t_cur.v->fs;
  fs.fetch.url.assign(arg(L, 1));
  fs.wait = FilterState::kDns;
  return lua_yield(L, 0);
}

// px.cidrs({"10.0.0.0/8", "::1", ...}): a matcher of those networks (made once, in prepare), whose
// :contains(ip) says whether an address is in one.
constexpr const char* kCidrsMeta = "px.cidrs";
int api_cidrs(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  auto* set = new (lua_newuserdata(L, sizeof(net::CidrSet))) net::CidrSet();
  luaL_getmetatable(L, kCidrsMeta);
  lua_setmetatable(L, -2);
  for (int i = 1;; i++) {
    lua_rawgeti(L, 1, i);
    if (lua_isnil(L, -1)) break;
    net::Cidr c;
    std::string err;
    if (!lua_isstring(L, -1) || !net::Cidr::parse(arg(L, -1), &c, &err))
      return refuse(L, "px.cidrs: item %d: %s", i, err.empty() ? "not a string" : err.c_str());
    set->add(c);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}
int cidrs_contains(lua_State* L) {
  auto* set = static_cast<net::CidrSet*>(luaL_checkudata(L, 1, kCidrsMeta));
  net::IpAddr ip;
  lua_pushboolean(L, net::IpAddr::parse(arg(L, 2), &ip) && set->contains(ip));
  return 1;
}
int cidrs_gc(lua_State* L) {
  static_cast<net::CidrSet*>(luaL_checkudata(L, 1, kCidrsMeta))->~CidrSet();
  return 0;
}

int done_tostring(lua_State* L) {
  lua_pushliteral(L, "px.DONE");
  return 1;
}
}  // namespace

void append_request_field(std::string* fields, const http::Head& h, std::string_view name) {
  for (size_t k = 0; k < h.headers.size(); k++)
    if (iequals(h.name(k), name)) fields->append(name).append(": ").append(h.value(k)).append("\r\n");
}

void append_forwarded(std::string* f, const RequestView& v) {
  std::string_view method = v.req->method_name(), scheme = is_https(&v) ? "https" : "http";
  char ip[64];
  size_t iplen = v.client_ip.format(ip);
  f->append("X-Forwarded-Method: ").append(method).append("\r\nX-Forwarded-Proto: ").append(scheme);
  f->append("\r\nX-Forwarded-Host: ").append(v.host).append("\r\nX-Forwarded-Uri: ").append(v.uri);
  f->append("\r\nX-Forwarded-For: ").append(ip, iplen).append("\r\nX-Original-Method: ").append(method);
  f->append("\r\nX-Original-URL: ").append(scheme).append("://").append(v.host).append(v.uri);
  f->append("\r\n");
}

bool field_name_ok(std::string_view name) { return valid_name(name) && !framing(name); }

SharedTable::Verdict limit_bucket(std::string_view zone, std::string_view key, uint64_t interval, uint64_t burst,
                                  uint64_t delay) {
  char buf[512];
  std::string joined;
  std::string_view name;  // zone, a NUL, key
  if (zone.size() + 1 + key.size() <= sizeof buf) {
    memcpy(buf, zone.data(), zone.size());
    buf[zone.size()] = '\0';
    memcpy(buf + zone.size() + 1, key.data(), key.size());
    name = {buf, zone.size() + 1 + key.size()};
  } else {
    joined.append(zone).push_back('\0');
    joined.append(key);
    name = joined;
  }
  SharedTable& t = table();
  return t.limit(t.key(SharedTable::kLimit, name), t.now(), interval ? interval : 1, burst, delay);
}

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
  lua_newtable(L);  // px.WAIT: what px.delay returns
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "WAIT");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, api_delay, 1);
  lua_setfield(L, -4, "delay");
  lua_pop(L, 1);
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
  fn("http_version", api_http_version);
  fn("is_https", api_is_https);
  fn("header", api_header);
  with("set_header", api_req_edit, 0);
  with("add_header", api_req_edit, 1);
  with("remove_header", api_req_edit, 2);
  fn("status", api_status);
  fn("from_upstream", api_from_upstream);
  fn("country", api_country);
  fn("asn", api_asn);
  fn("request_id", api_request_id);
  fn("set_status", api_set_status);
  fn("cache_key", api_cache_key);
  fn("cache_bypass", api_cache_bypass);
  fn("cache_no_store", api_cache_no_store);
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
  fn("read_file", api_read_file);
  fn("acl_check", api_acl_check);
  fn("acl_realm", api_acl_realm);
  fn("acme_challenge", api_acme_challenge);
  fn("limit", api_limit);
  fn("sleep", api_sleep);
  fn("fetch", api_fetch);
  fn("traceback", traceback);
  fn("sha256", api_sha256);
  fn("hmac_sha256", api_hmac_sha256);
  fn("random_bytes", api_random_bytes);
  fn("to_hex", api_to_hex);
  fn("secure_equal", api_secure_equal);
  fn("host_secret", api_host_secret);
  fn("reverse_dns", api_reverse_dns);
  fn("cidrs", api_cidrs);
  if (luaL_newmetatable(L, kCidrsMeta)) {
    lua_pushcfunction(L, cidrs_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    lua_pushcfunction(L, cidrs_contains);
    lua_setfield(L, -2, "contains");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "px.cidrs");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  fn("shared_get", api_shared_get);
  fn("shared_set", api_shared_set);
  fn("shared_incr", api_shared_incr);
  lua_pop(L, 1);  // DONE
}

}  // namespace px::lua
