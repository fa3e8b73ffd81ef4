#include <doctest/doctest.h>

#include "core/config.h"
#include "core/strings.h"
#include "net/cidr.h"

using namespace px;

TEST_CASE("durations and sizes") {
  uint64_t v;
  CHECK(parse_duration_ms("30s", &v));
  CHECK(v == 30000);
  CHECK(parse_duration_ms("250ms", &v));
  CHECK(v == 250);
  CHECK(parse_duration_ms("2m", &v));
  CHECK(v == 120000);
  CHECK(parse_duration_ms("7", &v));
  CHECK(v == 7000);
  CHECK_FALSE(parse_duration_ms("", &v));
  CHECK_FALSE(parse_duration_ms("1d", &v));
  CHECK_FALSE(parse_duration_ms("-1s", &v));
  CHECK(parse_size("16k", &v));
  CHECK(v == 16384);
  CHECK(parse_size("1M", &v));
  CHECK(v == 1048576);
  CHECK_FALSE(parse_size("1q", &v));
  CHECK_FALSE(parse_size("99999999999999999999", &v));
}

TEST_CASE("token lists and case") {
  CHECK(list_has_token("keep-alive, Upgrade", "upgrade"));
  CHECK_FALSE(list_has_token("keep-alive, upgrades", "upgrade"));
  CHECK(iequals("Content-Length", "content-length"));
  std::string s;
  append_hex(s, 255);
  append_dec(s, 1234);
  CHECK(s == "ff1234");
}

TEST_CASE("cidr") {
  net::Cidr c;
  std::string err;
  REQUIRE(net::Cidr::parse("10.1.0.0/16", &c, &err));
  net::IpAddr ip;
  REQUIRE(net::IpAddr::parse("10.1.200.3", &ip));
  CHECK(c.contains(ip));
  REQUIRE(net::IpAddr::parse("10.2.0.1", &ip));
  CHECK_FALSE(c.contains(ip));
  REQUIRE(net::Cidr::parse("2001:db8::/32", &c, &err));
  REQUIRE(net::IpAddr::parse("2001:db8:1::5", &ip));
  CHECK(c.contains(ip));
  REQUIRE(net::IpAddr::parse("10.1.0.1", &ip));
  CHECK_FALSE(c.contains(ip));
  CHECK(ip.str() == "10.1.0.1");
  CHECK_FALSE(net::Cidr::parse("10.0.0.0/33", &c, &err));
  CHECK(err.find("0..32") != std::string::npos);
  CHECK_FALSE(net::Cidr::parse("banana", &c, &err));
  REQUIRE(net::Cidr::parse("0.0.0.0/0", &c, &err));
  REQUIRE(net::IpAddr::parse("192.0.2.1", &ip));
  CHECK(c.contains(ip));
}

TEST_CASE("config parses every directive") {
  Config c;
  std::string err;
  REQUIRE(parse_config("listen 127.0.0.1:0 [::1]:8080\nworkers 3\ndata_dir /tmp/x\n"
                       "client_header_timeout 2s # comment\nmax_header_size 8k\nmax_headers 50\n"
                       "trusted_proxies 10.0.0.0/8 ::1\ndefault_route fallback\nlog_level debug\n",
                       "t.conf", &c, &err));
  CHECK(c.listen.size() == 2);
  CHECK(c.listen[1].host == "::1");
  CHECK(c.listen[1].port == 8080);
  CHECK(c.listen[1].str() == "[::1]:8080");
  CHECK(c.workers == 3);
  CHECK(c.client_header_timeout_ms == 2000);
  CHECK(c.max_header_size == 8192);
  CHECK(c.default_route == "fallback");
  net::IpAddr ip;
  net::IpAddr::parse("10.9.9.9", &ip);
  CHECK(c.trusted_proxies.contains(ip));
}

TEST_CASE("config errors name the line and the problem") {
  Config c;
  std::string err;
  CHECK_FALSE(parse_config("listen 127.0.0.1:80\n\nworkers 0\n", "p.conf", &c, &err));
  CHECK(err.rfind("p.conf:3: workers:", 0) == 0);
  CHECK_FALSE(parse_config("listen 127.0.0.1:80\ngrace_period\n", "p.conf", &c, &err));
  CHECK(err == "p.conf:2: grace_period: expected exactly one value, got 0");
  CHECK_FALSE(parse_config("listen 1.2.3:80\n", "p.conf", &c, &err));
  CHECK(err.find("not a numeric IPv4 or IPv6") != std::string::npos);
  CHECK_FALSE(parse_config("", "p.conf", &c, &err));
  CHECK(err.find("no listen address") != std::string::npos);
}
