// px::http — HTTP/1.1 message heads and the llhttp glue.
//
// Glossary (HAProxy's vocabulary): a *connection* is a transport (tcp now, tls
// later); a *session* is one client connection's lifetime; a *stream* is one
// request/response exchange. A *head* is a request or status line plus headers.
//
// The parser is strict on purpose, because a proxy is where request smuggling
// happens. Besides llhttp's own checks it rejects: Content-Length together with
// Transfer-Encoding, any Transfer-Encoding that is not a final `chunked`,
// duplicate Content-Length, whitespace before a colon, obsolete line folding,
// NUL / CR / LF inside a header value, more than one Host, an HTTP/1.1 request
// without Host, versions other than 1.0 and 1.1. The same rules hold for
// upstream responses (answered 502 instead of 400).
#pragma once
#include <llhttp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
};
Hdr classify(std::string_view name);  // case-insensitive

struct HeaderRef {
  uint32_t name_off, name_len, value_off, value_len;
  Hdr kind = Hdr::other;
};

struct Head {
  std::string buf;  // url, names and values, back to back
  std::vector<HeaderRef> headers;
  uint32_t url_off = 0, url_len = 0;
  uint8_t method = 0;
  uint8_t major = 1, minor = 1;
  uint16_t status = 0;
  bool has_content_length = false;
  bool chunked = false;
  bool has_transfer_encoding = false;
  bool upgrade = false;     // request: Connection: upgrade + Upgrade; response: 101
  bool keep_alive = true;   // per llhttp_should_keep_alive
  bool connection_tokens = false;  // a Connection header names something besides close, keep-alive, upgrade
  uint64_t content_length = 0;
  int host_index = -1;

  std::string_view url() const { return {buf.data() + url_off, url_len}; }
  std::string_view name(size_t i) const { return {buf.data() + headers[i].name_off, headers[i].name_len}; }
  std::string_view value(size_t i) const { return {buf.data() + headers[i].value_off, headers[i].value_len}; }
  int find(std::string_view name) const;  // index or -1, case-insensitive
  int find(Hdr kind) const;                // the first header of that kind, or -1
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
  std::string_view method_name() const;
  void clear();
};

struct Limits {
  uint64_t max_head = 16 * 1024;
  uint64_t max_headers = 100;
  uint64_t max_uri = 8 * 1024;
};

// What a parser reports to its owner. Return values as llhttp documents them:
// on_head: 0 = continue, 1 = no body follows (response to HEAD), -1 = error.
// on_body: 0 or -1. on_complete: 0, or HPE_PAUSED to stop after this message.
class Sink {
 public:
  virtual int on_head(Head& head) = 0;
  virtual int on_body(const char* data, size_t len) = 0;
  virtual int on_complete() = 0;

 protected:
  ~Sink() = default;
};

class Parser {
 public:
  void init(llhttp_type_t type, Sink* sink, const Limits* limits);
  void attach(Head* head) { head_ = head; }  // where the next message's head goes
  // Feeds bytes. Returns llhttp's code; on error, error_status() says what to answer.
  llhttp_errno_t execute(const char* data, size_t len) {
    buf_begin_ = data;
    buf_end_ = data + len;
    return llhttp_execute(&p_, data, len);
  }
  const char* error_pos() const { return llhttp_get_error_pos(&p_); }
  const char* error_reason() const { return reason_ ? reason_ : llhttp_get_error_reason(&p_); }
  int error_status() const { return status_; }
  void resume() { llhttp_resume(&p_); }
  void reset() { llhttp_reset(&p_); }
  llhttp_errno_t finish() { return llhttp_finish(&p_); }  // at EOF: ends a read-until-close body
  bool in_message() const { return in_message_; }
  bool started() const { return started_; }
  // From a Sink callback: stop with this status (e.g. 413) and reason.
  int set_error(int status, const char* reason) { return fail(status, reason); }
  bool needs_eof() const { return llhttp_message_needs_eof(&p_) != 0; }
  llhttp_t* raw() { return &p_; }

 private:
  static int cb_message_begin(llhttp_t*);
  static int cb_url(llhttp_t*, const char*, size_t);
  static int cb_status(llhttp_t*, const char*, size_t);
  static int cb_field(llhttp_t*, const char*, size_t);
  static int cb_value(llhttp_t*, const char*, size_t);
  static int cb_value_complete(llhttp_t*);
  static int cb_headers_complete(llhttp_t*);
  static int cb_body(llhttp_t*, const char*, size_t);
  static int cb_message_complete(llhttp_t*);
  static const llhttp_settings_t* settings();
  int fail(int status, const char* reason);
  bool count(size_t n);

  llhttp_t p_;
  Sink* sink_ = nullptr;
  Head* head_ = nullptr;
  const Limits* limits_ = nullptr;
  const char* reason_ = nullptr;
  uint32_t head_bytes_ = 0;
  uint16_t status_ = 400;
  bool in_value_ = false;
  bool value_at_end_ = false;  // the last value piece ended where its buffer ended
  const char* buf_begin_ = nullptr;
  const char* buf_end_ = nullptr;
  bool in_message_ = false;  // between message begin and complete
  bool started_ = false;     // some byte of a message seen
  bool is_request_ = true;
  bool skip_ = false;        // head_ was null (no sink interest)
};

// Status line reason phrases for the statuses px sends itself.
const char* reason_phrase(int status);

}  // namespace px::http
