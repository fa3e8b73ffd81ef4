// An upstream connection (UpConn): the HTTP/1 client side, the stream's
// Upstream (upstream.h). Binding a stream to an idle connection or a new one,
// connecting, its timer, the request head and body framing, reading the
// response through the HTTP/1 parser and handing it to the stream, keep-alive
// reuse, and tunnelling after a 101.
#include "upstream/upconn.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "stream/cache.h"
#include "stream/stream.h"
#include "upstream/h2up.h"
#include "upstream/retry.h"
#include "upstream/upstream.h"

namespace px::proxy {

namespace {
void on_up_timer(uv_timer_t* t) { static_cast<UpConn*>(t->data)->on_timer(); }
void on_timer_closed(uv_handle_t* h) { static_cast<UpConn*>(h->data)->on_closed(); }

// The request head (and any body so far) goes out in one write: inlined into
// bind_http1() and on_connected(), the path of every request on a reused connection.
[[gnu::always_inline]] inline void send_request(UpConn* c) {
  Stream* st = c->stream;
  UpstreamRequest* rq = st->upreq;
  c->out.ref(rq->head);
  if (!rq->pending_body.empty()) {
    c->out.ref(rq->pending_body);
    st->body_bytes_sent = true;
  }
  st->up_written = true;
  if (c->w->timing() || st->trace) st->up_sent_us = Worker::clock_us();
  int r = c->tr->write(c->out);
  rq->pending_body.clear();
  if (r != 0) {
    // Will surface as a read error / EOF; nothing more to do here.
    PX_DEBUG("upstream %s: write failed: %s", c->peer->key.c_str(), uv_strerror(r));
  }
  c->start_reading();
  c->arm_timer(st->route->read_timeout_ms);
}
}  // namespace

void UpConn::start_reading() {
  if (eof || state == State::closing) return;
  tr->read_start();
}

void UpConn::on_closed() {
  if (--pending_closes == 0) {
    w->upconns.dec();
    delete this;
  }
}

// The timer is lazy: every request moves the deadline (later, as a rule), and
// that is a store; the uv timer is re-armed only when it fires before the
// deadline, or when the deadline moves earlier than it.
void UpConn::arm_timer(uint64_t ms) {
  if (ms == 0) {
    deadline = 0;
    return;
  }
  deadline = uv_now(w->loop()) + ms;
  if (armed_for == 0 || deadline < armed_for) {
    uv_timer_start(&timer, on_up_timer, ms, 0);
    armed_for = deadline;
  }
}

void UpConn::on_timer() {
  armed_for = 0;
  if (deadline == 0 || state == State::closing) return;
  uint64_t now = uv_now(w->loop());
  if (now < deadline) {
    uv_timer_start(&timer, on_up_timer, deadline - now, 0);
    armed_for = deadline;
    return;
  }
  deadline = 0;
  on_timeout();
}

void UpConn::close() {
  if (state == State::closing) return;
  if (state == State::idle) w->unpark(this);
  state = State::closing;
  unbind();
  tr->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_timer_closed);
}

void UpConn::on_timeout() {
  if (state == State::idle) {
    close();
    return;
  }
  Stream* st = stream;
  if (!st) {
    close();
    return;
  }
  if (st->tunnel) {
    // An idle tunnel: end it.
    st->down->reset(st);
    return;
  }
  failed(state == State::connecting ? Fail::connect_timeout : Fail::read_timeout);
}

void UpConn::on_connected() {
  if (state == State::closing) return;
  Stream* st = stream;
  nodelay();
  state = State::active;
  if (!st) {
    // The client left while we were connecting: keep the connection for the next one.
    w->park_idle(this);
    return;
  }
  if (connect_start_us) st->connect_us = static_cast<int32_t>(Worker::clock_us() - connect_start_us);
  send_request(this);
}

