#include "net/proxy_in.h"

#include <arpa/inet.h>
#include <uv.h>

#include <cstring>

namespace px::net {

namespace {
constexpr char kSig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

int bad(std::string* error, const char* why) {
  *error = why;
  return -1;
}
}  // namespace

int parse_proxy_header(std::string_view in, size_t* used, IpAddr* src, bool* local, std::string* error,
                       uint16_t* sport) {
  *local = false;
  uint16_t port_scratch;
  if (!sport) sport = &port_scratch;
  if (in.empty()) return 0;
  if (in[0] == '\r') {  // v2
    size_t n = std::min(in.size(), sizeof kSig);
    if (std::memcmp(in.data(), kSig, n) != 0) return bad(error, "not a PROXY v2 signature");
    if (in.size() < 16) return 0;
    auto ver_cmd = static_cast<uint8_t>(in[12]), fam = static_cast<uint8_t>(in[13]);
    size_t len = static_cast<size_t>(static_cast<uint8_t>(in[14])) << 8 | static_cast<uint8_t>(in[15]);
    if ((ver_cmd >> 4) != 2) return bad(error, "PROXY v2: version is not 2");
    if ((ver_cmd & 15) > 1) return bad(error, "PROXY v2: unknown command");
    if (16 + len > kMaxProxyHeader) return bad(error, "PROXY v2: header too long");
    if (in.size() < 16 + len) return 0;
    *used = 16 + len;
    if ((ver_cmd & 15) == 0 || (fam >> 4) == 0) {  // LOCAL, or an unspecified family: keep the connection's
      *local = true;
      return 1;
    }
    const char* a = in.data() + 16;
    if ((fam >> 4) == 1 && len >= 12) {
      sockaddr_in s{};
      s.sin_family = AF_INET;
      std::memcpy(&s.sin_addr, a, 4);
      *src = IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&s));
      *sport = static_cast<uint16_t>(static_cast<uint8_t>(a[8]) << 8 | static_cast<uint8_t>(a[9]));
      return 1;
    }
    if ((fam >> 4) == 2 && len >= 36) {
      sockaddr_in6 s{};
      s.sin6_family = AF_INET6;
      std::memcpy(&s.sin6_addr, a, 16);
      *src = IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&s));
      *sport = static_cast<uint16_t>(static_cast<uint8_t>(a[32]) << 8 | static_cast<uint8_t>(a[33]));
      return 1;
    }
    if ((fam >> 4) == 3) {  // AF_UNIX: no address to use
      *local = true;
      return 1;
    }
    return bad(error, "PROXY v2: address block too short or unknown family");
  }
  // v1: "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n", at most 107 bytes.
  static constexpr std::string_view kV1 = "PROXY ";
  size_t n = std::min(in.size(), kV1.size());
  if (in.substr(0, n) != kV1.substr(0, n)) return bad(error, "no PROXY header");
  size_t crlf = in.find("\r\n");
  if (crlf == std::string_view::npos) return in.size() >= 107 ? bad(error, "PROXY v1: line too long") : 0;
  if (crlf + 2 > 107) return bad(error, "PROXY v1: line too long");
  std::string_view line = in.substr(6, crlf - 6);
  *used = crlf + 2;
  if (line.substr(0, 7) == "UNKNOWN") {
    *local = true;
    return 1;
  }
  std::string_view parts[5];
  size_t k = 0;
  std::string_view proto = line.substr(0, line.find(' '));
  if (proto != "TCP4" && proto != "TCP6") return bad(error, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
  line.remove_prefix(proto.size());
  while (!line.empty() && k < 5) {
    if (line[0] != ' ') return bad(error, "PROXY v1: fields are separated by one space");
    line.remove_prefix(1);
    size_t sp = line.find(' ');
    parts[k++] = line.substr(0, sp);
    line.remove_prefix(sp == std::string_view::npos ? line.size() : sp);
  }
  if (k != 4 || !line.empty()) return bad(error, "PROXY v1: expected source, destination and two ports");
  IpAddr s, d;
  if (!IpAddr::parse(parts[0], &s) || !IpAddr::parse(parts[1], &d) || s.is_v4() != (proto == "TCP4") ||
      d.is_v4() != (proto == "TCP4"))
    return bad(error, "PROXY v1: an address does not match its protocol");
  for (int i = 2; i < 4; i++) {
    if (parts[i].empty() || parts[i].size() > 5 || (parts[i].size() > 1 && parts[i][0] == '0'))
      return bad(error, "PROXY v1: bad port");
    unsigned v = 0;
    for (char c : parts[i]) {
      if (c < '0' || c > '9') return bad(error, "PROXY v1: bad port");
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (i == 2) *sport = static_cast<uint16_t>(v);
    if (v > 65535) return bad(error, "PROXY v1: bad port");
  }
  *src = s;
  return 1;
}

void ProxyInTransport::on_data(const char* data, size_t len) {
  if (done_) return user_->on_data(data, len);
  buf_.append(data, len);
  size_t used = 0;
  IpAddr src;
  bool local;
  std::string err;
  uint16_t sport = 0;
  int r = parse_proxy_header(buf_, &used, &src, &local, &err, &sport);
  if (r == 0 && buf_.size() < kMaxProxyHeader) return;
  if (r <= 0) {
    user_->on_error(UV_EPROTO);
    return;
  }
  done_ = true;
  if (!local) {
    *client_ = src;
    *trusted_ = set_->contains(src);
    if (port_) *port_ = sport;
  }
  std::string rest = buf_.substr(used);
  std::string().swap(buf_);
  if (announce_) user_->on_connected();  // the user may replace itself, or close
  if (!rest.empty() && !closing_) user_->on_data(rest.data(), rest.size());
}

}  // namespace px::net
