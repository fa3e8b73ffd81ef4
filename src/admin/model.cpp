#include "admin/model.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <signal.h>

#include <ctime>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "admin/api.h"
#include "admin/txn.h"
#include "core/strings.h"
#include "daemon/config.h"
#include "lua/engine.h"
#include "net/cidr.h"
#include "route/acl.h"
#include "route/route.h"
#include "route/stream.h"
#include "tls/cert.h"

namespace px::admin {

Result Result::error(int status, const std::string& field, const std::string& message, json extra) {
  Result r;
  r.status = status;
  json e = {{"status", status}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  if (!extra.is_null())
    for (auto it = extra.begin(); it != extra.end(); ++it) e[it.key()] = it.value();
  r.body = {{"error", e}};
  return r;
}

namespace {

bool valid_kind(const std::string& k) { return k == "route" || k == "acl" || k == "stream"; }

// Validates a resource body of `kind`; *out gets the normalised JSON (no version yet).
bool validate(const std::string& kind, const json& body, json* out, std::string* error) {
  if (kind == "route") {
    route::RouteSpec r;
    if (!route::parse_route_json(body.dump(), &r, error)) return false;
    *out = json::parse(route::route_to_json(r));
    return true;
  }
  if (kind == "stream") {
    route::StreamSpec s;
    if (!route::parse_stream_json(body.dump(), &s, error)) return false;
    *out = json::parse(route::stream_to_json(s));
    return true;
  }
  return parse_acl_json(body, out, error);
}

// The conflict index key of a host and a path prefix, normalised as the router matches them.
std::string hp_key(const std::string& host, const std::string& path) {
  std::string key = store::keys::host_path(host, "");
  size_t base = key.size();
  for (const auto& seg : path_segments(path)) {
    key.push_back('/');
    key.append(seg);
  }
  if (key.size() == base) key.push_back('/');
  return key;
}

std::vector<std::pair<std::string, std::string>> hp_keys(const json& route) {
  std::vector<std::pair<std::string, std::string>> out;
  const auto& hosts = route["hosts"];
  for (size_t i = 0; i < hosts.size(); i++)
    out.emplace_back(hp_key(hosts[i].get<std::string>(), route.value("path", "/")), "hosts[" + std::to_string(i) + "]");
  return out;
}

}  // namespace

std::string sha256_hex(std::string_view s) {
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(s.data()), s.size(), md);
  return to_hex(md, sizeof md);
}

// ---- transactions (admin/txn.h) ----

std::string now_rfc3339() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char buf[96];  // roomy: the compiler cannot see that tm fields are small
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
  return buf;
}

Result in_txn(store::Store& st, const std::function<bool(Tx&)>& fn) {
  Result out;
  bool failed = false;
  std::string err;
  store::WriteFail why = store::WriteFail::none;
  bool ok = st.write(
      [&](store::Store::Writer& w, std::string* e) {
        Tx tx{w, e, {}, false};
        bool r = fn(tx);
        if (!r && tx.failed) {
          out = tx.res;
          failed = true;
        } else if (r) {
          out = tx.res;
        }
        return r;
      },
      nullptr, &err, &why);
  if (ok) return out;
  if (failed) return out;
  if (why == store::WriteFail::unavailable) return Result::error(503, "", err);
  if (why == store::WriteFail::conflict) return Result::error(409, "", err);
  return Result::error(500, "", err);
}

Result invalid(const std::string& err) {
  size_t colon = err.find(": ");
  if (colon == std::string::npos) return Result::error(422, "", err);
  return Result::error(422, err.substr(0, colon), err.substr(colon + 2));
}

bool Tx::reindex(const std::string& name, const json* old, const json* now) {
  if (old)
    for (const auto& [k, field] : hp_keys(*old))
      if (!w.del(k, err)) return false;
  if (now)
    for (const auto& [k, field] : hp_keys(*now)) {
      std::string other;
      bool found;
      if (!w.get(k, &other, &found, err)) return false;
      if (found && other != name) {
        std::string hp = k.substr(9);
        size_t sp = hp.find(' ');
        return fail(Result::error(
            409, field,
            "host " + hp.substr(0, sp) + " with path " + hp.substr(sp + 1) + " is already served by route " + other,
            {{"conflict", other}}));
      }
      if (!w.put(k, name, err)) return false;
    }
  if (now && !check_passthrough_hosts(name, *now)) return false;
  return true;
}

// A passthrough route takes its hosts whole on TLS listeners: no other route may serve any path of
// them, and it may not join hosts another route serves (the path index says who has each host).
bool Tx::check_passthrough_hosts(const std::string& name, const json& route) {
  bool pass = route.value("passthrough", false);
  const auto& hosts = route["hosts"];
  for (size_t i = 0; i < hosts.size(); i++) {
    std::string host = hosts[i].get<std::string>();
    std::string other, clash;
    if (!w.scan(
            store::keys::host_path(host, ""),
            [&](std::string_view, std::string_view owner) {
              if (owner == name) return true;
              other = std::string(owner);
              return false;
            },
            err))
      return false;
    if (other.empty()) continue;
    if (!pass) {  // is the other one a passthrough route?
      json o;
      bool found;
      if (!load(store::keys::route(other), &o, &found)) return false;
      if (!found || !o.value("passthrough", false)) continue;
    }
    return fail(Result::error(409, "hosts[" + std::to_string(i) + "]",
                              "host " + host + " is already served by route " + other +
                                  (pass ? "; a passthrough route needs its hosts to itself"
                                        : ", a passthrough route (its TLS goes to its upstream unread)"),
                              {{"conflict", other}}));
  }
  return true;
}

