#include <doctest/doctest.h>

#include <atomic>
#include <cctype>
#include <string>
#include <thread>

#include "core/block_pool.h"
#include "core/shared_table.h"
#include "core/strings.h"
#include "daemon/config.h"
#include "net/cidr.h"

using namespace px;

TEST_CASE("block_pool: blocks are aligned, recycled by size, grown with their bytes, and released") {
  namespace bp = px::block_pool;
  bp::release();
  void* a = bp::alloc(100);
  REQUIRE(a != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(a) % 16 == 0);
  memset(a, 0x5a, 100);
  bp::free(a);
  CHECK(bp::alloc(97) == a);  // the same size class (97..112) takes the block back
  void* b = bp::alloc(100);
  CHECK(b != a);
  // realloc within the class keeps the block; past it, the bytes move.
  memset(b, 7, 100);
  CHECK(bp::realloc(b, 112) == b);
  auto* c = static_cast<unsigned char*>(bp::realloc(b, 5000));  // a large block: malloc's
  REQUIRE(c != nullptr);
  bool kept = true;
  for (int i = 0; i < 100; i++) kept = kept && c[i] == 7;
  CHECK(kept);
  c = static_cast<unsigned char*>(bp::realloc(c, 9000));
  REQUIRE(c != nullptr);
  CHECK(c[99] == 7);
  bp::free(c);
  auto* z = static_cast<unsigned char*>(bp::alloc_zeroed(10, 30));
  bool zero = true;
  for (int i = 0; i < 300; i++) zero = zero && z[i] == 0;
  CHECK(zero);
  CHECK(bp::alloc_zeroed(SIZE_MAX / 2, 4) == nullptr);  // n * size overflows
  CHECK(bp::alloc(SIZE_MAX - 4) == nullptr);
  void* e = bp::realloc(nullptr, 0);
  CHECK(e != nullptr);
  bp::free(e);
  bp::free(z);
  bp::free(a);
  bp::free(nullptr);
  // Past the per-thread cap, freed blocks go back to malloc (ASan's leak check sees none kept).
  std::vector<void*> many;
  for (size_t i = 0; i < 2 * bp::kMaxCached / 1024; i++) many.push_back(bp::alloc(1024));
  for (void* p : many) bp::free(p);
  bp::release();
}

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
  // pxctl and the API: a bare number keeps the unit the field always had (milliseconds there).
  CHECK(parse_duration("1500", 1, &v));
  CHECK(v == 1500);
  CHECK(parse_duration("2s", 1, &v));
  CHECK(v == 2000);
  CHECK(parse_duration("5m", 1, &v));
  CHECK(v == 300000);
  CHECK(parse_duration("45", 1000, &v));
  CHECK(v == 45000);
  CHECK_FALSE(parse_duration("5 s", 1, &v));
  CHECK_FALSE(parse_duration("s", 1, &v));
  CHECK_FALSE(parse_duration("99999999999999999h", 1, &v));
}

TEST_CASE("parse_u64: every 64-bit value, nothing above, nothing but digits") {
  uint64_t v = 7;
  CHECK((parse_u64("0", &v) && v == 0));
  CHECK((parse_u64("18446744073709551615", &v) && v == UINT64_MAX));
  CHECK((parse_u64("00000000000000000042", &v) && v == 42));
  v = 7;
  CHECK_FALSE(parse_u64("18446744073709551616", &v));  // 2^64
  CHECK_FALSE(parse_u64("99999999999999999999", &v));
  CHECK_FALSE(parse_u64("184467440737095516150", &v));
  CHECK_FALSE(parse_u64("", &v));
  CHECK_FALSE(parse_u64("-1", &v));
  CHECK_FALSE(parse_u64("+1", &v));
  CHECK_FALSE(parse_u64("1 ", &v));
  CHECK_FALSE(parse_u64("0x10", &v));
  CHECK(v == 7);  // untouched when refused
  for (uint64_t x :
       {uint64_t(1), uint64_t(9), uint64_t(10), uint64_t(65535), uint64_t(1) << 32, UINT64_MAX / 10, UINT64_MAX - 1})
    CHECK((parse_u64(std::to_string(x), &v) && v == x));
}

TEST_CASE("hex16 writes the 16 hex digits of a 64-bit value, as a loop would") {
  auto slow = [](uint64_t v) {
    std::string s(16, '0');
    for (int i = 15; i >= 0; i--, v >>= 4) s[static_cast<size_t>(i)] = "0123456789abcdef"[v & 15];
    return s;
  };
  std::vector<uint64_t> values = {0,
                                  1,
                                  9,
                                  10,
                                  15,
                                  16,
                                  0x0123456789abcdefull,
                                  0xfedcba9876543210ull,
                                  ~0ull,
                                  0xa0a0a0a0a0a0a0a0ull,
                                  0x9999999999999999ull};
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 10000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    values.push_back(x);
  }
  for (uint64_t v : values) {
    char out[16];
    hex16(v, out);
    CHECK(std::string(out, 16) == slow(v));
  }
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

