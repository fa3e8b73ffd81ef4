// px::proxy::Session — one client connection (session.cpp): its transport
// (TCP, PROXY header, TLS), the handshake, SNI, the peer's address and the
// client timeouts; the HTTP/1 server codec for it, or an HTTP/2 one (h2.h)
// after ALPN or the h2c preface.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/h1.h"
#include "http/parser.h"
#include "net/transport.h"
#include "net/uv_transport.h"
#include "stream/downstream.h"
#include "tls/client_hello.h"

namespace px::proxy {

class Worker;
class H2Conn;
struct Stream;

// Client-side timeouts. Each kind has one duration, so a per-worker FIFO list
// per kind stays sorted by deadline: arming is O(1), expiry walks only what expired.
enum class Timeout : uint8_t { none, header, body, keepalive, handshake };

// Bytes a session read but has not parsed yet (pipelined requests, tunnel data
// that arrived early). Usually there are none: the buffer exists only while
// needed, so an idle connection pays one pointer for it.
class Pending {
 public:
  bool empty() const { return !s_ || s_->empty(); }
  size_t size() const { return s_ ? s_->size() : 0; }
  const char* data() const { return s_->data(); }
  void append(const char* p, size_t n) {
    if (!s_) s_ = std::make_unique<std::string>();
    s_->append(p, n);
  }
  void erase_front(size_t n) { s_->erase(0, n); }
  void clear() { s_.reset(); }  // and free the buffer
  std::string_view view() const { return s_ ? std::string_view(*s_) : std::string_view(); }

 private:
  std::unique_ptr<std::string> s_;
};

// The HTTP/1 server side of one client connection: it reads requests through
// the parser, gives each to a stream, and is that stream's Downstream (keep-alive,
// pipelining, Expect, framing of responses, the upgrade hand-off, timeouts).
// (Downstream first: its calls need no thunk.)
struct Session final : Downstream, http::Sink, net::TransportUser, tls::HelloDecider {
  net::UvTransport tcp;                      // the accepted connection (unused when `tr` is another transport)
  net::Transport* tr = &tcp;                 // what the session reads from and writes to
  std::unique_ptr<net::Transport> wrap;      // TLS over tcp, on a TLS listener (tr points at it)
  std::unique_ptr<net::Transport> proxy_in;  // PROXY header reader over tcp (below TLS), on such a listener
  std::unique_ptr<net::Transport> peek;      // ClientHello reader below TLS, while passthrough routes exist
  Worker* w = nullptr;
  Session* prev = nullptr;  // the worker's list of sessions
  Session* next = nullptr;
  Session* tprev = nullptr;  // the worker's list for `timeout`
  Session* tnext = nullptr;
  uint64_t deadline = 0;
  Stream* stream = nullptr;
  Pending leftover;  // bytes read but not parsed yet (pipelining, tunnel data)
  Timeout timeout = Timeout::none;
  http::Framing resp_framing = http::Framing::none;  // of the response being relayed
  bool got_bytes = false;                            // any byte ever arrived on this connection
  bool want_read = true;                             // false while a request waits for its response
  bool bp_paused = false;                            // stopped because the upstream write queue is full
  bool in_parse = false;
  bool close_after = false;  // close when the current response is out
  bool head_left = false;    // the current response's head was written to the transport
  bool closing = false;
  bool eof = false;
  bool writes_done_close = false;  // close once the write queue drains
  bool counted = false;            // in the worker's list of sessions
  bool h2_allowed = false;         // the listener takes HTTP/2 (TLS: by ALPN; cleartext: h2c prior knowledge)
  bool h2_decided = false;         // cleartext: the first bytes said which protocol
  H2Conn* h2 = nullptr;            // the HTTP/2 codec, when the connection speaks it (h2.h)

  // net::TransportUser (the client connection)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;  // TLS: the handshake is done
  void on_closed() override;
  // tls::HelloDecider: a passthrough route for this SNI takes the connection (l4.h).
  bool on_client_hello(std::string_view sni, std::string_view hello) override;

  // http::Sink (the request parser)
  int on_head(http::Head& h) override;
  int on_body(const char* data, size_t len) override;
  int on_complete() override;

  // Downstream (the stream's client side)
  void send_head(Stream* st, const ResponseHead& h) override;
  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_reply(Stream* st, int status, const Fields* fields, std::string_view body) override;
  bool continue_request(Stream* st) override;
  void abandon_request(Stream*) override { close_after = true; }
  bool flush(Stream* st) override;
  void progress(Stream* st) override;
  void reset(Stream* st) override;
  bool retract(Stream* st) override;
  void pause_request(Stream*) override;
  void resume_request(Stream*) override;
  void open_tunnel(Stream* st, const char* early, size_t len) override;
  bool congested() const override { return tr->congested(); }

  bool advancing_ = false;
  bool again_ = false;

  void start();
  void parse(const char* data, size_t len, bool from_leftover);
  void update_reading();
  void finish_stream();
  void after_event();  // finish what finished, parse what waits, re-arm reading
  void close();
  void close_when_written();
  void set_timeout(Timeout t);
  void on_timeout(Timeout t);
  int parser_fail(int status, const char* reason);
  bool idle() const;
  void start_h2();
};

}  // namespace px::proxy