void UpConn::on_error(int err) {
  if (state == State::closing) return;
  if (state == State::connecting) {
    std::string why = tls_failure();
    if (!why.empty()) {
      // The TCP connection was made; TLS was not.
      PX_WARN("upstream %s: TLS handshake failed: %s", peer->key.c_str(), why.c_str());
      if (stream) {
        failed(Fail::tls);
        return;
      }
      close();
      return;
    }
    if (stream) {
      PX_DEBUG("upstream %s: connect failed: %s", peer->key.c_str(), uv_strerror(err));
      failed(Fail::connect);
    } else {
      close();
    }
    return;
  }
  ended(true);
}

void UpConn::on_eof() { ended(false); }

void UpConn::on_drained() {
  if (state == State::closing) return;
  if (stream) stream->down->resume_request(stream);
}

void UpConn::ended(bool) {
  if (state == State::closing) return;
  if (state == State::idle || !stream) {
    // An idle keep-alive connection closed by the peer: drop it.
    close();
    return;
  }
  Stream* st = stream;
  Downstream* d = st->down;
  eof = true;
  if (st->tunnel) {
    d->send_end(st);  // the upstream ended the tunnel
    close();
    return;
  }
  if (parser.needs_eof() && st->resp_head_sent && !st->resp_complete) {
    // A body delimited by the end of the connection.
    parser.finish();
    if (!d->flush(st)) return;
    if (st->up == this) close();
    d->progress(st);
    return;
  }
  failed(Fail::closed);
}

void UpConn::on_data(const char* data, size_t len) {
  if (state == State::closing) return;
  if (state == State::idle || !stream) {
    // An idle keep-alive connection that sent junk: drop it.
    close();
    return;
  }
  Stream* st = stream;
  Downstream* d = st->down;
  if (st->ttfb_us < 0 && st->up_sent_us) st->ttfb_us = static_cast<int32_t>(Worker::clock_us() - st->up_sent_us);
  got_bytes = true;
  arm_timer(st->route->read_timeout_ms);
  if (st->tunnel) {
    d->send_body(st, data, len);
    d->flush(st);
    return;
  }
  http::Parsed err = parser.execute(data, len);
  bool reusable = true;
  if (err == http::Parsed::paused) {
    if (parser.error_pos() != data + len) reusable = false;  // bytes after the response: do not trust this connection
  } else if (err == http::Parsed::upgrade) {
    // 101 Switching Protocols: what follows belongs to the tunnel.
    const char* pos = parser.error_pos();
    st->tunnel = true;
    d->open_tunnel(st, pos, static_cast<size_t>(data + len - pos));
    return;
  } else if (err != http::Parsed::ok) {
    if (st->head_refused) {
      // A response filter failed, or answered instead, before the head left: the upstream's response is
      // dropped with its connection, and the client gets the filter's answer (or a 500).
      d->retract(st);
      close();
      stream_answer_instead(st);
      st->req_complete = true;
      d->progress(st);
      return;
    }
    PX_WARN("upstream %s: bad response: %s", peer->key.c_str(), parser.error_reason());
    if (d->retract(st)) {
      // Nothing of the response has left yet: the client gets a clean 502 instead.
      failed(Fail::bad_response);
    } else {
      st->end_as(Termination::upstream_bad_response);
      d->reset(st);
    }
    return;
  }
  if (!st->resp_complete) {
    d->flush(st);
    return;
  }
  // The response is complete: the connection goes back to the pool first, then the client gets it.
  w->peer_ok(peer);
  requests++;
  bool keep =
      reusable && st->resp.keep_alive && st->req_complete && !parser.needs_eof() && !w->draining() && !st->upgrade;
  unbind();
  if (keep) {
    parser.resume();
    w->park_idle(this);
  } else {
    close();
  }
  if (!st->req_complete) {
    // The upstream answered before the request body was all here: stop there.
    d->abandon_request(st);
    st->req_complete = true;
  }
  d->progress(st);
}