// ---- filters ----

namespace {
// The filter files a route may name, by name: the built-ins, then what each running pxd loaded (its
// filters_dir overrides a built-in of the same name, as in pxd). (path, source)
std::map<std::string, std::pair<std::string, std::string>> filter_files(bool* pxd_running = nullptr) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  for (auto& [path, src] : lua::read_filter_files(Config{})) out[lua::filter_name(path)] = {path, src};
  for (const auto& f : g_pxd_status_files) {
    json st = pxd_status(f);
    if (!st["running"].get<bool>()) continue;
    if (pxd_running) *pxd_running = true;
    for (const auto& x : st.value("filters", json::array())) {
      std::string path = x.value("path", ""), src;
      if (lua::read_source(path, &src)) out[lua::filter_name(path)] = {path, src};
    }
  }
  return out;
}

bool check_one(const std::map<std::string, std::pair<std::string, std::string>>& files, bool pxd_running,
               const std::string& name, const json& config, const std::string& at,
               const std::function<bool(const std::string&)>& has_acl, Result* out) {
  auto it = files.find(name);
  if (it == files.end()) {
    std::string known;
    for (const auto& [n, f] : files) known += (known.empty() ? "" : ", ") + n;
    *out = Result::error(422, at + ".name",
                         "no filter named '" + name + "' (filters: " + known +
                             (pxd_running ? ")" : "; no pxd is running, so only the built-in filters are known)"));
    return false;
  }
  lua::ConfigCheck c = lua::check_config(it->second.first, it->second.second, config.dump(), lua::lua_dir());
  if (c.filter_broken) {
    *out = Result::error(422, at + ".name", "filter '" + name + "' does not load: " + c.error);
    return false;
  }
  if (!c.error.empty()) {
    *out = Result::error(422, at + ".config" + (c.key.empty() ? "" : "." + c.key), c.error);
    return false;
  }
  for (const auto& acl : c.acls)
    if (!has_acl(acl)) {
      *out = Result::error(422, at + ".config", name + ": no access list named '" + acl + "'");
      return false;
    }
  return true;
}
}  // namespace

bool check_filter_config(const std::string& name, const json& config, const std::string& at,
                         const std::function<bool(const std::string&)>& has_acl, Result* out) {
  bool running = false;
  auto files = filter_files(&running);
  return check_one(files, running, name, config, at, has_acl, out);
}

bool check_route_filters(const json& route, const std::string& at,
                         const std::function<bool(const std::string&)>& has_acl, Result* out) {
  if (!route.contains("filters") || route["filters"].empty()) return true;
  bool running = false;
  auto files = filter_files(&running);
  const json& fl = route["filters"];
  for (size_t i = 0; i < fl.size(); i++) {
    const json& f = fl[i];
    std::string field = at + "filters[" + std::to_string(i) + "]";
    json config = f.contains("config") ? f["config"] : json::object();
    if (!check_one(files, running, f.value("name", ""), config, field, has_acl, out)) return false;
  }
  return true;
}

bool Tx::check_filters(const json& route) {
  bool store_failed = false;
  auto has_acl = [&](const std::string& name) {
    json a;
    bool found = false;
    if (!load(store::keys::acl(name), &a, &found)) store_failed = true;
    return found || store_failed;
  };
  Result r;
  if (check_route_filters(route, "", has_acl, &r)) return !store_failed;
  return store_failed ? false : fail(r);
}

bool Tx::check_route_tls(const json& route, bool dns_hook) {
  std::string tls = route.value("tls", std::string("off"));
  if (tls == "off") return true;
  if (tls == "auto") {
    if (!dns_hook)
      for (const auto& h : route["hosts"])
        if (h.get<std::string>().rfind("*.", 0) == 0)
          return fail(Result::error(422, "tls",
                                    "auto on the wildcard host " + h.get<std::string>() +
                                        " needs a DNS-01 challenge, and pxadmind has no --dns-hook (see pxadmind(8))"));
    return note_acme_pending(route);
  }
  json c;
  bool found;
  if (!load(store::keys::cert(tls), &c, &found)) return false;
  if (!found)
    return fail(Result::error(
        422, "tls",
        "no certificate named '" + tls + "' (add it first: pxctl cert add " + tls + " --cert FILE --key FILE)"));
  return true;
}

