// px::proxy::H2Conn — the HTTP/2 server codec of one client connection
// (RFC 9113, HPACK RFC 7541), over nghttp2.
//
// A Session (the connection: transport, TLS, timeouts) hands its bytes to an
// H2Conn once ALPN chose h2, or a cleartext `h2c` listener saw the client
// preface. Each HTTP/2 stream is a Stream (stream.cpp) whose Downstream is an
// H2Stream: the same calls HTTP/1 answers, here turned into HEADERS and DATA
// frames on that stream, with flow control per stream.
//
// WebSocket over HTTP/2 (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL is advertised; an extended CONNECT with
// :protocol websocket becomes an HTTP/1.1 GET with Upgrade: websocket (and a Sec-WebSocket-Key of px's) to
// the upstream; its 101 becomes the client's 200, and DATA frames carry the tunnel both ways (flow control
// per stream against the upstream connection's watermarks). END_STREAM is a half-close either way.
//
// What is refused, and how (each refusal counted by kind, observe/metrics.h):
//   - anything RFC 9113 calls malformed: the error code the RFC names (nghttp2
//     checks frames, HPACK, pseudo-headers, connection-specific fields and
//     content-length against DATA; px checks the target, the authority and
//     the header limits);
//   - more than h2_max_continuations CONTINUATION frames after a HEADERS, a
//     header list over max_header_size: the connection (CONTINUATION) or the
//     stream (431);
//   - resets by the client, refused streams and protocol anomalies count as
//     "glitches" (after HAProxy); past h2_max_glitches the connection ends with
//     GOAWAY(ENHANCE_YOUR_CALM);
//   - acknowledgements (PING, SETTINGS) pile up for a client that does not read:
//     reading stops while the output is congested, and nghttp2 ends the
//     connection past h2_max_queued_control.
//
// Writes are batched: what streams send during one loop iteration leaves in
// one write, after the iteration's I/O (Worker::defer_h2).
//
// Memory: nghttp2 allocates through the connection (mem_alloc and the others), from the worker's block
// pool (core/block_pool.h), except its 16 KiB frame buffer, which is page-aligned: a connection idle for a
// second (no stream, nothing left to send) gives that buffer's pages back to the kernel (release_resting(),
// from the worker's tick). Its contents are dead between frames; the next frame faults fresh pages in.
#pragma once
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/deferred.h"
#include "net/output.h"
#include "stream/downstream.h"

namespace px::proxy {

struct Session;
struct Stream;
enum class Timeout : uint8_t;
class Worker;
class H2Conn;

// Refusals, by kind (metrics: px_h2_refused_total{kind}).
enum class H2Refusal : uint8_t {
  protocol,      // a frame or header block RFC 9113 calls a connection error
  stream,        // a stream error (malformed request, bad header)
  reset,         // the client reset a stream before its response ended
  refused,       // a stream over the advertised concurrency
  headers,       // a header list over the limit (431)
  continuation,  // too many CONTINUATION frames
  flood,         // control frames queued for a client that does not read
  glitches,      // the glitch budget ran out: GOAWAY(ENHANCE_YOUR_CALM)
  timeout,       // a stream or connection timed out
};
inline constexpr int kH2Refusals = 9;
const char* h2_refusal_name(int k);

// One HTTP/2 stream, as its Stream's Downstream.
struct H2Stream final : Downstream {
  H2Conn* conn = nullptr;
  Stream* st = nullptr;
  int32_t id = 0;
  H2Stream* prev = nullptr;  // the connection's list
  H2Stream* next = nullptr;
  std::string body;  // response bytes nghttp2 has not taken yet, from body_off
  size_t body_off = 0;
  std::string head;  // the response head, names and values back to back: nghttp2 reads it until the stream is freed
  std::vector<uint32_t> nv;   // offsets into `head`: name, name length, value, value length, ...
  Fields trailers;            // the response's trailer fields (h2_trailer_fields), sent after the body's last byte
  uint64_t header_bytes = 0;  // decoded request header list so far
  uint64_t progress_ms = 0;   // the last time the client sent a piece of this request or took a piece of its response
  std::string cookies;        // cookie fields, joined at the end of the head
  uint32_t host_at = 0, host_len = 0;  // :authority (or Host) in the request head's buffer
  uint32_t unconsumed = 0;             // DATA bytes not yet acknowledged (request paused)
  uint16_t refuse = 0;                 // answer this status once the head is complete (431, 400)
  const char* refuse_why = nullptr;
  bool head_pending = false;  // `head` waits for flush()
  bool submitted = false;     // the response HEADERS were given to nghttp2
  bool has_body = false;      // the response has a body (a data source)
  bool body_eof = false;      // the response body ended
  bool deferred = false;      // nghttp2 waits for body (NGHTTP2_ERR_DEFERRED)
  bool paused = false;        // request body: the upstream is slow
  bool abandon = false;       // the rest of the request body is not wanted
  bool up_paused = false;     // this stream paused its upstream (the client is slow)
  bool cookie = false;        // a cookie field is being joined
  bool authority = false;     // :authority was given
  bool closed = false;        // nghttp2 closed the stream
  bool head_done = false;     // the request head is complete
  bool websocket = false;     // an extended CONNECT (RFC 8441) with :protocol websocket: a tunnel once answered
  std::string early;          // tunnel bytes the client sent before the upstream's answer
  Fields req_trailers;        // the request's trailer fields (passed on before the body's end)

