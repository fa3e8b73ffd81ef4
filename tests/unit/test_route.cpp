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
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"read_timeout_ms":"5 days"})") ==
        "read_timeout_ms: expected milliseconds, or a number with ms, s, m or h (500ms, 30s, 5m, 1h)");
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"max_body_size":"1x"})")
            .rfind("max_body_size: expected a number of bytes, or with k, m or g", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"connect_timeout_ms":"2d"})")
            .rfind("connect_timeout_ms: expected milliseconds", 0) == 0);
  CHECK(err_of(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"read_timeout_ms":"25h"})") ==
        "read_timeout_ms: must be at most 86400000 ms");
}

TEST_CASE("route JSON: sizes and durations take units, and are stored as numbers") {
  RouteSpec r;
  std::string err;
  REQUIRE_MESSAGE(parse_route_json(R"({"name":"a","hosts":["a.b"],"upstreams":["http://a:1"],"max_body_size":"1k",
      "read_timeout_ms":"30s","connect_timeout_ms":1500,"health_check":{"path":"/h","interval_ms":"2s"}})",
                                   &r, &err),
                  err);
  CHECK(r.max_body_size == 1024);
  CHECK(r.read_timeout_ms == 30000);
  CHECK(r.connect_timeout_ms == 1500);
  CHECK(r.health.interval_ms == 2000);
  std::string out = route_to_json(r);
  CHECK(out.find("\"max_body_size\":1024") != std::string::npos);
  CHECK(out.find("\"read_timeout_ms\":30000") != std::string::npos);
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
  px::route::BuildWarnings warnings;
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
  CHECK(warnings[0].str().find("route dup") == 0);
  CHECK((!warnings[0].stream && warnings[0].name == "dup" && warnings[0].error));
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

#include <arpa/inet.h>

#include "l4/l4.h"

TEST_CASE("PROXY protocol headers, v1 and v2, IPv4 and IPv6") {
  sockaddr_in s{}, d{};
  s.sin_family = d.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.10", &s.sin_addr);
  inet_pton(AF_INET, "198.51.100.1", &d.sin_addr);
  s.sin_port = htons(51000);
  d.sin_port = htons(5432);
  std::string v1;
  px::proxy::proxy_v1(&v1, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d));
  CHECK(v1 == "PROXY TCP4 192.0.2.10 198.51.100.1 51000 5432\r\n");
  std::string v2;
  px::proxy::proxy_v2(&v2, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d), false);
  const char want[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x0a\xc6\x33\x64\x01\xc7\x38\x15\x38";
  CHECK(v2 == std::string(want, sizeof want - 1));
  v2.clear();
  px::proxy::proxy_v2(&v2, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d), true);
  CHECK(v2[13] == '\x12');  // UDP over IPv4
  sockaddr_in6 s6{}, d6{};
  s6.sin6_family = d6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
  inet_pton(AF_INET6, "2001:db8::2", &d6.sin6_addr);
  s6.sin6_port = htons(1);
  d6.sin6_port = htons(2);
  v1.clear();
  px::proxy::proxy_v1(&v1, reinterpret_cast<sockaddr*>(&s6), reinterpret_cast<sockaddr*>(&d6));
  CHECK(v1 == "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n");
  v2.clear();
  px::proxy::proxy_v2(&v2, reinterpret_cast<sockaddr*>(&s6), reinterpret_cast<sockaddr*>(&d6), false);
  CHECK(v2.size() == 16 + 36);
  CHECK(v2.substr(13, 3) == std::string("\x21\x00\x24", 3));
  // Mixed families cannot be described: v1 says UNKNOWN, v2 UNSPEC (the receiver uses the connection's).
  v1.clear();
  px::proxy::proxy_v1(&v1, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d6));
  CHECK(v1 == "PROXY UNKNOWN\r\n");
  v2.clear();
  px::proxy::proxy_v2(&v2, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d6), false);
  CHECK(v2.size() == 16);
}