// iequals works 8 (or 4) bytes at a time: check it against the byte-wise
// definition for every length up to 24, every byte value at every position,
// against both cases of a letter and a non-letter.
TEST_CASE("lower_in_place lowercases A-Z and nothing else, at every length and position") {
  size_t checked = 0;
  for (size_t n = 0; n <= 24; n++) {
    for (size_t pos = 0; pos < std::max<size_t>(n, 1); pos++) {
      for (int c = 0; c < 256; c++) {
        std::string s;
        for (size_t i = 0; i < n; i++) s.push_back("aZ-9Q~_m"[i % 8]);
        if (n) s[pos] = static_cast<char>(c);
        std::string want = s;
        for (auto& ch : want) ch = ascii_lower(ch);
        std::string got = s + "XY";  // bytes past the name stay as they are
        lower_in_place(got.data(), n);
        if (got != want + "XY") FAIL_CHECK("n=" << n << " pos=" << pos << " c=" << c);
        checked++;
      }
    }
  }
  CHECK(checked > 6000);
}

TEST_CASE("iequals agrees with a byte-wise comparison") {
  auto slow = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
      if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
  };
  size_t checked = 0, equal = 0;
  for (size_t n = 0; n <= 24; n++) {
    std::string base;
    for (size_t i = 0; i < n; i++) base.push_back("aZ-9q~_M"[i % 8]);
    for (size_t pos = 0; pos < n; pos++) {
      for (int c = 0; c < 256; c++) {
        std::string a = base;
        a[pos] = static_cast<char>(c);
        for (std::string b : {base, to_lower(base)}) {
          bool want = slow(a, b);
          CHECK(iequals(a, b) == want);
          CHECK(iequals(b, a) == want);
          checked++;
          equal += want;
        }
      }
    }
    CHECK(iequals(base, to_lower(base)));
    if (n) CHECK_FALSE(iequals(base, base.substr(1)));
  }
  CHECK(checked > 10000);
  CHECK(equal > 100);  // the matches are exercised too, not only mismatches

  // iequals_lower: one side a lowercase literal (2, 4, 14 and 17 bytes: each code path).
  auto each = [&](std::string_view lit, auto&& fast) {
    for (size_t pos = 0; pos < lit.size(); pos++)
      for (int c = 0; c < 256; c++) {
        std::string a(lit);
        a[pos] = static_cast<char>(c);
        CHECK(fast(a) == slow(a, lit));
      }
    std::string upper(lit);
    for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    CHECK(fast(upper));
    CHECK_FALSE(fast(upper + "x"));
  };
  each("te", [](std::string_view a) { return iequals_lower(a, "te"); });
  each("host", [](std::string_view a) { return iequals_lower(a, "host"); });
  each("content-length", [](std::string_view a) { return iequals_lower(a, "content-length"); });
  each("x-forwarded-proto", [](std::string_view a) { return iequals_lower(a, "x-forwarded-proto"); });
}