int UpConn::on_head(http::Head& h) {
  Stream* st = stream;
  if (h.status < 200 && h.status != 101) {
    st->interim = true;  // 1xx: dropped; px answered Expect itself
    return 0;
  }
  st->interim = false;
  if (h.status == 101 && !st->upgrade) return parser.set_error(502, "101 without an Upgrade request");
  // An HTTP/2 client's WebSocket (RFC 8441) reads any 2xx as the tunnel opened: without the 101 there is none.
  if (st->upgrade && st->req.major == 2 && h.status / 100 == 2)
    return parser.set_error(502, "the upstream did not switch protocols");
  if (!stream_response_head(st, h)) return parser.set_error(500, "a response filter failed or answered");
  return st->head_request ? 1 : 0;
}

int UpConn::on_body(const char* data, size_t len) {
  Stream* st = stream;
  if (st->interim) return 0;
  stream_response_body(st, data, len);
  return 0;
}

int UpConn::on_complete() {
  Stream* st = stream;
  if (st->interim) {
    st->interim = false;
    return 0;  // keep parsing: the final response follows
  }
  if (st->status == 101) {
    st->resp_complete = true;
    return 0;  // the parser stops with Parsed::upgrade
  }
  stream_response_end(st);
  return kPause;
}

// ---- the request, as HTTP/1 ----

void clear_upstream_request(Stream* st) {
  UpstreamRequest* r = st->upreq;
  if (r->pending_body.capacity() > 256 * 1024 || r->head.capacity() > 64 * 1024) {
    delete r;  // after a spike: not kept
    st->upreq = nullptr;
    return;
  }
  r->head.clear();
  r->pending_body.clear();
}

void free_upstream_request(UpstreamRequest* r) { delete r; }

