#include "http/parser.h"

#include <cstring>

#include "core/strings.h"

namespace px::http {

Hdr classify(std::string_view n) {
  Hdr k = Hdr::other;
  switch (n.size()) {
    case 2: if (iequals_lower(n, "te")) k = Hdr::te; break;
    case 4: if (iequals_lower(n, "host")) k = Hdr::host; break;
    case 6: if (iequals_lower(n, "expect")) k = Hdr::expect; break;
    case 7:
      if (iequals_lower(n, "upgrade")) k = Hdr::upgrade;
      else if (iequals_lower(n, "trailer")) k = Hdr::trailer;
      break;
    case 10:
      if (iequals_lower(n, "connection")) k = Hdr::connection;
      else if (iequals_lower(n, "keep-alive")) k = Hdr::keep_alive;
      break;
    case 13: if (iequals_lower(n, "authorization")) k = Hdr::authorization; break;
    case 14: if (iequals_lower(n, "content-length")) k = Hdr::content_length; break;
    case 15: if (iequals_lower(n, "x-forwarded-for")) k = Hdr::x_forwarded_for; break;
    case 16:
      if (iequals_lower(n, "x-forwarded-host")) k = Hdr::x_forwarded_host;
      else if (iequals_lower(n, "proxy-connection")) k = Hdr::proxy_connection;
      break;
    case 17:
      if (iequals_lower(n, "transfer-encoding")) k = Hdr::transfer_encoding;
      else if (iequals_lower(n, "x-forwarded-proto")) k = Hdr::x_forwarded_proto;
      break;
    case 18: if (iequals_lower(n, "proxy-authenticate")) k = Hdr::proxy_authenticate; break;
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

std::string_view Head::method_name() const { return llhttp_method_name(static_cast<llhttp_method_t>(method)); }

void Head::clear() {
  buf.clear();
  headers.clear();
  url_off = url_len = 0;
  method = 0;
  major = minor = 1;
  status = 0;
  has_content_length = chunked = has_transfer_encoding = upgrade = false;
  keep_alive = true;
  connection_tokens = false;
  content_length = 0;
  host_index = -1;
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
    st.on_body = cb_body;
    st.on_message_complete = cb_message_complete;
    return st;
  }();
  return &s;
}

void Parser::init(llhttp_type_t type, Sink* sink, const Limits* limits) {
  llhttp_init(&p_, type, settings());
  p_.data = this;
  sink_ = sink;
  limits_ = limits;
  is_request_ = type == HTTP_REQUEST;
  status_ = is_request_ ? 400 : 502;
}

int Parser::fail(int status, const char* reason) {
  status_ = static_cast<uint16_t>(status);
  reason_ = reason;
  llhttp_set_error_reason(&p_, reason);
  return HPE_USER;
}

bool Parser::count(size_t n) {
  head_bytes_ += static_cast<uint32_t>(n);
  return head_bytes_ <= limits_->max_head;
}

static Parser* self(llhttp_t* p) { return static_cast<Parser*>(p->data); }

int Parser::cb_message_begin(llhttp_t* p) {
  Parser* s = self(p);
  s->head_bytes_ = 0;
  s->in_value_ = false;
  s->in_message_ = true;
  s->started_ = true;
  s->reason_ = nullptr;
  s->status_ = s->is_request_ ? 400 : 502;
  if (s->head_) s->head_->clear();
  return 0;
}

int Parser::cb_url(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (h->url_len + len > s->limits_->max_uri) return s->fail(414, "request target too long");
  if (!s->count(len)) return s->fail(431, "request head too large");
  if (h->url_len == 0) h->url_off = static_cast<uint32_t>(h->buf.size());
  h->buf.append(at, len);
  h->url_len += static_cast<uint32_t>(len);
  return 0;
}

int Parser::cb_status(llhttp_t* p, const char*, size_t len) {
  Parser* s = self(p);
  if (!s->count(len)) return s->fail(502, "upstream response head too large");
  return 0;  // the reason phrase is not kept: px writes its own
}

int Parser::cb_field(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (!s->count(len + 4)) return s->fail(s->is_request_ ? 431 : 502, "head too large");
  if (s->in_value_ || h->headers.empty()) {
    if (h->headers.size() >= s->limits_->max_headers) return s->fail(s->is_request_ ? 431 : 502, "too many headers");
    s->in_value_ = false;
    auto off = static_cast<uint32_t>(h->buf.size());
    h->headers.push_back(HeaderRef{off, 0, off, 0});
  }
  // llhttp lets "Name : value" through as a name ending in a space; RFC 9112 5.1 says reject it.
  if (contains_any<' ', '\t'>({at, len}))
    return s->fail(s->is_request_ ? 400 : 502, "whitespace between a header name and the colon");
  h->buf.append(at, len);
  h->headers.back().name_len += static_cast<uint32_t>(len);
  h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  return 0;
}

int Parser::cb_value(llhttp_t* p, const char* at, size_t len) {
  Parser* s = self(p);
  Head* h = s->head_;
  if (!s->count(len)) return s->fail(s->is_request_ ? 431 : 502, "head too large");
  if (contains_any<'\0', '\r', '\n'>({at, len}))
    return s->fail(s->is_request_ ? 400 : 502, "invalid character or line folding in a header value");
  if (!s->in_value_) {
    s->in_value_ = true;
    h->headers.back().value_off = static_cast<uint32_t>(h->buf.size());
  } else if (!(s->value_at_end_ && at == s->buf_begin_)) {
    // llhttp reports a folded line as a second piece of the same value. A
    // second piece that a read boundary does not explain is obs-fold.
    return s->fail(s->is_request_ ? 400 : 502, "obsolete line folding");
  }
  s->value_at_end_ = at + len == s->buf_end_;
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
  // Trailing whitespace is not part of a field value (RFC 9110 5.5).
  auto& ref = h->headers.back();
  while (ref.value_len && (h->buf[ref.value_off + ref.value_len - 1] == ' ' ||
                           h->buf[ref.value_off + ref.value_len - 1] == '\t'))
    ref.value_len--;
  ref.kind = classify(h->name(i));
  switch (ref.kind) {
    case Hdr::host:
      if (h->host_index >= 0) return s->fail(400, "more than one Host header");
      h->host_index = static_cast<int>(i);
      break;
    case Hdr::transfer_encoding: h->has_transfer_encoding = true; break;
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
  if (h->has_transfer_encoding && !h->chunked) return s->fail(bad, "Transfer-Encoding is not a final 'chunked'");
  if (h->has_transfer_encoding) {
    // Only "chunked" is accepted: a proxy that cannot decode gzip/deflate codings must not guess.
    std::string_view te = h->value(static_cast<size_t>(h->find(Hdr::transfer_encoding)));
    if (!iequals(trim(te), "chunked")) return s->fail(bad, "Transfer-Encoding other than 'chunked'");
  }
  if (h->has_content_length) h->content_length = p->content_length;
  h->keep_alive = llhttp_should_keep_alive(p) != 0;
  if (s->is_request_) {
    h->method = p->method;
    if (h->minor == 1 && h->host_index < 0) return s->fail(400, "HTTP/1.1 request without Host");
    if (p->method == HTTP_CONNECT) return s->fail(405, "CONNECT is not supported");
    h->upgrade = p->upgrade != 0;
  } else {
    h->status = static_cast<uint16_t>(p->status_code);
    h->upgrade = p->status_code == 101;
  }
  int r = s->sink_->on_head(*h);
  if (r < 0) return -1;
  return r;
}

int Parser::cb_body(llhttp_t* p, const char* at, size_t len) { return self(p)->sink_->on_body(at, len); }

int Parser::cb_message_complete(llhttp_t* p) {
  Parser* s = self(p);
  s->in_message_ = false;
  s->started_ = false;
  return s->sink_->on_complete();
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
    default: return status < 200 ? "Informational" : status < 300 ? "OK" : status < 400 ? "Redirect"
                    : status < 500 ? "Client Error" : "Server Error";
  }
}

}  // namespace px::http
