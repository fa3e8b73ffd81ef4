// px::proxy::H1Server — the HTTP/1 server codec of one client connection
// (h1_server.cpp). It reads requests through the HTTP/1 parser, gives each to a
// stream, and is that stream's Downstream: it frames the answers and writes them
// back in order, with keep-alive, pipelining, Expect, the upgrade hand-off and
// half-close. The connection it serves (Session, conn/session.h) owns the
// transport, the timeouts, closing and the bytes read but not parsed yet
// (`leftover`); HTTP/2's codec is H2Conn (h2.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/freelist.h"
#include "http/h1.h"
#include "http/parser.h"
#include "net/output.h"
#include "stream/downstream.h"

namespace px::proxy {

struct Session;
struct Stream;
enum class Timeout : uint8_t;

// What the connection's current request needs while it is in flight: the request
// parser and the output towards the client. Taken from a per-thread pool as a
// request starts and given back as it ends, so an idle keep-alive connection
// holds neither (HTTP/2 keeps its per-stream state in H2Stream the same way).
struct H1Exchange {
  http::Parser parser;
  net::Output out;
  H1Exchange* next_free = nullptr;
};
using ExchangePool = FreeList<H1Exchange>;
void release_h1_exchanges();  // this thread's pool (its loop ended)

// (Downstream first: its calls need no thunk.)
class H1Server final : public Downstream, public http::Sink {
 public:
  explicit H1Server(Session* c, const ClientFacts* facts) : c_(c) { client = facts; }

  // From the connection.
  void on_data(const char* data, size_t len);
  void parse(const char* data, size_t len, bool from_leftover);
  void after_event();  // finish what finished, parse what waits, re-arm reading
  void on_eof();
  bool on_timeout(Timeout t);  // false: nothing of this codec's to answer (the connection closes)
  void on_drained();
  void close_streams();  // the connection is closing
  bool idle() const;

  // http::Sink (the request parser)
  int on_head(http::Head& h) override;
  int on_body(const char* data, size_t len) override;
  int on_complete() override;

  // Downstream (the stream's client side)
  void send_head(Stream* st, const ResponseHead& h) override;
  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_trailers(Stream* st, const Fields& trailers) override;
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
  bool congested() const override;
  int64_t send_file(Stream* st, int fd, uint64_t off, uint64_t len) override;

  bool close_after = false;  // close when the current response is out
  bool bp_paused = false;    // stopped because the upstream write queue is full

 private:
  void finish_stream();
  int parser_fail(int status, const char* reason);

  void release_exchange();  // the stream ended: its exchange goes back to the pool

  Session* c_;
  Stream* stream = nullptr;
  H1Exchange* x_ = nullptr;                          // with `stream`
  http::Framing resp_framing = http::Framing::none;  // of the response being relayed
  bool trailers_sent = false;                        // its last chunk went out with trailer fields
  bool in_parse = false;
  bool head_left = false;  // the current response's head was written to the transport
  bool advancing_ = false;
  bool again_ = false;
};

}  // namespace px::proxy