namespace {
// The request's fields as the upstream gets them, through W: http::HeadWriter (HTTP/1 text) or H2RequestWriter.
template <class W>
void write_request(Stream* st, W& wr) {
  const http::Head& h = st->req;
  std::string_view path = st->abs_path.empty() ? h.url() : st->abs_path;
  bool need_slash;
  std::string_view sent = route::Snapshot::strip(*st->route, path, &need_slash);
  wr.request_line(h.method_name(), sent, need_slash);
  const Downstream* d = st->down;
  bool trusted = d->client->trusted_peer;
  const std::vector<lua::HeaderEdit>* edits =
      st->view.fs && !st->view.fs->req_edits.empty() ? &st->view.fs->req_edits : nullptr;
  auto edited = [&](std::string_view n) {
    if (edits)
      for (const auto& e : *edits)
        if (iequals(e.name, n)) return true;
    return false;
  };
  std::string_view host;
  std::string xff;
  std::string_view xfproto, xfhost;
  for (size_t i = 0; i < h.headers.size(); i++) {
    http::Hdr kind = h.headers[i].kind;
    if (http::hop_by_hop(kind)) continue;
    switch (kind) {
      case http::Hdr::x_forwarded_for:
        if (trusted) {
          if (!xff.empty()) xff.append(", ");
          xff.append(h.value(i));
        }
        continue;
      case http::Hdr::x_forwarded_proto:
        if (trusted) xfproto = h.value(i);
        continue;
      case http::Hdr::x_forwarded_host:
        if (trusted) xfhost = h.value(i);
        continue;
      case http::Hdr::x_px_trace: continue;  // pxctl trace's token stays here
      case http::Hdr::x_request_id:          // the stream's own is written below (stream_request_id)
        if (trusted && st->request_id_len == 0) adopt_request_id(st, h.value(i));
        continue;
      default: break;
    }
    std::string_view n = h.name(i);
    if (edits && edited(n)) continue;  // replaced below by the filters' version
    if (st->cache && cache_drops_field(st, n)) [[unlikely]]
      continue;
    if (static_cast<int>(i) == h.host_index) {
      host = h.value(i);
      if (st->abs_path.empty()) wr.field("Host", host);
      continue;
    }
    if (h.listed_in_connection(n)) continue;
    wr.field(n, h.value(i));
  }
  if (edits)
    lua::each_edited(
        h, *edits, [](void* o, std::string_view n, std::string_view v) { static_cast<W*>(o)->field(n, v); }, &wr);
  if (st->cache) [[unlikely]]
    cache_add_fields(st, wr);  // a revalidation's validators
  if (edits && edited("host")) {
    // A filter set the Host sent upstream.
  } else if (!st->abs_path.empty()) {
    // Absolute-form target: its authority is the host (RFC 9112 3.2.2).
    std::string_view target = h.url();
    std::string_view rest = target.substr(target[4] == ':' ? 7 : 8);
    host = rest.substr(0, rest.find_first_of("/?"));
    wr.field("Host", host);
  } else if (host.empty()) {
    // HTTP/1.0 without Host: name the peer.
    wr.field("Host", st->route->pool.peers.empty() ? std::string_view("localhost")
                                                   : std::string_view(st->route->pool.peers[0].key));
  }
  if (!(edits && edited("x-request-id"))) {  // a filter that set one has the last word
    if (st->request_id_len == 0) {           // no valid one from a trusted proxy above: px's own
      st->w->new_request_id(st->request_id);
      st->request_id_len = 32;
    }
    wr.field("X-Request-ID", std::string_view(st->request_id, st->request_id_len));
  }
  wr.begin_field("X-Forwarded-For");
  if (!xff.empty()) {
    wr.append(xff);
    wr.append(", ");
  }
  if (st->peer_text_len == 0 || st->peer_text_of.b != d->client->peer_ip.b) {
    // Formatted once per client address (a keep-alive connection's streams share it).
    st->peer_text_of = d->client->peer_ip;
    st->peer_text_len = static_cast<uint8_t>(d->client->peer_ip.format(st->peer_text));
  }
  wr.append(std::string_view(st->peer_text, st->peer_text_len));
  wr.end_field();
  wr.field("X-Forwarded-Proto", !xfproto.empty() ? xfproto
                                : d->client->tls ? std::string_view("https")
                                                 : std::string_view("http"));
  wr.field("X-Forwarded-Host", xfhost.empty() ? host : xfhost);
  http::Framing framing = st->req_body == http::Framing::chunked ? http::Framing::chunked
                          : h.has_content_length                 ? http::Framing::length
                                                                 : http::Framing::none;
  wr.end_request(framing, h.content_length, st->upgrade ? h.get(http::Hdr::upgrade) : std::string_view());
}
}  // namespace

void write_request_head(Stream* st) {
  if (!st->upreq) st->upreq = new UpstreamRequest();
  UpstreamRequest* rq = st->upreq;
  rq->head.clear();
  const route::Pool& pool = st->route->pool;
  if (!pool.peers.empty() && pool.peers[0].h2) {
    rq->nv.clear();
    H2RequestWriter wr(rq->head, rq->nv, pool.peers[0].tls);
    std::string_view te = st->req.get(http::Hdr::te);
    wr.te_trailers = te.find("trailers") != std::string_view::npos;
    write_request(st, wr);
    return;
  }
  http::HeadWriter wr(rq->head);
  write_request(st, wr);
}

// ---- binding a stream, and its exchange ----

void UpConn::unbind() {
  Stream* st = stream;
  if (!st) return;
  stream = nullptr;
  st->up = nullptr;
  if (st->peer) st->peer->active--;
}

void UpConn::failed(Fail why) { upstream_failed(stream, why, reused, got_bytes); }

void open_upstream(Worker* w, http::ClientConn* c, net::TransportUser* user, SSL* ssl, uv_timer_t* timer) {
  w->upconns.inc();
  if (auto t = w->new_socket())
    c->open_tcp(std::move(t), user);
  else
    c->open_tcp(w->loop(), user);
  if (ssl) c->start_tls(ssl, user);
  uv_timer_init(w->loop(), timer);
}

