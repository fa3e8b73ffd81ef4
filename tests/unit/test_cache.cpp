// RFC 9111's rules (cache/policy.h) as pure functions, and the route's "cache" field.
#include <doctest/doctest.h>

#include <string>

#include "cache/policy.h"
#include "cache/store.h"
#include "route/route.h"

using namespace px;
using namespace px::cache;

namespace {
// A head from "Name: value\r\n" lines (the store's reader), with a status and a method.
http::Head head(const std::string& lines, int status = 200, http::Method m = http::Method::get) {
  http::Head h;
  parse_head_lines(lines, &h);
  h.status = static_cast<uint16_t>(status);
  h.method = m;
  return h;
}
StoreDecision decide(const std::string& resp, int status = 200, const std::string& req = "",
                     route::CacheSpec spec = {}) {
  http::Head rq = head(req), rs = head(resp, status);
  return decide_store(rq, parse_cache_control(rq, true), rs, parse_cache_control(rs, false), spec, 1000000);
}
}  // namespace

TEST_CASE("cache: HTTP dates in their three forms, and what is not one") {
  CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
  CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
  CHECK(parse_http_date("0") == -1);
  CHECK(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT") == -1);
  CHECK(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT") == -1);
  CHECK(parse_http_date("") == -1);
  char out[29];
  format_http_date(784111777, out);
  CHECK(std::string(out, 29) == "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST_CASE("cache: Cache-Control directives, quoted arguments, duplicates and Pragma") {
  http::Head r = head("Cache-Control: public, max-age=\"60\", s-maxage=30\r\nCache-Control: max-age=10, X=\"a,b\"\r\n");
  CacheControl cc = parse_cache_control(r, false);
  CHECK(cc.public_);
  CHECK(cc.max_age == 10);  // the smallest of two
  CHECK(cc.s_maxage == 30);
  CHECK(parse_cache_control(head("Cache-Control: max-age=abc\r\n"), false).max_age == 0);  // invalid: stale
  CHECK(parse_cache_control(head("Cache-Control: max-age=abc\r\n"), true).max_age == -1);
  CacheControl rq = parse_cache_control(head("Pragma: no-cache\r\n"), true);
  CHECK(rq.no_cache);
  CHECK_FALSE(parse_cache_control(head("Pragma: no-cache\r\nCache-Control: max-age=5\r\n"), true).no_cache);
  CHECK(parse_cache_control(head("cache-control: MAX-STALE\r\n"), true).max_stale == CacheControl::kAnyStale);
  CHECK(parse_cache_control(head("Cache-Control: no-cache=\"set-cookie\", must-revalidate\r\n"), false).no_cache);
  CHECK(parse_cache_control(head("Cache-Control: proxy-revalidate\r\n"), false).must_revalidate);
}

TEST_CASE("cache: what a shared cache may store") {
  CHECK(*decide("Cache-Control: max-age=60\r\n").no == 0);
  CHECK(decide("Cache-Control: max-age=60\r\n").lifetime == 60);
  CHECK(std::string(decide("Cache-Control: no-store, max-age=60\r\n").no) == "no-store");
  CHECK(std::string(decide("Cache-Control: private, max-age=60\r\n").no) == "private");
  CHECK(std::string(decide("Cache-Control: max-age=60\r\n", 200, "Cache-Control: no-store\r\n").no) ==
        "request no-store");
  CHECK(std::string(decide("Cache-Control: max-age=60\r\nSet-Cookie: a=1\r\n").no) == "set-cookie");
  route::CacheSpec cookies;
  cookies.store_set_cookie = true;
  CHECK(decide("Cache-Control: max-age=60\r\nSet-Cookie: a=1\r\n", 200, "", cookies).strip_cookie);
  CHECK(std::string(decide("Cache-Control: max-age=60\r\n", 200, "Authorization: Basic x\r\n").no) == "authorization");
  CHECK(*decide("Cache-Control: s-maxage=60\r\n", 200, "Authorization: Basic x\r\n").no == 0);
  CHECK(std::string(decide("Cache-Control: max-age=60\r\nVary: Accept, *\r\n").no) == "vary *");
  CHECK(std::string(decide("Cache-Control: max-age=60\r\n", 206).no) == "status");
  CHECK(std::string(decide("Cache-Control: max-age=60\r\n", 304).no) == "status");
  // Expires less Date; an invalid Expires is in the past.
  CHECK(decide("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nExpires: Sun, 06 Nov 1994 08:50:37 GMT\r\n").lifetime == 60);
  CHECK(std::string(decide("Expires: 0\r\n").no) == "no validator to revalidate with");
  CHECK(*decide("Expires: 0\r\nETag: \"a\"\r\n").no == 0);
  // Heuristics: a tenth of the time since Last-Modified, only for statuses that allow it; a route's default_ttl.
  StoreDecision h = decide("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nLast-Modified: Sun, 06 Nov 1994 07:49:37 GMT\r\n");
  CHECK(h.heuristic);
  CHECK(h.lifetime == 360);
  CHECK(std::string(decide("Last-Modified: Sun, 06 Nov 1994 07:49:37 GMT\r\n", 302).no) == "no freshness");
  CHECK(*decide("Cache-Control: max-age=5\r\n", 302).no == 0);
  route::CacheSpec ttl;
  ttl.default_ttl = 90;
  CHECK(decide("", 200, "", ttl).lifetime == 90);
  // A POST's response is not stored.
  http::Head post = head("", 200, http::Method::post), rs = head("Cache-Control: max-age=60\r\n");
  CHECK(std::string(decide_store(post, {}, rs, parse_cache_control(rs, false), {}, 0).no) == "method");
}

TEST_CASE("cache: freshness, age and what a request accepts") {
  http::Head r = head("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nAge: 10\r\n");
  int64_t t = parse_http_date("Sun, 06 Nov 1994 08:49:47 GMT");
  CHECK(initial_age(r, t - 2, t) == 12);  // Age plus the time on the way beats the apparent age (10)
  Stored s;
  s.lifetime = 60;
  s.age = 30;
  CHECK(usable(s, {}) == Use::fresh);
  CacheControl rq;
  rq.max_age = 20;
  CHECK(usable(s, rq) == Use::revalidate);
  rq = {};
  rq.min_fresh = 40;
  CHECK(usable(s, rq) == Use::revalidate);
  rq = {};
  rq.max_age = 0;
  CHECK(usable(s, rq) == Use::revalidate);
  s.age = 70;
  CHECK(usable(s, {}) == Use::revalidate);
  rq = {};
  rq.max_stale = 20;
  CHECK(usable(s, rq) == Use::stale_ok);
  rq.max_stale = 5;
  CHECK(usable(s, rq) == Use::revalidate);
  rq.max_stale = CacheControl::kAnyStale;
  s.must_revalidate = true;
  CHECK(usable(s, rq) == Use::revalidate);
  s = {};
  s.lifetime = 60;
  s.no_cache = true;
  CHECK(usable(s, {}) == Use::revalidate);
}

TEST_CASE("cache: conditional requests against stored validators") {
  http::Head rq = head("If-None-Match: \"a\", W/\"b\"\r\n");
  CHECK(not_modified(rq, "\"b\"", ""));
  CHECK(not_modified(rq, "W/\"a\"", ""));  // weak comparison
  CHECK_FALSE(not_modified(rq, "\"c\"", ""));
  CHECK(not_modified(head("If-None-Match: *\r\n"), "\"x\"", ""));
  // If-None-Match decides alone when present.
  CHECK_FALSE(not_modified(head("If-None-Match: \"z\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
                           "\"a\"", "Sun, 06 Nov 1994 08:49:37 GMT"));
  CHECK(
      not_modified(head("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "", "Sun, 06 Nov 1994 08:00:00 GMT"));
  CHECK_FALSE(
      not_modified(head("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "", "Sun, 06 Nov 1994 09:00:00 GMT"));
  CHECK_FALSE(not_modified(head("If-Modified-Since: garbage\r\n"), "", "Sun, 06 Nov 1994 08:00:00 GMT"));
}

TEST_CASE("cache: Vary names and the request's values") {
  CHECK(vary_names(head("Vary: Accept-Encoding, accept\r\nVary: User-Agent\r\n")) ==
        "accept,accept-encoding,user-agent");
  CHECK(vary_names(head("Vary: accept, *\r\n")) == "*");
  CHECK(vary_names(head("")) == "");
  std::string a, b;
  vary_values(head("Accept-Encoding: gzip , br\r\n"), "accept-encoding", &a);
  vary_values(head("Accept-Encoding: gzip,br\r\n"), "accept-encoding", &b);
  CHECK(a == b);
  CHECK(a == "\naccept-encoding:gzip,br");
  std::string none;
  vary_values(head(""), "accept-encoding", &none);
  CHECK(none != a);
}

TEST_CASE("route JSON: the cache field") {
  auto err_of = [](const std::string& cache) {
    route::RouteSpec r;
    std::string err;
    if (route::parse_route_json(
            R"({"name":"r","hosts":["a.test"],"upstreams":["http://127.0.0.1:1"],"cache":)" + cache + "}", &r, &err))
      return std::string();
    return err;
  };
  CHECK(err_of("true") == "");
  CHECK(
      err_of(R"({"default_ttl": 0, "stale_while_revalidate": 30, "stale_if_error": "10m", "max_object_size": "2g"})") ==
      "");
  CHECK(err_of(R"("yes")") == "cache: expected true, false or an object");
  CHECK(err_of(R"({"ttl": 1})") == "cache.ttl: unknown field");
  CHECK(err_of(R"({"max_size": "2g"})") == "");
  CHECK(err_of(R"({"max_size": "huge"})").rfind("cache.max_size: expected", 0) == 0);
  CHECK(err_of(R"({"stale_if_error": -1})") == "cache.stale_if_error: expected a non-negative whole number");
  CHECK(err_of(R"({"max_object_size": "lots"})").rfind("cache.max_object_size: expected", 0) == 0);
  CHECK(err_of(R"({"store_set_cookie": 1})") == "cache.store_set_cookie: expected true or false");
  route::RouteSpec r;
  std::string err;
  REQUIRE(route::parse_route_json(
      R"({"name":"r","hosts":["a.test"],"upstreams":["http://127.0.0.1:1"],"cache":{"stale_if_error":"10m","lock_timeout":"2s"}})",
      &r, &err));
  CHECK(r.cache.enabled);
  CHECK(r.cache.stale_if_error == 600);
  CHECK(r.cache.lock_timeout_ms == 2000);
  route::RouteSpec back;
  REQUIRE(route::parse_route_json(route::route_to_json(r), &back, &err));
  CHECK(back.cache == r.cache);
  CHECK(err_of(R"(true, "passthrough": true, "upstreams": ["tcp://127.0.0.1:1"])").find("cache") == 0);
}
