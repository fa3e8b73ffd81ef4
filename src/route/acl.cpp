#include "route/acl.h"

#include <openssl/base64.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/password.h"
#include "core/strings.h"
#include "route/route.h"

namespace px::route {

using json = nlohmann::json;

bool acl_from_json(const json& j, AclSpec* out, std::string* error) {
  auto fail = [&](const std::string& f, const std::string& m) {
    *error = f + ": " + m;
    return false;
  };
  if (!j.is_object()) return fail("acl", "expected a JSON object");
  static const std::set<std::string> known = {
      "name", "rules", "default", "users", "satisfy", "realm", "pass_authorization", "version"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) return fail(it.key(), "unknown field");
  AclSpec o;
  if (!j.contains("name") || !j["name"].is_string() || !valid_route_name(j["name"].get<std::string>()))
    return fail("name", "required: 1 to 64 characters of letters, digits, '.', '_', '-'");
  o.name = j["name"].get<std::string>();
  if (j.contains("rules")) {
    if (!j["rules"].is_array()) return fail("rules", "expected an array");
    for (size_t i = 0; i < j["rules"].size(); i++) {
      const json& r = j["rules"][i];
      std::string f = "rules[" + std::to_string(i) + "]";
      if (!r.is_object() || !r.contains("action") || !r.contains("cidr"))
        return fail(f, "expected {\"action\": \"allow\"|\"deny\", \"cidr\": \"...\"}");
      for (auto it = r.begin(); it != r.end(); ++it)
        if (it.key() != "action" && it.key() != "cidr") return fail(f + "." + it.key(), "unknown field");
      if (!r["action"].is_string() || (r["action"] != "allow" && r["action"] != "deny"))
        return fail(f + ".action", "must be allow or deny");
      net::Cidr c;
      std::string e;
      if (!r["cidr"].is_string() || !net::Cidr::parse(r["cidr"].get<std::string>(), &c, &e))
        return fail(f + ".cidr", r["cidr"].is_string() ? e : "expected a string");
      o.rules.push_back(AclRule{r["action"] == "allow", c, r["cidr"].get<std::string>()});
    }
  }
  // A string field that must be one of two words; *out keeps its default when absent.
  auto choice = [&](const char* field, const char* a, const char* b, std::string* out) {
    if (!j.contains(field)) return true;
    if (!j[field].is_string() || (j[field] != a && j[field] != b))
      return fail(field, std::string("must be ") + a + " or " + b);
    *out = j[field].get<std::string>();
    return true;
  };
  std::string def = "deny", satisfy = "any";
  if (!choice("default", "allow", "deny", &def) || !choice("satisfy", "any", "all", &satisfy)) return false;
  o.default_allow = def == "allow";
  o.satisfy_all = satisfy == "all";
  std::string realm = "px";
  if (j.contains("realm")) {
    if (!j["realm"].is_string()) return fail("realm", "expected a string");
    realm = j["realm"].get<std::string>();
    if (realm.empty() || realm.size() > 128) return fail("realm", "1 to 128 characters");
    for (unsigned char c : realm)
      if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
        return fail("realm", "no quotes, backslashes or control characters");
  }
  o.realm = realm;
  bool pass = false;
  if (j.contains("pass_authorization")) {
    if (!j["pass_authorization"].is_boolean()) return fail("pass_authorization", "expected true or false");
    pass = j["pass_authorization"].get<bool>();
  }
  o.pass_authorization = pass;
  std::set<std::string> seen;
  if (j.contains("users")) {
    if (!j["users"].is_array()) return fail("users", "expected an array");
    for (size_t i = 0; i < j["users"].size(); i++) {
      const json& u = j["users"][i];
      std::string f = "users[" + std::to_string(i) + "]";
      if (!u.is_object()) return fail(f, "expected {\"username\": ..., \"hash\": ...}");
      if (u.contains("password"))
        return fail(f + ".password", "plaintext passwords are never stored: add users with 'pxctl acl user add'");
      for (auto it = u.begin(); it != u.end(); ++it)
        if (it.key() != "username" && it.key() != "hash") return fail(f + "." + it.key(), "unknown field");
      if (!u.contains("username") || !u["username"].is_string()) return fail(f + ".username", "required, a string");
      std::string name = u["username"].get<std::string>();
      if (name.empty() || name.size() > 64) return fail(f + ".username", "1 to 64 characters");
      for (unsigned char c : name)
        if (c <= 0x20 || c == 0x7f || c == ':') return fail(f + ".username", "no spaces, colons or control characters");
      if (!seen.insert(name).second) return fail(f + ".username", "duplicate user '" + name + "'");
      if (!u.contains("hash") || !u["hash"].is_string()) return fail(f + ".hash", "required, a password hash");
      std::string h = u["hash"].get<std::string>();
      static const char* schemes[] = {"$y$", "$gy$", "$7$", "$2b$", "$2y$", "$6$", "$5$"};
      bool ok = false;
      for (auto* sch : schemes) ok = ok || h.rfind(sch, 0) == 0;
      if (!ok || h.size() > 256) return fail(f + ".hash", "not a yescrypt ($y$) or bcrypt ($2b$) hash");
      o.users.emplace_back(name, h);
    }
  }
  *out = std::move(o);
  return true;
}

bool parse_acl_spec(std::string_view text, AclSpec* out, std::string* error) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    *error = "acl: not valid JSON";
    return false;
  }
  return acl_from_json(j, out, error);
}

