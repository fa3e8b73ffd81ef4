#include "http/h1.h"

#include "core/strings.h"

namespace px::http {

bool hop_by_hop(Hdr k) {
  switch (k) {
    case Hdr::te:
    case Hdr::expect:
    case Hdr::trailer:
    case Hdr::upgrade:
    case Hdr::connection:
    case Hdr::keep_alive:
    case Hdr::content_length:
    case Hdr::transfer_encoding:
    case Hdr::proxy_connection:
    case Hdr::proxy_authenticate:
    case Hdr::proxy_other: return true;
    default: return false;
  }
}

bool keep_response_field(Hdr k, uint16_t status, bool no_body) {
  switch (k) {
    case Hdr::upgrade: return status == 101;
    case Hdr::content_length: return no_body && status != 101;  // kept for HEAD, 204, 304
    case Hdr::expect:
    case Hdr::proxy_other: return true;  // meaningless in a response: passed on
    default: return !hop_by_hop(k);
  }
}

void HeadWriter::status_line(int status) {
  if (status == 200) {  // the usual one, without formatting
    o_.append("HTTP/1.1 200 OK\r\n"sv);
    return;
  }
  o_.append("HTTP/1.1 "sv);
  append_dec(o_, static_cast<uint64_t>(status));
  o_.push_back(' ');
  o_.append(reason_phrase(status));
  o_.append("\r\n"sv);
}

void HeadWriter::field_dec(std::string_view name, uint64_t value) {
  o_.append(name);
  o_.append(": "sv);
  append_dec(o_, value);
  o_.append("\r\n"sv);
}

void HeadWriter::end_request(Framing body, uint64_t length, std::string_view upgrade) {
  if (!upgrade.empty()) {
    o_.append("Connection: upgrade\r\nUpgrade: "sv);
    o_.append(upgrade);
    o_.append("\r\n"sv);
  }
  if (body == Framing::chunked)
    o_.append("Transfer-Encoding: chunked\r\n"sv);
  else if (body == Framing::length)
    field_dec("Content-Length", length);
  o_.append("\r\n"sv);
}

void HeadWriter::end_response(Framing body, uint64_t length, bool upgrade, bool close, bool http10_keep) {
  if (body == Framing::length)
    field_dec("Content-Length", length);
  else if (body == Framing::chunked)
    o_.append("Transfer-Encoding: chunked\r\n"sv);
  if (upgrade)
    o_.append("Connection: upgrade\r\n"sv);
  else if (close)
    o_.append("Connection: close\r\n"sv);
  else if (http10_keep)
    o_.append("Connection: keep-alive\r\n"sv);
  o_.append("\r\n"sv);
}

void append_chunk(std::string& o, const char* data, size_t len) {
  append_hex(o, len);
  o.append("\r\n"sv);
  o.append(data, len);
  o.append("\r\n"sv);
}

void write_chunk(net::Output& out, const char* data, size_t len) {
  std::string& o = out.begin_scratch();
  append_hex(o, len);
  o.append("\r\n"sv);
  out.end_scratch();
  out.ref(data, len);
  out.copy("\r\n", 2);
}

void write_last_chunk(net::Output& out) { out.copy(kLastChunk); }

void append_last_chunk(std::string& s, const std::vector<std::pair<std::string, std::string>>& trailers) {
  s.append("0\r\n");
  HeadWriter wr(s);
  for (const auto& [n, v] : trailers) {
    Hdr k = classify(n);
    if (!hop_by_hop(k) && k != Hdr::host && k != Hdr::authorization && !n.empty() && n[0] != ':') wr.field(n, v);
  }
  s.append("\r\n");
}

void write_last_chunk(net::Output& out, const std::vector<std::pair<std::string, std::string>>& trailers) {
  append_last_chunk(out.begin_scratch(), trailers);
  out.end_scratch();
}

void write_continue(net::Output& out) { out.copy("HTTP/1.1 100 Continue\r\n\r\n"); }

void write_busy(net::Output& out) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nServer: px\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n"
      "Connection: close\r\n\r\ntoo many connections, retry\n";
  out.ref(kBusy);
}

void write_probe_request(net::Output& out, std::string_view path, std::string_view host) {
  std::string& s = out.begin_scratch();
  HeadWriter w(s);
  w.request_line("GET", path, false);
  w.field("Host", host);
  w.field("User-Agent", "px-health-check");
  w.field("Connection", "close");
  s.append("\r\n"sv);
  out.end_scratch();
}

}  // namespace px::http
