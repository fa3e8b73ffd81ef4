// The upstream side of a stream: choosing a peer, sending the request (and
// retrying on another peer when that is safe, retry.h), relaying the request
// body with backpressure, and tunnelling client bytes after a 101.
#include "upstream/upstream.h"

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "stream/stream.h"
#include "tls/transport.h"
#include "upstream/retry.h"
#include "upstream/upconn.h"

namespace px::proxy {

bool idempotent(http::Method method) {
  switch (method) {
    case http::Method::get:
    case http::Method::head:
    case http::Method::options:
    case http::Method::put:
    case http::Method::delete_:
    case http::Method::trace: return true;
    default: return false;
  }
}

void detach(Stream* st) {
  UpConn* c = st->up;
  if (!c) return;
  c->stream = nullptr;
  st->up = nullptr;
  if (st->peer) st->peer->active--;
}

namespace {
// The request head (and any body so far) goes out in one write: inlined into
// dispatch(), the path of every request on a reused connection.
[[gnu::always_inline]] inline void send_request_now(Stream* st, UpConn* c) {
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

void send_request(Stream* st, UpConn* c) { send_request_now(st, c); }

// ---- stream helpers ----

bool dispatch(Stream* st, bool answer_if_none, PeerState* fresh) {
  Worker* w = st->w;
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
    bool by_filter = p && !fresh;
    if (!p) p = w->choose_peer(st);
    if (!p) {
      if (answer_if_none) st->end_as(Termination::no_upstream);
      if (answer_if_none)
        reply_text(st, 502, "no upstream peer available", st->req_body != http::Framing::none && !st->req_complete);
      return false;
    }
    st->peer = p;
    st->attempts++;
    UpConn* c = fresh ? nullptr : w->take_idle(p);
    if (st->trace) [[unlikely]]
      trace_pick(st, p, fresh, by_filter, c != nullptr);
    if (c) {
      c->stream = st;
      st->up = c;
      p->active++;
      c->reused = true;
      c->got_bytes = false;
      c->state = UpConn::State::active;
      c->parser.attach(&st->resp);
      send_request_now(st, c);
      return true;
    }
    SSL* ssl = nullptr;
    if (p->tls && !(ssl = w->new_upstream_ssl(p))) {
      // No TLS context for this peer (its CA file or client certificate is missing): logged there.
      if (answer_if_none) {
        st->end_as(Termination::upstream_refused);
        reply_text(st, 502, "upstream TLS is not available", st->req_body != http::Framing::none && !st->req_complete);
      }
      return false;
    }
    c = new UpConn();
    c->w = w;
    c->peer = p;
    w->upconns.inc();
    c->tcp.init(w->loop());
    c->tcp.set_user(c);
    if (ssl) {
      c->tcp.nodelay();
      c->wrap.reset(new tls::TlsTransport(ssl, &c->tcp));  // the TLS layer is the tcp's user now
      c->tr = c->wrap.get();
      c->tr->set_user(c);
    }
    uv_timer_init(w->loop(), &c->timer);
    c->timer.data = c;
    c->pending_closes = 2;
    c->parser.init(http::Kind::response, c, &w->resp_limits);
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
    if (w->timing() || st->trace) c->connect_start_us = Worker::clock_us();
    c->arm_timer(st->route->connect_timeout_ms);
    return true;
  }
}

void upstream_failed(Stream* st, UpConn* c, Fail why) {
  Worker* w = st->w;
  Downstream* d = st->down;
  PeerState* p = c->peer;
  RetryFacts f;
  f.why = why;
  f.reused = c->reused;
  f.got_bytes = c->got_bytes;
  f.head_sent = st->resp_head_sent;
  f.request_sent = st->up_written;
  f.idempotent = idempotent(st->req.method);
  f.has_body = st->req_body != http::Framing::none || st->body_bytes_sent;
  f.fresh_retry_used = st->fresh_retry_used;
  f.untried_left = w->has_untried(st);
  detach(st);
  c->close();
  if (st->trace) [[unlikely]]
    trace_attempt_failed(st, why == Fail::connect           ? "connection refused"
                             : why == Fail::connect_timeout ? "connect timed out"
                             : why == Fail::closed          ? "closed before a whole answer"
                             : why == Fail::read_timeout    ? "no answer in time"
                             : why == Fail::bad_response    ? "invalid HTTP answer"
                                                            : "TLS handshake failed");
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
      d->progress(st);
      return;
    }
    // No other peer to try: answer with what went wrong on this one.
  }
  switch (why) {
    case Fail::connect:
    case Fail::tls: st->end_as(Termination::upstream_refused); break;
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
                      : why == Fail::tls             ? "upstream TLS handshake failed"
                                                     : "upstream closed the connection";
    PX_INFO("route %s: %s (%s)", st->route->spec.name.c_str(), msg, p->key.c_str());
    reply_text(st, status, msg, !st->req_complete);
    if (!st->req_complete) st->req_complete = true;
    d->progress(st);
    return;
  }
  // Mid-response: the client cannot be told more than that the exchange ended.
  d->reset(st);
}

void flush_upstream(Stream* st) {
  UpConn* c = st->up;
  if (!c || c->out.empty() || c->state != UpConn::State::active) return;
  int r = c->tr->write(c->out);
  if (r != 0) PX_DEBUG("upstream %s: write failed: %s", c->peer->key.c_str(), uv_strerror(r));
  if (c->tr->congested()) st->down->pause_request(st);
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
    st->down->reset(st);
    return;
  }
  c->out.ref(data, len);
  c->tr->write(c->out);
  c->arm_timer(st->route->read_timeout_ms);
  if (c->tr->congested()) st->down->pause_request(st);
}

void tunnel_client_eof(Stream* st) {
  UpConn* c = st->up;
  if (!c) {
    st->down->reset(st);
    return;
  }
  // Half-close towards the upstream once what the client sent is written.
  c->tr->shutdown();
}

}  // namespace px::proxy