// The change that asks for "tls": "auto" records the order as pending in its own transaction, so that
// `pxctl cert list` shows the name at once; the ACME manager takes it from there (acme_manager.cpp).
bool Tx::note_acme_pending(const json& resource) {
  if (!resource.value("enabled", true) || !resource.contains("hosts") || resource["hosts"].empty()) return true;
  std::string name = auto_cert_name(resource.value("name", std::string()), resource["hosts"][0].get<std::string>());
  json st, cert;
  bool have_state, have_cert;
  if (!load(store::keys::acme_state(name), &st, &have_state) || !load(store::keys::cert(name), &cert, &have_cert))
    return false;
  if (have_state || have_cert) return true;  // already kept (another resource with the same first host)
  json pending = {{"name", name}, {"names", resource["hosts"]}, {"status", "pending"}};
  return w.put(store::keys::acme_state(name), pending.dump(), err);
}

// ---- streams ----

namespace {
// A stored stream's listen address (validated on the way in: "listen" and "protocol").
bool stored_listen(const json& s, route::StreamListen* out) {
  std::string e;
  return s.is_object() &&
         route::parse_stream_listen(s.value("listen", "") + (s.value("protocol", "") == "udp" ? "/udp" : ""), out, &e);
}
}  // namespace

bool Tx::check_stream(const std::string& name, const json& stream, bool dns_hook) {
  route::StreamListen mine;
  stored_listen(stream, &mine);
  std::string e;
  // Another stream on the same address, protocol and port (or one that covers it: 0.0.0.0, [::]).
  std::string other;
  if (!w.scan(
          store::keys::kStream,
          [&](std::string_view key, std::string_view v) {
            if (key.substr(store::keys::kStream.size()) == name) return true;
            json s = json::parse(v, nullptr, false);
            route::StreamListen l;
            if (stored_listen(s, &l) && l.overlaps(mine)) {
              other = s.value("name", "");
              return false;
            }
            return true;
          },
          err))
    return false;
  if (!other.empty())
    return fail(Result::error(409, "listen",
                              "stream '" + other + "' already listens on " + mine.str() + (mine.udp ? "/udp" : ""),
                              {{"conflict", other}}));
  // pxd.conf's own listeners (TCP), as each running pxd reports them, and its right to low ports.
  for (const auto& f : g_pxd_status_files) {
    json st = pxd_status(f);
    if (!st["running"].get<bool>()) continue;
    if (!mine.udp)
      for (const auto& a : st.value("listen", json::array())) {
        route::StreamListen l;
        if (a.is_string() && route::parse_stream_listen(a.get<std::string>(), &l, &e) && l.overlaps(mine))
          return fail(
              Result::error(409, "listen", "pxd.conf already listens on " + a.get<std::string>() + " (" + f + ")"));
      }
    if (mine.port < st.value("low_port_limit", 0) && !st.value("can_bind_low_ports", true))
      return fail(Result::error(422, "listen",
                                "port " + std::to_string(mine.port) + " is below " +
                                    std::to_string(st.value("low_port_limit", 0)) +
                                    " and pxd lacks CAP_NET_BIND_SERVICE (" + f + ")"));
  }
  std::string acl = stream.value("acl", "");
  if (!acl.empty()) {
    json a;
    bool found;
    if (!load(store::keys::acl(acl), &a, &found)) return false;
    if (!found) return fail(Result::error(422, "acl", "no access list named '" + acl + "'"));
  }
  return check_route_tls(stream, dns_hook);  // the same fields as a route's: "tls" and "hosts"
}

// ---- access lists ----

bool parse_acl_json(const json& j, json* out, std::string* error) {
  route::AclSpec a;
  if (!route::acl_from_json(j, &a, error)) return false;
  *out = route::acl_to_json(a);
  return true;
}

// ---- generic resources ----

Result Admin::list(const std::string& kind) {
  Result r;
  r.body = json::array();
  std::string err;
  std::string prefix = store::keys::resource_prefix(kind);
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
            prefix,
            [&](std::string_view, std::string_view v) {
              r.body.push_back(json::parse(v, nullptr, false));
              return true;
            },
            e);
      },
      &err);
  if (!ok) return Result::error(500, "", err);
  return r;
}

Result Admin::get(const std::string& kind, const std::string& name) {
  std::string v, err;
  bool found;
  if (!st_.get(store::keys::resource(kind, name), &v, &found, &err)) return Result::error(500, "", err);
  if (!found) return Result::error(404, "", "no " + kind + " named '" + name + "'");
  Result r;
  r.body = json::parse(v, nullptr, false);
  r.version = r.body.value("version", uint64_t(0));
  return r;
}

Result Admin::check_filter(const std::string& name, const json& config) {
  std::string store_err;
  auto has_acl = [&](const std::string& acl) {
    std::string v;
    bool found = false;
    if (!st_.get(store::keys::acl(acl), &v, &found, &store_err)) return true;
    return found;
  };
  Result r;
  if (!check_filter_config(name, config, "", has_acl, &r)) return r;
  if (!store_err.empty()) return Result::error(500, "", store_err);
  r.body = {{"filter", name}, {"ok", true}};
  return r;
}

