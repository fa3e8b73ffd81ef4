// px::proxy::Upstream — the upstream side of a stream, as the stream and its
// Downstream see it: the mirror of Downstream (stream/downstream.h).
//
// dispatch() picks a peer (the balancer, a filter's choice, or a retry's, retry.h)
// and binds the stream to an exchange on a connection to it: st->up. The stream
// and the client codecs then talk to that exchange only through this interface,
// and know no upstream wire format. HTTP/1 implements it once per connection
// (UpConn, upconn.h: one exchange at a time, keep-alive, the request framed as
// HTTP/1, tunnelling after a 101); a multiplexed protocol implements it per
// exchange on a shared connection. The response comes back through the stream's
// stream_response_* functions (stream.h), which run the response phase.
//
// Calls on one exchange: send_body*, send_end? (the request body, framed by the
// implementation), each followed by flush(); pause_response/resume_response as
// the client's side fills and drains; after a 101, tunnel_send* and tunnel_end.
// abort() ends the exchange from the stream's side (st->up is null after it).
#pragma once
#include <cstddef>
#include <cstdint>

#include "stream/downstream.h"

namespace px::http {
enum class Method : uint8_t;
}

namespace px::proxy {

struct Stream;
struct PeerState;
enum class Fail : uint8_t;

class Upstream {
 public:
  // The request body: bytes are taken by reference, valid until flush().
  virtual void send_body(Stream* st, const char* data, size_t len) = 0;
  virtual void send_end(Stream* st) = 0;  // the end of a request that had a body
  // The request's trailer fields, before its send_end (HTTP/1: in the last chunk; HTTP/2: a trailing HEADERS).
  virtual void send_trailers(Stream* st, const Fields& trailers) = 0;
  virtual void flush(Stream* st) = 0;
  // The stream no longer wants this exchange (px answered, the client left): it
  // is dropped, with its connection when the protocol cannot cancel one exchange.
  virtual void abort(Stream* st) = 0;
  // Response flow control: the client is slow, then drained.
  virtual void pause_response(Stream* st) = 0;
  virtual void resume_response(Stream* st) = 0;
  // After a 101: the client's raw bytes (by reference, written now), and its end (a half-close).
  virtual void tunnel_send(Stream* st, const char* data, size_t len) = 0;
  virtual void tunnel_end(Stream* st) = 0;

 protected:
  ~Upstream() = default;
};

// Picks a peer (or uses `fresh`, on a new connection) and binds the stream to an
// exchange with it. With no usable peer left: answers 502 when answer_if_none,
// and returns false.
bool dispatch(Stream* st, bool answer_if_none = true, PeerState* fresh = nullptr);

// For the implementations (upconn.cpp): an attempt failed. The exchange is
// aborted; the request is retried (retry.h) or answered 502/504 (or, mid-response,
// the client's exchange is reset). reused: the connection had carried a request
// before; got_bytes: some of the answer arrived.
void upstream_failed(Stream* st, Fail why, bool reused, bool got_bytes);
bool idempotent(http::Method method);

// The request as the upstream side keeps it, for a retry: made at the first
// request a (pooled) Stream carries and kept with it, emptied as each stream ends,
// so its buffers keep their capacity. HTTP/1 text today (upconn.cpp).
struct UpstreamRequest;
void clear_upstream_request(Stream* st);         // the stream ended
void free_upstream_request(UpstreamRequest* r);  // the stream is deleted

}  // namespace px::proxy
