#include <doctest/doctest.h>

#include <stdlib.h>

#include <string>
#include <vector>

#include "fleet/etcd.h"
#include "store/keys.h"
#include "store/store.h"

using namespace px;

TEST_CASE("etcd's JSON gateway encodings: base64 both ways, the range end of a prefix, 64-bit fields") {
  for (std::string s : {std::string(), std::string("a"), std::string("route:shop"), std::string("\0\xff\x01", 3)}) {
    std::string back;
    REQUIRE(fleet::unb64(fleet::b64(s), &back));
    CHECK(back == s);
  }
  CHECK(fleet::b64("/px/edge/") == "L3B4L2VkZ2Uv");
  std::string out;
  CHECK_FALSE(fleet::unb64("not base64!", &out));
  CHECK(fleet::prefix_end("/px/edge/") == "/px/edge0");
  fleet::json j = fleet::json::parse(R"({"revision":"18446744073709551615","n":7,"bad":"12x","neg":-1})");
  CHECK(fleet::num(j, "revision") == 18446744073709551615ull);
  CHECK(fleet::num(j, "n") == 7);
  CHECK(fleet::num(j, "bad") == 0);
  CHECK(fleet::num(j, "neg") == 0);
  CHECK(fleet::num(j, "absent") == 0);
}

TEST_CASE("a watch's body splits into whole JSON objects, however the bytes arrive") {
  std::string body = R"({"result":{"header":{"revision":"5"},"created":true}})"
                     "\n"
                     R"({"result":{"events":[{"kv":{"key":"e30=","value":"In0i"}}],"note":"a } and a \" inside"}})"
                     "\n";
  for (size_t cut = 0; cut <= body.size(); cut++) {
    fleet::JsonStream js;
    std::vector<fleet::json> got;
    REQUIRE(js.feed(std::string_view(body).substr(0, cut), [&](fleet::json& m) { got.push_back(m); }));
    REQUIRE(js.feed(std::string_view(body).substr(cut), [&](fleet::json& m) { got.push_back(m); }));
    REQUIRE(got.size() == 2);
    CHECK(got[0]["result"]["created"] == true);
    CHECK(got[1]["result"]["note"] == "a } and a \" inside");
  }
  fleet::JsonStream js;
  CHECK_FALSE(js.feed("<html>502</html>", [](fleet::json&) {}));
}

namespace {

// Plays the fleet: the first commit finds that another host wrote first (it applies that write, as the
// follower would, and says conflict); later commits apply the changes themselves.
struct Racing final : store::Committer {
  store::Store* st;
  int commits = 0;
  std::vector<store::Change> seen;
  store::WriteFail commit(uint64_t base, const std::vector<store::Change>& changes, std::string* error) override {
    commits++;
    CHECK(base == (commits == 1 ? 0u : 7u));
    if (commits == 1) {
      st->apply(
          [](store::Store::Writer& w, std::string* e) {
            return w.put("route:other", "theirs", e) && w.put("meta:fleet_revision", "7", e);
          },
          nullptr, error);
      return store::WriteFail::conflict;
    }
    seen = changes;
    st->apply(
        [&](store::Store::Writer& w, std::string* e) {
          for (const auto& c : changes)
            if (!(c.del ? w.del(c.key, e) : w.put(c.key, c.value, e))) return false;
          return true;
        },
        nullptr, error);
    return store::WriteFail::none;
  }
};

}  // namespace

TEST_CASE("with a committer, a write runs on the store, is rolled back, and runs again after a conflict") {
  char t[] = "/tmp/px-fleet-test-XXXXXX";
  REQUIRE(mkdtemp(t) != nullptr);
  store::Store st;
  std::string err;
  REQUIRE_MESSAGE(st.open(t, false, &err), err);
  Racing c;
  c.st = &st;
  st.set_committer(&c);
  int runs = 0;
  store::WriteFail why;
  bool ok = st.write(
      [&](store::Store::Writer& w, std::string* e) {
        runs++;
        std::string v;
        bool found;
        if (!w.get("route:other", &v, &found, e)) return false;
        // what the write decides depends on what it saw: the second run sees the other host's route
        return w.put("route:mine", found ? "after " + v : "alone", e) && w.put("meta:generation", "x", e) &&
               w.del("route:none", e);
      },
      nullptr, &err, &why);
  REQUIRE_MESSAGE(ok, err);
  CHECK(why == store::WriteFail::none);
  CHECK(runs == 2);
  CHECK(c.commits == 2);
  // only the fleet's keys are committed (meta:generation is this host's), and a delete of nothing is no change
  REQUIRE(c.seen.size() == 1);
  CHECK(c.seen[0].key == "route:mine");
  CHECK(c.seen[0].value == "after theirs");
  std::string v;
  bool found;
  REQUIRE(st.get("route:mine", &v, &found, &err));
  CHECK(v == "after theirs");
  CHECK(store::keys::fleet_shared("route:mine"));
  CHECK(store::keys::fleet_shared("meta:audit_seq"));
  CHECK_FALSE(store::keys::fleet_shared("meta:fleet_revision"));
  CHECK_FALSE(store::keys::fleet_shared("meta:generation"));
  st.set_committer(nullptr);
}
