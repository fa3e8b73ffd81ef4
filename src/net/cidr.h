// CIDR ranges for IPv4 and IPv6 (trusted proxies now, access lists later).
// IPv4 addresses are kept as IPv4-mapped IPv6 so one comparison serves both.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px::net {

struct IpAddr {
  std::array<uint8_t, 16> b{};  // IPv4 as ::ffff:a.b.c.d
  bool is_v4() const;
  std::string str() const;
  size_t format(char* buf) const;  // buf of at least 46 bytes (INET6_ADDRSTRLEN); returns the length
  static bool parse(std::string_view s, IpAddr* out);
  static IpAddr from_sockaddr(const sockaddr* sa);
};

struct Cidr {
  IpAddr addr;
  int prefix = 0;  // in bits of the 128-bit form
  bool contains(const IpAddr& ip) const;
  // "10.0.0.0/8", "::1", "2001:db8::/32"; error names the problem.
  static bool parse(std::string_view s, Cidr* out, std::string* error);
};

class CidrSet {
 public:
  void add(const Cidr& c) { items_.push_back(c); }
  bool contains(const IpAddr& ip) const {
    for (const auto& c : items_)
      if (c.contains(ip)) return true;
    return false;
  }
  bool empty() const { return items_.empty(); }
  const std::vector<Cidr>& items() const { return items_; }

 private:
  std::vector<Cidr> items_;
};

}  // namespace px::net
