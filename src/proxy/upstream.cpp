#include "proxy/upstream.h"

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "http/h1.h"
#include "proxy/retry.h"
#include "proxy/worker.h"

namespace px::proxy {

namespace {
void on_up_timer(uv_timer_t* t) { static_cast<UpConn*>(t->data)->on_timer(); }
void on_timer_closed(uv_handle_t* h) { static_cast<UpConn*>(h->data)->on_closed(); }

bool idempotent(uint8_t method) {
  switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_TRACE:
      return true;
    default:
      return false;
  }
}

void detach(Stream* st) {
  UpConn* c = st->up;
  if (!c) return;
  c->stream = nullptr;
  st->up = nullptr;
  if (st->peer) st->peer->active--;
}

void send_request(Stream* st, UpConn* c) {
  c->out.ref(st->up_head);
  if (!st->pending_body.empty()) {
    c->out.ref(st->pending_body);
    st->body_bytes_sent = true;
  }
  st->up_written = true;
  int r = c->tr->write(c->out);
  st->pending_body.clear();
  if (r != 0) {
    // Will surface as a read error / EOF; nothing more to do here.
    PX_DEBUG("upstream %s: write failed: %s", c->peer->key.c_str(), uv_strerror(r));
  }
  c->start_reading();
  c->arm_timer(st->route->read_timeout_ms);
}

void upstream_failed(Stream* st, UpConn* c, Fail why);
}  // namespace

// ---- UpConn ----

void UpConn::start_reading() {
  if (eof || state == State::closing) return;
  tr->read_start();
}

void UpConn::on_closed() {
  if (--pending_closes == 0) {
    w->upconns--;
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
  if (stream) detach(stream);
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
    st->session->close();
    return;
  }
  upstream_failed(st, this, state == State::connecting ? Fail::connect_timeout : Fail::read_timeout);
}

void UpConn::on_connected() {
  if (state == State::closing) return;
  Stream* st = stream;
  tcp.nodelay();
  state = State::active;
  if (!st) {
    // The client left while we were connecting: keep the connection for the next one.
    w->park_idle(this);
    return;
  }
  send_request(st, this);
}

