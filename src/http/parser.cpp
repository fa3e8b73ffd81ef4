#include "http/parser.h"

#include <cstring>

#include "core/strings.h"

namespace px::http {

Hdr classify(std::string_view n) {
  Hdr k = Hdr::other;
  switch (n.size()) {
    case 2:
      if (iequals_lower(n, "te")) k = Hdr::te;
      break;
    case 4:
      if (iequals_lower(n, "host")) k = Hdr::host;
      break;
    case 6:
      if (iequals_lower(n, "expect")) k = Hdr::expect;
      break;
    case 7:
      if (iequals_lower(n, "upgrade"))
        k = Hdr::upgrade;
      else if (iequals_lower(n, "trailer"))
        k = Hdr::trailer;
      else if (iequals_lower(n, "referer"))
        k = Hdr::referer;
      break;
    case 10:
      if (iequals_lower(n, "connection"))
        k = Hdr::connection;
      else if (iequals_lower(n, "keep-alive"))
        k = Hdr::keep_alive;
      else if (iequals_lower(n, "x-px-trace"))
        k = Hdr::x_px_trace;
      else if (iequals_lower(n, "user-agent"))
        k = Hdr::user_agent;
      break;
    case 12:
      if (iequals_lower(n, "x-request-id")) k = Hdr::x_request_id;
      break;
    case 13:
      if (iequals_lower(n, "authorization")) k = Hdr::authorization;
      break;
    case 14:
      if (iequals_lower(n, "content-length")) k = Hdr::content_length;
      break;
    case 15:
      if (iequals_lower(n, "x-forwarded-for")) k = Hdr::x_forwarded_for;
      break;
    case 16:
      if (iequals_lower(n, "x-forwarded-host"))
        k = Hdr::x_forwarded_host;
      else if (iequals_lower(n, "proxy-connection"))
        k = Hdr::proxy_connection;
      break;
    case 17:
      if (iequals_lower(n, "transfer-encoding"))
        k = Hdr::transfer_encoding;
      else if (iequals_lower(n, "x-forwarded-proto"))
        k = Hdr::x_forwarded_proto;
      break;
    case 18:
      if (iequals_lower(n, "proxy-authenticate")) k = Hdr::proxy_authenticate;
      break;
    default: break;
  }
  if (k == Hdr::other && n.size() > 6 && iequals_lower(n.substr(0, 6), "proxy-")) k = Hdr::proxy_other;
  return k;
}

int Head::find(Hdr kind) const {
  for (size_t i = 0; i < headers.size(); i++)
    if (headers[i].kind == kind) return static_cast<int>(i);
  return -1;
}

int Head::find(std::string_view n) const {
  Hdr k = classify(n);
  if (k != Hdr::other && k != Hdr::proxy_other) return find(k);
  for (size_t i = 0; i < headers.size(); i++)
    if (iequals(name(i), n)) return static_cast<int>(i);
  return -1;
}

bool Head::listed_in_connection(std::string_view n) const {
  if (!connection_tokens) return false;
  for (size_t i = 0; i < headers.size(); i++)
    if (headers[i].kind == Hdr::connection && list_has_token(value(i), n)) return true;
  return false;
}

std::string_view Head::method_name() const {
  return has_method ? llhttp_method_name(static_cast<llhttp_method_t>(method_code)) : std::string_view();
}

namespace {
Method method_of(uint8_t code) {
  switch (code) {
    case HTTP_GET: return Method::get;
    case HTTP_HEAD: return Method::head;
    case HTTP_POST: return Method::post;
    case HTTP_PUT: return Method::put;
    case HTTP_DELETE: return Method::delete_;
    case HTTP_CONNECT: return Method::connect;
    case HTTP_OPTIONS: return Method::options;
    case HTTP_TRACE: return Method::trace;
    case HTTP_PATCH: return Method::patch;
    default: return Method::other;
  }
}
}  // namespace

bool Head::set_method(std::string_view token) {
  // The methods the HTTP/1 parser takes, so that both codecs accept the same ones.
#define PX_METHOD(num, name, string)         \
  if (token == #string) {                    \
    method_code = static_cast<uint8_t>(num); \
    method = method_of(method_code);         \
    has_method = true;                       \
    return true;                             \
  }
  HTTP_METHOD_MAP(PX_METHOD)
#undef PX_METHOD
  return false;
}

// The rest of llhttp's table (PRI, RTSP's methods): named in the log, refused.
bool Head::read_method(std::string_view token) {
  if (set_method(token)) return true;
#define PX_NAMED(num, name, string)          \
  if (token == #string) {                    \
    method_code = static_cast<uint8_t>(num); \
    method = Method::other;                  \
    has_method = true;                       \
    return false;                            \
  }
  HTTP_ALL_METHOD_MAP(PX_NAMED)
#undef PX_NAMED
  return false;
}

Parsed Parser::parsed(llhttp_errno_t e) {
  switch (e) {
    case HPE_OK: return Parsed::ok;
    case HPE_PAUSED: return Parsed::paused;
    case HPE_PAUSED_UPGRADE: return Parsed::upgrade;
    default: return Parsed::failed;
  }
}

void Head::clear() {
  buf.clear();
  headers.clear();
  url_off = url_len = 0;
  method = Method::other;
  method_code = 0;
  has_method = false;
  major = minor = 1;
  status = 0;
  has_content_length = chunked = has_transfer_encoding = upgrade = false;
  keep_alive = true;
  connection_tokens = false;
  content_length = 0;
  host_index = -1;
  trace = false;
}

void Parser::init(Kind kind, Sink* sink, const Limits* limits) {
  sink_ = sink;
  limits_ = limits;
  is_request_ = kind == Kind::request;
  status_ = is_request_ ? 400 : 502;
  reason_ = nullptr;
  failed_ = false;
  err_ = HPE_OK;
  grammar_.set_limit(limits->max_head + limits->max_uri + 1024);
  if (is_request_) grammar_.set_max_target(limits->max_uri);
  next_message();
}

void Parser::next_message() {
  state_ = St::head;
  if (is_request_)
    grammar_.start_request();
  else
    grammar_.start_response();
  eof_body_ = upgrade_ = false;
  begun_ = false;
}

void Parser::resume() {
  if (state_ == St::paused) next_message();
}

int Parser::fail(int status, const char* reason) {
  status_ = static_cast<uint16_t>(status);
  reason_ = reason;
  failed_ = true;
  return HPE_USER;
}

llhttp_errno_t Parser::die(const char* at) {
  state_ = St::dead;
  if (err_ == HPE_OK) err_ = HPE_USER;
  pos_ = at;
  return err_;
}

llhttp_errno_t Parser::die(int status, const char* reason, const char* at) {
  fail(status, reason);
  return die(at);
}

bool Parser::count(size_t n) {
  head_bytes_ += static_cast<uint32_t>(n);
  return head_bytes_ <= limits_->max_head;
}

llhttp_errno_t Parser::run(const char* data, size_t len) {
  const char* p = data;
  const char* end = data + len;
  int bad = is_request_ ? 400 : 502;
  while (true) {
    switch (state_) {
      case St::paused: pos_ = p; return HPE_PAUSED;
      case St::upgraded: pos_ = p; return HPE_PAUSED_UPGRADE;
      case St::dead: pos_ = p; return err_;
      default: break;
    }
    if (p == end) {
      pos_ = p;
      return HPE_OK;
    }
    size_t avail = static_cast<size_t>(end - p);
    switch (state_) {
      case St::head: {
        if (!begun_) begin();
        size_t used = 0;
        HeadGrammar::Result r = grammar_.scan(p, avail, &used);
        // The bytes the grammar passed (on bad: those before the offending one). Their whole lines are taken
        // now, so that the first error in byte order wins (a second Host before a bad byte is that).
        head_->buf.append(p, used);
        if (take_lines() != 0) return die(p);
        if (r == HeadGrammar::Result::bad) {
          if (grammar_.too_large()) return die(is_request_ ? 431 : 502, "head too large", p);
          if (grammar_.target_too_long()) return die(414, "request target too long", p);
          return die(bad, grammar_.error(), p);
        }
        if (r == HeadGrammar::Result::more) {
          p += used;
          break;
        }
        if (head_end() != 0) return die(p);
        p += used;
        int hr = sink_->on_head(*head_);
        if (hr < 0 || hr == HPE_USER) return die(p);
        if (llhttp_errno_t stop = head_done(hr == 1, p); stop != HPE_OK) return stop;
        break;
      }
      case St::length: {
        size_t n = avail < remaining_ ? avail : static_cast<size_t>(remaining_);
        remaining_ -= n;
        if (sink_->on_body(p, n) != 0) return die(p);
        p += n;
        if (remaining_ == 0)
          if (llhttp_errno_t stop = complete(p); stop != HPE_OK) return stop;
        break;
      }
      case St::until_eof:
        if (sink_->on_body(p, avail) != 0) return die(p);
        p = end;
        break;
      case St::chunk_line: {
        size_t used = 0;
        ChunkLine::Result r = chunk_.scan(p, avail, &used);
        if (r == ChunkLine::Result::bad) return die(bad, chunk_.error(), p);
        p += used;
        if (r == ChunkLine::Result::done) {
          remaining_ = chunk_.size();
          if (remaining_ == 0) {
            state_ = St::trailers;
            grammar_.start_trailers();
          } else {
            state_ = St::chunk_data;
          }
        }
        break;
      }
      case St::chunk_data: {
        size_t n = avail < remaining_ ? avail : static_cast<size_t>(remaining_);
        remaining_ -= n;
        if (sink_->on_body(p, n) != 0) return die(p);
        p += n;
        if (remaining_ == 0) {
          state_ = St::chunk_crlf;
          crlf_ = 0;
        }
        break;
      }
      case St::chunk_crlf:
        if (*p != (crlf_ == 0 ? '\r' : '\n')) return die(bad, "chunk data not followed by CRLF", p);
        p++;
        if (++crlf_ == 2) {
          state_ = St::chunk_line;
          chunk_.start();
        }
        break;
      case St::trailers: {
        size_t used = 0;
        HeadGrammar::Result r = grammar_.scan(p, avail, &used);
        if (r == HeadGrammar::Result::bad)
          return die(bad, grammar_.too_large() ? "trailer section too large" : grammar_.error(), p);
        p += used;  // trailer fields are checked, then dropped
        if (r == HeadGrammar::Result::done)
          if (llhttp_errno_t stop = complete(p); stop != HPE_OK) return stop;
        break;
      }
      default: return die(p);
    }
  }
}

llhttp_errno_t Parser::head_done(bool no_body, const char*& p) {
  Head& h = *head_;
  uint16_t st = h.status;
  eof_body_ = false;
  if (is_request_) {
    upgrade_ = h.upgrade;
  } else {
    upgrade_ = st == 101;
    no_body = no_body || st < 200 || st == 204 || st == 304;
  }
  if (no_body) {
    return complete(p);
  }
  if (h.chunked) {
    state_ = St::chunk_line;
    chunk_.start();
  } else if (h.has_content_length) {
    if (h.content_length == 0) return complete(p);
    remaining_ = h.content_length;
    state_ = St::length;
  } else if (is_request_) {
    return complete(p);
  } else {
    eof_body_ = true;
    h.keep_alive = false;
    state_ = St::until_eof;
  }
  return HPE_OK;
}

llhttp_errno_t Parser::complete(const char* p) {
  int r = sink_->on_complete();
  if (r == HPE_PAUSED) {
    state_ = St::paused;
    pos_ = p;
    return HPE_PAUSED;
  }
  if (r != 0) return die(p);
  if (upgrade_) {
    state_ = St::upgraded;
    pos_ = p;
    return HPE_PAUSED_UPGRADE;
  }
  next_message();
  return HPE_OK;
}

llhttp_errno_t Parser::end_raw() {
  if (state_ == St::until_eof) {
    eof_body_ = false;
    return complete(pos_);
  }
  if (state_ == St::head && !grammar_.started()) return HPE_OK;
  if (state_ == St::paused || state_ == St::upgraded) return HPE_OK;
  return HPE_INVALID_EOF_STATE;
}

void Parser::begin() {
  begun_ = true;
  head_bytes_ = 0;
  reason_ = nullptr;
  failed_ = false;
  status_ = is_request_ ? 400 : 502;
  head_->clear();
  line_ = 0;
  start_taken_ = false;
  conn_close_ = conn_keep_ = conn_upgrade_ = upgrade_field_ = false;
}

// Every byte in head_->buf has passed the grammar, so each line ends in CRLF and its parts are where the
// grammar put them: no check here is about syntax.
int Parser::take_lines() {
  const std::string& buf = head_->buf;
  size_t n = buf.size();
  while (line_ < n) {
    const void* lf = std::memchr(buf.data() + line_, '\n', n - line_);
    if (!lf) return 0;  // the rest of this line is in the next bytes
    size_t off = line_, end = static_cast<size_t>(static_cast<const char*>(lf) - buf.data());
    line_ = static_cast<uint32_t>(end + 1);
    size_t len = end - 1 - off;  // without the CRLF
    if (!start_taken_) {
      if (len == 0) continue;  // empty lines before a request line (RFC 9112 2.2)
      start_taken_ = true;
      if (int r = start_line(std::string_view(buf.data() + off, len), off)) return r;
    } else if (len == 0) {
      return 0;  // the empty line that ends the head: the grammar stopped after it
    } else if (int r = field_line(off, len)) {
      return r;
    }
  }
  return 0;
}

// request-line = method SP request-target SP HTTP-version; status-line = HTTP-version SP 3DIGIT [SP reason].
int Parser::start_line(std::string_view line, size_t off) {
  Head& h = *head_;
  if (is_request_) {
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == sp2 || sp2 + 9 != line.size()) return fail(400, "malformed request line");  // (the grammar's)
    if (!h.read_method(line.substr(0, sp1))) return fail(400, "invalid method");
    h.url_off = static_cast<uint32_t>(off + sp1 + 1);
    h.url_len = static_cast<uint32_t>(sp2 - sp1 - 1);
    if (h.url_len > limits_->max_uri) return fail(414, "request target too long");  // (limits may change live)
    if (!count(h.url_len)) return fail(431, "request head too large");
    h.major = static_cast<uint8_t>(line[sp2 + 6] - '0');
    h.minor = static_cast<uint8_t>(line[sp2 + 8] - '0');
  } else {
    if (line.size() < 12) return fail(502, "malformed status line");  // (the grammar's)
    h.major = static_cast<uint8_t>(line[5] - '0');
    h.minor = static_cast<uint8_t>(line[7] - '0');
    h.status = static_cast<uint16_t>((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
    // The reason phrase is not kept (px writes its own) but counts toward the head's size.
    if (line.size() > 13 && !count(line.size() - 13)) return fail(502, "upstream response head too large");
  }
  return 0;
}

namespace {
// Connection's tokens px acts on (RFC 9110 7.6.1), and whether it names anything else.
struct ConnectionTokens {
  bool close = false, keep_alive = false, upgrade = false, other = false;
  void read(std::string_view v) {
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view t = trim(v.substr(0, comma));
      if (iequals(t, "close"))
        close = true;
      else if (iequals(t, "keep-alive"))
        keep_alive = true;
      else if (iequals(t, "upgrade"))
        upgrade = true;
      else if (!t.empty())
        other = true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
};

// Content-Length = 1*DIGIT (RFC 9110 8.6): nothing else, and at most 19 digits past leading zeros.
bool read_length(std::string_view v, uint64_t* out) {
  if (v.empty()) return false;
  uint64_t n = 0;
  int digits = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    if (n || c != '0') digits++;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (digits > 19) return false;
  *out = n;
  return true;
}
}  // namespace

// field-line = field-name ":" OWS field-value OWS
int Parser::field_line(size_t off, size_t len) {
  Head& h = *head_;
  const char* line = h.buf.data() + off;
  const void* colon = std::memchr(line, ':', len);
  if (!colon) return fail(is_request_ ? 400 : 502, "malformed header line");  // (the grammar's)
  auto name_len = static_cast<uint32_t>(static_cast<const char*>(colon) - line);
  size_t v = name_len + 1;
  while (v < len && (line[v] == ' ' || line[v] == '\t')) v++;
  size_t e = len;
  // The head's size counts each field once it is whole (": " and CRLF included),
  // so the limit trips at the same field however the bytes arrive.
  if (!count(name_len + (e - v) + 4)) return fail(is_request_ ? 431 : 502, "head too large");
  while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t')) e--;  // RFC 9110 5.5
  std::string_view name(line, name_len), value(line + v, e - v);
  if (is_request_ && !limits_->underscores && name.find('_') != std::string_view::npos)
    return 0;  // CGI-style mappings turn "_" into "-": Content_Length would collide with Content-Length upstream
  if (h.headers.size() >= limits_->max_headers) return fail(is_request_ ? 431 : 502, "too many headers");
  HeaderRef ref{static_cast<uint32_t>(off), name_len, static_cast<uint32_t>(off + v), static_cast<uint32_t>(e - v)};
  ref.kind = classify(name);
  int bad = is_request_ ? 400 : 502;
  switch (ref.kind) {
    case Hdr::host:
      if (!is_request_) break;  // a response's Host means nothing to px
      if (h.host_index >= 0) return fail(400, "more than one Host header");
      h.host_index = static_cast<int>(h.headers.size());
      break;
    case Hdr::transfer_encoding:
      if (h.has_transfer_encoding) return fail(bad, "more than one Transfer-Encoding");
      h.has_transfer_encoding = true;
      break;
    case Hdr::x_px_trace: h.trace = is_request_; break;
    case Hdr::content_length:
      if (h.has_content_length) return fail(bad, "duplicate Content-Length");
      if (!read_length(value, &h.content_length)) return fail(bad, "invalid Content-Length");
      h.has_content_length = true;
      break;
    case Hdr::connection: {
      ConnectionTokens t;
      t.read(value);
      conn_close_ |= t.close;
      conn_keep_ |= t.keep_alive;
      conn_upgrade_ |= t.upgrade;
      h.connection_tokens |= t.other;
      break;
    }
    case Hdr::upgrade: upgrade_field_ = true; break;
    default: break;
  }
  h.headers.push_back(ref);
  return 0;
}

// The request target: origin-form ("/..."), absolute-form ("http://authority/..."),
// or "*" for OPTIONS. CONNECT's authority-form is refused before this (405).
static bool valid_target(const Head& h) {
  std::string_view t = h.url();
  if (!t.empty() && t[0] == '/') return true;
  if (t == "*") return h.method == Method::options;
  size_t scheme = 0;
  if (t.size() > 7 && iequals(t.substr(0, 7), "http://"))
    scheme = 7;
  else if (t.size() > 8 && iequals(t.substr(0, 8), "https://"))
    scheme = 8;
  if (!scheme) return false;
  std::string_view rest = t.substr(scheme);
  std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  return !authority.empty() && valid_host(authority);
}

int Parser::head_end() {
  Head& h = *head_;
  int bad = is_request_ ? 400 : 502;
  if (h.major != 1 || h.minor > 1) {
    if (is_request_ && h.major >= 2) return fail(505, "HTTP version not supported");
    return fail(bad, "unsupported HTTP version");
  }
  if (h.has_transfer_encoding && h.has_content_length) return fail(bad, "both Content-Length and Transfer-Encoding");
  if (h.has_transfer_encoding) {
    // Only "chunked" is accepted: a proxy that cannot decode gzip/deflate codings must not guess.
    if (!iequals(h.get(Hdr::transfer_encoding), "chunked")) return fail(bad, "Transfer-Encoding other than 'chunked'");
    // RFC 9112 6.1: in HTTP/1.0 the framing is faulty.
    if (h.minor == 0) return fail(bad, "Transfer-Encoding in an HTTP/1.0 message");
    h.chunked = true;
  }
  // Known before the sink sees the head (a response delimited by EOF is not kept: head_done).
  h.keep_alive = h.minor == 1 ? !conn_close_ : conn_keep_;
  if (is_request_) {
    if (h.minor == 1 && h.host_index < 0) return fail(400, "HTTP/1.1 request without Host");
    if (h.method_code == HTTP_CONNECT) return fail(405, "CONNECT is not supported");
    if (h.host_index >= 0 && !valid_host(h.value(static_cast<size_t>(h.host_index)))) return fail(400, "invalid Host");
    if (!valid_target(h)) return fail(400, "invalid request target");
    h.upgrade = upgrade_field_ && conn_upgrade_;
  } else {
    h.upgrade = h.status == 101;
  }
  return 0;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:
      return status < 200   ? "Informational"
             : status < 300 ? "OK"
             : status < 400 ? "Redirect"
             : status < 500 ? "Client Error"
                            : "Server Error";
  }
}

}  // namespace px::http
