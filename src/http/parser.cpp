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

// Does a Connection value name anything besides close, keep-alive and upgrade
// (whose headers px drops or rewrites anyway)?
static bool extra_connection_tokens(std::string_view v) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view t = trim(v.substr(0, comma));
    if (!t.empty() && !iequals(t, "close") && !iequals(t, "keep-alive") && !iequals(t, "upgrade")) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
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

const llhttp_settings_t* Parser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = cb_message_begin;
    st.on_url = cb_url;
    st.on_status = cb_status;
    st.on_header_field = cb_field;
    st.on_header_value = cb_value;
    st.on_header_value_complete = cb_value_complete;
    st.on_headers_complete = cb_headers_complete;
    return st;
  }();
  return &s;
}

void Parser::init(Kind kind, Sink* sink, const Limits* limits) {
  llhttp_init(&p_, kind == Kind::request ? HTTP_REQUEST : HTTP_RESPONSE, settings());
  p_.data = this;
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
        size_t used = 0;
        HeadGrammar::Result r = grammar_.scan(p, avail, &used);
        if (r == HeadGrammar::Result::bad) {
          // The first error in byte order wins: llhttp may find one (a second Host) before this byte.
          if (used > 0 && llhttp_execute(&p_, p, used) != HPE_OK) {
            if (!failed_) fail(bad, llhttp_get_error_reason(&p_));
            return die(p);
          }
          if (grammar_.too_large()) return die(is_request_ ? 431 : 502, "head too large", p);
          if (grammar_.target_too_long()) return die(414, "request target too long", p);
          return die(bad, grammar_.error(), p);
        }
        llhttp_errno_t e = llhttp_execute(&p_, p, used);
        if (r == HeadGrammar::Result::more) {
          if (e != HPE_OK) {
            if (!failed_) fail(bad, llhttp_get_error_reason(&p_));
            err_ = e;
            return die(p);
          }
          p += used;
          break;
        }
        // The grammar saw the end of the head: llhttp must have stopped exactly there.
        if (e != HPE_PAUSED) {
          if (!failed_) fail(bad, e == HPE_OK ? "malformed head" : llhttp_get_error_reason(&p_));
          err_ = e == HPE_OK ? HPE_USER : e;
          return die(p);
        }
        if (llhttp_get_error_pos(&p_) != p + used) return die(bad, "malformed head", p);
        llhttp_reset(&p_);
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

static Parser* self(llhttp_t* p) { return static_cast<Parser*>(p->data); }

int Parser::cb_message_begin(llhttp_t* p) {
  Parser* s = self(p);
  s->head_bytes_ = 0;
  s->in_value_ = false;
  s->reason_ = nullptr;
  s->failed_ = false;
  s->status_ = s->is_request_ ? 400 : 502;
  s->head_->clear();
  return 0;
}

int Parser::cb_url(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (h->url_len + len > s->limits_->max_uri) return s->fail(414, "request target too long");
  if (!s->count(len)) return s->fail(431, "request head too large");
  if (h->url_len == 0) {
    h->url_off = static_cast<uint32_t>(h->buf.size());
    h->method_code = static_cast<uint8_t>(p->method);  // llhttp has read the method by now: a head refused later
    h->method = method_of(h->method_code);
    h->has_method = true;  // still logs the method it had, and only that one
  }
  h->buf.append(at, len);
  h->url_len += static_cast<uint32_t>(len);
  return 0;
}

int Parser::cb_status(llhttp_t* p, const char*, size_t len) {
  Parser* s = self(p);
  if (!s->count(len)) return s->fail(502, "upstream response head too large");
  return 0;  // the reason phrase is not kept: px writes its own
}

// The grammar has checked every byte already (no whitespace before the colon,
// no obs-fold, no CR, LF or NUL in a value): these callbacks only collect.
int Parser::cb_field(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (s->in_value_ || h->headers.empty()) {
    if (h->headers.size() >= s->limits_->max_headers) return s->fail(s->is_request_ ? 431 : 502, "too many headers");
    s->in_value_ = false;
    auto off = static_cast<uint32_t>(h->buf.size());
    h->headers.push_back(HeaderRef{off, 0, off, 0});
  }
  h->buf.append(at, len);
  h->headers.back().name_len += static_cast<uint32_t>(len);
  h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  return 0;
}

int Parser::cb_value(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (!s->in_value_) {
    s->in_value_ = true;
    h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  }
  h->buf.append(at, len);
  h->headers.back().value_len += static_cast<uint32_t>(len);
  return 0;
}

int Parser::cb_value_complete(llhttp_t* p) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (!s->in_value_) {  // empty value
    s->in_value_ = true;
    h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  }
  size_t i = h->headers.size() - 1;
  auto& ref = h->headers.back();
  // The head's size counts each field once it is whole (": " and CRLF included),
  // so the limit trips at the same field however the bytes arrive.
  if (!s->count(ref.name_len + ref.value_len + 4)) return s->fail(s->is_request_ ? 431 : 502, "head too large");
  // Trailing whitespace is not part of a field value (RFC 9110 5.5).
  while (ref.value_len &&
         (h->buf[ref.value_off + ref.value_len - 1] == ' ' || h->buf[ref.value_off + ref.value_len - 1] == '\t'))
    ref.value_len--;
  std::string_view name = h->name(i);
  if (s->is_request_ && !s->limits_->underscores && name.find('_') != std::string_view::npos) {
    // CGI-style mappings turn "_" into "-": Content_Length would collide with Content-Length upstream.
    h->buf.resize(ref.name_off);
    h->headers.pop_back();
    s->in_value_ = true;  // the next name starts a new header
    return 0;
  }
  ref.kind = classify(name);
  switch (ref.kind) {
    case Hdr::host:
      if (!s->is_request_) break;  // a response's Host means nothing to px
      if (h->host_index >= 0) return s->fail(400, "more than one Host header");
      h->host_index = static_cast<int>(i);
      break;
    case Hdr::transfer_encoding: h->has_transfer_encoding = true; break;
    case Hdr::x_px_trace: h->trace = s->is_request_; break;
    case Hdr::content_length:
      if (h->has_content_length) return s->fail(s->is_request_ ? 400 : 502, "duplicate Content-Length");
      h->has_content_length = true;
      break;
    case Hdr::connection:
      if (!h->connection_tokens) h->connection_tokens = extra_connection_tokens(h->value(i));
      break;
    default: break;
  }
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

int Parser::cb_headers_complete(llhttp_t* p) {
  Parser* s = self(p);
  Head* h = s->head_;
  int bad = s->is_request_ ? 400 : 502;
  h->major = p->http_major;
  h->minor = p->http_minor;
  if (h->major != 1 || h->minor > 1) {
    if (s->is_request_ && h->major >= 2) return s->fail(505, "HTTP version not supported");
    return s->fail(bad, "unsupported HTTP version");
  }
  if (h->has_transfer_encoding && h->has_content_length)
    return s->fail(bad, "both Content-Length and Transfer-Encoding");
  h->chunked = (p->flags & F_CHUNKED) != 0;
  if (h->has_transfer_encoding) {
    // Only "chunked" is accepted: a proxy that cannot decode gzip/deflate codings must not guess.
    std::string_view te = h->value(static_cast<size_t>(h->find(Hdr::transfer_encoding)));
    if (!h->chunked || !iequals(trim(te), "chunked")) return s->fail(bad, "Transfer-Encoding other than 'chunked'");
    // RFC 9112 6.1: in HTTP/1.0 the framing is faulty.
    if (h->minor == 0) return s->fail(bad, "Transfer-Encoding in an HTTP/1.0 message");
  }
  if (h->has_content_length) h->content_length = p->content_length;
  s->conn_close_ = (p->flags & F_CONNECTION_CLOSE) != 0;
  s->conn_keep_ = (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
  // Known before the sink sees the head (a response delimited by EOF is not kept: head_done).
  h->keep_alive = h->minor == 1 ? !s->conn_close_ : s->conn_keep_;
  if (s->is_request_) {
    h->method_code = static_cast<uint8_t>(p->method);
    h->method = method_of(h->method_code);
    h->has_method = true;
    if (h->minor == 1 && h->host_index < 0) return s->fail(400, "HTTP/1.1 request without Host");
    if (p->method == HTTP_CONNECT) return s->fail(405, "CONNECT is not supported");
    if (h->host_index >= 0 && !valid_host(h->value(static_cast<size_t>(h->host_index))))
      return s->fail(400, "invalid Host");
    if (!valid_target(*h)) return s->fail(400, "invalid request target");
    h->upgrade = p->upgrade != 0;
  } else {
    h->status = static_cast<uint16_t>(p->status_code);
    h->upgrade = p->status_code == 101;
  }
  return HPE_PAUSED;  // the head ends here; px frames the body itself (see execute)
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