TEST_CASE("snapshot: streams, their listen keys, and a second stream on a taken address") {
  px::Config cfg;
  auto spec = [](const char* json) {
    auto s = std::make_shared<px::route::StreamSpec>();
    std::string e;
    REQUIRE_MESSAGE(px::route::parse_stream_json(json, s.get(), &e), e);
    return std::shared_ptr<const px::route::StreamSpec>(s);
  };
  px::route::SnapshotExtras x;
  x.streams.push_back(spec(R"({"name":"b","listen":"0.0.0.0:5432","upstreams":[{"url":"tcp://10.0.0.1:5432"}]})"));
  x.streams.push_back(spec(R"({"name":"a","listen":"127.0.0.1:5432","upstreams":[{"url":"tcp://10.0.0.2:5432"}]})"));
  x.streams.push_back(spec(R"({"name":"c","listen":"[::]:53/udp","lb":"hash",
                               "upstreams":[{"url":"udp://10.0.0.3:53"},{"url":"udp://10.0.0.4:53"}]})"));
  px::route::BuildWarnings warnings;
  auto resolve = [](const std::string&, uint16_t, sockaddr_storage*, socklen_t*) { return false; };
  auto snap = px::route::Snapshot::build(1, std::vector<std::shared_ptr<const px::route::RouteSpec>>{}, cfg, resolve,
                                         &warnings, std::move(x));
  REQUIRE(snap->streams().size() == 2);  // "a" took port 5432 first (by name); "b" overlaps it
  CHECK(snap->streams()[0]->spec.name == "a");
  CHECK(snap->streams()[0]->key == "stream tcp 127.0.0.1:5432");
  CHECK(snap->streams()[1]->key == "stream udp [::]:53");
  CHECK(snap->streams()[1]->pool.ring.size() == 128);
  CHECK(snap->streams()[1]->idle_timeout_ms == 30000);
  CHECK(snap->stream_by_key("stream udp [::]:53") == snap->streams()[1].get());
  bool warned = false;
  for (const auto& w : warnings) warned |= w.str().find("stream b: listen 0.0.0.0:5432 is taken by stream a") == 0;
  CHECK(warned);
}

TEST_CASE("passthrough routes: parsed, refused where nothing applies, and found by SNI, never by HTTP Host") {
  RouteSpec r;
  std::string e;
  REQUIRE_MESSAGE(parse_route_json(R"({"name":"git","hosts":["Git.Test","*.pass.test"],"passthrough":true,
                                       "upstreams":["tcp://10.0.0.8:443"]})",
                                   &r, &e),
                  e);
  CHECK(r.upstreams[0].url == "tcp://10.0.0.8:443");
  RouteSpec back;
  REQUIRE(parse_route_json(route_to_json(r), &back, &e));  // round-trips, defaults and all
  CHECK(back.passthrough);
  CHECK(err_of(R"({"name":"g","hosts":["g.test"],"passthrough":true,"upstreams":["tcp://10.0.0.8:443"],
                   "tls":"auto"})")
            .rfind("tls: ", 0) == 0);
  CHECK(err_of(R"({"name":"g","hosts":["g.test"],"passthrough":true,"upstreams":["tcp://10.0.0.8:443"],
                   "max_body_size":10})")
            .rfind("max_body_size: does not apply", 0) == 0);
  CHECK(err_of(R"({"name":"g","hosts":["g.test"],"passthrough":true,"upstreams":["tcp://10.0.0.8"]})")
            .rfind("upstreams[0].url: ", 0) == 0);
  CHECK(err_of(R"({"name":"g","hosts":["g.test"],"passthrough":"yes","upstreams":["tcp://10.0.0.8:1"]})") ==
        "passthrough: expected true or false");
  px::Config cfg;
  auto resolve = [](const std::string&, uint16_t, sockaddr_storage*, socklen_t*) { return true; };
  std::vector<std::shared_ptr<const RouteSpec>> specs{std::make_shared<const RouteSpec>(r)};
  auto snap = Snapshot::build(1, specs, cfg, resolve, nullptr);
  CHECK(snap->routes().empty());
  CHECK(snap->match("git.test", "/") == nullptr);
  REQUIRE(snap->has_passthrough());
  REQUIRE(snap->streams().size() == 1);
  const L4Stream* st = snap->streams()[0].get();
  CHECK(st->passthrough);
  CHECK(st->key.empty());
  CHECK(snap->passthrough("git.test") == st);
  CHECK(snap->passthrough("x.y.pass.test") == st);
  CHECK(snap->passthrough("pass.test") == nullptr);
  CHECK(snap->passthrough("") == nullptr);
}

TEST_CASE("HTTP/2 upstreams: h2c://, grpc:// and upstream_proto h2; one protocol per route; their own pools") {
  RouteSpec r;
  std::string e;
  REQUIRE_MESSAGE(parse_route_json(R"({"name":"g","hosts":["g.test"],"upstreams":["grpc://10.0.0.7:50051"]})", &r, &e),
                  e);
  CHECK(r.upstreams[0].url == "grpc://10.0.0.7:50051");
  CHECK(r.upstreams[0].h2);
  CHECK(r.upstreams[0].grpc);
  CHECK_FALSE(r.upstreams[0].tls);
  REQUIRE(parse_route_json(R"({"name":"h","hosts":["h.test"],"upstreams":["h2c://[::1]"]})", &r, &e));
  CHECK(r.upstreams[0].url == "h2c://[::1]:80");
  CHECK(r.upstreams[0].h2);
  CHECK_FALSE(r.upstreams[0].grpc);
  REQUIRE(parse_route_json(R"({"name":"s","hosts":["s.test"],"upstreams":["https://10.0.0.7"],
                               "upstream_proto":"h2"})",
                           &r, &e));
  CHECK(r.upstreams[0].h2);
  CHECK(r.upstreams[0].tls);
  RouteSpec back;
  REQUIRE(parse_route_json(route_to_json(r), &back, &e));
  CHECK(back.upstream_proto == "h2");
  CHECK(back.upstreams[0].h2);
  CHECK(err_of(R"({"name":"s","hosts":["s.test"],"upstreams":["https://a"],"upstream_proto":"h3"})") ==
        "upstream_proto: expected \"http/1.1\" or \"h2\"");
  CHECK(err_of(R"({"name":"m","hosts":["m.test"],"upstreams":["h2c://a:1","http://b:1"]})")
            .rfind("upstreams[1].url: 'http://b:1': a route's upstreams all speak one protocol", 0) == 0);
  CHECK(err_of(R"({"name":"m","hosts":["m.test"],"upstreams":["ftp://a:1"]})") ==
        "upstreams[0].url: 'ftp://a:1': the scheme must be http://, https://, h2c:// or grpc://");
  // h2c:// and grpc:// to one address share a pool (the same protocol on the wire); http:// has its own.
  px::Config cfg;
  auto resolve = [](const std::string&, uint16_t, sockaddr_storage*, socklen_t*) { return true; };
  RouteSpec a, b, c;
  REQUIRE(parse_route_json(R"({"name":"a","hosts":["a.test"],"upstreams":["h2c://10.0.0.7:81"]})", &a, &e));
  REQUIRE(parse_route_json(R"({"name":"b","hosts":["b.test"],"upstreams":["grpc://10.0.0.7:81"]})", &b, &e));
  REQUIRE(parse_route_json(R"({"name":"c","hosts":["c.test"],"upstreams":["http://10.0.0.7:81"]})", &c, &e));
  std::vector<std::shared_ptr<const RouteSpec>> specs{
      std::make_shared<const RouteSpec>(a), std::make_shared<const RouteSpec>(b), std::make_shared<const RouteSpec>(c)};
  auto snap = Snapshot::build(1, specs, cfg, resolve, nullptr);
  REQUIRE(snap->routes().size() == 3);
  CHECK(snap->routes()[0]->pool.peers[0].key == "h2c://10.0.0.7:81");
  CHECK(snap->routes()[1]->pool.peers[0].key == "h2c://10.0.0.7:81");
  CHECK(snap->routes()[0]->pool.peers[0].h2);
  CHECK(snap->routes()[2]->pool.peers[0].key == "10.0.0.7:81");
  CHECK_FALSE(snap->routes()[2]->pool.peers[0].h2);
}
