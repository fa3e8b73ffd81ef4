// px::route access lists: the decision for one request, a pure function of the
// list, the client address, the Authorization header and a cache of verified
// credentials (tested without sockets). The list itself is parsed by
// parse_acl_spec (route/snapshot.h), the one parser pxd and pxadmind share.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "net/cidr.h"
#include "route/snapshot.h"

namespace px::route {

enum class AclVerdict : uint8_t { allow = 0, credentials = 1, deny = 2 };  // 1: answer 401, 2: 403

// Verified Basic credentials -> when to check again (ms): yescrypt is slow on
// purpose, so a worker remembers a credential it verified for a while.
struct AuthCache {
  std::unordered_map<std::string, uint64_t> until;
  static constexpr uint64_t kTtlMs = 300000;
  static constexpr size_t kMax = 10000;
};

AclVerdict acl_decide(const AclSpec& acl, const net::IpAddr& ip, std::string_view authorization, AuthCache& cache,
                      uint64_t now_ms);

}  // namespace px::route
