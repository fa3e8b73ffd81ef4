// px::proxy::Downstream — the client side of a stream, as the stream sees it.
//
// A stream (stream.cpp, upstream.cpp) knows no wire format: it says what the
// client is sent (a head, body pieces, the end, or px's own whole answer) and
// when its reading should pause, through this interface. HTTP/1 implements it
// once per connection (Session, session.cpp: one stream at a time, keep-alive,
// pipelining, Expect, the upgrade hand-off). HTTP/2 will implement it per
// stream, multiplexed on one connection.
//
// Calls on one stream come in this order: continue_request?, then either
// send_reply, or send_head, send_body*, send_end. flush() makes what was sent
// leave; nothing is on the wire before it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/cidr.h"

namespace px::http {
struct Head;
}
namespace px::lua {
struct HeaderEdit;
}

namespace px::proxy {

struct Stream;

using Fields = std::vector<std::pair<std::string, std::string>>;

// A relayed response head: the status the client gets, and the fields of the
// upstream's head (the codec drops the ones that are hop-by-hop for it) as the
// response filters left them.
struct ResponseHead {
  int status = 0;
  const http::Head* from = nullptr;
  const std::vector<lua::HeaderEdit>* edits = nullptr;  // the filters' changes to from's fields, or nullptr
};

// Facts about the client connection, for routing, filters and X-Forwarded-*: one
// record, the connection's (conn/session.h), that its codecs' streams point at.
struct ClientFacts {
  net::IpAddr peer_ip;        // the connection's peer (a PROXY header may name another)
  bool trusted_peer = false;  // peer_ip is in trusted_proxies
  bool tls = false;           // the connection is TLS
  std::string_view sni;       // the server name the TLS client asked for (valid for the connection's life)
};

class Downstream {
 public:
  const ClientFacts* client = nullptr;  // the connection's facts (set by the codec)

  // The response. Body bytes are taken by reference: valid until flush().
  virtual void send_head(Stream* st, const ResponseHead& h) = 0;
  virtual void send_body(Stream* st, const char* data, size_t len) = 0;
  virtual void send_end(Stream* st) = 0;
  // The response's trailer fields, before its send_end (the upstream sent them: gRPC's status, say). A codec
  // that cannot carry them drops them (HTTP/1 without chunked framing).
  virtual void send_trailers(Stream* st, const Fields& trailers) = 0;
  // Body bytes straight from a file (sendfile(2): the cache's stored bodies), after what was sent before:
  // the bytes taken (0: none now, resume_response on the stream's Upstream follows once there is room),
  // kCannot (this codec or transport cannot: HTTP/2, TLS, chunked framing; send_body the bytes instead), or
  // kGone (the connection failed: the stream ended with it).
  static constexpr int64_t kCannot = -1, kGone = -2;
  virtual int64_t send_file(Stream* st, int fd, uint64_t off, uint64_t len) {
    (void)st, (void)fd, (void)off, (void)len;
    return kCannot;
  }
  // px's own answer, whole: `fields` (without framing fields; may be nullptr) and the body.
  virtual void send_reply(Stream* st, int status, const Fields* fields, std::string_view body) = 0;
  // The request passed routing and limits: the client may send its body (HTTP/1: "100 Continue").
  // false: the request's expectation cannot be met (the stream answers 417).
  virtual bool continue_request(Stream* st) = 0;
  // The rest of the request body is not wanted (answered early, or the upstream answered first).
  virtual void abandon_request(Stream* st) = 0;
  // Makes what was sent leave. false: the client side is gone and the stream ended with it.
  virtual bool flush(Stream* st) = 0;
  // After an event on the upstream side: flush, finish the stream if it is complete, go on.
  virtual void progress(Stream* st) = 0;
  // The exchange cannot end cleanly (a response cut short): end it abruptly.
  virtual void reset(Stream* st) = 0;
  // Before a flush: drop what was sent for this response, which has not left yet. false: some of it left.
  virtual bool retract(Stream* st) = 0;
  // Request body flow control, for backpressure from the upstream.
  virtual void pause_request(Stream* st) = 0;
  virtual void resume_request(Stream* st) = 0;
  // A 101 passed: from now on bytes flow raw both ways (send_body carries the upstream's,
  // send_end ends the tunnel). `early` are upstream bytes that followed the 101.
  virtual void open_tunnel(Stream* st, const char* early, size_t len) = 0;
  // The client is slow: the stream stops reading its upstream until on_drained.
  virtual bool congested() const = 0;

 protected:
  ~Downstream() = default;
};

}  // namespace px::proxy