Result Admin::create(const std::string& kind, const json& body, const std::string& who) {
  if (!valid_kind(kind)) return Result::error(404, "", "unknown resource");
  json v;
  std::string err;
  if (!validate(kind, body, &v, &err)) return invalid(err);
  std::string name = v["name"].get<std::string>();
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::resource(kind, name), &old, &found)) return false;
    if (found)
      return tx.fail(Result::error(409, "name", kind + " '" + name + "' already exists", {{"conflict", name}}));
    v["version"] = 1;
    if (kind == "route" && !tx.reindex(name, nullptr, &v)) return false;
    if (kind == "route" && !tx.check_route_tls(v, dns_hook_)) return false;
    if (kind == "route" && !tx.check_filters(v)) return false;
    if (kind == "stream" && !tx.check_stream(name, v, dns_hook_)) return false;
    if (!tx.w.put(store::keys::resource(kind, name), v.dump(), tx.err)) return false;
    if (!tx.audit(who, kind + ".create", kind + "/" + name, nullptr, v)) return false;
    tx.res.status = 201;
    tx.res.body = v;
    tx.res.version = 1;
    return true;
  });
}

Result Admin::put(const std::string& kind, const std::string& name, const json& body, uint64_t if_match,
                  const std::string& who) {
  if (!valid_kind(kind)) return Result::error(404, "", "unknown resource");
  json b = body;
  if (!b.is_object()) return Result::error(422, kind, "expected a JSON object");
  if (!b.contains("name")) b["name"] = name;
  if (b["name"] != name) return Result::error(422, "name", "does not match the name in the URL ('" + name + "')");
  b.erase("version");
  json v;
  std::string err;
  if (!validate(kind, b, &v, &err)) return invalid(err);
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::resource(kind, name), &old, &found)) return false;
    uint64_t have = found ? old.value("version", uint64_t(0)) : 0;
    if (if_match && have != if_match)
      return tx.fail(Result::error(
          412, "If-Match",
          found ? "stale: the current version is " + std::to_string(have) : "no " + kind + " named '" + name + "'",
          {{"current_version", have}}));
    v["version"] = have + 1;
    if (kind == "route" && !tx.reindex(name, found ? &old : nullptr, &v)) return false;
    if (kind == "route" && !tx.check_route_tls(v, dns_hook_)) return false;
    if (kind == "route" && !tx.check_filters(v)) return false;
    if (kind == "stream" && !tx.check_stream(name, v, dns_hook_)) return false;
    if (!tx.w.put(store::keys::resource(kind, name), v.dump(), tx.err)) return false;
    if (!tx.audit(who, kind + (found ? ".update" : ".create"), kind + "/" + name, found ? old : json(nullptr), v))
      return false;
    tx.res.status = found ? 200 : 201;
    tx.res.body = v;
    tx.res.version = have + 1;
    return true;
  });
}

Result Admin::patch(const std::string& kind, const std::string& name, const json& merge, uint64_t if_match,
                    const std::string& who) {
  if (!valid_kind(kind)) return Result::error(404, "", "unknown resource");
  if (!merge.is_object()) return Result::error(422, kind, "a merge patch is a JSON object");
  if (merge.contains("name") && merge["name"] != name) return Result::error(422, "name", "cannot be changed");
  // Read-modify-write inside one transaction: concurrent patches cannot lose each other's fields.
  return in_txn(st_, [&](Tx& tx) {
    json old;
    uint64_t have;
    if (!tx.load_current(kind, name, if_match, &old, &have)) return false;
    json b = old;
    b.merge_patch(merge);
    b.erase("version");
    json v;
    std::string err;
    if (!validate(kind, b, &v, &err)) return tx.fail(invalid(err));
    v["version"] = have + 1;
    if (kind == "route" && !tx.reindex(name, &old, &v)) return false;
    if (kind == "route" && !tx.check_route_tls(v, dns_hook_)) return false;
    if (kind == "route" && !tx.check_filters(v)) return false;
    if (kind == "stream" && !tx.check_stream(name, v, dns_hook_)) return false;
    if (!tx.w.put(store::keys::resource(kind, name), v.dump(), tx.err)) return false;
    if (!tx.audit(who, kind + ".update", kind + "/" + name, old, v)) return false;
    tx.res.body = v;
    tx.res.version = have + 1;
    return true;
  });
}

