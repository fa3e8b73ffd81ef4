// px::proxy::H2Up — HTTP/2 connections to an upstream peer (h2c://, grpc://, or https:// with ALPN h2), over
// nghttp2: the client side of HTTP/2, and the Upstream (upstream.h) of every exchange one carries, many at once.
//
// - A peer's connections are a list (PeerState::h2_conns). A stream goes to the first one with room below the
//   peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 assumed until its SETTINGS arrive); a new connection opens only
//   when every one is full, closing or going away.
// - GOAWAY from the peer: the connection takes no new stream; streams above its last stream ID are refused
//   (nghttp2 closes them with REFUSED_STREAM) and retried as never processed (retry.h, Fail::refused); the rest
//   finish, then the connection closes.
// - Flow control per stream: response DATA is acknowledged (WINDOW_UPDATE) as the client side takes it; while it
//   is paused (a slow client) the stream's window closes and the peer waits. The request body goes out as the
//   peer's window allows; above kHighWater queued the client's side is paused.
// - Trailers pass from the peer to the client (Downstream::send_trailers); `te: trailers` is sent when the client
//   asked for it (gRPC).
// - A connection idle (no stream) for upstream_keepalive_timeout is closed; so is every one on drain.
#pragma once
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/deferred.h"
#include "http/client_conn.h"
#include "http/h1.h"
#include "stream/downstream.h"
#include "upstream/upconn.h"
#include "upstream/upstream.h"

namespace px::proxy {

class Worker;
struct PeerState;
struct Stream;
struct H2Up;

// The request head for an HTTP/2 peer, as nghttp2 name/value pairs: dispatch() writes it once per stream
// (write_request, upconn.cpp, walks the fields; this turns them into HTTP/2's: pseudo-headers, lowercase
// names, no connection-specific fields).
class H2RequestWriter {
 public:
  H2RequestWriter(std::string& buf, std::vector<uint32_t>& nv, bool tls) : b_(buf), nv_(nv), tls_(tls) {}
  void request_line(std::string_view method, std::string_view target, bool add_slash);
  void field(std::string_view name, std::string_view value);
  void begin_field(std::string_view name);
  void append(std::string_view s) { b_.append(s); }
  void end_field();
  void end_request(http::Framing body, uint64_t length, std::string_view upgrade);
  bool te_trailers = false;                    // the client sent TE: trailers (gRPC): passed on
  static constexpr uint32_t kOnce = 1u << 31;  // in a name's length: a value no other request has (not indexed)

 private:
  void put(std::string_view n, std::string_view v, bool once = false);
  std::string& b_;
  std::vector<uint32_t>& nv_;  // name offset, name length, value offset, value length, ...
  bool tls_;
  size_t name_at_ = 0, name_len_ = 0, value_at_ = 0;
};

// One exchange on an HTTP/2 connection.
struct H2UpStream final : Upstream {
  H2Up* conn = nullptr;
  Stream* st = nullptr;  // null once the stream let go of it (abort, the end): nghttp2 may still hold the ID
  int32_t id = -1;
  H2UpStream* prev = nullptr;  // the connection's list
  H2UpStream* next = nullptr;
  H2UpStream* next_free = nullptr;  // (FreeList)
  std::string body;                 // request body nghttp2 has not taken yet, from body_off
  size_t body_off = 0;
  Fields trailers;           // the response's trailer fields, as they arrive
  Fields req_trailers;       // the request's, sent after its body
  uint64_t progress_ms = 0;  // the last time the peer sent something for it (read timeout)
  uint32_t unconsumed = 0;   // response DATA not acknowledged (the client side is paused)
  uint32_t head_bytes = 0;   // the response head's size so far (its limits)
  bool body_eof = false;     // the request body ended
  bool deferred = false;     // nghttp2 waits for request body (NGHTTP2_ERR_DEFERRED)
  bool req_paused = false;   // this stream paused the client's request body
  bool head_done = false;    // the final response head arrived
  bool interim = false;      // a 1xx head is being read
  bool resp_end = false;     // the peer ended its side
  bool paused = false;       // the client side is slow: DATA is not acknowledged
  bool got_bytes = false;    // some of the response arrived
  bool reused = false;       // the connection had carried streams before this one
  bool bad_head = false;     // the response head broke a rule (a limit, a bad :status): 502
  bool reset = false;        // px reset it, or nghttp2 closed it: no RST_STREAM (more) from abort()
  size_t pending() const { return body.size() - body_off; }

  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_trailers(Stream* st, const Fields& trailers) override;
  void flush(Stream* st) override;
  void abort(Stream* st) override;
  void pause_response(Stream* st) override;
  void resume_response(Stream* st) override;
  void tunnel_send(Stream* st, const char* data, size_t len) override;
  void tunnel_end(Stream* st) override;
};

struct H2Up final : net::TransportUser, http::ClientConn, DeferredSend {
  Worker* w = nullptr;
  PeerState* peer = nullptr;
  H2Up* prev = nullptr;  // the peer's list
  H2Up* next = nullptr;
  nghttp2_session* ng = nullptr;
  uv_timer_t timer;
  H2UpStream* streams = nullptr;  // open ones
  uint32_t nstreams = 0;
  uint32_t paused_streams = 0;  // streams that paused their client's request body (on_drained resumes them)
  uint64_t served = 0;          // streams it has carried
  uint64_t idle_since = 0;      // when its last stream ended (ms); 0: busy
  uint64_t connect_start_us = 0;
  uint8_t pending_closes = 0;
  enum class State : uint8_t { connecting, active, closing } state = State::connecting;
  bool goaway = false;       // the peer sent GOAWAY, or px is draining: no new streams
  bool peer_goaway = false;  // the peer sent GOAWAY
  bool own_goaway = false;   // px ended the session itself (idle, draining, an error it reported)
  bool in_recv = false;      // inside nghttp2_session_mem_recv
  bool want_send = false;

  // Room for one more stream?
  bool has_room() const;
  void send();      // what nghttp2 has to write goes to the transport, now
  void schedule();  // ... after this loop iteration's I/O (what every stream sent, in one write)
  void deferred_send() override { send(); }
  void close();  // streams still on it fail (Fail::closed)
  void fail_streams(int why);
  void on_timer();
  void unlink(H2UpStream* s);

  // net::TransportUser
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;
  void on_closed() override;
};

// dispatch()'s HTTP/2 part: a stream on a connection to p with room (a new one when fresh or when none has).
Bind bind_h2(Stream* st, PeerState* p, bool fresh);
// The worker drains or stops: idle connections close now, busy ones once their streams end.
void h2_close_idle(PeerState* p, bool all);
void release_h2_upstreams();  // this thread's recycled exchanges (its loop ended)

}  // namespace px::proxy
