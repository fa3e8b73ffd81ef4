#include <doctest/doctest.h>

#include <stdlib.h>

#include <string>

#include "store/store.h"

using px::store::Store;

static std::string tmpdir() {
  char t[] = "/tmp/px-store-test-XXXXXX";
  REQUIRE(mkdtemp(t) != nullptr);
  return t;
}

TEST_CASE("every write bumps the generation once, atomically") {
  std::string dir = tmpdir();
  Store w;
  std::string err;
  REQUIRE_MESSAGE(w.open(dir, false, &err), err);
  Store r;
  REQUIRE_MESSAGE(r.open(dir, true, &err), err);
  uint64_t g = 99;
  REQUIRE(r.generation(&g, &err));
  CHECK(g == 0);
  uint64_t ng;
  REQUIRE(
      w.write([](Store::Writer& wr, std::string* e) { return wr.put("route:a", "1", e) && wr.put("route:b", "2", e); },
              &ng, &err));
  CHECK(ng == 1);
  // A failed change leaves nothing behind, and no generation bump.
  CHECK_FALSE(w.write(
      [](Store::Writer& wr, std::string* e) {
        wr.put("route:c", "3", e);
        *e = "validation failed";
        return false;
      },
      &ng, &err));
  CHECK(err == "validation failed");
  REQUIRE(r.generation(&g, &err));
  CHECK(g == 1);
  int n = 0;
  REQUIRE(r.scan(
      "route:", &g,
      [&](std::string_view k, std::string_view v) {
        n++;
        CHECK(k.substr(0, 6) == "route:");
        CHECK(!v.empty());
      },
      &err));
  CHECK(n == 2);
  bool found;
  std::string v;
  REQUIRE(r.get("meta:schema", &v, &found, &err));
  CHECK(found);
  CHECK(v == "1");
}

TEST_CASE("a missing store is reported, not created, by a reader") {
  Store r;
  std::string err;
  CHECK_FALSE(r.open("/tmp/px-definitely-missing-dir", true, &err));
  CHECK(err.find("/tmp/px-definitely-missing-dir") != std::string::npos);
}

#include "store/keys.h"

TEST_CASE("the key space: builders, the generation's encoding, audit keys in seq order") {
  using namespace px::store;
  CHECK(keys::route("shop") == "route:shop");
  CHECK(keys::acl("office") == "acl:office");
  CHECK(keys::resource("acl", "office") == keys::acl("office"));
  CHECK(keys::challenge("t0k") == "acme:chal:t0k");
  CHECK(keys::host_path("a.test", "/x") == "index:hp:a.test /x");
  for (uint64_t g : {uint64_t(0), uint64_t(1), uint64_t(255), uint64_t(256), uint64_t(1) << 40, ~uint64_t(0)}) {
    std::string v = keys::encode_generation(g);
    CHECK(v.size() == 8);
    CHECK(keys::decode_generation(v) == g);
  }
  CHECK(static_cast<uint8_t>(keys::encode_generation(1)[0]) == 1);  // little-endian
  CHECK(keys::decode_generation("short") == 0);
  CHECK(keys::audit(9) < keys::audit(10));
  CHECK(keys::audit(99999) < keys::audit(100000));
}
