// Access-list decisions (route/acl.h): a pure function of the list, the client
// address, the Authorization header and the cache of verified credentials.
#include <doctest/doctest.h>

#include <string>

#include "core/password.h"
#include "route/acl.h"

using namespace px;
using route::AclVerdict;

namespace {
net::IpAddr ip(const char* s) {
  net::IpAddr a;
  REQUIRE(net::IpAddr::parse(s, &a));
  return a;
}
net::Cidr cidr(const char* s) {
  net::Cidr c;
  std::string err;
  REQUIRE(net::Cidr::parse(s, &c, &err));
  return c;
}
const char* kBobOk = "Basic Ym9iOnMzY3JldA==";  // bob:s3cret
const char* kBobBad = "Basic Ym9iOndyb25n";     // bob:wrong
}  // namespace

TEST_CASE("access lists: CIDR rules, first match wins, then the default") {
  route::AclSpec acl;
  acl.name = "office";
  acl.rules = {{false, cidr("10.0.0.9/32")}, {true, cidr("10.0.0.0/8")}};
  route::AuthCache cache;
  CHECK(route::acl_decide(acl, ip("10.1.2.3"), "", cache, 0) == AclVerdict::allow);
  CHECK(route::acl_decide(acl, ip("10.0.0.9"), "", cache, 0) == AclVerdict::deny);
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), "", cache, 0) == AclVerdict::deny);
  acl.default_allow = true;
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), "", cache, 0) == AclVerdict::allow);
}

TEST_CASE("access lists: basic auth, satisfy any or all, and the credential cache") {
  route::AclSpec acl;
  acl.name = "staff";
  std::string hash, err;
  REQUIRE(hash_password("s3cret", &hash, &err));
  acl.users = {{"bob", hash}};
  route::AuthCache cache;
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), "", cache, 0) == AclVerdict::credentials);
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), kBobBad, cache, 0) == AclVerdict::credentials);
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), "Basic !!!", cache, 0) == AclVerdict::credentials);
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), kBobOk, cache, 0) == AclVerdict::allow);
  CHECK(cache.until.size() == 1);  // remembered: yescrypt is not run again until it expires
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), kBobOk, cache, route::AuthCache::kTtlMs - 1) == AclVerdict::allow);
  // Any: an allowed address needs no password; all: both.
  acl.rules = {{true, cidr("10.0.0.0/8")}};
  CHECK(route::acl_decide(acl, ip("10.0.0.1"), "", cache, 0) == AclVerdict::allow);
  acl.satisfy_all = true;
  CHECK(route::acl_decide(acl, ip("10.0.0.1"), "", cache, 0) == AclVerdict::credentials);
  CHECK(route::acl_decide(acl, ip("10.0.0.1"), kBobOk, cache, 0) == AclVerdict::allow);
  CHECK(route::acl_decide(acl, ip("192.0.2.1"), kBobOk, cache, 0) == AclVerdict::deny);
}
