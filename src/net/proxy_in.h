// px::net PROXY protocol in — a listener marked `proxy_protocol` in pxd.conf
// sits behind a load balancer that opens each connection with a PROXY header
// (haproxy's proxy-protocol.txt, v1 text or v2 binary) naming the real client.
//
// ProxyInTransport sits right above TCP (below TLS): it reads and checks the
// header, sets the connection's client address from it, and from then on
// passes bytes through untouched. A malformed, oversized or missing header is
// an error (the connection closes, nothing is answered).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "net/cidr.h"
#include "net/transport.h"

namespace px::net {

// -1: not a valid header (*error says why); 0: need more bytes; 1: a header of *used bytes. *local:
// v1 UNKNOWN or v2 LOCAL (a health check of the balancer itself: keep the connection's own address).
// *sport (when given): the client's port, for a header that names one.
int parse_proxy_header(std::string_view in, size_t* used, IpAddr* src, bool* local, std::string* error,
                       uint16_t* sport = nullptr);
inline constexpr size_t kMaxProxyHeader = 16 + 216;  // v2 with the largest address block; v1 is at most 107

class ProxyInTransport final : public LayeredTransport {
 public:
  // client/trusted: where the header's address goes (the session's peer address, and whether that
  // address is itself a trusted proxy).
  ProxyInTransport(Transport* inner, IpAddr* client, bool* trusted, const CidrSet* trusted_set)
      : LayeredTransport(inner), client_(client), trusted_(trusted), set_(trusted_set) {}

  void on_data(const char* data, size_t len) override;

  // An L4 stream waits for the header before it does anything: on_connected() then tells its user that
  // the header was read (and *port gets the client's port). The bytes after it follow, to whoever is
  // the user once that call returns.
  void announce(uint16_t* port) {
    announce_ = true;
    port_ = port;
  }

 private:
  IpAddr* client_;
  bool* trusted_;
  const CidrSet* set_;
  std::string buf_;
  uint16_t* port_ = nullptr;
  bool done_ = false;
  bool announce_ = false;
};

}  // namespace px::net
