#include "route/acl.h"

#include <openssl/base64.h>

#include "core/password.h"
#include "core/strings.h"

namespace px::route {

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
  for (const auto& [allow, cidr] : acl.rules)
    if (cidr.contains(ip)) {
      ip_dec = allow ? 1 : 0;
      break;
    }
  bool has_users = !acl.users.empty();
  if (ip_dec < 0 && (!acl.rules.empty() || !has_users)) ip_dec = acl.default_allow ? 1 : 0;
  if (!acl.satisfy_all) {
    if (ip_dec == 1) return AclVerdict::allow;
    if (has_users) return basic_auth_ok(acl, authorization, cache, now_ms) ? AclVerdict::allow : AclVerdict::credentials;
    return AclVerdict::deny;
  }
  if (ip_dec == 0) return AclVerdict::deny;
  if (has_users && !basic_auth_ok(acl, authorization, cache, now_ms)) return AclVerdict::credentials;
  return AclVerdict::allow;
}

}  // namespace px::route
