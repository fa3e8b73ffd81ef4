// The HTTP/2 server codec (h2.h): nghttp2's callbacks turned into streams,
// and each stream's Downstream calls turned into frames.
#include "codec/h2.h"

#include "codec/h2_common.h"

#include <nghttp2/nghttp2.h>
#include <openssl/base64.h>
#include <openssl/rand.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "conn/session.h"
#include "core/block_pool.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "stream/stream.h"
#include "tls/transport.h"
#include "upstream/upstream.h"

namespace px::proxy {

using namespace std::string_view_literals;

const char* h2_refusal_name(int k) {
  static const char* const kNames[kH2Refusals] = {"protocol",     "stream", "reset",    "refused", "headers",
                                                  "continuation", "flood",  "glitches", "timeout"};
  return k >= 0 && k < kH2Refusals ? kNames[k] : "other";
}

namespace {

constexpr int32_t kConnectionWindow = 1 << 20;  // the connection's receive window (streams keep 64 KiB)

H2Conn* conn_of(void* user) { return static_cast<H2Conn*>(user); }

H2Stream* stream_of(nghttp2_session* ng, int32_t id) {
  return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(ng, id));
}

std::string_view sv(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

H2Stream* new_stream();  // from the worker's pool (below)
void free_stream(H2Stream* h);

// ---- receiving ----

// The stream a request's header block (its fields, then its HEADERS frame) belongs to: the one being
// decoded, as a block is contiguous (RFC 9113 4.3), without a lookup; else nghttp2's.
H2Stream* headers_stream(H2Conn* c, int32_t id) {
  return c->decoding_ && c->decoding_->id == id ? c->decoding_ : stream_of(c->ng_, id);
}

int on_begin_frame(nghttp2_session* ng, const nghttp2_frame_hd* hd, void* user) {
  H2Conn* c = conn_of(user);
  if (hd->type == NGHTTP2_HEADERS) {
    c->continuations_ = 0;
    if (hd->stream_id & 1) {
      // RFC 9113 5.1.1: a new stream's ID is above every earlier one (nghttp2 would ignore the frame).
      if (hd->stream_id <= c->last_stream_ && !nghttp2_session_find_stream(ng, hd->stream_id)) {
        c->fatal(NGHTTP2_PROTOCOL_ERROR, H2Refusal::protocol);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      if (hd->stream_id > c->last_stream_) c->last_stream_ = hd->stream_id;
    }
  } else if (hd->type == NGHTTP2_CONTINUATION) {
    if (++c->continuations_ > c->worker()->cfg().h2_max_continuations) {
      c->fatal(NGHTTP2_ENHANCE_YOUR_CALM, H2Refusal::continuation);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
  } else if (hd->type == NGHTTP2_DATA && hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) {
    c->glitch(H2Refusal::protocol);  // an empty DATA frame that ends nothing: work for no data
  }
  return c->dead_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

int on_begin_headers(nghttp2_session* ng, const nghttp2_frame* frame, void* user) {
  H2Conn* c = conn_of(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  Worker* w = c->worker();
  H2Stream* h = new_stream();
  h->conn = c;
  h->id = frame->hd.stream_id;
  Session* s = c->s_;
  h->client = &s->client;
  Stream* st = w->get_stream();
  st->down = h;
  st->client_ip = s->client.peer_ip;
  st->start_ms = w->now();
  st->req.major = 2;
  st->req.minor = 0;
  st->req.keep_alive = true;
  h->st = st;
  h->progress_ms = w->now();
  h->next = c->head_;
  if (c->head_) c->head_->prev = h;
  c->head_ = h;
  c->streams_++;
  nghttp2_session_set_stream_user_data(ng, h->id, h);
  c->decoding_ = h;
  c->unrest();
  if (++c->requests_ >= w->cfg().h2_max_requests && !c->going_away_) {
    // Enough for one connection: this is the last stream it takes.
    nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR, nullptr, 0);
    c->going_away_ = true;
  }
  return 0;
}

void refuse(H2Stream* h, uint16_t status, const char* why) {
  if (!h->refuse) {
    h->refuse = status;
    h->refuse_why = why;
  }
}

// One header field of a request (nghttp2 has checked its bytes, the pseudo-headers' presence and order, and
// refused connection-specific fields: RFC 9113 8.2 and 8.3).
int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen, const uint8_t* value,
              size_t valuelen, uint8_t, void* user) {
  H2Conn* c = conn_of(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  H2Stream* h = headers_stream(c, frame->hd.stream_id);
  if (!h || !h->st) return 0;
  const Config& cfg = c->worker()->cfg();
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    // Trailers (nghttp2 has refused pseudo-headers in them): passed on with the body's end, within the same
    // limit as the head.
    h->header_bytes += namelen + valuelen + 32;
    if (h->header_bytes <= cfg.max_header_size && h->req_trailers.size() < cfg.max_headers)
      h->req_trailers.emplace_back(std::string(sv(name, namelen)), std::string(sv(value, valuelen)));
    return 0;
  }
  h->header_bytes += namelen + valuelen + 32;  // RFC 9113 6.5.2's measure, as decoded (an HPACK bomb counts in full)
  if (h->header_bytes > cfg.max_header_size) {
    if (!h->refuse) c->glitch(H2Refusal::headers);
    if (c->dead_) return NGHTTP2_ERR_CALLBACK_FAILURE;
    refuse(h, 431, "request header fields too large");
  }
  if (h->refuse) return 0;
  std::string_view n = sv(name, namelen), v = sv(value, valuelen);
  http::Head& r = h->st->req;
  if (!n.empty() && n[0] == ':') {
    if (n == ":method"sv) {
      if (!r.set_method(v)) refuse(h, 501, "method not implemented");
    } else if (n == ":path"sv) {
      if (v.size() > cfg.max_uri_length) return refuse(h, 414, "request target too long"), 0;
      for (char ch : v)
        if (!http::has_class(static_cast<unsigned char>(ch), http::kTarget)) return refuse(h, 400, "invalid :path"), 0;
      r.url_off = static_cast<uint32_t>(r.buf.size());
      r.url_len = static_cast<uint32_t>(v.size());
      r.buf.append(v);
    } else if (n == ":authority"sv) {
      if (!http::valid_host(v) || v.empty()) return refuse(h, 400, "invalid :authority"), 0;
      h->authority = true;
      h->host_at = static_cast<uint32_t>(r.buf.size());
      h->host_len = static_cast<uint32_t>(v.size());
      r.buf.append(v);
    }
    if (n == ":protocol"sv) {  // (nghttp2 allows it only on a CONNECT, SETTINGS_ENABLE_CONNECT_PROTOCOL being sent)
      if (v != "websocket"sv) return refuse(h, 501, "only the websocket protocol can be tunnelled"), 0;
      h->websocket = true;
    }
    return 0;  // :scheme is checked by nghttp2
  }
  http::Hdr kind = http::classify(n);
  if (kind == http::Hdr::host) {
    if (h->authority || h->host_len) {
      // RFC 9113 8.3.1: a Host that names another entity than :authority is malformed.
      std::string_view prev(r.buf.data() + h->host_at, h->host_len);
      if (!iequals(prev, v)) refuse(h, 400, "Host differs from :authority");
      return 0;
    }
    if (!http::valid_host(v)) return refuse(h, 400, "invalid Host"), 0;
    h->host_at = static_cast<uint32_t>(r.buf.size());
    h->host_len = static_cast<uint32_t>(v.size());
    r.buf.append(v);
    return 0;
  }
  if (n == "cookie"sv) {
    // RFC 9113 8.2.3: split cookie fields are joined with "; " for HTTP/1.
    if (!h->cookies.empty()) h->cookies.append("; ");
    h->cookies.append(v);
    return 0;
  }
  if (!cfg.underscores_in_headers && n.find('_') != std::string_view::npos) return 0;  // as HTTP/1 does
  if (r.headers.size() >= cfg.max_headers) return refuse(h, 431, "too many header fields"), 0;
  if (kind == http::Hdr::content_length) {
    uint64_t len = 0;
    if (!parse_u64(v, &len)) return refuse(h, 400, "invalid content-length"), 0;
    r.has_content_length = true;
    r.content_length = len;
  }
  if (kind == http::Hdr::x_px_trace) r.trace = true;
  r.add_field(n, v, kind);
  return 0;
}

void add_field(http::Head& r, std::string_view n, uint32_t value_off, uint32_t value_len, http::Hdr kind) {
  http::HeaderRef ref;
  ref.name_off = static_cast<uint32_t>(r.buf.size());
  ref.name_len = static_cast<uint32_t>(n.size());
  r.buf.append(n);
  ref.value_off = value_off;
  ref.value_len = value_len;
  ref.kind = kind;
  r.headers.push_back(ref);
}

// The request head is complete: checks that need all of it, then the stream begins.
void head_done(H2Conn* c, H2Stream* h, bool end_stream) {
  Stream* st = h->st;
  http::Head& r = st->req;
  if (!h->refuse && h->websocket) {
    // RFC 8441: the HTTP/1.1 upgrade the upstream understands (RFC 6455 4.1), its key px's own.
    r.set_method("GET");
    uint8_t key[16];
    RAND_bytes(key, sizeof key);
    uint32_t at = static_cast<uint32_t>(r.buf.size());
    r.buf.append("websocket");
    add_field(r, "upgrade", at, 9, http::Hdr::upgrade);
    at = static_cast<uint32_t>(r.buf.size());
    r.buf.resize(at + 24);
    EVP_EncodeBlock(reinterpret_cast<uint8_t*>(r.buf.data() + at), key, sizeof key);
    add_field(r, "sec-websocket-key", at, 24, http::Hdr::other);
    r.upgrade = true;
    st->upgrade = true;
    end_stream = true;  // no request body: what follows is the tunnel's
  }
  if (!h->refuse) {
    if (r.method == http::Method::connect)
      refuse(h, 405, "CONNECT is not supported");
    else if (!h->authority && !h->host_len)
      refuse(h, 400, "no :authority or Host");
  }
  if (h->host_len) {
    r.host_index = static_cast<int>(r.headers.size());
    add_field(r, "host", h->host_at, h->host_len, http::Hdr::host);
  }
  if (!h->cookies.empty()) {
    uint32_t off = static_cast<uint32_t>(r.buf.size());
    r.buf.append(h->cookies);
    add_field(r, "cookie", off, static_cast<uint32_t>(h->cookies.size()), http::Hdr::other);
    std::string().swap(h->cookies);
  }
  h->head_done = true;
  st->head_request = r.method == http::Method::head;
  if (!end_stream)
    st->req_body = r.has_content_length && r.content_length == 0 ? http::Framing::none
                   : r.has_content_length                        ? http::Framing::length
                                                                 : http::Framing::chunked;
  if (h->refuse) {
    c->refused(H2Refusal::stream);
    st->end_as(Termination::bad_request);
    reply_text(st, h->refuse, h->refuse_why, !end_stream);
  } else {
    stream_begin(st);
  }
  if (end_stream && !st->req_complete) stream_body_end(st);
  h->flush(st);  // what the stream answered (px's own answer, "100 Continue") goes out
}

int on_frame_recv(nghttp2_session* ng, const nghttp2_frame* frame, void* user) {
  H2Conn* c = conn_of(user);
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      H2Stream* h = headers_stream(c, frame->hd.stream_id);
      if (!h || !h->st) return 0;
      bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
      h->progress_ms = c->worker()->now();
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        head_done(c, h, end);
      else if (end && !h->st->req_complete) {
        if (!h->req_trailers.empty()) stream_body_trailers(h->st, h->req_trailers);
        stream_body_end(h->st);  // trailers end the body
        h->flush(h->st);
      }
      return 0;
    }
    case NGHTTP2_DATA: {
      H2Stream* h = stream_of(ng, frame->hd.stream_id);
      if (h && h->websocket && h->st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        // The client's half of the tunnel ended: a half-close towards the upstream (after what is queued).
        if (h->st->tunnel && h->st->up) h->st->up->tunnel_end(h->st);
        return 0;
      }
      if (h && h->st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !h->st->req_complete) {
        Stream* st = h->st;
        if (st->req_body == http::Framing::length && st->body_received != st->req.content_length) {
          // nghttp2 checks this too; px says so itself (RFC 9113 8.1.1: malformed).
          nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_PROTOCOL_ERROR);
          return 0;
        }
        stream_body_end(st);
        h->flush(st);  // the last chunk goes upstream
      }
      return 0;
    }
    case NGHTTP2_RST_STREAM: {
      H2Stream* h = stream_of(ng, frame->hd.stream_id);
      if (h && h->st && !h->st->resp_complete) c->glitch(H2Refusal::reset);  // Rapid Reset counts here
      return c->dead_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
    }
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
      // Each needs an answer. While the client does not read them (the socket takes no more bytes), they
      // are counted: past h2_max_queued_control the connection ends (PING and SETTINGS floods).
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && c->s_->tr->queued() > 0 &&
          ++c->unread_acks_ > c->worker()->cfg().h2_max_queued_control) {
        PX_INFO("client %s: HTTP/2: %s flood from a client that does not read; ending the connection",
                c->s_->client.peer_ip.str().c_str(), frame->hd.type == NGHTTP2_PING ? "PING" : "SETTINGS");
        c->fatal(NGHTTP2_ENHANCE_YOUR_CALM, H2Refusal::flood);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      return 0;
    default: return 0;
  }
}

int on_data_chunk(nghttp2_session* ng, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  H2Conn* c = conn_of(user);
  nghttp2_session_consume_connection(ng, len);
  H2Stream* h = stream_of(ng, id);
  if (h && h->websocket && h->st) {
    // The tunnel's bytes: to the upstream once it answered (before that they wait, within the stream's window),
    // acknowledged as its connection takes them.
    Stream* st = h->st;
    h->progress_ms = c->worker()->now();
    st->bytes_in += len;
    if (h->paused || !st->tunnel)
      h->unconsumed += static_cast<uint32_t>(len);
    else
      nghttp2_session_consume_stream(ng, id, len);
    if (!st->tunnel)
      h->early.append(reinterpret_cast<const char*>(data), len);
    else if (st->up)
      st->up->tunnel_send(st, reinterpret_cast<const char*>(data), len);
    return 0;
  }
  if (!h || !h->st || h->st->req_complete) {
    nghttp2_session_consume_stream(ng, id, len);
    return 0;
  }
  Stream* st = h->st;
  h->progress_ms = c->worker()->now();
  if (h->paused)
    h->unconsumed += static_cast<uint32_t>(len);
  else
    nghttp2_session_consume_stream(ng, id, len);
  st->bytes_in += len;
  if (st->req_body == http::Framing::length && st->body_received + len > st->req.content_length) {
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_PROTOCOL_ERROR);  // more DATA than content-length
    return 0;
  }
  switch (stream_body(st, reinterpret_cast<const char*>(data), len)) {
    case BodyTake::taken:
      if (st->up) st->up->flush(st);  // the bytes are the read buffer's: they leave (or are copied) now
      break;
    case BodyTake::unwanted: break;
    case BodyTake::too_large:
      st->end_as(Termination::local);
      if (!st->resp_head_sent && !h->submitted) {
        if (st->up) st->up->abort(st);
        h->retract(st);
        reply_text(st, 413, "request body too large", true);
        h->flush(st);
      } else {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      }
      break;
  }
  return 0;
}

