// px::http — HTTP/1.1 message heads: the codec's reader.
//
// Glossary (HAProxy's vocabulary): a *connection* is a transport (tcp now, tls
// later); a *session* is one client connection's lifetime; a *stream* is one
// request/response exchange. A *head* is a request or status line plus headers.
//
// The parser is strict on purpose, because a proxy is where request smuggling
// happens. Every head byte follows RFC 9112's grammar (http/grammar.h: no bare
// CR, no empty or non-token names, no obs-fold, no whitespace before a colon,
// no controls in values) and bodies are framed by px itself (strict chunk lines
// and terminators, bounded chunk lines). Besides that it rejects: Content-Length
// together with Transfer-Encoding, any Transfer-Encoding other than `chunked`,
// Transfer-Encoding in an HTTP/1.0 message, duplicate Content-Length, more than
// one Host, an invalid Host or request target, an HTTP/1.1 request without
// Host, versions other than 1.0 and 1.1. Request header names with "_" are
// dropped unless Limits::underscores. The same rules hold for upstream
// responses (answered 502 instead of 400).
//
// llhttp is not on the path: once the grammar has passed a line, its parts are
// where the grammar says they are, so the parser splits it with memchr and
// reads the few values px acts on (Content-Length, Transfer-Encoding,
// Connection) itself. llhttp's method table names the methods it takes.
#pragma once
#include <llhttp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/grammar.h"

namespace px::http {

// The header names px itself acts on, recognised once, when the head is parsed,
// so that the proxy path tests a byte instead of comparing names again.
enum class Hdr : uint8_t {
  other,
  host,
  content_length,
  transfer_encoding,
  connection,
  keep_alive,
  te,
  trailer,
  upgrade,
  expect,
  proxy_connection,
  proxy_authenticate,
  proxy_other,  // any other Proxy-* name (a class, not one name)
  x_forwarded_for,
  x_forwarded_proto,
  x_forwarded_host,
  authorization,
  x_request_id,
  x_px_trace,  // pxctl trace's token: never forwarded
  referer,     // (for the end record: found without comparing names)
  user_agent,
};
Hdr classify(std::string_view name);  // case-insensitive

// px's own names for what the codec reads and reports: llhttp's types and constants stay inside src/http/.
enum class Method : uint8_t { get, head, post, put, delete_, connect, options, trace, patch, other };
// Which messages a parser reads.
enum class Kind : uint8_t { request, response };
// What Parser::execute and Parser::finish came to.
enum class Parsed : uint8_t {
  ok,       // everything was taken (a message may be incomplete)
  paused,   // a message ended and the sink asked to stop: error_pos() is where the next byte would be
  upgrade,  // a message that hands the connection over ended: what follows error_pos() is not HTTP
  failed,   // error_status() and error_reason() say what to answer
};

struct HeaderRef {
  uint32_t name_off, name_len, value_off, value_len;
  Hdr kind = Hdr::other;
};

struct Head {
  std::string buf;  // the head's bytes as they came (url, names and values point into it); codecs may append
  std::vector<HeaderRef> headers;
  uint32_t url_off = 0, url_len = 0;
  Method method = Method::other;
  uint8_t method_code = 0;  // the codec's own number for it (method_name())
  bool has_method = false;  // the method token was read (a head refused before it has none: method_name() is "")
  uint8_t major = 1, minor = 1;
  uint16_t status = 0;
  bool has_content_length = false;
  bool chunked = false;
  bool has_transfer_encoding = false;
  bool upgrade = false;            // request: Connection: upgrade + Upgrade; response: 101
  bool keep_alive = true;          // HTTP/1.1 unless Connection: close; HTTP/1.0 only with keep-alive
  bool connection_tokens = false;  // a Connection header names something besides close, keep-alive, upgrade
  uint64_t content_length = 0;
  int host_index = -1;
  bool trace = false;  // an X-Px-Trace field is present (checked and stripped by the proxy)