Result Admin::remove(const std::string& kind, const std::string& name, uint64_t if_match, const std::string& who) {
  if (!valid_kind(kind)) return Result::error(404, "", "unknown resource");
  return in_txn(st_, [&](Tx& tx) {
    json old;
    uint64_t have;
    if (!tx.load_current(kind, name, if_match, &old, &have)) return false;
    if (kind == "acl") {
      // An access list in use by a route or a stream cannot go.
      std::string user;
      bool used = false;
      if (!tx.w.scan(
              store::keys::kRoute,
              [&](std::string_view, std::string_view v) {
                json r = json::parse(v, nullptr, false);
                for (const auto& f : r.value("filters", json::array()))
                  if (f.value("name", "") == "acl" && f.contains("config") && f["config"].value("list", "") == name) {
                    user = r.value("name", "");
                    used = true;
                    return false;
                  }
                return true;
              },
              tx.err))
        return false;
      std::string what = "route";
      if (!used && !tx.w.scan(
                       store::keys::kStream,
                       [&](std::string_view, std::string_view v) {
                         json st = json::parse(v, nullptr, false);
                         if (st.is_object() && st.value("acl", "") == name) {
                           user = st.value("name", "");
                           what = "stream";
                           used = true;
                           return false;
                         }
                         return true;
                       },
                       tx.err))
        return false;
      if (used)
        return tx.fail(
            Result::error(409, "", "acl '" + name + "' is used by " + what + " '" + user + "'", {{"conflict", user}}));
    }
    if (kind == "route" && !tx.reindex(name, &old, nullptr)) return false;
    if (!tx.w.del(store::keys::resource(kind, name), tx.err)) return false;
    if (!tx.audit(who, kind + ".delete", kind + "/" + name, old, nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

Result Admin::add_user(const std::string& acl, const json& body, const std::string& who) {
  if (!body.is_object() || !body.contains("username") || !body["username"].is_string())
    return Result::error(422, "username", "required, a string");
  if (!body.contains("password") || !body["password"].is_string())
    return Result::error(422, "password", "required, a string");
  std::string hash, err;
  if (!hash_password(body["password"].get<std::string>(), &hash, &err)) return invalid(err);
  std::string user = body["username"].get<std::string>();
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::acl(acl), &old, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no acl named '" + acl + "'"));
    json b = old;
    b.erase("version");
    json users = json::array();
    for (const auto& u : b["users"])
      if (u["username"] != user) users.push_back(u);
    users.push_back({{"username", user}, {"hash", hash}});
    b["users"] = users;
    json v;
    std::string e;
    if (!parse_acl_json(b, &v, &e)) return tx.fail(invalid(e));
    uint64_t have = old.value("version", uint64_t(0));
    v["version"] = have + 1;
    if (!tx.w.put(store::keys::acl(acl), v.dump(), tx.err)) return false;
    // The audit record names the user, never the hash.
    if (!tx.audit(who, "acl.user.add", "acl/" + acl, nullptr, {{"username", user}})) return false;
    tx.res.body = v;
    tx.res.version = have + 1;
    return true;
  });
}

Result Admin::remove_user(const std::string& acl, const std::string& user, const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::acl(acl), &old, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no acl named '" + acl + "'"));
    json users = json::array();
    bool had = false;
    for (const auto& u : old["users"]) {
      if (u["username"] == user)
        had = true;
      else
        users.push_back(u);
    }
    if (!had) return tx.fail(Result::error(404, "", "acl '" + acl + "' has no user '" + user + "'"));
    json v = old;
    v["users"] = users;
    uint64_t have = old.value("version", uint64_t(0));
    v["version"] = have + 1;
    if (!tx.w.put(store::keys::acl(acl), v.dump(), tx.err)) return false;
    if (!tx.audit(who, "acl.user.remove", "acl/" + acl, {{"username", user}}, nullptr)) return false;
    tx.res.body = v;
    tx.res.version = have + 1;
    return true;
  });
}

// ---- export / import ----

Result Admin::export_config(bool include_keys) {
  Result r;
  json doc = {{"schema", store::keys::kSchemaVersion},
              {"routes", json::array()},
              {"acls", json::array()},
              {"streams", json::array()},
              {"certs", json::array()}};
  std::string err;
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        std::string g;
        bool found;
        if (!t.get(store::keys::kGeneration, &g, &found, e)) return false;
        doc["generation"] = found ? store::keys::decode_generation(g) : 0;
        // In a fleet the generation is this host's own count of changes: the hosts' exports are the same
        // configuration, byte for byte, without it.
        if (!t.get(store::keys::kFleetRevision, &g, &found, e)) return false;
        if (found) doc.erase("generation");
        for (const char* kind : {"route", "acl", "stream"}) {
          std::string key = std::string(kind) + "s";
          if (!t.scan(
                  store::keys::resource_prefix(kind),
                  [&](std::string_view, std::string_view v) {
                    doc[key].push_back(json::parse(v, nullptr, false));
                    return true;
                  },
                  e))
            return false;
        }
        // Certificates: private keys only when asked for (pxctl export --include-keys).
        return t.scan(
            store::keys::kCert,
            [&](std::string_view, std::string_view v) {
              json c = json::parse(v, nullptr, false);
              if (!include_keys && c.is_object()) c.erase("key");
              doc["certs"].push_back(c);
              return true;
            },
            e);
      },
      &err);
  if (!ok) return Result::error(500, "", err);
  r.body = doc;
  return r;
}

