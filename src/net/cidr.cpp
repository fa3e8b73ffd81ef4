#include "net/cidr.h"

#include <arpa/inet.h>

#include <cstring>

#include "core/strings.h"

namespace px::net {

static const uint8_t kV4Prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool IpAddr::is_v4() const { return std::memcmp(b.data(), kV4Prefix, 12) == 0; }

size_t IpAddr::format(char* buf) const {
  if (is_v4()) {
    // glibc's inet_ntop goes through sprintf: ~1,600 instructions, once per proxied request.
    char* p = buf;
    for (int i = 12; i < 16; i++) {
      unsigned v = b[static_cast<size_t>(i)];
      if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
      if (v >= 10) *p++ = static_cast<char>('0' + v / 10 % 10);
      *p++ = static_cast<char>('0' + v % 10);
      if (i < 15) *p++ = '.';
    }
    *p = 0;
    return static_cast<size_t>(p - buf);
  }
  inet_ntop(AF_INET6, b.data(), buf, INET6_ADDRSTRLEN);
  return std::strlen(buf);
}

std::string IpAddr::str() const {
  char buf[INET6_ADDRSTRLEN];
  if (is_v4())
    inet_ntop(AF_INET, b.data() + 12, buf, sizeof buf);
  else
    inet_ntop(AF_INET6, b.data(), buf, sizeof buf);
  return buf;
}

bool IpAddr::parse(std::string_view s, IpAddr* out) {
  char buf[INET6_ADDRSTRLEN + 1];
  if (s.size() >= sizeof buf || s.empty()) return false;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  IpAddr r;
  if (inet_pton(AF_INET, buf, r.b.data() + 12) == 1) {
    std::memcpy(r.b.data(), kV4Prefix, 12);
    *out = r;
    return true;
  }
  if (inet_pton(AF_INET6, buf, r.b.data()) == 1) {
    *out = r;
    return true;
  }
  return false;
}

IpAddr IpAddr::from_sockaddr(const sockaddr* sa) {
  IpAddr r;
  if (sa->sa_family == AF_INET) {
    std::memcpy(r.b.data(), kV4Prefix, 12);
    std::memcpy(r.b.data() + 12, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    std::memcpy(r.b.data(), &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
  }
  return r;
}

bool Cidr::contains(const IpAddr& ip) const {
  int full = prefix / 8, rest = prefix % 8;
  if (std::memcmp(ip.b.data(), addr.b.data(), full) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.b[full] & mask) == (addr.b[full] & mask);
}

bool Cidr::parse(std::string_view s, Cidr* out, std::string* error) {
  size_t slash = s.find('/');
  std::string_view a = s.substr(0, slash);
  IpAddr ip;
  if (!IpAddr::parse(a, &ip)) {
    *error = "'" + std::string(a) + "' is not an IPv4 or IPv6 address";
    return false;
  }
  int max = ip.is_v4() ? 32 : 128;
  uint64_t p = static_cast<uint64_t>(max);
  if (slash != std::string_view::npos) {
    if (!parse_u64(s.substr(slash + 1), &p) || p > static_cast<uint64_t>(max)) {
      *error = "prefix length in '" + std::string(s) + "' must be 0.." + std::to_string(max);
      return false;
    }
  }
  Cidr c;
  c.addr = ip;
  c.prefix = static_cast<int>(p) + (ip.is_v4() ? 96 : 0);
  // Clear host bits so equal ranges compare equal.
  for (int bit = c.prefix; bit < 128; bit++) c.addr.b[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  *out = c;
  return true;
}

}  // namespace px::net
