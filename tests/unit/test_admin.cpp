#include <doctest/doctest.h>

#include <stdlib.h>

#include <set>

#include "admin/api.h"
#include "admin/model.h"
#include "admin/ui_auth.h"

using namespace px::admin;

TEST_CASE("the OpenAPI document lists exactly the operations the server dispatches") {
  json doc = json::parse(openapi_document());
  std::set<std::string> documented, served;
  for (auto& [path, item] : doc["paths"].items())
    for (auto& [method, op] : item.items())
      if (method != "parameters") {
        std::string m = method;
        for (auto& ch : m) ch = static_cast<char>(toupper(ch));
        documented.insert(m + " " + path);
      }
  for (const auto& op : operations()) served.insert(op.method + " " + op.pattern);
  CHECK(documented == served);
}

TEST_CASE("requests are matched to operations, with 404 and 405") {
  Request r;
  int status = 0;
  const Operation* op = match("PUT", "/v1/routes/shop%2Dx?x=1&dry_run", &r, &status);
  REQUIRE(op != nullptr);
  CHECK(r.params["name"] == "shop-x");
  CHECK(r.query["x"] == "1");
  CHECK(r.query.count("dry_run") == 1);
  Request r2;
  CHECK(match("GET", "/v1/nothing", &r2, &status) == nullptr);
  CHECK(status == 404);
  CHECK(match("POST", "/v1/status", &r2, &status) == nullptr);
  CHECK(status == 405);
}

static std::string tmpdir() {
  char t[] = "/tmp/px-admin-test-XXXXXX";
  REQUIRE(mkdtemp(t) != nullptr);
  return t;
}

TEST_CASE("versions, If-Match, conflicts and the audit trail") {
  px::store::Store st;
  std::string err;
  REQUIRE(st.open(tmpdir(), false, &err));
  Admin a(st);
  json shop = {{"name", "shop"}, {"hosts", {"shop.test"}}, {"upstreams", {"http://127.0.0.1:1"}}};
  Result r = a.create("route", shop, "uid:1");
  CHECK(r.status == 201);
  CHECK(r.version == 1);
  CHECK(a.create("route", shop, "uid:1").status == 409);
  json other = {{"name", "other"}, {"hosts", {"SHOP.test"}}, {"upstreams", {"http://127.0.0.1:2"}}, {"path", "/"}};
  r = a.create("route", other, "uid:1");
  CHECK(r.status == 409);
  CHECK(r.body["error"]["conflict"] == "shop");
  CHECK(r.body["error"]["field"] == "hosts[0]");
  other["path"] = "/api";
  CHECK(a.create("route", other, "uid:1").status == 201);
  CHECK(a.patch("route", "shop", {{"lb", "ip_hash"}}, 7, "uid:2").status == 412);
  r = a.patch("route", "shop", {{"lb", "ip_hash"}}, 1, "uid:2");
  CHECK(r.status == 200);
  CHECK(r.version == 2);
  CHECK(r.body["lb"] == "ip_hash");
  // Moving "other" onto shop's host and path is refused; removing shop frees it.
  CHECK(a.patch("route", "other", {{"path", "/"}}, 0, "uid:1").status == 409);
  CHECK(a.remove("route", "shop", 0, "uid:3").status == 204);
  CHECK(a.patch("route", "other", {{"path", "/"}}, 0, "uid:1").status == 200);
  AuditQuery q;
  q.resource = "route/shop";
  Result au = a.audit(q);
  REQUIRE(au.body.size() == 3);
  CHECK(au.body[0]["action"] == "route.create");
  CHECK(au.body[1]["credential"] == "uid:2");
  CHECK(au.body[1]["before"]["lb"] == "round_robin");
  CHECK(au.body[1]["after"]["lb"] == "ip_hash");
  CHECK(au.body[2]["action"] == "route.delete");
  CHECK(au.body[2]["after"].is_null());
}

TEST_CASE("a failed change writes nothing, not even the generation") {
  px::store::Store st;
  std::string err;
  REQUIRE(st.open(tmpdir(), false, &err));
  Admin a(st);
  uint64_t g0, g1;
  REQUIRE(st.generation(&g0, &err));
  CHECK(a.create("route", {{"name", "x"}, {"hosts", {"a..b"}}, {"upstreams", {"http://h:1"}}}, "uid:1").status == 422);
  json doc = {{"routes",
               {{{"name", "a"}, {"hosts", {"a.test"}}, {"upstreams", {"http://h:1"}}},
                {{"name", "b"}, {"hosts", {"b.test"}}, {"upstreams", {"ftp://h:1"}}}}}};
  Result r = a.import_config(doc, false, false, "uid:1");
  CHECK(r.status == 422);
  CHECK(r.body["error"]["field"] == "routes[1].upstreams[0].url");
  REQUIRE(st.generation(&g1, &err));
  CHECK(g0 == g1);
  CHECK(a.list("route").body.empty());
}

TEST_CASE("passwords are hashed with yescrypt and verified") {
  std::string h, err;
  REQUIRE(px::hash_password("s3cret", &h, &err));
  CHECK(h.rfind("$y$", 0) == 0);
  CHECK(px::verify_password("s3cret", h));
  CHECK_FALSE(px::verify_password("S3cret", h));
  json out;
  CHECK_FALSE(parse_acl_json({{"name", "a"}, {"users", {{{"username", "bob"}, {"password", "x"}}}}}, &out, &err));
  CHECK(err.rfind("users[0].password:", 0) == 0);
  CHECK_FALSE(parse_acl_json({{"name", "a"}, {"rules", {{{"action", "allow"}, {"cidr", "10.0.0.0/40"}}}}}, &out, &err));
  CHECK(err.rfind("rules[0].cidr:", 0) == 0);
}

TEST_CASE("dashboard TOTP: RFC 6238's SHA-1 vectors (6 digits), and base32 both ways") {
  std::string key = "12345678901234567890";  // RFC 6238 appendix B
  CHECK(px::admin::totp_code(key, 59 / 30) == 287082);
  CHECK(px::admin::totp_code(key, 1111111109 / 30) == 81804);
  CHECK(px::admin::totp_code(key, 1234567890 / 30) == 5924);
  CHECK(px::admin::totp_code(key, 20000000000ull / 30) == 353130);
  CHECK(px::admin::base32_encode("foobar") == "MZXW6YTBOI");  // RFC 4648 (without padding)
  CHECK(px::admin::base32_decode("MZXW6YTBOI") == "foobar");
  CHECK(px::admin::base32_decode("mzxw6ytboi======") == "foobar");
  CHECK(px::admin::base32_decode("MZ1W") == "");
}