json acl_to_json(const AclSpec& a) {
  json o;
  o["name"] = a.name;
  o["rules"] = json::array();
  for (const auto& r : a.rules) o["rules"].push_back({{"action", r.allow ? "allow" : "deny"}, {"cidr", r.text}});
  o["default"] = a.default_allow ? "allow" : "deny";
  o["satisfy"] = a.satisfy_all ? "all" : "any";
  o["realm"] = a.realm;
  o["pass_authorization"] = a.pass_authorization;
  o["users"] = json::array();
  for (const auto& [u, h] : a.users) o["users"].push_back({{"username", u}, {"hash", h}});
  return o;
}

namespace {
bool basic_auth_ok(const AclSpec& acl, std::string_view authorization, AuthCache& cache, uint64_t now_ms) {
  std::string_view a = trim(authorization);
  if (a.size() < 7 || !iequals(a.substr(0, 6), "basic ")) return false;
  std::string_view b64 = trim(a.substr(6));
  std::string decoded(b64.size(), '\0');
  size_t n = 0;
  if (!EVP_DecodeBase64(reinterpret_cast<uint8_t*>(decoded.data()), &n, decoded.size(),
                        reinterpret_cast<const uint8_t*>(b64.data()), b64.size()))
    return false;
  decoded.resize(n);
  size_t colon = decoded.find(':');
  if (colon == std::string::npos) return false;
  std::string user = decoded.substr(0, colon), pass = decoded.substr(colon + 1);
  for (const auto& [u, hash] : acl.users) {
    if (u != user) continue;
    std::string key = acl.name + '\n' + hash + '\n' + decoded;
    auto it = cache.until.find(key);
    if (it != cache.until.end() && it->second > now_ms) return true;
    bool ok = verify_password(pass, hash);
    if (ok) {
      if (cache.until.size() > AuthCache::kMax) cache.until.clear();
      cache.until[key] = now_ms + AuthCache::kTtlMs;
    }
    return ok;
  }
  return false;
}
}  // namespace

AclVerdict acl_decide(const AclSpec& acl, const net::IpAddr& ip, std::string_view authorization, AuthCache& cache,
                      uint64_t now_ms) {
  int ip_dec = -1;  // -1 no rule, 0 deny, 1 allow
  for (const auto& r : acl.rules)
    if (r.cidr.contains(ip)) {
      ip_dec = r.allow ? 1 : 0;
      break;
    }
  bool has_users = !acl.users.empty();
  if (ip_dec < 0 && (!acl.rules.empty() || !has_users)) ip_dec = acl.default_allow ? 1 : 0;
  if (!acl.satisfy_all) {
    if (ip_dec == 1) return AclVerdict::allow;
    if (has_users)
      return basic_auth_ok(acl, authorization, cache, now_ms) ? AclVerdict::allow : AclVerdict::credentials;
    return AclVerdict::deny;
  }
  if (ip_dec == 0) return AclVerdict::deny;
  if (has_users && !basic_auth_ok(acl, authorization, cache, now_ms)) return AclVerdict::credentials;
  return AclVerdict::allow;
}

}  // namespace px::route