Result Admin::import_config(const json& doc, bool replace, bool dry_run, const std::string& who) {
  if (!doc.is_object()) return Result::error(422, "config", "expected a JSON object");
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (it.key() != "routes" && it.key() != "acls" && it.key() != "streams" && it.key() != "schema" &&
        it.key() != "generation" && it.key() != "certs")
      return Result::error(422, it.key(), "unknown field");
  if (doc.contains("schema") && doc["schema"] != store::keys::kSchemaVersion)
    return Result::error(422, "schema", "this pxadmind reads schema " + std::to_string(store::keys::kSchemaVersion));
  // Validate everything before touching the store.
  constexpr int kKinds = 3;
  std::map<std::string, json> incoming[kKinds];  // routes, acls, streams
  const char* kinds[kKinds] = {"route", "acl", "stream"};
  for (int k = 0; k < kKinds; k++) {
    std::string field = std::string(kinds[k]) + "s";
    if (!doc.contains(field)) continue;
    if (!doc[field].is_array()) return Result::error(422, field, "expected an array");
    for (size_t i = 0; i < doc[field].size(); i++) {
      json b = doc[field][i];
      if (b.is_object()) b.erase("version");
      json v;
      std::string err;
      if (!validate(kinds[k], b, &v, &err)) {
        Result r = invalid(err);
        std::string inner = r.body["error"].value("field", "");
        r.body["error"]["field"] = field + "[" + std::to_string(i) + "]" + (inner.empty() ? "" : "." + inner);
        return r;
      }
      std::string name = v["name"].get<std::string>();
      if (incoming[k].count(name))
        return Result::error(422, field + "[" + std::to_string(i) + "].name", "duplicate name '" + name + "'");
      incoming[k][name] = v;
    }
  }
  // Certificates: checked like uploads. One without its key (an export made without
  // --include-keys) keeps the stored key of the same name, which must exist.
  std::map<std::string, std::string> in_certs;  // name -> record ("" = keep the stored one)
  bool has_certs = doc.contains("certs");
  if (has_certs) {
    if (!doc["certs"].is_array()) return Result::error(422, "certs", "expected an array");
    for (size_t i = 0; i < doc["certs"].size(); i++) {
      const json& c = doc["certs"][i];
      std::string at = "certs[" + std::to_string(i) + "]";
      if (!c.is_object() || !c.contains("name") || !c["name"].is_string() ||
          !route::valid_route_name(c["name"].get<std::string>()))
        return Result::error(422, at + ".name", "required, 1 to 64 of A-Z a-z 0-9 . _ -");
      std::string name = c["name"].get<std::string>();
      if (in_certs.count(name)) return Result::error(422, at + ".name", "duplicate name '" + name + "'");
      if (!c.contains("key")) {
        in_certs[name] = "";
        continue;
      }
      if (!c.contains("cert") || !c["cert"].is_string() || !c["key"].is_string())
        return Result::error(422, at + ".cert", "required, a PEM string");
      tls::Cert tc;
      tc.name = name;
      std::string err;
      if (!tls::parse_cert(c["cert"].get<std::string>(), c["key"].get<std::string>(), 0, &tc, &err)) {
        size_t colon = err.find(": ");
        return Result::error(422, at + "." + err.substr(0, colon), err.substr(colon + 2));
      }
      in_certs[name] = tls::cert_record(tc, c["cert"].get<std::string>(), c["key"].get<std::string>(),
                                        c.value("source", std::string("custom")));
    }
  }
  // Host + path conflicts inside the document.
  std::map<std::string, std::string> claims;
  for (const auto& [name, r] : incoming[0])
    for (const auto& [key, f] : hp_keys(r)) {
      auto [it, fresh] = claims.emplace(key, name);
      if (!fresh)
        return Result::error(409, "routes",
                             "route " + name + " and route " + it->second + " both claim " + key.substr(9),
                             {{"conflict", it->second}});
    }
  return in_txn(st_, [&](Tx& tx) {
    json diff = {{"added", json::array()}, {"changed", json::array()}, {"removed", json::array()}, {"unchanged", 0}};
    std::map<std::string, json> existing[kKinds];
    for (int k = 0; k < kKinds; k++)
      if (!tx.w.scan(
              std::string(kinds[k]) + ":",
              [&](std::string_view key, std::string_view v) {
                existing[k][std::string(key.substr(std::strlen(kinds[k]) + 1))] = json::parse(v, nullptr, false);
                return true;
              },
              tx.err))
        return false;
    // The resulting routes must not conflict with routes the import keeps (merge mode).
    if (!replace)
      for (const auto& [name, r] : existing[0]) {
        if (incoming[0].count(name)) continue;
        for (const auto& [key, f] : hp_keys(r)) {
          auto it = claims.find(key);
          if (it != claims.end())
            return tx.fail(Result::error(
                409, "routes", "route " + it->second + " claims " + key.substr(9) + ", already served by route " + name,
                {{"conflict", name}}));
        }
      }
    // The resulting streams: no two on one address, and every access list they name there.
    {
      std::map<std::string, json> streams = replace ? std::map<std::string, json>() : existing[2];
      for (const auto& [name, v] : incoming[2]) streams[name] = v;
      std::map<std::string, json> acls = replace ? std::map<std::string, json>() : existing[1];
      for (const auto& [name, v] : incoming[1]) acls[name] = v;
      Result bad;
      for (const auto& [name, v] : incoming[0])
        if (!check_route_filters(
                v, "routes." + name + ".", [&](const std::string& a) { return acls.count(a) > 0; }, &bad))
          return tx.fail(bad);
      std::vector<std::pair<std::string, route::StreamListen>> seen;
      for (const auto& [name, v] : streams) {
        route::StreamListen l;
        stored_listen(v, &l);
        for (const auto& [other, ol] : seen)
          if (ol.overlaps(l))
            return tx.fail(Result::error(409, "streams",
                                         "stream " + name + " and stream " + other + " both listen on " + l.str(),
                                         {{"conflict", other}}));
        seen.emplace_back(name, l);
        std::string acl = v.value("acl", "");
        if (!acl.empty() && !acls.count(acl))
          return tx.fail(Result::error(
              422, "streams", "stream " + name + " names access list '" + acl + "', which the result would not have"));
      }
    }
    size_t writes = 0;
    for (int k = 0; k < kKinds; k++) {
      std::string prefix = std::string(kinds[k]) + ":";
      for (auto& [name, v] : incoming[k]) {
        auto it = existing[k].find(name);
        json cur = it == existing[k].end() ? json(nullptr) : it->second;
        uint64_t have = cur.is_null() ? 0 : cur.value("version", uint64_t(0));
        json cmp = cur;
        if (!cmp.is_null()) cmp.erase("version");
        if (cmp == v) {
          diff["unchanged"] = diff["unchanged"].get<int>() + 1;
          continue;
        }
        diff[cur.is_null() ? "added" : "changed"].push_back(std::string(kinds[k]) + "/" + name);
        if (dry_run) continue;
        v["version"] = have + 1;
        if (k == 0 && !cur.is_null())
          for (const auto& [key, f] : hp_keys(cur))
            if (!tx.w.del(key, tx.err)) return false;
        if (!tx.w.put(prefix + name, v.dump(), tx.err)) return false;
        writes++;
      }
      if (replace)
        for (auto& [name, cur] : existing[k]) {
          if (incoming[k].count(name)) continue;
          diff["removed"].push_back(std::string(kinds[k]) + "/" + name);
          if (dry_run) continue;
          if (k == 0)
            for (const auto& [key, f] : hp_keys(cur))
              if (!tx.w.del(key, tx.err)) return false;
          if (!tx.w.del(prefix + name, tx.err)) return false;
          writes++;
        }
    }
    if (has_certs) {
      std::map<std::string, std::string> stored;
      if (!tx.w.scan(
              store::keys::kCert,
              [&](std::string_view key, std::string_view v) {
                stored[std::string(key.substr(store::keys::kCert.size()))] = std::string(v);
                return true;
              },
              tx.err))
        return false;
      for (const auto& [name, rec] : in_certs) {
        auto it = stored.find(name);
        if (rec.empty()) {
          if (it == stored.end())
            return tx.fail(Result::error(
                422, "certs", "certificate " + name + " has no key and none is stored (export with --include-keys)"));
          diff["unchanged"] = diff["unchanged"].get<int>() + 1;
          continue;
        }
        if (it != stored.end() && it->second == rec) {
          diff["unchanged"] = diff["unchanged"].get<int>() + 1;
          continue;
        }
        diff[it == stored.end() ? "added" : "changed"].push_back("cert/" + name);
        if (!dry_run && !tx.w.put(store::keys::cert(name), rec, tx.err)) return false;
      }
      if (replace)
        for (const auto& [name, rec] : stored) {
          if (in_certs.count(name)) continue;
          diff["removed"].push_back("cert/" + name);
          if (!dry_run && !tx.w.del(store::keys::cert(name), tx.err)) return false;
        }
    }
    if (dry_run) {
      tx.res.body = {{"dry_run", true}, {"mode", replace ? "replace" : "merge"}, {"diff", diff}};
      return tx.fail(tx.res);  // abort: a dry run changes nothing
    }
    // Index claims of every imported route (after all removals, so swaps between routes work).
    for (const auto& [name, v] : incoming[0])
      for (const auto& [key, f] : hp_keys(v)) {
        std::string other;
        bool found;
        if (!tx.w.get(key, &other, &found, tx.err)) return false;
        if (found && other != name && !incoming[0].count(other) && !replace)
          return tx.fail(Result::error(
              409, "routes", "route " + name + " claims " + key.substr(9) + ", already served by route " + other,
              {{"conflict", other}}));
        if (!tx.w.put(key, name, tx.err)) return false;
      }
    json summary = {{"mode", replace ? "replace" : "merge"},
                    {"added", diff["added"].size()},
                    {"changed", diff["changed"].size()},
                    {"removed", diff["removed"].size()}};
    if (!tx.audit(who, "config.import", "config", nullptr, summary)) return false;
    tx.res.body = {{"dry_run", false}, {"mode", replace ? "replace" : "merge"}, {"diff", diff}};
    (void)writes;
    return true;
  });
}

