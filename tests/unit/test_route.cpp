#include <doctest/doctest.h>

#include <arpa/inet.h>

#include "route/route.h"
#include "route/snapshot.h"

using namespace px;
using namespace px::route;

static std::string err_of(const std::string& json) {
  RouteSpec r;
  std::string err;
  if (parse_route_json(json, &r, &err)) return "";
  return err;
}

TEST_CASE("route JSON: a full route round-trips") {
  RouteSpec r;
  std::string err;
  REQUIRE(parse_route_json(R"({"name":"shop","hosts":["Shop.Example.com","*.example.com"],"path":"/api",
    "strip_path":true,"upstreams":["http://10.0.0.5:8080",{"url":"http://[::1]:81/","weight":3}],
    "lb":"least_conn","max_body_size":1024,"health_check":{"path":"/hz","interval_ms":100},
    "filters":[{"name":"acl","config":{"list":"office"}}]})",
                           &r, &err));
  CHECK(r.hosts[0] == "shop.example.com");
  CHECK(r.upstreams[0].host == "10.0.0.5");
  CHECK(r.upstreams[0].port == 8080);
  CHECK(r.upstreams[1].host == "::1");
  CHECK(r.upstreams[1].url == "http://[::1]:81");
  CHECK(r.upstreams[1].weight == 3);
  CHECK(r.lb == Balance::least_conn);
  CHECK(r.health.enabled);
  CHECK(r.health.path == "/hz");
  CHECK(r.filters[0].config_json == R"({"list":"office"})");
  RouteSpec again;
  REQUIRE(parse_route_json(route_to_json(r), &again, &err));
  CHECK(route_to_json(again) == route_to_json(r));
}

TEST_CASE("route JSON: errors name the field") {
  CHECK(err_of("nope") == "route: not valid JSON");
  CHECK(err_of(R"({"hosts":["a.b"],"upstreams":["http://a:1"]})") == "name: required, a string");
  CHECK(err_of(R"({"name":"a b","hosts":["a.b"],"upstreams":["http://a:1"]})").rfind("name:", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a..b"],"upstreams":["http://a:1"]})").rfind("hosts[0]:", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["x.*.b"],"upstreams":["http://a:1"]})").rfind("hosts[0]:", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["ftp://a:1"]})").rfind("upstreams[0].url:", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:70000"]})").find("port must be 1..65535") !=
        std::string::npos);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:80/path"]})").find("no path") !=
        std::string::npos);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":[{"url":"http://a:1","weight":0}]})") ==
        "upstreams[0].weight: must be 1..1000");
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"lb":"random"})").rfind("lb:", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"path":"api"})") ==
        "path: must start with '/'");
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"color":"red"})") == "color: unknown field");
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"read_timeout_ms":-5})") ==
        "read_timeout_ms: expected a non-negative whole number");
  CHECK(err_of(R"({"name":"a","hosts":[],"upstreams":["http://a:1"]})").rfind("hosts:", 0) == 0);
}

static bool fake_resolve(const std::string& host, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  auto* a = reinterpret_cast<sockaddr_in*>(ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) return false;
  *len = sizeof *a;
  return true;
}

static RouteSpec spec(const std::string& json) {
  RouteSpec r;
  std::string err;
  REQUIRE_MESSAGE(parse_route_json(json, &r, &err), err);
  return r;
}

TEST_CASE("snapshot matching") {
  Config cfg;
  cfg.default_route = "fallback";
  std::vector<RouteSpec> specs = {
      spec(R"({"name":"exact","hosts":["www.example.com"],"upstreams":["http://127.0.0.1:1"]})"),
      spec(R"({"name":"wild","hosts":["*.example.com"],"upstreams":["http://127.0.0.1:2"]})"),
      spec(R"({"name":"api","hosts":["www.example.com"],"path":"/api/","strip_path":true,
               "upstreams":["http://127.0.0.1:3"]})"),
      spec(R"({"name":"off","hosts":["off.test"],"enabled":false,"upstreams":["http://127.0.0.1:4"]})"),
      spec(R"({"name":"fallback","hosts":["fallback.invalid"],"upstreams":["http://127.0.0.1:5"]})"),
      spec(R"({"name":"dup","hosts":["www.example.com"],"path":"/api","upstreams":["http://127.0.0.1:6"]})"),
  };
  std::vector<std::string> warnings;
  auto s = Snapshot::build(7, specs, cfg, fake_resolve, &warnings);
  CHECK(s->generation() == 7);
  auto name = [&](std::string_view host, std::string_view path) {
    const Route* r = s->match(host, path);
    return r ? r->spec.name : std::string("-");
  };
  CHECK(name("www.example.com", "/") == "exact");
  CHECK(name("WWW.EXAMPLE.COM:443", "/x") == "exact");
  CHECK(name("www.example.com", "/api") == "api");
  CHECK(name("www.example.com", "/api/v1?x") == "api");
  CHECK(name("www.example.com", "/apiv1") == "exact");
  CHECK(name("shop.example.com", "/api") == "wild");
  CHECK(name("off.test", "/") == "fallback");
  CHECK(name("[::1]:80", "/") == "fallback");
  // "api" and "dup" claim the same host and prefix: the first by name wins, the other is reported.
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("route dup") != std::string::npos);
  bool slash;
  const Route* api = s->match("www.example.com", "/api/v1");
  CHECK(Snapshot::strip(*api, "/api/v1?q", &slash) == "/v1?q");
  CHECK_FALSE(slash);
  CHECK(Snapshot::strip(*api, "/api?q", &slash) == "?q");
  CHECK(slash);
}

TEST_CASE("snapshot lookup does not depend on the number of routes") {
  Config cfg;
  std::vector<RouteSpec> specs;
  for (int i = 0; i < 10000; i++)
    specs.push_back(spec(R"({"name":"r)" + std::to_string(i) + R"(","hosts":["h)" + std::to_string(i) +
                         R"(.test"],"upstreams":["http://127.0.0.1:1"]})"));
  auto s = Snapshot::build(1, specs, cfg, fake_resolve, nullptr);
  CHECK(s->match("h9999.test", "/")->spec.name == "r9999");
  CHECK(s->match("h0.test", "/x")->spec.name == "r0");
  CHECK(s->match("nope.test", "/") == nullptr);
}

TEST_CASE("ip_hash ring spreads and is stable") {
  Config cfg;
  auto s = Snapshot::build(1, {spec(R"({"name":"h","hosts":["h.test"],"lb":"ip_hash",
      "upstreams":["http://127.0.0.1:1","http://127.0.0.1:2",{"url":"http://127.0.0.1:3","weight":2}]})")},
                           cfg, fake_resolve, nullptr);
  const Pool& p = s->routes()[0]->pool;
  CHECK(p.ring.size() == 64 * 4);
  CHECK(std::is_sorted(p.ring.begin(), p.ring.end()));
}
