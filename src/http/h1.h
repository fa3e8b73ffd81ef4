// px::http h1 — writing HTTP/1.1 text. With http::Parser (reading), this is
// the only place in px that knows what HTTP/1 looks like on the wire: the
// proxy decides which fields a head carries, this file writes them, and adds
// the framing (Content-Length, Transfer-Encoding, Connection, Upgrade) itself.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/strings.h"
#include "http/parser.h"
#include "net/output.h"

namespace px::http {

using namespace std::string_view_literals;

// How a message's body is delimited on the wire.
enum class Framing : uint8_t { none, length, chunked, eof };

// Headers a proxy never forwards as they are (RFC 9110 7.6.1): connection
// options, Proxy-*, and the framing headers the codec writes itself.
// Upgrade is passed on only with a 101; Content-Length only where it has no
// body to frame (responses to HEAD, 204, 304), see keep_response_field.
bool hop_by_hop(Hdr k);
// For a response head: keep this field (of kind k) when relaying it?
bool keep_response_field(Hdr k, uint16_t status, bool no_body);

class HeadWriter {
 public:
  explicit HeadWriter(std::string& out) : o_(out) {}
  // "METHOD [/]target HTTP/1.1": add_slash puts a "/" before a target that lost it.
  [[gnu::always_inline]] void request_line(std::string_view method, std::string_view target, bool add_slash) {
    o_.append(method);
    o_.push_back(' ');
    if (add_slash) o_.push_back('/');
    o_.append(target);
    o_.append(" HTTP/1.1\r\n"sv);
  }
  void status_line(int status);  // with px's own reason phrase
  [[gnu::always_inline]] void field(std::string_view name, std::string_view value) {
    o_.append(name);
    o_.append(": "sv);
    o_.append(value);
    o_.append("\r\n"sv);
  }
  void field_dec(std::string_view name, uint64_t value);
  // The framing fields and the end of a request head sent upstream.
  void end_request(Framing body, uint64_t length, std::string_view upgrade);
  // The framing fields and the end of a response head sent to a client:
  // `close` says Connection: close, `http10_keep` Connection: keep-alive.
  void end_response(Framing body, uint64_t length, bool upgrade, bool close, bool http10_keep);
  // Raw access for callers that append a value in pieces (X-Forwarded-For).
  void begin_field(std::string_view name) {
    o_.append(name);
    o_.append(": "sv);
  }
  void append(std::string_view s) { o_.append(s); }
  void end_field() { o_.append("\r\n"sv); }

 private:
  std::string& o_;
};

// How a relayed response is framed towards the client: its own framing when the
// client can take it, else chunked (HTTP/1.1) or until close (HTTP/1.0);
// none for HEAD, 1xx, 204 and 304. An HTTP/2 peer's response goes chunked to an
// HTTP/1.1 client that sent TE: trailers, so that its trailers can follow.
inline Framing relay_framing(const Head& req, const Head& resp, bool head_request);
// Whether the client connection must close after this response.
inline bool close_after_relay(const Head& req, const Head& resp, Framing framing);

// The request's Expect: none, "100-continue", or something px cannot meet (417).
enum class Expect : uint8_t { none, continue_100, unsupported };
inline Expect expectation(const Head& req);

// Body framing towards a peer.
void write_chunk(net::Output& out, const char* data, size_t len);   // size line, data (by reference), CRLF
void append_chunk(std::string& out, const char* data, size_t len);  // the same, copied
void write_last_chunk(net::Output& out);
// The last chunk with trailer fields (RFC 9112 7.1.2); fields a trailer must not carry (framing, routing,
// connection options: hop_by_hop) are dropped.
void write_last_chunk(net::Output& out, const std::vector<std::pair<std::string, std::string>>& trailers);
void append_last_chunk(std::string& out, const std::vector<std::pair<std::string, std::string>>& trailers);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";
// "100 Continue", which px sends itself once a request passed routing and limits.
void write_continue(net::Output& out);
// The 503 a worker answers before closing a connection it cannot take.
void write_busy(net::Output& out);
// An active health check's request.
void write_probe_request(net::Output& out, std::string_view path, std::string_view host);

// ---- inline definitions (on every request) ----

inline Framing relay_framing(const Head& req, const Head& resp, bool head_request) {
  bool client11 = req.minor == 1;
  uint16_t st = resp.status;
  if (head_request || st == 204 || st == 304 || st == 101 || st < 200) return Framing::none;
  if (resp.chunked) return client11 ? Framing::chunked : Framing::eof;
  // An HTTP/2 response may end with trailers (gRPC's status): a client that accepts them gets it chunked.
  if (resp.major == 2 && client11 && req.get(Hdr::te).find("trailers") != std::string_view::npos)
    return Framing::chunked;
  if (resp.has_content_length) return Framing::length;
  return client11 ? Framing::chunked : Framing::eof;
}

inline bool close_after_relay(const Head& req, const Head& resp, Framing framing) {
  if (framing == Framing::eof) return true;            // the end of the body is the end of the connection
  if (resp.status != 101 && req.upgrade) return true;  // an upgrade that was refused: no reuse
  return req.minor == 0 && !req.keep_alive;
}

inline Expect expectation(const Head& req) {
  std::string_view e = req.get(Hdr::expect);
  if (e.empty()) return Expect::none;
  return iequals(trim(e), "100-continue") ? Expect::continue_100 : Expect::unsupported;
}

}  // namespace px::http