// ---- audit ----

Result Admin::audit(const AuditQuery& q) {
  std::deque<json> out;
  std::string err;
  std::string start = store::keys::audit(q.since + 1);
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
            store::keys::kAudit,
            [&](std::string_view, std::string_view v) {
              json rec = json::parse(v, nullptr, false);
              if (!q.action.empty() && rec.value("action", "") != q.action) return true;
              if (!q.credential.empty() && rec.value("credential", "") != q.credential) return true;
              if (!q.resource.empty()) {
                std::string res = rec.value("resource", "");
                bool prefix = q.resource.back() == '/';
                if (prefix ? res.rfind(q.resource, 0) != 0 : res != q.resource) return true;
              }
              out.push_back(std::move(rec));
              if (out.size() > q.limit) out.pop_front();
              return true;
            },
            e, start);
      },
      &err);
  if (!ok) return Result::error(500, "", err);
  Result r;
  r.body = json::array();
  for (auto& rec : out) r.body.push_back(std::move(rec));
  return r;
}

// ---- tokens ----

Result Admin::create_token(const json& body, const std::string& who) {
  if (!body.is_object() || !body.contains("name") || !body["name"].is_string() ||
      !route::valid_route_name(body["name"].get<std::string>()))
    return Result::error(422, "name", "required: 1 to 64 characters of letters, digits, '.', '_', '-'");
  std::string name = body["name"].get<std::string>();
  uint8_t raw[24];
  if (RAND_bytes(raw, sizeof raw) != 1) return Result::error(500, "", "no randomness for a token");
  std::string secret = "pxt_" + to_hex(raw, sizeof raw);
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::token(name), &old, &found)) return false;
    if (found) return tx.fail(Result::error(409, "name", "token '" + name + "' already exists", {{"conflict", name}}));
    json rec = {{"name", name}, {"sha256", sha256_hex(secret)}, {"created", now_rfc3339()}, {"created_by", who}};
    if (!tx.w.put(store::keys::token(name), rec.dump(), tx.err)) return false;
    if (!tx.audit(who, "token.create", "token/" + name, nullptr, {{"name", name}})) return false;
    tx.res.status = 201;
    tx.res.body = {{"name", name}, {"token", secret}, {"created", rec["created"]}};
    return true;
  });
}