namespace {
// A new connection, out of line: the constructor's set-up stays off the path of a reused one.
[[gnu::noinline]] Bind bind_new(Stream* st, PeerState* p) {
  Worker* w = st->w;
  SSL* ssl = nullptr;
  if (p->tls && !(ssl = w->new_upstream_ssl(p))) return Bind::no_tls;
  auto* c = new UpConn();
  c->w = w;
  c->peer = p;
  open_upstream(w, c, c, ssl, &c->timer);
  c->timer.data = c;
  c->pending_closes = 2;
  c->parser.init(http::Kind::response, c, &w->resp_limits);
  c->parser.attach(&st->resp);
  int r = c->connect(reinterpret_cast<const sockaddr*>(&p->addr));
  if (r != 0) {
    PX_DEBUG("upstream %s: connect: %s", p->key.c_str(), uv_strerror(r));
    c->state = UpConn::State::active;
    c->close();
    return Bind::connect_failed;
  }
  c->stream = st;
  st->up = c;
  p->active++;
  if (w->timing() || st->trace) c->connect_start_us = Worker::clock_us();
  c->arm_timer(st->route->connect_timeout_ms);
  return Bind::bound;
}
}  // namespace

Bind bind_http1(Stream* st, PeerState* p, bool fresh) {
  UpConn* c = fresh ? nullptr : st->w->take_idle(p);
  if (!c) return bind_new(st, p);
  c->stream = st;
  st->up = c;
  p->active++;
  c->reused = true;
  c->got_bytes = false;
  c->state = UpConn::State::active;
  c->parser.attach(&st->resp);
  send_request(c);
  return Bind::bound;
}

void UpConn::send_body(Stream* st, const char* data, size_t len) {
  bool direct = st->up_written;
  if (st->req_body == http::Framing::chunked) {
    if (direct)
      http::write_chunk(out, data, len);
    else
      http::append_chunk(st->upreq->pending_body, data, len);
  } else if (direct) {
    out.ref(data, len);
  } else {
    st->upreq->pending_body.append(data, len);
  }
  if (direct) st->body_bytes_sent = true;
  if ((!direct && st->upreq->pending_body.size() > net::kHighWater) || tr->congested()) st->down->pause_request(st);
}

void UpConn::send_trailers(Stream* st, const Fields& trailers) {
  if (st->req_body != http::Framing::chunked) return;  // a length-framed request cannot carry them
  if (st->up_written)
    http::write_last_chunk(out, trailers);
  else
    http::append_last_chunk(st->upreq->pending_body, trailers);
  trailers_sent = true;
}

void UpConn::send_end(Stream* st) {
  if (trailers_sent) {
    trailers_sent = false;
    return;
  }
  if (st->req_body != http::Framing::chunked) return;
  if (st->up_written)
    http::write_last_chunk(out);
  else
    st->upreq->pending_body.append(http::kLastChunk);
}

void UpConn::flush(Stream* st) {
  if (out.empty() || state != State::active) return;
  int r = tr->write(out);
  if (r != 0) PX_DEBUG("upstream %s: write failed: %s", peer->key.c_str(), uv_strerror(r));
  if (tr->congested()) st->down->pause_request(st);
}

void UpConn::abort(Stream*) { close(); }

void UpConn::pause_response(Stream*) {
  if (!tr->reading()) return;
  tr->read_stop();
  bp_paused = true;
}

void UpConn::resume_response(Stream*) {
  if (!bp_paused) return;
  bp_paused = false;
  start_reading();
}

void UpConn::tunnel_send(Stream* st, const char* data, size_t len) {
  out.ref(data, len);
  tr->write(out);
  arm_timer(st->route->read_timeout_ms);
  if (tr->congested()) st->down->pause_request(st);
}

// Half-close towards the upstream once what the client sent is written.
void UpConn::tunnel_end(Stream*) { tr->shutdown(); }

}  // namespace px::proxy
