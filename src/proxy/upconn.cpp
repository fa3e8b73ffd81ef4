// An upstream connection (UpConn): connecting, its timer, reading the
// response through the HTTP/1 parser and relaying it to the client's stream,
// keep-alive reuse, and tunnelling after a 101.
#include "core/log.h"
#include "core/strings.h"
#include "http/h1.h"
#include "proxy/retry.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"

namespace px::proxy {

namespace {
void on_up_timer(uv_timer_t* t) { static_cast<UpConn*>(t->data)->on_timer(); }
void on_timer_closed(uv_handle_t* h) { static_cast<UpConn*>(h->data)->on_closed(); }
}  // namespace

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
      st->resp_body = http::Framing::none;
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
    bool keep =
        reusable && st->resp.keep_alive && st->req_complete && !parser.needs_eof() && !w->draining() && !st->upgrade;
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
  const http::Head& rq = st->req;
  bool client11 = rq.minor == 1;
  bool no_body = st->head_request || h.status == 204 || h.status == 304 || h.status == 101;
  st->resp_body = http::relay_framing(rq, h, st->head_request);
  if (http::close_after_relay(rq, h, st->resp_body) || s->w->draining()) s->close_after = true;

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
  wr.end_response(st->resp_body, h.content_length, h.status == 101, s->close_after, !client11);
  st->out.end_scratch();
  st->resp_head_sent = true;
  st->status = static_cast<uint16_t>(status);
  return st->head_request ? 1 : 0;
}

int UpConn::on_body(const char* data, size_t len) {
  Stream* st = stream;
  if (st->interim) return 0;
  if (st->resp_body == http::Framing::chunked)
    http::write_chunk(st->out, data, len);
  else
    st->out.ref(data, len);
  return 0;
}

int UpConn::on_complete() {
  Stream* st = stream;
  if (st->interim) {
    st->interim = false;
    return 0;  // keep parsing: the final response follows
  }
  if (st->resp_body == http::Framing::chunked) http::write_last_chunk(st->out);
  st->resp_complete = true;
  if (st->status == 101) return 0;  // llhttp stops with HPE_PAUSED_UPGRADE
  return HPE_PAUSED;
}

}  // namespace px::proxy