// contains_any works 8 bytes at a time: every length up to 20, every byte
// value at every position, against the byte-wise answer.
TEST_CASE("contains_any finds CR, LF and NUL anywhere") {
  size_t found = 0, checked = 0;
  for (size_t n = 0; n <= 20; n++) {
    std::string base(n, 'x');
    CHECK_FALSE(contains_any<'\0', '\r', '\n'>(base));
    for (size_t pos = 0; pos < n; pos++)
      for (int c = 0; c < 256; c++) {
        std::string s = base;
        s[pos] = static_cast<char>(c);
        bool want = c == 0 || c == '\r' || c == '\n';
        CHECK(contains_any<'\0', '\r', '\n'>(s) == want);
        CHECK(contains_any<' ', '\t'>(s) == (c == ' ' || c == '\t'));
        found += want;
        checked++;
      }
  }
  CHECK(checked > 5000);
  CHECK(found == 3 * 210);  // 3 bytes at each of the 210 positions
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
  REQUIRE(
      parse_config("listen 127.0.0.1:0 [::1]:8080\nworkers 3\ndata_dir /tmp/x\n"
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
  CHECK_FALSE(parse_config("listen 127.0.0.1:80\nunderscores_in_headers yes\n", "p.conf", &c, &err));
  CHECK(err == "p.conf:2: underscores_in_headers: expected 'on' or 'off', got 'yes'");
  REQUIRE(parse_config("listen 127.0.0.1:80\nunderscores_in_headers on\n", "p.conf", &c, &err));
  CHECK(c.underscores_in_headers);
  CHECK(c.io_engine == "auto");  // the default
  CHECK_FALSE(parse_config("listen 127.0.0.1:80\nio_engine iouring\n", "p.conf", &c, &err));
  CHECK(err == "p.conf:2: io_engine: expected auto, uring or epoll, got 'iouring'");
  REQUIRE(parse_config("listen 127.0.0.1:80\nio_engine auto\n", "p.conf", &c, &err));
  CHECK(c.io_engine == "auto");
}

// ---- SharedTable: the host's leaky buckets and counters (core/shared_table.h) ----

TEST_CASE("shared table: a leaky bucket as nginx's limit_req counts it") {
  px::SharedTable t(1024);
  uint64_t k = t.key(px::SharedTable::kLimit, "zone\0client"), s = 1'000'000'000;
  uint64_t now = 100 * s, T = s;  // one request a second
  // burst 2, no delay: the first at once, the next two wait their turn, the fourth is refused
  auto a = t.limit(k, now, T, 2, 0), b = t.limit(k, now, T, 2, 0), c = t.limit(k, now, T, 2, 0),
       d = t.limit(k, now, T, 2, 0);
  CHECK((a.ok && a.wait == 0));
  CHECK((b.ok && b.wait == T));
  CHECK((c.ok && c.wait == 2 * T));
  CHECK_FALSE(d.ok);
  CHECK(d.wait == T);  // one leaves in a second
  // half a second later, still refused; a second later one passes again
  CHECK_FALSE(t.limit(k, now + s / 2, T, 2, 0).ok);
  CHECK(t.limit(k, now + s, T, 2, 0).ok);
  // nodelay (delay = burst): the burst goes at once
  uint64_t k2 = t.key(px::SharedTable::kLimit, "other");
  for (int i = 0; i < 3; i++) CHECK(t.limit(k2, now, T, 2, 2).wait == 0);
  CHECK_FALSE(t.limit(k2, now, T, 2, 2).ok);
  // delay 1: the first two at once, the third waits one interval
  uint64_t k3 = t.key(px::SharedTable::kLimit, "third");
  CHECK(t.limit(k3, now, T, 3, 1).wait == 0);
  CHECK(t.limit(k3, now, T, 3, 1).wait == 0);
  CHECK(t.limit(k3, now, T, 3, 1).wait == T);
  // a drained bucket starts over
  CHECK(t.limit(k3, now + 100 * s, T, 3, 1).wait == 0);
}

TEST_CASE("shared table: counters with expiry, set and erase") {
  px::SharedTable t(1024);
  uint64_t s = 1'000'000'000, now = 10 * s;
  uint64_t k = t.key(px::SharedTable::kCounter, "hits");
  int64_t v = 0;
  CHECK_FALSE(t.get(k, now, &v));
  CHECK(t.incr(k, 1, 2 * s, now) == 1);
  CHECK(t.incr(k, 5, 2 * s, now + s) == 6);  // the expiry is the first's
  CHECK((t.get(k, now + s, &v) && v == 6));
  CHECK_FALSE(t.get(k, now + 3 * s, &v));
  CHECK(t.incr(k, 1, 0, now + 3 * s) == 1);  // expired: a new counter, no expiry
  CHECK((t.get(k, now + 1000 * s, &v) && v == 1));
  t.set(k, 2147483647, 0, now);
  CHECK(t.incr(k, 10, 0, now) == 2147483647);  // saturates
  t.erase(k, now);
  CHECK_FALSE(t.get(k, now, &v));
  // a limit and a counter of the same name are different keys
  CHECK(t.key(px::SharedTable::kCounter, "x") != t.key(px::SharedTable::kLimit, "x"));
}

TEST_CASE("shared table: a full window evicts the entry that runs out soonest") {
  px::SharedTable t(16);  // one window
  uint64_t s = 1'000'000'000, now = 10 * s;
  for (int i = 0; i < 16; i++)
    t.incr(t.key(px::SharedTable::kCounter, "c" + std::to_string(i)), 1, static_cast<uint64_t>(100 + i) * s, now);
  CHECK(t.evictions() == 0);
  uint64_t k = t.key(px::SharedTable::kCounter, "new");
  CHECK(t.incr(k, 1, 0, now) == 1);
  CHECK(t.evictions() == 1);
  int64_t v;
  CHECK_FALSE(t.get(t.key(px::SharedTable::kCounter, "c0"), now, &v));  // the soonest to expire went
  CHECK(t.get(t.key(px::SharedTable::kCounter, "c15"), now, &v));
  // an expired entry's slot is taken without an eviction
  CHECK(t.incr(t.key(px::SharedTable::kCounter, "later"), 1, 0, now + 200 * s) == 1);
  CHECK(t.evictions() == 1);
}

TEST_CASE("shared table: exact under two threads at once") {
  px::SharedTable t(4096);
  uint64_t now = t.now();
  constexpr int kKeys = 64, kPer = 20000;
  std::atomic<int> passed{0};
  auto work = [&] {
    int mine = 0;
    for (int i = 0; i < kPer; i++) {
      std::string name = "k" + std::to_string(i % kKeys);
      t.incr(t.key(px::SharedTable::kCounter, name), 1, 0, now);
      // one a minute, burst 9: exactly 10 per key pass, whichever thread asks
      if (t.limit(t.key(px::SharedTable::kLimit, name), now, 60'000'000'000ull, 9, 9).ok) mine++;
    }
    passed += mine;
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  CHECK(passed.load() == kKeys * 10);
  int64_t total = 0, v;
  for (int i = 0; i < kKeys; i++)
    if (t.get(t.key(px::SharedTable::kCounter, "k" + std::to_string(i)), now, &v)) total += v;
  CHECK(total == 2 * kPer);
}
