// HTTP/2 to upstream peers (h2up.h): nghttp2's client session on a worker's transport, its callbacks turned
// into the stream's stream_response_* calls, and each stream's Upstream calls turned into frames.
#include "upstream/h2up.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>

#include "codec/h2_common.h"
#include "core/block_pool.h"
#include "core/freelist.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "observe/trace.h"
#include "stream/stream.h"
#include "upstream/peer.h"
#include "upstream/retry.h"

namespace px::proxy {

using namespace std::string_view_literals;

namespace {

constexpr int32_t kStreamWindow = 256 * 1024;    // per stream: a slow client holds up this much at most
constexpr int32_t kConnectionWindow = 16 << 20;  // the connection's: not the limit while streams take theirs
constexpr uint64_t kTickMs = 1000;               // read timeouts are checked this often

H2Up* conn_of(void* user) { return static_cast<H2Up*>(user); }
H2UpStream* ustream(nghttp2_session* ng, int32_t id) {
  return static_cast<H2UpStream*>(nghttp2_session_get_stream_user_data(ng, id));
}
std::string_view sv(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

// The stream and its exchange part (the stream no longer has an upstream; nghttp2 may still hold the ID).
void detach(H2UpStream* us) {
  Stream* st = us->st;
  if (!st) return;
  us->st = nullptr;
  if (st->up == us) st->up = nullptr;
  if (st->peer) st->peer->active--;
}

// An attempt failed: the stream is retried or answered (upstream.cpp). A refused stream (REFUSED_STREAM, or
// above a GOAWAY's last stream) was never processed: what it had of the request body goes with it.
void failed(H2UpStream* us, Fail why) {
  Stream* st = us->st;
  if (!st) return;
  if (why == Fail::refused && us->body_off == 0 && !st->body_bytes_sent) {
    st->upreq->pending_body.swap(us->body);
    us->body.clear();
  }
  upstream_failed(st, why, us->reused, us->got_bytes);  // (aborts us: detached)
}

// Recycled exchanges, per worker thread (a request allocates none): a FreeList keeps their body buffers.
using UpStreamPool = FreeList<H2UpStream, 4096>;

void free_upstream(H2UpStream* s) {
  bool keep = s->body.capacity() <= 64 * 1024;
  std::string body;
  body.swap(s->body);
  *s = H2UpStream();  // every field as new, but the body's buffer
  body.clear();
  s->body.swap(body);
  UpStreamPool::give(s, keep);
}

// nghttp2's memory, from the worker's block pool (core/block_pool.h), as the client side's.
nghttp2_mem kPoolMem = {nullptr, [](size_t n, void*) { return block_pool::alloc(n); },
                        [](void* p, void*) { block_pool::free(p); },
                        [](size_t n, size_t size, void*) { return block_pool::alloc_zeroed(n, size); },
                        [](void* p, size_t n, void*) { return block_pool::realloc(p, n); }};

// ---- receiving ----

int on_header(nghttp2_session* ng, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
              const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  H2Up* c = conn_of(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  H2UpStream* us = ustream(ng, frame->hd.stream_id);
  if (!us || !us->st || us->bad_head) return 0;
  Stream* st = us->st;
  std::string_view n = sv(name, namelen), v = sv(value, valuelen);
  us->head_bytes += static_cast<uint32_t>(namelen + valuelen + 32);
  const http::Limits& lim = c->w->resp_limits;
  if (us->head_done) {  // trailers (nghttp2 refuses pseudo-headers in them: a stream error)
    if (us->head_bytes > lim.max_head || us->trailers.size() >= lim.max_headers) {
      us->bad_head = true;
      return 0;
    }
    us->trailers.emplace_back(std::string(n), std::string(v));
    return 0;
  }
  http::Head& r = st->resp;
  if (us->head_bytes > lim.max_head || r.headers.size() >= lim.max_headers) {
    us->bad_head = true;
    return 0;
  }
  if (n == ":status"sv) {
    uint64_t s = 0;
    if (v.size() != 3 || !parse_u64(v, &s) || s < 100) {
      us->bad_head = true;
      return 0;
    }
    r.status = static_cast<uint16_t>(s);
    return 0;
  }
  http::Hdr kind = http::classify(n);
  if (kind == http::Hdr::content_length) {
    uint64_t len = 0;
    if (!parse_u64(v, &len)) {
      us->bad_head = true;
      return 0;
    }
    r.has_content_length = true;
    r.content_length = len;
  }
  r.add_field(n, v, kind);
  return 0;
}

void begin_head(Stream* st) {
  http::Head& r = st->resp;
  r.clear();
  r.major = 2;
  r.minor = 0;
  r.keep_alive = true;
}

int on_begin_headers(nghttp2_session* ng, const nghttp2_frame* frame, void*) {
  H2UpStream* us = ustream(ng, frame->hd.stream_id);
  if (!us || !us->st || us->head_done) return 0;
  begin_head(us->st);
  us->head_bytes = 0;
  return 0;
}

// The peer's side ended: trailers, the end, and the stream goes on without this exchange.
void response_ended(H2Up* c, H2UpStream* us) {
  Stream* st = us->st;
  us->resp_end = true;
  c->w->peer_ok(c->peer);
  Downstream* d = st->down;
  detach(us);
  if (!us->trailers.empty()) d->send_trailers(st, us->trailers);
  stream_response_end(st);
  if (!st->req_complete) {
    // The peer answered before the request body was all here: stop there (RST_STREAM(CANCEL) if it is open).
    d->abandon_request(st);
    st->req_complete = true;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
    us->reset = true;
  }
  d->progress(st);
}

void bad_response(H2Up* c, H2UpStream* us, const char* why) {
  Stream* st = us->st;
  PX_WARN("upstream %s: bad HTTP/2 response: %s", c->peer->key.c_str(), why);
  nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_PROTOCOL_ERROR);
  us->reset = true;
  if (st->down->retract(st)) {
    failed(us, Fail::bad_response);
  } else {
    st->end_as(Termination::upstream_bad_response);
    detach(us);
    st->down->reset(st);
  }
}

int on_frame_recv(nghttp2_session* ng, const nghttp2_frame* frame, void* user) {
  H2Up* c = conn_of(user);
  if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
    c->peer->h2_concurrency = std::max<uint32_t>(
        1,
        std::min<uint32_t>(nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 1u << 16));
    return 0;
  }
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // No new streams here; those above last_stream_id are closed as refused (and retried); the rest finish.
    c->goaway = true;
    c->peer_goaway = true;
    PX_DEBUG("upstream %s: GOAWAY (last stream %d, error %u)", c->peer->key.c_str(), frame->goaway.last_stream_id,
             frame->goaway.error_code);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  H2UpStream* us = ustream(ng, frame->hd.stream_id);
  if (!us || !us->st) return 0;
  Stream* st = us->st;
  us->progress_ms = c->w->now();
  bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (frame->hd.type == NGHTTP2_HEADERS) {
    if (us->bad_head) {
      bad_response(c, us, us->head_done ? "trailers over the limits" : "invalid :status or head over the limits");
      return 0;
    }
    if (!us->head_done) {
      http::Head& r = st->resp;
      if (r.status < 200) {
        if (r.status == 101 || end) {
          bad_response(c, us, "an informational status HTTP/2 does not carry");
          return 0;
        }
        return 0;  // 1xx: dropped (px answered Expect itself); the final head follows
      }
      us->head_done = true;
      if (st->ttfb_us < 0 && st->up_sent_us) st->ttfb_us = static_cast<int32_t>(Worker::clock_us() - st->up_sent_us);
      us->got_bytes = true;
      if (!stream_response_head(st, r)) {
        // A response filter failed or answered instead: the peer's response is dropped (its stream reset).
        Downstream* d = st->down;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
        us->reset = true;
        detach(us);
        d->retract(st);
        stream_answer_instead(st);
        st->req_complete = true;
        d->progress(st);
        return 0;
      }
      if (!end) {
        st->down->flush(st);
        return 0;
      }
    } else if (!end) {
      bad_response(c, us, "trailers without END_STREAM");
      return 0;
    }
  }
  if (end && us->head_done) response_ended(c, us);
  return 0;
}

int on_data_chunk(nghttp2_session* ng, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  H2Up* c = conn_of(user);
  nghttp2_session_consume_connection(ng, len);
  H2UpStream* us = ustream(ng, id);
  if (!us || !us->st || !us->head_done) {
    nghttp2_session_consume_stream(ng, id, len);
    return 0;
  }
  Stream* st = us->st;
  us->progress_ms = c->w->now();
  if (us->paused)
    us->unconsumed += static_cast<uint32_t>(len);
  else
    nghttp2_session_consume_stream(ng, id, len);
  stream_response_body(st, reinterpret_cast<const char*>(data), len);
  st->down->flush(st);  // the bytes are the read buffer's: they leave (or are copied) now
  return 0;
}

int on_stream_close(nghttp2_session* ng, int32_t id, uint32_t error_code, void* user) {
  H2Up* c = conn_of(user);
  H2UpStream* us = ustream(ng, id);
  if (!us) return 0;
  us->reset = true;  // closed: nothing more is sent on it
  c->unlink(us);
  if (us->st && !us->resp_end) {
    Stream* st = us->st;
    if (error_code == NGHTTP2_REFUSED_STREAM && !us->got_bytes) {
      failed(us, Fail::refused);
    } else if (!st->resp_head_sent && st->down->retract(st)) {
      PX_INFO("upstream %s: stream %d reset (%s)", c->peer->key.c_str(), id, nghttp2_http2_strerror(error_code));
      failed(us, error_code == NGHTTP2_PROTOCOL_ERROR ? Fail::bad_response : Fail::closed);
    } else {
      st->end_as(Termination::upstream_closed);
      Downstream* d = st->down;
      detach(us);
      d->reset(st);
    }
  }
  detach(us);
  free_upstream(us);
  return 0;
}

int on_invalid_frame(nghttp2_session*, const nghttp2_frame* frame, int lib_error, void* user) {
  H2Up* c = conn_of(user);
  PX_INFO("upstream %s: invalid HTTP/2 frame (type %u, stream %d): %s", c->peer->key.c_str(), frame->hd.type,
          frame->hd.stream_id, nghttp2_strerror(lib_error));
  if (WorkerMetrics* m = c->w->metrics()) m->h2_upstream_errors.inc();
  return 0;
}

// A connection error nghttp2 found in what the peer sent (a malformed frame, a bad HPACK block, ...): it sends
// GOAWAY; the connection then ends with its streams (on_data).
int on_error(nghttp2_session*, int lib_error, const char* msg, size_t len, void* user) {
  H2Up* c = conn_of(user);
  PX_WARN("upstream %s: HTTP/2: %.*s", c->peer->key.c_str(), static_cast<int>(len), msg);
  if (lib_error != NGHTTP2_ERR_CALLBACK_FAILURE)
    if (WorkerMetrics* m = c->w->metrics()) m->h2_upstream_errors.inc();
  return 0;
}

// ---- sending ----

ssize_t read_body(nghttp2_session* ng, int32_t, uint8_t* buf, size_t length, uint32_t* flags, nghttp2_data_source* src,
                  void*) {
  auto* us = static_cast<H2UpStream*>(src->ptr);
  size_t n = h2_take_body(us->body, us->body_off, buf, length);
  if (n && us->st) us->st->body_bytes_sent = true;
  if (us->pending() == 0) {
    if (us->body_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!us->req_trailers.empty()) {  // the stream ends with the trailers' HEADERS instead
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        h2_submit_trailers(ng, us->id, us->req_trailers);
      }
    } else if (n == 0) {
      us->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  if (us->req_paused && us->pending() < net::kLowWater && us->st) {
    us->req_paused = false;
    us->conn->paused_streams--;
    us->st->down->resume_request(us->st);
  }
  return static_cast<ssize_t>(n);
}

const nghttp2_session_callbacks* callbacks() {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* c;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_on_begin_headers_callback(c, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(c, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(c, on_invalid_frame);
    nghttp2_session_callbacks_set_error_callback2(c, on_error);
    return c;
  }();
  return cbs;
}

void on_timer_cb(uv_timer_t* t) { static_cast<H2Up*>(t->data)->on_timer(); }
void on_timer_closed(uv_handle_t* h) { static_cast<H2Up*>(h->data)->on_closed(); }

// Submits the stream's request on c.
void start_stream(H2Up* c, Stream* st, bool reused) {
  H2UpStream* us = UpStreamPool::take();
  us->conn = c;
  us->st = st;
  us->reused = reused;
  us->progress_ms = c->w->now();
  UpstreamRequest* rq = st->upreq;
  if (!rq->pending_body.empty()) {
    us->body.swap(rq->pending_body);
    rq->pending_body.clear();
  }
  bool has_body = st->req_body != http::Framing::none || !us->body.empty();
  us->body_eof = st->req_complete && st->req_body == http::Framing::none;
  if (has_body && st->req_complete) us->body_eof = true;
  static thread_local std::vector<nghttp2_nv> nva;  // (scratch: nghttp2 copies the fields)
  nva.resize(rq->nv.size() / 4);
  for (size_t i = 0; i < nva.size(); i++) {
    nva[i].name = reinterpret_cast<uint8_t*>(rq->head.data() + rq->nv[i * 4]);
    uint32_t len = rq->nv[i * 4 + 1];
    nva[i].namelen = len & ~H2RequestWriter::kOnce;
    nva[i].value = reinterpret_cast<uint8_t*>(rq->head.data() + rq->nv[i * 4 + 2]);
    nva[i].valuelen = rq->nv[i * 4 + 3];
    // Copied (the stream may be retried elsewhere, or end, before its HEADERS leave); a value used once (the
    // request's ID) stays out of HPACK's table, which it would only churn.
    nva[i].flags = (len & H2RequestWriter::kOnce) ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
  }
  nghttp2_data_provider dp;
  dp.source.ptr = us;
  dp.read_callback = read_body;
  int32_t id = nghttp2_submit_request(c->ng, nullptr, nva.data(), nva.size(), has_body ? &dp : nullptr, us);
  us->id = id;
  st->up = us;
  st->peer->active++;
  if (id < 0) {
    // (nghttp2 refuses only when its stream IDs ran out: this connection takes no more)
    c->goaway = true;
    detach(us);
    free_upstream(us);
    return;
  }
  us->next = c->streams;
  if (c->streams) c->streams->prev = us;
  c->streams = us;
  c->nstreams++;
  c->served++;
  c->idle_since = 0;
  st->up_written = true;
  if (c->w->timing() || st->trace) st->up_sent_us = Worker::clock_us();
}

}  // namespace

// ---- the request, as HTTP/2 ----

void H2RequestWriter::put(std::string_view n, std::string_view v, bool once) {
  size_t at = b_.size();
  b_.append(n).append(v);
  lower_in_place(b_.data() + at, n.size());
  nv_.insert(nv_.end(), {static_cast<uint32_t>(at), static_cast<uint32_t>(n.size()) | (once ? kOnce : 0u),
                         static_cast<uint32_t>(at + n.size()), static_cast<uint32_t>(v.size())});
}

void H2RequestWriter::request_line(std::string_view method, std::string_view target, bool add_slash) {
  put(":method", method);
  put(":scheme", tls_ ? "https" : "http");
  size_t at = b_.size();
  b_.append(":path");
  if (add_slash) b_.push_back('/');
  b_.append(target);
  nv_.insert(nv_.end(),
             {static_cast<uint32_t>(at), 5, static_cast<uint32_t>(at + 5), static_cast<uint32_t>(b_.size() - at - 5)});
  put(":authority", "");  // its value is the Host field's, when it comes (field())
}

void H2RequestWriter::field(std::string_view n, std::string_view v) {
  // Only these names need a look (write_request dropped the request's hop-by-hop fields already; Host and a
  // filter's fields come here): host 4, te 2, upgrade 7, connection and keep-alive 10, content-length 14,
  // proxy-connection 16, transfer-encoding 17.
  switch (n.size()) {
    case 2:
    case 4:
    case 7:
    case 10:
    case 14:
    case 16:
    case 17: break;
    default:
      if (n.size() == 12 && iequals(n, "x-request-id")) return put(n, v, true);
      return put(n, v);
  }
  switch (http::classify(n)) {
    case http::Hdr::host:  // :authority (the fourth pair)
      nv_[14] = static_cast<uint32_t>(b_.size());
      nv_[15] = static_cast<uint32_t>(v.size());
      b_.append(v);
      return;
    // RFC 9113 8.2.2: connection-specific fields are not sent; content-length is written by end_request.
    case http::Hdr::connection:
    case http::Hdr::keep_alive:
    case http::Hdr::proxy_connection:
    case http::Hdr::transfer_encoding:
    case http::Hdr::upgrade:
    case http::Hdr::te:
    case http::Hdr::content_length: return;
    default: put(n, v);
  }
}

void H2RequestWriter::begin_field(std::string_view name) {
  name_at_ = b_.size();
  name_len_ = name.size();
  b_.append(name);
  lower_in_place(b_.data() + name_at_, name_len_);
  value_at_ = b_.size();
}

void H2RequestWriter::end_field() {
  nv_.insert(nv_.end(), {static_cast<uint32_t>(name_at_), static_cast<uint32_t>(name_len_),
                         static_cast<uint32_t>(value_at_), static_cast<uint32_t>(b_.size() - value_at_)});
}

void H2RequestWriter::end_request(http::Framing body, uint64_t length, std::string_view) {
  if (body == http::Framing::length) {
    char d[24];
    size_t n = sizeof d;
    do d[--n] = static_cast<char>('0' + length % 10);
    while (length /= 10);
    put("content-length", std::string_view(d + n, sizeof d - n));
  }
  if (te_trailers) put("te", "trailers");
}

// ---- a connection ----

// Until its own SETTINGS arrive, a connection has the room its peer's others had (100 at first).
bool H2Up::has_room() const {
  if (state == State::closing || goaway) return false;
  return nstreams < peer->h2_concurrency;
}

void H2Up::schedule() { w->defer_h2(this); }

void H2Up::unlink(H2UpStream* s) {
  if (s->conn != this) return;
  if (s->prev)
    s->prev->next = s->next;
  else if (streams == s)
    streams = s->next;
  else
    return;  // not listed
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
  nstreams--;
  if (s->req_paused) {
    s->req_paused = false;
    paused_streams--;
  }
  if (nstreams == 0) idle_since = w->now();
}

void H2Up::send() {
  if (state != State::active || in_recv) {
    want_send = true;
    return;
  }
  want_send = false;
  while (tr->queued() <= net::kHighWater) {
    const uint8_t* p;
    ssize_t n = nghttp2_session_mem_send(ng, &p);
    if (n < 0) {
      PX_INFO("upstream %s: HTTP/2 send: %s", peer->key.c_str(), nghttp2_strerror(static_cast<int>(n)));
      close();
      return;
    }
    if (n == 0) break;
    out.copy(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    if (out.size() >= 64 * 1024 && tr->write(out) != 0) {
      close();
      return;
    }
  }
  if (!out.empty() && tr->write(out) != 0) {
    close();
    return;
  }
  if (!nghttp2_session_want_read(ng) && !nghttp2_session_want_write(ng)) {
    if (!peer_goaway && !own_goaway) {
      // nghttp2 ended the session over what the peer sent (a connection error: a malformed frame, a bad HPACK
      // block); its GOAWAY left. The streams on it fail as the peer's fault.
      PX_WARN("upstream %s: HTTP/2 connection error from the peer; closed with GOAWAY", peer->key.c_str());
      if (WorkerMetrics* m = w->metrics()) m->h2_upstream_errors.inc();
      fail_streams(static_cast<int>(Fail::bad_response));
    }
    close();
  }
}

void H2Up::on_connected() {
  if (state == State::closing) return;
  if (wrap) {
    const uint8_t* proto = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(wrap->ssl(), &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0) {
      PX_WARN("upstream %s: the peer did not agree to HTTP/2 (ALPN)", peer->key.c_str());
      fail_streams(static_cast<int>(Fail::tls));
      close();
      return;
    }
  }
  nodelay();
  state = State::active;
  for (H2UpStream* s = streams; s; s = s->next)
    if (s->st && connect_start_us) s->st->connect_us = static_cast<int32_t>(Worker::clock_us() - connect_start_us);
  tr->read_start();
  send();
}

void H2Up::on_data(const char* data, size_t len) {
  if (state == State::closing) return;
  in_recv = true;
  ssize_t r = nghttp2_session_mem_recv(ng, reinterpret_cast<const uint8_t*>(data), len);
  in_recv = false;
  if (state == State::closing) return;
  if (r < 0) {
    PX_WARN("upstream %s: HTTP/2: %s", peer->key.c_str(), nghttp2_strerror(static_cast<int>(r)));
    // nghttp2 queued a GOAWAY; it leaves, then the connection closes with its streams failed.
    goaway = own_goaway = true;
    send();
    fail_streams(static_cast<int>(Fail::bad_response));
    close();
    return;
  }
  schedule();  // with what the streams this woke send, in one write
}

void H2Up::fail_streams(int why) {
  goaway = true;  // nothing new goes here meanwhile (a retry may be dispatched from below)
  while (H2UpStream* s = streams) {
    unlink(s);
    s->reset = true;  // (the connection is ending)
    if (ng) nghttp2_session_set_stream_user_data(ng, s->id, nullptr);
    if (Stream* st = s->st) {
      if (state == State::connecting && why == static_cast<int>(Fail::closed))
        failed(s, Fail::connect);
      else if (!st->resp_head_sent && st->down->retract(st))
        failed(s, static_cast<Fail>(why));
      else {
        st->end_as(Termination::upstream_closed);
        Downstream* d = st->down;
        detach(s);
        d->reset(st);
      }
    }
    free_upstream(s);
  }
}

void H2Up::on_error(int err) {
  if (state == State::closing) return;
  if (state == State::connecting) {
    std::string why = tls_failure();
    if (!why.empty()) PX_WARN("upstream %s: TLS handshake failed: %s", peer->key.c_str(), why.c_str());
    PX_DEBUG("upstream %s: connect failed: %s", peer->key.c_str(), uv_strerror(err));
    w->peer_failed(peer);
    fail_streams(static_cast<int>(why.empty() ? Fail::connect : Fail::tls));
    close();
    return;
  }
  fail_streams(static_cast<int>(Fail::closed));
  close();
}

void H2Up::on_eof() {
  if (state == State::closing) return;
  fail_streams(static_cast<int>(Fail::closed));
  close();
}

void H2Up::on_drained() {
  if (state != State::active) return;
  send();
  if (!paused_streams) return;
  for (H2UpStream* s = streams; s; s = s->next)
    if (s->req_paused && s->st && s->pending() < net::kLowWater) {
      s->req_paused = false;
      paused_streams--;
      s->st->down->resume_request(s->st);
    }
}

void H2Up::close() {
  if (state == State::closing) return;
  bool was_connecting = state == State::connecting;
  state = State::closing;
  goaway = true;
  if (prev)
    prev->next = next;
  else if (peer->h2_conns == this)
    peer->h2_conns = next;
  if (next) next->prev = prev;
  prev = next = nullptr;
  if (streams) fail_streams(static_cast<int>(was_connecting ? Fail::connect : Fail::closed));
  tr->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_timer_closed);
}

void H2Up::on_closed() {
  if (--pending_closes == 0) {
    w->undefer_h2(this);
    if (ng) nghttp2_session_del(ng);
    w->upconns.dec();
    delete this;
  }
}

void H2Up::on_timer() {
  if (state == State::closing) return;
  uint64_t now = w->now();
  if (state == State::connecting) {
    if (streams && streams->st && now - streams->progress_ms >= streams->st->route->connect_timeout_ms) {
      w->peer_failed(peer);
      fail_streams(static_cast<int>(Fail::connect_timeout));
      close();
      return;
    }
  } else if (!streams) {
    if (idle_since && (now - idle_since >= w->cfg().upstream_keepalive_timeout_ms || w->draining())) {
      own_goaway = true;
      nghttp2_session_terminate_session(ng, NGHTTP2_NO_ERROR);
      send();
      close();
      return;
    }
  } else {
    // A stream waiting longer than its route's read timeout for the next piece of its response.
    for (H2UpStream* s = streams; s;) {
      H2UpStream* nx = s->next;
      Stream* st = s->st;
      if (st && !s->resp_end && st->route->read_timeout_ms && now - s->progress_ms >= st->route->read_timeout_ms) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        s->reset = true;
        bool shut = s->pending() > 0 && (nghttp2_session_get_stream_remote_window_size(ng, s->id) <= 0 ||
                                         nghttp2_session_get_remote_window_size(ng) <= 0);
        if (shut && !st->resp_head_sent && st->down->retract(st)) {
          // The request body waited all this time for a window the peer never opened: the peer's fault.
          PX_WARN("upstream %s: stream %d: the peer never opened its flow-control window", peer->key.c_str(), s->id);
          if (WorkerMetrics* m = w->metrics()) m->h2_upstream_errors.inc();
          st->end_as(Termination::upstream_bad_response);
          Downstream* d = st->down;
          detach(s);
          reply_text(st, 502, "upstream never opened its flow-control window", !st->req_complete);
          st->req_complete = true;
          d->progress(st);
        } else if (!st->resp_head_sent && st->down->retract(st)) {
          failed(s, Fail::read_timeout);
        } else {
          st->end_as(Termination::upstream_timeout);
          Downstream* d = st->down;
          detach(s);
          d->reset(st);
        }
      }
      s = nx;
    }
    send();
  }
  if (state != State::closing) uv_timer_start(&timer, on_timer_cb, kTickMs, 0);
}

// ---- a stream's Upstream ----

void H2UpStream::send_body(Stream* s, const char* data, size_t len) {
  body.append(data, len);
  if (pending() > net::kHighWater && !req_paused) {
    req_paused = true;
    conn->paused_streams++;
    s->down->pause_request(s);
  }
}

void H2UpStream::send_end(Stream*) { body_eof = true; }

void H2UpStream::send_trailers(Stream*, const Fields& f) { h2_trailer_fields(f, &req_trailers); }

void H2UpStream::flush(Stream*) {
  if (id < 0 || !conn->ng) return;
  if (deferred && (pending() > 0 || body_eof)) {
    deferred = false;
    nghttp2_session_resume_data(conn->ng, id);
  }
  conn->schedule();
}

void H2UpStream::abort(Stream*) {
  detach(this);
  if (conn->state != H2Up::State::closing && id >= 0 && !reset) {
    reset = true;
    nghttp2_submit_rst_stream(conn->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    conn->schedule();
  }
}

void H2UpStream::pause_response(Stream*) { paused = true; }

void H2UpStream::resume_response(Stream*) {
  if (!paused) return;
  paused = false;
  if (unconsumed && conn->state != H2Up::State::closing) {
    nghttp2_session_consume_stream(conn->ng, id, unconsumed);
    unconsumed = 0;
    conn->schedule();
  }
}

// HTTP/2 peers never answer 101 (bad_response): nothing is tunnelled here.
void H2UpStream::tunnel_send(Stream*, const char*, size_t) {}
void H2UpStream::tunnel_end(Stream*) {}

// ---- binding ----

// `fresh` (a retry after a failed connection, or of a refused stream): the connection that failed is closing or
// going away, so any other with room will do.
Bind bind_h2(Stream* st, PeerState* p, bool fresh) {
  Worker* w = st->w;
  if (st->upgrade) return Bind::no_upgrade;  // (an HTTP/2 peer has no Upgrade; RFC 8441 to it is not built)
  for (H2Up* c = p->h2_conns; c; c = c->next)
    if (c->has_room()) {
      start_stream(c, st, c->served > 0);
      if (!st->up) continue;
      if (st->trace) [[unlikely]]
        trace_upstream_note(st, "HTTP/2 stream " + std::to_string(static_cast<H2UpStream*>(st->up)->id) +
                                    " on a connection with room (" + std::to_string(c->nstreams - 1) +
                                    " other streams in flight)");
      c->schedule();
      return Bind::bound;
    }
  SSL* ssl = nullptr;
  if (p->tls) {
    if (!(ssl = w->new_upstream_ssl(p))) return Bind::no_tls;
    SSL_set_alpn_protos(ssl, reinterpret_cast<const uint8_t*>("\x02h2"), 3);
  }
  auto* c = new H2Up();
  c->w = w;
  c->peer = p;
  open_upstream(w, c, c, ssl, &c->timer);
  c->timer.data = c;
  c->pending_closes = 2;
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // response DATA is acknowledged as the client side takes it
  nghttp2_option_set_peer_max_concurrent_streams(opt, p->h2_concurrency);
  nghttp2_session_client_new3(&c->ng, callbacks(), c, opt, &kPoolMem);
  nghttp2_option_del(opt);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(w->resp_limits.max_head)},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},  // (RFC 9218: no priority tree kept)
  };
  nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  int r = c->connect(reinterpret_cast<const sockaddr*>(&p->addr));
  // Listed first: the next streams find it (it has room until its SETTINGS say otherwise).
  c->next = p->h2_conns;
  if (p->h2_conns) p->h2_conns->prev = c;
  p->h2_conns = c;
  if (r != 0) {
    PX_DEBUG("upstream %s: connect: %s", p->key.c_str(), uv_strerror(r));
    c->close();
    return Bind::connect_failed;
  }
  if (w->timing() || st->trace) c->connect_start_us = Worker::clock_us();
  start_stream(c, st, false);
  if (st->trace) [[unlikely]]
    trace_upstream_note(st, "HTTP/2 stream 1 on a new connection (" +
                                std::string(fresh ? "a retry, and none had room" : "none had room") + ")");
  uv_timer_start(&c->timer, on_timer_cb, std::min<uint64_t>(kTickMs, st->route->connect_timeout_ms), 0);
  return Bind::bound;
}

void release_h2_upstreams() { UpStreamPool::drain(); }

void h2_close_idle(PeerState* p, bool all) {
  for (H2Up* c = p->h2_conns; c;) {
    H2Up* nx = c->next;
    if (all || !c->streams) {
      if (c->state == H2Up::State::active) {
        c->own_goaway = true;
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        c->send();
      }
      c->close();
    } else {
      c->goaway = true;  // closed once its streams end (on_timer)
    }
    c = nx;
  }
}

}  // namespace px::proxy
