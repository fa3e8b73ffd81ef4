// px::proxy retry policy: after an upstream attempt failed, may the request be
// sent again, and where? A pure function of what happened, tested without sockets.
//
// Rules (nginx's proxy_next_upstream error/timeout for idempotent requests, and
// RFC 9110 9.2.2):
//   - once the response head went to the client, nothing is retried;
//   - a read timeout is never retried (it would double the wait);
//   - a request that never left (connect refused or timed out) may go anywhere;
//   - one that left may be replayed only when it is idempotent, has no body, and
//     the connection closed before any byte of answer;
//   - a stream an HTTP/2 peer refused unprocessed (REFUSED_STREAM, or above its GOAWAY's last stream) may go
//     anywhere, its own peer included (on another connection), a few times (upstream.cpp counts);
//   - a retry goes to a peer this request has not tried yet;
//   - when none is left and the failure was a reused keep-alive connection the
//     peer had closed (a stale connection says nothing about the peer), the same
//     peer is tried once more on a fresh connection, never on another idle one.
#pragma once
#include <cstdint>

namespace px::proxy {

// refused: an HTTP/2 peer refused the stream unprocessed (REFUSED_STREAM, or above its GOAWAY's last stream ID,
// RFC 9113 8.7): like a refused connection, it may go anywhere.
enum class Fail : uint8_t { connect, connect_timeout, closed, read_timeout, bad_response, tls, refused };

struct RetryFacts {
  Fail why = Fail::connect;
  bool reused = false;            // the failed connection came from the keep-alive pool
  bool got_bytes = false;         // some byte of the answer arrived
  bool head_sent = false;         // the response head already went to the client
  bool request_sent = false;      // the request head went to the upstream
  bool idempotent = false;        // RFC 9110 9.2.2
  bool has_body = false;          // the request has a body
  bool fresh_retry_used = false;  // the one fresh-connection retry of a stale one was spent
  bool untried_left = false;      // a usable peer this request has not tried exists
};

enum class Retry : uint8_t {
  no,               // answer the client with this failure
  other_peer,       // send it to a peer not tried yet
  same_peer_fresh,  // send it to the same peer, on a new connection
};

Retry retry_policy(const RetryFacts& f);

}  // namespace px::proxy
