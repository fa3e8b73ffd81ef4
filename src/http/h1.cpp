#include "http/h1.h"

namespace px::http {

void write_busy(net::Output& out) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nServer: px\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n"
      "Connection: close\r\n\r\ntoo many connections, retry\n";
  out.ref(kBusy);
}

void write_probe_request(net::Output& out, std::string_view path, std::string_view host) {
  std::string& s = out.begin_scratch();
  s.append("GET ");
  s.append(path);
  s.append(" HTTP/1.1\r\nHost: ");
  s.append(host);
  s.append("\r\nUser-Agent: px-health-check\r\nConnection: close\r\n\r\n");
  out.end_scratch();
}

}  // namespace px::http