  void send_head(Stream* st, const ResponseHead& h) override;
  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_trailers(Stream* st, const Fields& trailers) override;
  void send_reply(Stream* st, int status, const Fields* fields, std::string_view body) override;
  bool continue_request(Stream* st) override;
  void abandon_request(Stream* st) override;
  bool flush(Stream* st) override;
  void progress(Stream* st) override;
  void reset(Stream* st) override;
  bool retract(Stream* st) override;
  void pause_request(Stream* st) override;
  void resume_request(Stream* st) override;
  void open_tunnel(Stream* st, const char* early, size_t len) override;
  bool congested() const override;
  size_t pending() const { return body.size() - body_off; }
};

class H2Conn final : public DeferredSend {
 public:
  explicit H2Conn(Session* s);
  ~H2Conn();
  H2Conn(const H2Conn&) = delete;
  H2Conn& operator=(const H2Conn&) = delete;
  // Sends the server's SETTINGS; false when nghttp2 could not start.
  bool start();
  // Bytes from the client (the preface included).
  void on_data(const char* data, size_t len);
  void on_drained();
  void on_eof();
  void on_timeout(Timeout t);
  // Graceful: GOAWAY with the last stream taken; streams in flight finish, then the connection closes.
  void shutdown();
  void final_goaway();  // the second GOAWAY of a shutdown, or the only one of an idle connection
  // The connection is closing: every stream ends, cut.
  void close_streams();
  bool idle() const { return head_ == nullptr; }
  // This thread's connections idle for a second give their frame buffers' pages back (the worker's tick).
  static void release_resting(uint64_t now_ms);
  // This thread's recycled streams beyond `keep` are freed (the worker's trim, after a spike).
  static void trim_stream_pool(size_t keep);
  // Deferred writes (Worker::defer_h2): make what the streams sent leave.
  void send();
  void deferred_send() override { send(); }
  Worker* worker() const;

  // For the nghttp2 callbacks (h2.cpp).
  Session* s_;
  nghttp2_session* ng_ = nullptr;
  H2Stream* head_ = nullptr;      // open streams
  H2Stream* decoding_ = nullptr;  // the stream of the request header block being decoded (on_header)
  uint32_t streams_ = 0;
  uint64_t requests_ = 0;
  uint32_t glitches_ = 0;
  uint32_t continuations_ = 0;  // CONTINUATION frames of the current header block
  int32_t last_stream_ = 0;     // the highest stream the client opened
  bool going_away_ = false;     // GOAWAY sent: no new streams
  bool dead_ = false;           // a fatal error: write what is queued, then close
  bool notice_sent_ = false;    // draining: the first GOAWAY (no stream refused) went out
  bool final_goaway_ = false;   // ... and the one naming the last stream
  uint32_t unread_acks_ = 0;    // PING and SETTINGS answered while the socket took nothing
  net::Output out_;
  static int stream_closed(nghttp2_session* ng, int32_t id, uint32_t error_code, void* user);
  void schedule();
  void glitch(H2Refusal kind, uint32_t cost = 1);
  void refused(H2Refusal kind);
  void fatal(uint32_t error_code, H2Refusal kind);
  void unlink(H2Stream* h);

  // nghttp2's memory (nghttp2_mem, with this connection as its user data).
  void* mem_alloc(size_t size);
  void mem_free(void* p);
  void* mem_realloc(void* p, size_t size);
  void rest();    // idle and quiet with a used frame buffer: listed for release_resting()
  void unrest();  // busy again, or gone
  nghttp2_mem mem_{};
  void* framebuf_ = nullptr;  // nghttp2's frame buffer, page-aligned
  size_t framebuf_len_ = 0;
  uint64_t rest_since_ = 0;
  H2Conn* rest_prev_ = nullptr;
  H2Conn* rest_next_ = nullptr;
  bool creating_ = false;       // in nghttp2_session_server_new3(): its one large block is the frame buffer
  bool framebuf_used_ = false;  // frames were written into it since its pages were last given back
  bool quiet_ = false;          // the last send() left nghttp2 with nothing to write
  bool resting_ = false;
  void update_timeout();
  void update_reading();
};

}  // namespace px::proxy
