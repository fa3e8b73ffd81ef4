// px::route access lists: what one is (stored as acl:<name>), the one parser
// pxadmind and pxd share (errors name the field), and the decision for one
// request, a pure function of the list, the client address, the Authorization
// header and a cache of verified credentials (tested without sockets).
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>  // (the whole of it only where JSON is read: acl.cpp)
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net/cidr.h"

namespace px::route {

struct AclRule {
  bool allow = false;
  net::Cidr cidr;
  std::string text;  // as written ("10.0.0.0/8")
};

struct AclSpec {
  std::string name;
  std::vector<AclRule> rules;  // first match wins
  bool default_allow = false;
  std::vector<std::pair<std::string, std::string>> users;  // (username, password hash)
  bool satisfy_all = false;
  std::string realm = "px";
  bool pass_authorization = false;
};

// The access list in `j` (pxadmind's API, an import, the store). Unknown fields,
// bad ranges, plaintext passwords, unknown hash schemes: false, and *error is
// "field: problem". A "version" field is allowed and ignored.
bool acl_from_json(const nlohmann::json& j, AclSpec* out, std::string* error);
bool parse_acl_spec(std::string_view json_text, AclSpec* out, std::string* error);
// The canonical JSON of a list (what the store keeps, without "version").
nlohmann::json acl_to_json(const AclSpec& a);

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