Result Admin::list_tokens() {
  Result r = list("token");
  for (auto& t : r.body) t.erase("sha256");
  return r;
}

Result Admin::remove_token(const std::string& name, const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::token(name), &old, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no token named '" + name + "'"));
    if (!tx.w.del(store::keys::token(name), tx.err)) return false;
    if (!tx.audit(who, "token.delete", "token/" + name, {{"name", name}}, nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

std::string Admin::verify_token(const std::string& secret) {
  if (secret.rfind("pxt_", 0) != 0) return "";
  std::string want = sha256_hex(secret), name, err;
  st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
            store::keys::kToken,
            [&](std::string_view, std::string_view v) {
              json rec = json::parse(v, nullptr, false);
              std::string h = rec.value("sha256", "");
              if (h.size() == want.size() && CRYPTO_memcmp(h.data(), want.data(), h.size()) == 0) {
                name = rec.value("name", "");
                return false;
              }
              return true;
            },
            e);
      },
      &err);
  return name;
}

// ---- status ----

json pxd_status(const std::string& file) {
  json s = {{"status_file", file}, {"running", false}};
  std::ifstream in(file);
  if (!in) return s;
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) return s;
  for (auto it = j.begin(); it != j.end(); ++it) s[it.key()] = it.value();
  long pid = j.value("pid", 0L);
  s["running"] = pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0;
  return s;
}

Result Admin::status(const std::vector<std::string>& files) {
  uint64_t gen = 0;
  std::string err;
  if (!st_.generation(&gen, &err)) return Result::error(500, "", err);
  json pxd = json::array();
  for (const auto& f : files) {
    json s = pxd_status(f);
    if (s.contains("generation")) s["in_sync"] = s["running"].get<bool>() && s.value("generation", uint64_t(0)) == gen;
    pxd.push_back(s);
  }
  Result r;
  r.body = {{"generation", gen}, {"schema", store::keys::kSchemaVersion}, {"data_dir", st_.dir()}, {"pxd", pxd}};
  if (fleet_status_) r.body["fleet"] = fleet_status_();
  return r;
}

void Admin::add_errors(const std::string& kind, json* objects, const std::vector<std::string>& files) {
  const std::string key = kind + "_errors";
  auto add = [&](const json& pxd, const std::string& host, const std::string& file) {
    if (!pxd.contains(key) || !pxd[key].is_object()) return;
    for (json& o : *objects) {
      auto it = pxd[key].find(o.value("name", ""));
      if (it == pxd[key].end() || !it->is_string()) continue;
      json e = {{"error", *it}};
      if (!host.empty()) e["host"] = host;
      if (!file.empty()) e["pxd"] = file;
      if (!o.contains("errors")) o["errors"] = json::array();
      o["errors"].push_back(std::move(e));
    }
  };
  json self = fleet_status_ ? fleet_status_() : json::object();
  const std::string me = self.value("host", "");
  for (const auto& f : files) {
    json s = pxd_status(f);
    if (s.value("running", false)) add(s, me, f);
  }
  if (!fleet_hosts_ || !self.value("etcd", json::object()).value("reachable", false)) return;
  json all = fleet_hosts_();
  for (const json& h : all.value("hosts", json::array())) {
    if (h.value("host", "") == me) continue;
    for (const json& p : h.value("pxd", json::array()))
      if (p.value("running", false)) add(p, h.value("host", ""), "");
  }
}

Result Admin::fleet() {
  if (!fleet_hosts_) return Result::error(404, "", "pxadmind runs on its own, not in a fleet (see --etcd)");
  Result r;
  r.body = fleet_hosts_();
  return r;
}

}  // namespace px::admin