  std::string_view url() const { return {buf.data() + url_off, url_len}; }
  std::string_view name(size_t i) const { return {buf.data() + headers[i].name_off, headers[i].name_len}; }
  std::string_view value(size_t i) const { return {buf.data() + headers[i].value_off, headers[i].value_len}; }
  int find(std::string_view name) const;  // index or -1, case-insensitive
  int find(Hdr kind) const;               // the first header of that kind, or -1
  std::string_view get(Hdr kind) const {
    int i = find(kind);
    return i < 0 ? std::string_view() : value(static_cast<size_t>(i));
  }
  // Is `name` listed in a Connection header (so hop-by-hop, not to be forwarded)?
  // Only names other than close / keep-alive / upgrade are looked up.
  bool listed_in_connection(std::string_view name) const;
  std::string_view get(std::string_view name) const {
    int i = find(name);
    return i < 0 ? std::string_view() : value(static_cast<size_t>(i));
  }
  std::string_view method_name() const;     // "" before the method was read
  bool set_method(std::string_view token);  // a method read by another codec; false: not one px takes
  // The same from HTTP/1's request line: a token llhttp names but px does not take (PRI, RTSP's) is kept, so
  // a refused request logs the method it had; false: not one px takes.
  bool read_method(std::string_view token);
  void clear();
  // A field appended to buf and headers (codecs other than HTTP/1's, the cache's stored heads and own fields).
  void add_field(std::string_view name, std::string_view value, Hdr kind) {
    HeaderRef ref;
    ref.name_off = static_cast<uint32_t>(buf.size());
    ref.name_len = static_cast<uint32_t>(name.size());
    buf.append(name);
    ref.value_off = static_cast<uint32_t>(buf.size());
    ref.value_len = static_cast<uint32_t>(value.size());
    buf.append(value);
    ref.kind = kind;
    headers.push_back(ref);
  }
};

struct Limits {
  uint64_t max_head = 16 * 1024;
  uint64_t max_headers = 100;
  uint64_t max_uri = 8 * 1024;
  bool underscores = false;  // keep request header names with "_" (nginx's underscores_in_headers)
};

// What a parser reports to its owner.
// on_head: 0 = continue, 1 = no body follows (response to HEAD), -1 = error.
// on_body: 0 or -1. on_complete: kPause to stop after this message, 0 to
// go on (to the next message; after an upgrade, the parser stops with
// Parsed::upgrade). A callback may fail with set_error(status, reason).
class Sink {
 public:
  static constexpr int kPause = HPE_PAUSED;
  virtual int on_head(Head& head) = 0;
  virtual int on_body(const char* data, size_t len) = 0;
  virtual int on_complete() = 0;

 protected:
  ~Sink() = default;
};

// One direction of HTTP/1 messages on a connection (requests, or responses).
// Heads: every byte is checked against RFC 9112's grammar (http/grammar.h),
// then the parser splits each line into its parts. Bodies: px frames them itself
// (Content-Length, strict chunked, or until the connection closes).
class Parser {
 public:
  void init(Kind kind, Sink* sink, const Limits* limits);
  void attach(Head* head) { head_ = head; }  // where the next message's head goes
  // Feeds bytes (see Parsed).
  Parsed execute(const char* data, size_t len) { return parsed(run(data, len)); }
  const char* error_pos() const { return pos_; }
  const char* error_reason() const { return reason_ ? reason_ : "invalid HTTP message"; }
  int error_status() const { return status_; }
  void resume();                                 // after Parsed::paused: go on with the next message
  Parsed finish() { return parsed(end_raw()); }  // at EOF: ends a read-until-close body (failed: cut short)
  bool in_message() const { return state_ != St::head || grammar_.started(); }
  // From a Sink callback: stop with this status (e.g. 413) and reason.
  int set_error(int status, const char* reason) { return fail(status, reason); }
  bool needs_eof() const { return eof_body_; }

 private:
  enum class St : uint8_t {
    head,
    length,
    chunk_line,
    chunk_data,
    chunk_crlf,
    trailers,
    until_eof,
    paused,
    upgraded,
    dead
  };
  void begin();      // the first byte of a message's head
  int take_lines();  // the head's whole lines not taken yet (0, or fail()'s code)
  int start_line(std::string_view line, size_t off);
  int field_line(size_t off, size_t len);
  int head_end();                          // the empty line: what the head says as a whole
  static Parsed parsed(llhttp_errno_t e);  // llhttp's results, translated here and nowhere else
  llhttp_errno_t run(const char* data, size_t len);
  llhttp_errno_t end_raw();
  int fail(int status, const char* reason);
  llhttp_errno_t die(const char* at);  // stop for good with status_/reason_
  llhttp_errno_t die(int status, const char* reason, const char* at);
  llhttp_errno_t head_done(bool no_body, const char*& p);  // after on_head
  llhttp_errno_t complete(const char* p);                  // the message ended
  void next_message();
  bool count(size_t n);

  Sink* sink_ = nullptr;
  Head* head_ = nullptr;
  const Limits* limits_ = nullptr;
  const char* reason_ = nullptr;
  const char* pos_ = nullptr;
  HeadGrammar grammar_;
  ChunkLine chunk_;
  uint64_t remaining_ = 0;  // of a Content-Length body or of a chunk
  uint32_t head_bytes_ = 0;
  uint16_t status_ = 400;
  St state_ = St::head;
  uint8_t crlf_ = 0;  // chunk_crlf: 0 expects CR, 1 expects LF
  llhttp_errno_t err_ = HPE_OK;
  bool begun_ = false;        // this message's head has a byte
  bool start_taken_ = false;  // ... and its start line was taken
  bool conn_upgrade_ = false, upgrade_field_ = false;
  uint32_t line_ = 0;    // where the head's next line starts in head_->buf
  bool failed_ = false;  // fail() ran: status_ and reason_ say why
  bool is_request_ = true;
  bool eof_body_ = false;  // this message's body ends when the connection does
  bool upgrade_ = false;   // this message hands the connection over when it ends
  bool conn_close_ = false, conn_keep_ = false;
};

// Status line reason phrases for the statuses px sends itself.
const char* reason_phrase(int status);

}  // namespace px::http