int on_invalid_frame(nghttp2_session*, const nghttp2_frame* frame, int lib_error, void* user) {
  H2Conn* c = conn_of(user);
  c->glitch(lib_error == NGHTTP2_ERR_PROTO && frame->hd.type == NGHTTP2_HEADERS ? H2Refusal::stream
                                                                                : H2Refusal::protocol);
  return c->dead_ ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

int on_frame_send(nghttp2_session* ng, const nghttp2_frame* frame, void*) {
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    H2Stream* h = stream_of(ng, frame->hd.stream_id);
    // RFC 9113 8.1: a complete response before the whole request, then RST_STREAM(NO_ERROR) stops the upload.
    if (h && h->abandon && h->st && !h->st->req_complete)
      nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

// ---- sending ----

ssize_t read_body(nghttp2_session* ng, int32_t, uint8_t* buf, size_t length, uint32_t* flags, nghttp2_data_source* src,
                  void*) {
  auto* h = static_cast<H2Stream*>(src->ptr);
  size_t n = h2_take_body(h->body, h->body_off, buf, length);
  if (n) {
    if (h->st) h->st->bytes_out += n;
    h->progress_ms = h->conn->worker()->now();
  }
  if (h->pending() == 0) {
    if (h->body_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!h->trailers.empty()) {  // the stream ends with the trailers' HEADERS instead
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        h2_submit_trailers(ng, h->id, h->trailers);
      }
    } else if (n == 0) {
      h->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  if (h->up_paused && h->pending() < net::kLowWater && h->st) {
    h->up_paused = false;
    if (h->st->up) h->st->up->resume_response(h->st);
  }
  return static_cast<ssize_t>(n);
}

const nghttp2_session_callbacks* callbacks() {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* c;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_on_begin_frame_callback(c, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(c, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(c, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, H2Conn::stream_closed);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(c, on_invalid_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(c, on_frame_send);
    return c;
  }();
  return cbs;
}

// Response head storage: names and values back to back in h->head, offsets in h->nv.
void put_field(H2Stream* h, std::string_view n, std::string_view v) {
  size_t at = h->head.size(), k = h->nv.size();
  h->head.append(n).append(v);
  lower_in_place(h->head.data() + at, n.size());  // HTTP/2 field names are lowercase (RFC 9113 8.2.1)
  h->nv.resize(k + 4);
  uint32_t* o = h->nv.data() + k;
  o[0] = static_cast<uint32_t>(at);
  o[1] = static_cast<uint32_t>(n.size());
  o[2] = static_cast<uint32_t>(at + n.size());
  o[3] = static_cast<uint32_t>(v.size());
}

void put_status(H2Stream* h, int status) {
  char b[3] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
               static_cast<char>('0' + status % 10)};
  put_field(h, ":status", std::string_view(b, 3));
}

// Recycled streams, per worker thread: their buffers keep their capacity (a request does not allocate
// them again). An idle connection holds none.
struct StreamPool {
  std::vector<H2Stream*> free;
  std::vector<nghttp2_nv> nva;  // scratch for submitting a head
  ~StreamPool() {
    for (H2Stream* h : free) delete h;
  }
};
thread_local StreamPool t_pool;
// As the worker's Stream pool: 64 connections x 10 streams keep 640 in flight, and a smaller ceiling freed and
// allocated streams (and their buffers) all the time. Worker::trim brings it down to the last window's peak.
constexpr size_t kPoolMax = 4096;

H2Stream* new_stream() {
  if (t_pool.free.empty()) return new H2Stream();
  H2Stream* h = t_pool.free.back();
  t_pool.free.pop_back();
  return h;
}

void free_stream(H2Stream* h) {
  if (t_pool.free.size() >= kPoolMax || h->body.capacity() > 64 * 1024 || h->head.capacity() > 16 * 1024) {
    delete h;
    return;
  }
  std::string body, head, cookies;
  std::vector<uint32_t> nv;
  body.swap(h->body);
  head.swap(h->head);
  nv.swap(h->nv);
  *h = H2Stream();  // every field as new ...
  body.clear();
  head.clear();
  nv.clear();
  h->body.swap(body);  // ... but the buffers
  h->head.swap(head);
  h->nv.swap(nv);
  t_pool.free.push_back(h);
}

}  // namespace

// ---- the connection ----

H2Conn::H2Conn(Session* s) : s_(s) {}

H2Conn::~H2Conn() {
  worker()->undefer_h2(this);
  unrest();
  if (ng_) nghttp2_session_del(ng_);
}

// ---- nghttp2's memory ----

namespace {
// nghttp2's frame buffer holds a frame of 16 KiB and its header: the one block this large that a new
// session allocates. Page-aligned, its pages can be given back while the connection rests.
constexpr size_t kFrameBufMin = 16 * 1024;
constexpr uint64_t kRestMs = 1000;
const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));
size_t page_round(size_t n) { return (n + kPage - 1) / kPage * kPage; }
constinit thread_local H2Conn* t_rest_head = nullptr;
constinit thread_local H2Conn* t_rest_tail = nullptr;
}  // namespace

// (Inlined into the callbacks below: they run four times per stream.)
[[gnu::always_inline]] inline void* H2Conn::mem_alloc(size_t size) {
  if (!creating_ || framebuf_ || size < kFrameBufMin || kPage > kFrameBufMin) return block_pool::alloc(size);
  void* p = aligned_alloc(kPage, page_round(size));
  if (p) framebuf_ = p, framebuf_len_ = page_round(size);
  return p;
}

[[gnu::always_inline]] inline void H2Conn::mem_free(void* p) {
  if (!p || p != framebuf_) return block_pool::free(p);
  std::free(p);
  framebuf_ = nullptr;
}

void* H2Conn::mem_realloc(void* p, size_t size) {
  if (!p) return mem_alloc(size);
  if (p != framebuf_) return block_pool::realloc(p, size);
  if (size <= framebuf_len_) return p;
  void* q = aligned_alloc(kPage, page_round(size));
  if (!q) return nullptr;
  memcpy(q, p, framebuf_len_);
  std::free(p);
  framebuf_ = q;
  framebuf_len_ = page_round(size);
  return q;
}

void H2Conn::rest() {
  if (resting_ || !framebuf_ || !framebuf_used_) return;
  resting_ = true;
  rest_since_ = worker()->now();
  rest_prev_ = t_rest_tail;
  rest_next_ = nullptr;
  if (t_rest_tail)
    t_rest_tail->rest_next_ = this;
  else
    t_rest_head = this;
  t_rest_tail = this;
}

void H2Conn::unrest() {
  if (!resting_) return;
  resting_ = false;
  if (rest_prev_)
    rest_prev_->rest_next_ = rest_next_;
  else
    t_rest_head = rest_next_;
  if (rest_next_)
    rest_next_->rest_prev_ = rest_prev_;
  else
    t_rest_tail = rest_prev_;
  rest_prev_ = rest_next_ = nullptr;
}

void H2Conn::trim_stream_pool(size_t keep) {
  while (t_pool.free.size() > keep) {
    delete t_pool.free.back();
    t_pool.free.pop_back();
  }
  if (t_pool.free.empty()) std::vector<H2Stream*>().swap(t_pool.free);
}

void H2Conn::release_resting(uint64_t now_ms) {
  while (H2Conn* c = t_rest_head) {
    if (now_ms - c->rest_since_ < kRestMs) break;
    c->unrest();
    // Only between frames: no stream, and the last send() drained nghttp2 (a later one lists it again).
    if (c->head_ || !c->quiet_ || !c->framebuf_) continue;
    madvise(c->framebuf_, c->framebuf_len_, MADV_DONTNEED);
    c->framebuf_used_ = false;
    PX_DEBUG("client %s: HTTP/2 connection idle: frame buffer released", c->s_->client.peer_ip.str().c_str());
  }
}

Worker* H2Conn::worker() const { return s_->w; }

bool H2Conn::start() {
  const Config& cfg = worker()->cfg();
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // request bodies are acknowledged as the upstream takes them
  nghttp2_option_set_max_outbound_ack(opt, cfg.h2_max_queued_control);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_continuations(opt, cfg.h2_max_continuations);
  // The frame buffer comes from malloc or realloc while the session is made (mem_alloc); calloc is the pool's.
  mem_ = {this, [](size_t n, void* u) { return static_cast<H2Conn*>(u)->mem_alloc(n); },
          [](void* p, void* u) { static_cast<H2Conn*>(u)->mem_free(p); },
          [](size_t n, size_t size, void*) { return block_pool::alloc_zeroed(n, size); },
          [](void* p, size_t n, void* u) { return static_cast<H2Conn*>(u)->mem_realloc(p, n); }};
  creating_ = true;
  int r = nghttp2_session_server_new3(&ng_, callbacks(), this, opt, &mem_);
  creating_ = false;
  nghttp2_option_del(opt);
  if (r != 0) return false;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, static_cast<uint32_t>(cfg.h2_max_concurrent_streams)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(cfg.max_header_size)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // RFC 8441: WebSocket over HTTP/2
  };
  if (nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return false;
  nghttp2_session_set_local_window_size(ng_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  update_timeout();
  return true;
}

void H2Conn::on_data(const char* data, size_t len) {
  if (dead_) return;  // GOAWAY went out: what follows is not read
  ssize_t r = nghttp2_session_mem_recv(ng_, reinterpret_cast<const uint8_t*>(data), len);
  if (r < 0 && !dead_) {
    PX_DEBUG("client %s: HTTP/2: %s", s_->client.peer_ip.str().c_str(), nghttp2_strerror(static_cast<int>(r)));
    if (r == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      refused(H2Refusal::protocol);
      s_->close();
      return;
    }
    fatal(r == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR,
          r == NGHTTP2_ERR_FLOODED ? H2Refusal::flood : H2Refusal::protocol);
  }
  send();
}

void H2Conn::schedule() { worker()->defer_h2(this); }

void H2Conn::send() {
  if (s_->closing) return;
  net::Transport* tr = s_->tr;
  quiet_ = false;
  while (tr->queued() <= net::kHighWater) {
    const uint8_t* p;
    ssize_t n = nghttp2_session_mem_send(ng_, &p);
    if (n < 0) {
      PX_DEBUG("client %s: HTTP/2 send: %s", s_->client.peer_ip.str().c_str(), nghttp2_strerror(static_cast<int>(n)));
      if (n == NGHTTP2_ERR_FLOODED) refused(H2Refusal::flood);
      s_->close();
      return;
    }
    if (n == 0) {
      quiet_ = true;
      break;
    }
    framebuf_used_ = true;
    out_.copy(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    if (out_.size() >= 64 * 1024 && tr->write(out_) != 0) {
      s_->close();
      return;
    }
  }
  if (!out_.empty() && tr->write(out_) != 0) {
    s_->close();
    return;
  }
  if (s_->closing) return;
  if (!head_) {
    net::Output().swap(out_);  // an idle connection keeps no buffer of its own ...
    if (quiet_) rest();        // ... and after a second, not the pages of nghttp2's either
  }
  bool want_write = nghttp2_session_want_write(ng_);
  if ((!nghttp2_session_want_read(ng_) && !want_write) || (dead_ && !want_write)) {
    if (dead_ && tr->congested()) {
      s_->close();  // a client that does not read would not read the GOAWAY either
      return;
    }
    s_->close_when_written();
    if (!s_->closing) s_->set_timeout(Timeout::body);  // ... and if it never takes it, on_timeout() closes
    return;
  }
  update_reading();
  update_timeout();
}

void H2Conn::update_reading() {
  // A client that does not read its acknowledgements is not read either (PING and SETTINGS floods).
  bool want = !s_->tr->congested() && !dead_;
  if (want != s_->want_read) {
    s_->want_read = want;
    s_->update_reading();
  }
}

void H2Conn::on_drained() {
  if (s_->closing) return;
  if (s_->tr->queued() == 0) unread_acks_ = 0;
  send();
}

void H2Conn::on_eof() { s_->close(); }

void H2Conn::update_timeout() {
  if (s_->closing) return;
  Timeout want = Timeout::none;
  if (s_->writes_done_close) return;  // closing: send() armed its own
  if (notice_sent_ && !final_goaway_) {
    want = Timeout::keepalive;  // draining: the final GOAWAY after one short wait
  } else if (s_->tr->congested()) {
    want = Timeout::body;  // the client does not read what it was sent (send timeout)
  } else if (!head_) {
    // Idle: a connection that has not sent a request yet gets client_header_timeout, as on HTTP/1 (a
    // client that opens connections and sends nothing holds them that long only); later, keepalive_timeout.
    want = dead_ ? Timeout::none : requests_ == 0 ? Timeout::header : Timeout::keepalive;
  } else {
    // Streams are open: each client_header_timeout, on_timeout() looks for those the client holds up
    // (a per-stream check there, so that nothing here walks the streams on every event).
    want = Timeout::header;
  }
  if (want != s_->timeout) s_->set_timeout(want);
}

// GOAWAY naming the last stream processed: nothing new is taken; the connection closes once the
// streams in flight are done.
void H2Conn::final_goaway() {
  going_away_ = true;
  nghttp2_submit_goaway(ng_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(ng_), NGHTTP2_NO_ERROR, nullptr,
                        0);
  send();
}

void H2Conn::on_timeout(Timeout t) {
  Worker* w = worker();
  if (s_->writes_done_close || (s_->tr->congested() && !head_)) {
    // Closing, or idle with output the client does not read: give up on it.
    refused(H2Refusal::timeout);
    s_->close();
    return;
  }
  if (s_->closing) return;
  if (notice_sent_ && !final_goaway_) {
    final_goaway_ = true;
    return final_goaway();
  }
  if (!head_) return final_goaway();  // idle: GOAWAY, then close
  (void)t;
  uint64_t now = w->now();
  for (H2Stream* h = head_; h; h = h->next) {
    Stream* st = h->st;
    if (!st) continue;
    // A head has client_header_timeout to arrive; a body, or a response the client's window holds back,
    // client_body_timeout between pieces. A stream waiting for its upstream is the upstream's timeout's.
    uint64_t limit = h->head_done ? w->cfg().client_body_timeout_ms : w->cfg().client_header_timeout_ms;
    if (now - h->progress_ms < limit) continue;
    bool waiting_client = !h->head_done || !st->req_complete || h->pending() > 0;
    if (!waiting_client) continue;
    refused(H2Refusal::timeout);
    if (h->head_done && !st->req_complete && !st->resp_head_sent && !h->submitted) {
      // The body did not arrive in time (slowloris over HTTP/2).
      st->end_as(Termination::client_timeout);
      reply_text(st, 408, "request timed out", true);
      h->flush(st);
    } else {
      st->end_as(Termination::client_timeout);
      nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_CANCEL);
    }
  }
  s_->set_timeout(Timeout::none);
  update_timeout();  // look again after another period
  send();
}

void H2Conn::shutdown() {
  if (going_away_ || notice_sent_ || !ng_) return;
  // RFC 9113 6.8: first a GOAWAY that refuses nothing, then, a round trip later, the one with the last stream.
  notice_sent_ = true;
  nghttp2_submit_shutdown_notice(ng_);
  s_->set_timeout(Timeout::none);
  update_timeout();
  send();
}

void H2Conn::close_streams() {
  while (H2Stream* h = head_) {
    Stream* st = h->st;
    unlink(h);
    if (ng_) nghttp2_session_set_stream_user_data(ng_, h->id, nullptr);
    if (st) {
      h->st = nullptr;
      end_stream(st, true);
    }
    free_stream(h);
  }
}

int H2Conn::stream_closed(nghttp2_session* ng, int32_t id, uint32_t, void* user) {
  H2Conn* c = conn_of(user);
  H2Stream* h = stream_of(ng, id);
  if (!h) return 0;  // (nghttp2 drops the stream and its user data after this call)
  c->unlink(h);
  if (Stream* st = h->st) {
    h->st = nullptr;
    bool whole = st->resp_complete && (st->req_complete || h->abandon) && h->pending() == 0 && h->body_eof;
    if (st->local && st->resp_complete && (st->req_complete || h->abandon)) whole = true;
    end_stream(st, !whole);
  }
  free_stream(h);
  return 0;
}

void H2Conn::unlink(H2Stream* h) {
  if (h->prev)
    h->prev->next = h->next;
  else if (head_ == h)
    head_ = h->next;
  if (h->next) h->next->prev = h->prev;
  h->prev = h->next = nullptr;
  if (decoding_ == h) decoding_ = nullptr;
  streams_--;
}

void H2Conn::refused(H2Refusal kind) {
  if (WorkerMetrics* m = worker()->metrics()) m->h2_refused[static_cast<int>(kind)].inc();
}

void H2Conn::glitch(H2Refusal kind, uint32_t cost) {
  refused(kind);
  glitches_ += cost;
  if (glitches_ > worker()->cfg().h2_max_glitches && !dead_) {
    PX_INFO("client %s: HTTP/2: %u resets and protocol errors; ending the connection (ENHANCE_YOUR_CALM)",
            s_->client.peer_ip.str().c_str(), glitches_);
    fatal(NGHTTP2_ENHANCE_YOUR_CALM, H2Refusal::glitches);
  }
}

void H2Conn::fatal(uint32_t error_code, H2Refusal kind) {
  if (dead_) return;
  dead_ = true;
  refused(kind);
  nghttp2_session_terminate_session(ng_, error_code);
  schedule();
}

// ---- a stream's Downstream ----

void H2Stream::send_head(Stream* s, const ResponseHead& rh) {
  const http::Head& h = *rh.from;
  bool no_body = s->head_request || h.status == 204 || h.status == 304;
  head.clear();
  nv.clear();
  // RFC 8441 5: the upstream's 101 is the client's 200, without the upgrade's own fields.
  bool opened = websocket && rh.status == 101;
  put_status(this, opened ? 200 : rh.status);
  for (size_t i = 0; i < h.headers.size(); i++) {
    http::Hdr kind = h.headers[i].kind;
    std::string_view n = h.name(i);
    bool length = kind == http::Hdr::content_length;  // HTTP/2 may carry it: it tells the client the size
    if (!length && !http::keep_response_field(kind, h.status, no_body)) continue;
    if (h.listed_in_connection(n)) continue;
    if (opened &&
        (kind == http::Hdr::upgrade || kind == http::Hdr::connection || length || iequals(n, "sec-websocket-accept")))
      continue;
    if (rh.edits) {
      bool touched = false;
      for (const auto& e : *rh.edits) touched = touched || iequals(e.name, n);
      if (touched) continue;
    }
    put_field(this, n, h.value(i));
  }
  if (rh.edits)
    lua::each_edited(
        h, *rh.edits,
        [](void* self, std::string_view n, std::string_view v) {
          // A filter's field is dropped where the upstream's would be (the connection-specific ones that
          // RFC 9113 8.2.2 forbids among them); its Content-Length could contradict the body.
          if (!http::hop_by_hop(http::classify(n))) put_field(static_cast<H2Stream*>(self), n, v);
        },
        this);
  has_body = !no_body;
  head_pending = true;
}

void H2Stream::send_body(Stream*, const char* data, size_t len) { body.append(data, len); }

void H2Stream::send_end(Stream* s) {
  body_eof = true;
  if (s->tunnel) flush(s);  // the upstream ended the tunnel: END_STREAM once what it sent is out
}

void H2Stream::send_trailers(Stream*, const Fields& f) {
  trailers.clear();
  h2_trailer_fields(f, &trailers);
}

void H2Stream::send_reply(Stream* s, int status, const Fields* fields, std::string_view b) {
  head.clear();
  nv.clear();
  body.clear();
  body_off = 0;
  put_status(this, status);
  put_field(this, "server", "px");
  put_field(this, "date", conn->worker()->date());
  bool has_type = false;
  if (fields)
    for (const auto& [n, v] : *fields) {
      if (http::hop_by_hop(http::classify(n))) continue;  // Content-Length is written below
      has_type = has_type || iequals(n, "content-type");
      put_field(this, n, v);
    }
  if (!has_type && !b.empty()) put_field(this, "content-type", "text/plain; charset=utf-8");
  char len[24];
  size_t n = sizeof len;
  size_t v = b.size();
  do len[--n] = static_cast<char>('0' + v % 10);
  while (v /= 10);
  put_field(this, "content-length", std::string_view(len + n, sizeof len - n));
  has_body = !s->head_request && !b.empty() && status != 204 && status != 304;
  if (has_body) body.assign(b.data(), b.size());
  body_eof = true;
  head_pending = true;
}

bool H2Stream::continue_request(Stream* s) {
  switch (http::expectation(s->req)) {
    case http::Expect::unsupported: return false;
    case http::Expect::continue_100:
      if (s->req_body != http::Framing::none && !s->req_complete && !closed) {
        nghttp2_nv nva = {reinterpret_cast<uint8_t*>(const_cast<char*>(":status")),
                          reinterpret_cast<uint8_t*>(const_cast<char*>("100")), 7, 3, NGHTTP2_NV_FLAG_NONE};
        nghttp2_submit_headers(conn->ng_, NGHTTP2_FLAG_NONE, id, nullptr, &nva, 1, nullptr);
        conn->schedule();
      }
      return true;
    case http::Expect::none: return true;
  }
  return true;
}

void H2Stream::abandon_request(Stream*) { abandon = true; }

bool H2Stream::flush(Stream* s) {
  if (conn->s_->closing) return false;
  if (s->up) s->up->flush(s);
  nghttp2_session* ng = conn->ng_;
  if (head_pending) {
    head_pending = false;
    std::vector<nghttp2_nv>& nva = t_pool.nva;
    nva.resize(nv.size() / 4);
    for (size_t i = 0; i < nva.size(); i++) {
      nva[i].name = reinterpret_cast<uint8_t*>(head.data() + nv[i * 4]);
      nva[i].namelen = nv[i * 4 + 1];
      nva[i].value = reinterpret_cast<uint8_t*>(head.data() + nv[i * 4 + 2]);
      nva[i].valuelen = nv[i * 4 + 3];
      // Not copied: `head` holds the fields (names already lowercase) until the stream is freed. A stream
      // submits one head, and nothing writes `head` after that (retract() refuses; only free_stream() clears
      // it, after nghttp2 closed the stream, or once the connection closed and sends nothing more).
      nva[i].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    }
    nghttp2_data_provider dp;
    dp.source.ptr = this;
    dp.read_callback = read_body;
    s->bytes_out += head.size();
    // A response already whole and empty (gRPC's trailers-only answers) ends with its HEADERS frame.
    bool data = has_body && !(body_eof && pending() == 0 && trailers.empty());
    nghttp2_submit_response(ng, id, nva.data(), nva.size(), data ? &dp : nullptr);
    submitted = true;
  }
  if (submitted && has_body && deferred && (pending() > 0 || body_eof)) {
    deferred = false;
    nghttp2_session_resume_data(ng, id);
  }
  // A slow client (its window, or the connection's output) stops this stream's upstream.
  if (s->up && !up_paused && pending() > net::kHighWater) {
    up_paused = true;
    s->up->pause_response(s);
  }
  conn->schedule();
  return true;
}

void H2Stream::progress(Stream* s) { flush(s); }

void H2Stream::reset(Stream* s) {
  if (s->up) s->up->abort(s);
  if (!closed) nghttp2_submit_rst_stream(conn->ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
  conn->schedule();
}

bool H2Stream::retract(Stream* s) {
  if (submitted) return false;
  head.clear();
  nv.clear();
  head_pending = false;
  body.clear();
  body_off = 0;
  body_eof = false;
  s->resp_head_sent = false;
  return true;
}

void H2Stream::pause_request(Stream*) { paused = true; }

void H2Stream::resume_request(Stream*) {
  if (!paused) return;
  paused = false;
  if (unconsumed) {
    nghttp2_session_consume_stream(conn->ng_, id, unconsumed);
    unconsumed = 0;
    conn->schedule();
  }
}

// The upstream answered 101 to an extended CONNECT's upgrade: its bytes after the 101, and what the client sent
// meanwhile, start the tunnel. (Only a websocket stream asks for an upgrade: HTTP/2 has no Upgrade field.)
void H2Stream::open_tunnel(Stream* s, const char* early_up, size_t len) {
  if (!websocket) return reset(s);
  body.append(early_up, len);
  if (!flush(s)) return;
  if (!early.empty() && s->up) {
    s->up->tunnel_send(s, early.data(), early.size());
    std::string().swap(early);
  }
  if (unconsumed && !paused) {
    nghttp2_session_consume_stream(conn->ng_, id, unconsumed);
    unconsumed = 0;
    conn->schedule();
  }
}

bool H2Stream::congested() const { return pending() > net::kHighWater; }

// ---- pieces both sides of HTTP/2 use (h2_common.h) ----

size_t h2_take_body(std::string& body, size_t& off, uint8_t* out, size_t max) {
  size_t n = std::min(max, body.size() - off);
  if (!n) return 0;
  memcpy(out, body.data() + off, n);
  off += n;
  if (off == body.size()) {
    body.clear();
    off = 0;
  } else if (off >= net::kLowWater) {
    body.erase(0, off);
    off = 0;
  }
  return n;
}

void h2_trailer_fields(const Fields& in, Fields* out) {
  for (const auto& [n, v] : in) {
    http::Hdr k = http::classify(n);
    if (http::hop_by_hop(k) || k == http::Hdr::host || n.empty() || n[0] == ':') continue;
    out->emplace_back(n, v);
    lower_in_place(out->back().first.data(), n.size());
  }
}

void h2_submit_trailers(nghttp2_session* ng, int32_t id, Fields& trailers) {
  std::vector<nghttp2_nv> nva;
  nva.reserve(trailers.size());
  for (auto& [n, v] : trailers)
    nva.push_back({reinterpret_cast<uint8_t*>(n.data()), reinterpret_cast<uint8_t*>(v.data()), n.size(), v.size(),
                   NGHTTP2_NV_FLAG_NONE});  // (copied)
  nghttp2_submit_trailer(ng, id, nva.data(), nva.size());
  trailers.clear();
}

}  // namespace px::proxy