void UpConn::on_error(int err) {
  if (state == State::closing) return;
  if (state == State::connecting) {
    if (stream) {
      PX_DEBUG("upstream %s: connect failed: %s", peer->key.c_str(), uv_strerror(err));
      upstream_failed(stream, this, Fail::connect);
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
  Stream* st = stream;
  if (st && st->session->bp_paused) {
    st->session->bp_paused = false;
    st->session->update_reading();
  }
}

void UpConn::ended(bool) {
  if (state == State::closing) return;
  if (state == State::idle || !stream) {
    // An idle keep-alive connection closed by the peer: drop it.
    close();
    return;
  }
  Stream* st = stream;
  Session* s = st->session;
  eof = true;
  if (st->tunnel) {
    // The upstream ended the tunnel: pass the close on once the client has everything.
    s->close_when_written();
    close();
    return;
  }
  if (parser.needs_eof() && st->resp_head_sent && !st->resp_complete) {
    // A body delimited by the end of the connection.
    parser.finish();
    s->flush(st);
    if (st->up == this) {
      detach(st);
      close();
    }
    s->after_event();
    return;
  }
  upstream_failed(st, this, Fail::closed);
}

void UpConn::on_data(const char* data, size_t len) {
  if (state == State::closing) return;
  if (state == State::idle || !stream) {
    // An idle keep-alive connection that sent junk: drop it.
    close();
    return;
  }
  Stream* st = stream;
  Session* s = st->session;
  auto n = static_cast<ssize_t>(len);
  got_bytes = true;
  arm_timer(st->route->read_timeout_ms);
  if (st->tunnel) {
    st->out.ref(data, static_cast<size_t>(n));
    s->flush(st);
    return;
  }
  bool head_was_sent = st->resp_head_sent;
  llhttp_errno_t err = parser.execute(data, static_cast<size_t>(n));
  bool reusable = true;
  if (err == HPE_PAUSED) {
    if (parser.error_pos() != data + n) reusable = false;  // bytes after the response: do not trust this connection
  } else if (err == HPE_PAUSED_UPGRADE) {
    // 101 Switching Protocols: what follows belongs to the tunnel.
    const char* pos = parser.error_pos();
    st->tunnel = true;
    st->out.ref(pos, static_cast<size_t>(data + n - pos));
    s->flush(st);
    if (s->closing) return;
    if (!s->leftover.empty()) {
      out.copy(s->leftover.view());
      s->leftover.clear();
      tr->write(out);
    }
    s->want_read = true;
    s->set_timeout(Timeout::none);
    s->update_reading();
    return;
  } else if (err != HPE_OK) {
    if (st->filter_failed) {
      // A response filter failed before the head left: the client gets a 500, the connection is dropped.
      st->out.clear();
      st->resp_head_sent = false;
      detach(st);
      close();
      s->respond_local(500, "filter error", !st->req_complete);
      st->req_complete = true;
      s->flush(st);
      s->after_event();
      return;
    }
    PX_WARN("upstream %s: bad response: %s", peer->key.c_str(), parser.error_reason());
    if (!head_was_sent) {
      // The head has not left yet: the client gets a clean 502 instead.
      st->out.clear();
      st->resp_head_sent = false;
      st->resp_body = BodyMode::none;
      upstream_failed(st, this, Fail::bad_response);
    } else {
      st->end_as(Termination::upstream_bad_response);
      s->flush(st);
      s->close();
    }
    return;
  }
  s->flush(st);
  if (s->closing) return;
  if (st->resp_complete) {
    w->peer_ok(peer);
    requests++;
    bool keep = reusable && st->resp.keep_alive && st->req_complete && !parser.needs_eof() && !w->draining() &&
                !st->upgrade;
    detach(st);
    if (keep) {
      parser.resume();
      w->park_idle(this);
    } else {
      close();
    }
    if (!st->req_complete) {
      // The upstream answered before the request body was all here: stop there.
      s->close_after = true;
      st->req_complete = true;
    }
    s->after_event();
  }
}

int UpConn::on_head(http::Head& h) {
  Stream* st = stream;
  Session* s = st->session;
  if (h.status < 200 && h.status != 101) {
    st->interim = true;  // 1xx: dropped; px answered Expect itself
    return 0;
  }
  st->interim = false;
  if (h.status == 101 && !st->upgrade) return parser.set_error(502, "101 without an Upgrade request");
  if (h.status != 101 && st->upgrade) s->close_after = true;  // the parser stays in upgrade mode: no reuse
  const http::Head& rq = st->req;
  bool client11 = rq.minor == 1;
  bool no_body = st->head_request || h.status == 204 || h.status == 304 || h.status == 101;
  if (no_body) st->resp_body = BodyMode::none;
  else if (h.chunked) st->resp_body = client11 ? BodyMode::chunked : BodyMode::eof;
  else if (h.has_content_length) st->resp_body = BodyMode::length;
  else st->resp_body = client11 ? BodyMode::chunked : BodyMode::eof;
  if (st->resp_body == BodyMode::eof) s->close_after = true;
  if (s->w->draining()) s->close_after = true;
  if (!client11 && !rq.keep_alive) s->close_after = true;

  // Phase 5, response: filters may change the status and headers before the head leaves.
  int status = h.status;
  const std::vector<lua::HeaderEdit>* edits = nullptr;
  if ((st->mask & (1 << lua::kResponse)) && h.status != 101) {
    if (run_phase(s->w->engine(), lua::kResponse, static_cast<int>(st->route->index), st, &h, h.status) ==
        lua::Verdict::failed) {
      st->filter_failed = true;
      st->end_as(Termination::filter_error);
      return parser.set_error(500, "a response filter failed");
    }
    if (st->view.fs->new_status) status = st->view.fs->new_status;
    if (!st->view.fs->resp_edits.empty()) edits = &st->view.fs->resp_edits;
  }
  std::string& o = st->out.begin_scratch();
  http::HeadWriter wr(o);
  wr.status_line(status);
  for (size_t i = 0; i < h.headers.size(); i++) {
    if (!http::keep_response_field(h.headers[i].kind, h.status, no_body)) continue;
    std::string_view n = h.name(i);
    if (edits) {
      bool touched = false;
      for (const auto& e : *edits) touched = touched || iequals(e.name, n);
      if (touched) continue;  // written below, as the filters left it
    }
    if (h.listed_in_connection(n) && !(h.status == 101 && h.headers[i].kind == http::Hdr::upgrade)) continue;
    wr.field(n, h.value(i));
  }
  if (edits) lua::append_edited(wr, h, *edits);
  http::Framing framing = st->resp_body == BodyMode::length    ? http::Framing::length
                          : st->resp_body == BodyMode::chunked ? http::Framing::chunked
                                                               : http::Framing::none;
  wr.end_response(framing, h.content_length, h.status == 101, s->close_after, !client11);
  st->out.end_scratch();
  st->resp_head_sent = true;
  st->status = static_cast<uint16_t>(status);
  return st->head_request ? 1 : 0;
}

int UpConn::on_body(const char* data, size_t len) {
  Stream* st = stream;
  if (st->interim) return 0;
  if (st->resp_body == BodyMode::chunked) http::write_chunk(st->out, data, len);
  else st->out.ref(data, len);
  return 0;
}

int UpConn::on_complete() {
  Stream* st = stream;
  if (st->interim) {
    st->interim = false;
    return 0;  // keep parsing: the final response follows
  }
  if (st->resp_body == BodyMode::chunked) http::write_last_chunk(st->out);
  st->resp_complete = true;
  if (st->status == 101) return 0;  // llhttp stops with HPE_PAUSED_UPGRADE
  return HPE_PAUSED;
}

// ---- stream helpers ----

bool dispatch(Stream* st, bool answer_if_none, PeerState* fresh) {
  Session* s = st->session;
  Worker* w = s->w;
  while (true) {
    PeerState* p = fresh;
    if (!p && st->view.fs && st->view.fs->peer >= 0 && st->attempts == 0) {
      // upstream_peer chose one: use it if it can serve, else fall back to the balancer.
      size_t i = static_cast<size_t>(st->view.fs->peer);
      if (i < st->pool->peers.size() && st->pool->peers[i]->usable(w->now())) {
        p = st->pool->peers[i];
        st->tried |= uint64_t(1) << i;
      }
    }
    if (!p) p = w->choose_peer(st);
    if (!p) {
      if (answer_if_none) st->end_as(Termination::no_upstream);
      if (answer_if_none)
        s->respond_local(502, "no upstream peer available", st->req_body != BodyMode::none && !st->req_complete);
      return false;
    }
    st->peer = p;
    st->attempts++;
    UpConn* c = fresh ? nullptr : w->take_idle(p);
    if (c) {
      c->stream = st;
      st->up = c;
      p->active++;
      c->reused = true;
      c->got_bytes = false;
      c->state = UpConn::State::active;
      c->parser.attach(&st->resp);
      send_request(st, c);
      return true;
    }
    c = new UpConn();
    c->w = w;
    c->peer = p;
    w->upconns++;
    c->tcp.init(w->loop());
    c->tcp.set_user(c);
    uv_timer_init(w->loop(), &c->timer);
    c->timer.data = c;
    c->pending_closes = 2;
    c->parser.init(HTTP_RESPONSE, c, &w->resp_limits);
    c->parser.attach(&st->resp);
    int r = c->tcp.connect(reinterpret_cast<const sockaddr*>(&p->addr));
    if (r != 0) {
      PX_DEBUG("upstream %s: connect: %s", p->key.c_str(), uv_strerror(r));
      c->state = UpConn::State::active;
      c->close();
      w->peer_failed(p);
      fresh = nullptr;  // from here the balancer decides, among the peers not tried yet
      continue;
    }
    c->stream = st;
    st->up = c;
    p->active++;
    c->arm_timer(st->route->connect_timeout_ms);
    return true;
  }
}

namespace {
void upstream_failed(Stream* st, UpConn* c, Fail why) {
  Session* s = st->session;
  Worker* w = s->w;
  PeerState* p = c->peer;
  RetryFacts f;
  f.why = why;
  f.reused = c->reused;
  f.got_bytes = c->got_bytes;
  f.head_sent = st->resp_head_sent;
  f.request_sent = st->up_written;
  f.idempotent = idempotent(st->req.method);
  f.has_body = st->req_body != BodyMode::none || st->body_bytes_sent;
  f.fresh_retry_used = st->fresh_retry_used;
  f.untried_left = w->has_untried(st);
  detach(st);
  c->close();
  // A stale keep-alive connection says nothing about the peer's health.
  if (!(f.reused && why == Fail::closed && !f.got_bytes)) w->peer_failed(p);
  Retry r = retry_policy(f);
  if (r != Retry::no && st->attempts <= st->pool->peers.size() + 1) {
    st->up_written = false;
    PeerState* fresh = nullptr;
    if (r == Retry::same_peer_fresh) {
      st->fresh_retry_used = true;
      fresh = p;
    }
    if (dispatch(st, false, fresh)) {
      s->flush(st);
      s->after_event();
      return;
    }
    // No other peer to try: answer with what went wrong on this one.
  }
  switch (why) {
    case Fail::connect: st->end_as(Termination::upstream_refused); break;
    case Fail::connect_timeout: st->end_as(Termination::upstream_connect_timeout); break;
    case Fail::read_timeout: st->end_as(Termination::upstream_timeout); break;
    case Fail::bad_response: st->end_as(Termination::upstream_bad_response); break;
    case Fail::closed: st->end_as(Termination::upstream_closed); break;
  }
  if (!st->resp_head_sent) {
    int status = (why == Fail::connect_timeout || why == Fail::read_timeout) ? 504 : 502;
    const char* msg = why == Fail::read_timeout      ? "upstream timed out"
                      : why == Fail::connect_timeout ? "upstream connect timed out"
                      : why == Fail::bad_response    ? "upstream sent an invalid response"
                      : why == Fail::connect         ? "upstream refused the connection"
                                                     : "upstream closed the connection";
    PX_INFO("route %s: %s (%s)", st->route->spec.name.c_str(), msg, p->key.c_str());
    s->respond_local(status, msg, !st->req_complete);
    if (!st->req_complete) st->req_complete = true;
    s->flush(st);
    s->after_event();
    return;
  }
  // Mid-response: the client cannot be told more than that the connection ended.
  s->flush(st);
  s->close();
}
}  // namespace

void forward_body(Stream* st, const char* data, size_t len) {
  UpConn* c = st->up;
  bool direct = c && st->up_written;
  if (st->req_body == BodyMode::chunked) {
    if (direct) http::write_chunk(c->out, data, len);
    else http::append_chunk(st->pending_body, data, len);
  } else if (direct) {
    c->out.ref(data, len);
  } else {
    st->pending_body.append(data, len);
  }
  if (direct) st->body_bytes_sent = true;
  Session* s = st->session;
  if ((!direct && st->pending_body.size() > net::kHighWater) || (c && c->tr->congested())) {
    s->bp_paused = true;
  }
}

void forward_body_end(Stream* st) {
  UpConn* c = st->up;
  if (c && st->up_written) http::write_last_chunk(c->out);
  else st->pending_body.append(http::kLastChunk);
}

void flush_upstream(Stream* st) {
  UpConn* c = st->up;
  if (!c || c->out.empty() || c->state != UpConn::State::active) return;
  int r = c->tr->write(c->out);
  if (r != 0) PX_DEBUG("upstream %s: write failed: %s", c->peer->key.c_str(), uv_strerror(r));
  if (c->tr->congested()) st->session->bp_paused = true;
}

void abort_upstream(Stream* st) {
  UpConn* c = st->up;
  if (!c) return;
  detach(st);
  c->close();
}

void pause_upstream(Stream* st) {
  UpConn* c = st->up;
  if (!c || !c->tr->reading()) return;
  c->tr->read_stop();
  c->bp_paused = true;
}

void resume_upstream(Stream* st) {
  UpConn* c = st->up;
  if (!c || !c->bp_paused) return;
  c->bp_paused = false;
  c->start_reading();
}

void tunnel_from_client(Stream* st, const char* data, size_t len) {
  UpConn* c = st->up;
  if (!c) {
    st->session->close();
    return;
  }
  c->out.ref(data, len);
  c->tr->write(c->out);
  c->arm_timer(st->route->read_timeout_ms);
  if (c->tr->congested()) {
    st->session->bp_paused = true;
    st->session->update_reading();
  }
}

void tunnel_client_eof(Stream* st) {
  UpConn* c = st->up;
  if (!c) {
    st->session->close();
    return;
  }
  // Half-close towards the upstream once what the client sent is written.
  c->tr->shutdown();
}

}  // namespace px::proxy
