// Upstream side of a stream: choosing a peer, connecting or reusing a
// keep-alive connection, sending the request, relaying the response, retrying
// on another peer when that is safe, and tunnelling after a 101.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace px::http {
enum class Method : uint8_t;
}

namespace px::proxy {

struct Stream;
struct PeerState;

// Picks a peer (or uses `fresh`, on a new connection) and starts the exchange.
// With no usable peer left: answers 502 when answer_if_none, and returns false.
bool dispatch(Stream* st, bool answer_if_none = true, PeerState* fresh = nullptr);
// The HTTP/1 client side (upconn.cpp): the head sent upstream (into the stream's
// UpstreamRequest, kept for a retry), and the request body, framed.
void write_request_head(Stream* st);
// What the upstream side keeps of a stream's request: HTTP/1 text today. Made at the first request a
// (pooled) Stream carries and kept with it, emptied as each stream ends, so its buffers keep their capacity.
struct UpstreamRequest {
  std::string head;          // the request head towards the upstream (kept for a retry)
  std::string pending_body;  // request body that arrived before the upstream was ready, framed
};
void clear_upstream_request(Stream* st);         // the stream ended
void free_upstream_request(UpstreamRequest* r);  // the stream is deleted
void forward_body(Stream* st, const char* data, size_t len);
void forward_body_end(Stream* st);  // the last chunk of a chunked body
void flush_upstream(Stream* st);
void abort_upstream(Stream* st);  // drop the upstream connection (never reused)
void pause_upstream(Stream* st);  // backpressure from a slow client
void resume_upstream(Stream* st);
void tunnel_from_client(Stream* st, const char* data, size_t len);
void tunnel_client_eof(Stream* st);

// Between the stream's upstream side and its connection (upstream.cpp, upconn.cpp).
struct UpConn;
enum class Fail : uint8_t;
bool idempotent(http::Method method);
void detach(Stream* st);                                // the stream and its UpConn part
void send_request(Stream* st, UpConn* c);               // the head (and any body so far) goes out
void upstream_failed(Stream* st, UpConn* c, Fail why);  // retry (retry.h) or answer 502/504

}  // namespace px::proxy
