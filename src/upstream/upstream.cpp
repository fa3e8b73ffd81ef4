// The upstream side of a stream, above its protocol: choosing a peer, binding
// the stream to an exchange with it (HTTP/1: upconn.cpp), and after a failed
// attempt, retrying on another peer when that is safe (retry.h) or answering.
#include "upstream/upstream.h"

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "stream/stream.h"
#include "tls/transport.h"
#include "upstream/h2up.h"
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

bool dispatch(Stream* st, bool answer_if_none, PeerState* fresh) {
  Worker* w = st->w;
  // The request is written once, for the upstream protocol (HTTP/1 today), and kept for a retry.
  if (st->attempts == 0) write_request_head(st);
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
    if (st->trace) [[unlikely]]
      trace_pick(st, p, fresh, by_filter, !fresh && p->idle);
    switch (p->h2 ? bind_h2(st, p, fresh != nullptr) : bind_http1(st, p, fresh != nullptr)) {
      case Bind::bound: return true;
      case Bind::no_tls:
        // No TLS context for this peer (its CA file or client certificate is missing): logged there.
        if (answer_if_none) {
          st->end_as(Termination::upstream_refused);
          reply_text(st, 502, "upstream TLS is not available",
                     st->req_body != http::Framing::none && !st->req_complete);
        }
        return false;
      case Bind::no_upgrade:
        // An upgrade (WebSocket) cannot be relayed to an HTTP/2 peer.
        if (answer_if_none) {
          st->end_as(Termination::local);
          reply_text(st, 501, "the upstream speaks HTTP/2: upgrades (WebSocket) cannot be relayed to it", false);
        }
        return false;
      case Bind::connect_failed:
        w->peer_failed(p);
        fresh = nullptr;  // from here the balancer decides, among the peers not tried yet
        continue;
    }
  }
}

void upstream_failed(Stream* st, Fail why, bool reused, bool got_bytes) {
  Worker* w = st->w;
  Downstream* d = st->down;
  PeerState* p = st->peer;
  RetryFacts f;
  f.why = why;
  f.reused = reused;
  f.got_bytes = got_bytes;
  f.head_sent = st->resp_head_sent;
  f.request_sent = st->up_written;
  f.idempotent = idempotent(st->req.method);
  f.has_body = st->req_body != http::Framing::none || st->body_bytes_sent;
  f.fresh_retry_used = st->fresh_retry_used;
  f.untried_left = w->has_untried(st);
  st->up->abort(st);
  if (st->trace) [[unlikely]]
    trace_attempt_failed(st, why == Fail::connect           ? "connection refused"
                             : why == Fail::connect_timeout ? "connect timed out"
                             : why == Fail::closed          ? "closed before a whole answer"
                             : why == Fail::read_timeout    ? "no answer in time"
                             : why == Fail::bad_response    ? "invalid HTTP answer"
                             : why == Fail::refused         ? "stream refused (HTTP/2)"
                                                            : "TLS handshake failed");
  // A stale keep-alive connection says nothing about the peer's health.
  if (!(f.reused && why == Fail::closed && !f.got_bytes)) w->peer_failed(p);
  Retry r = retry_policy(f);
  // (A refused stream was never processed: a few more tries, as a peer shedding load refuses some of them.)
  if (r != Retry::no && st->attempts <= st->pool->peers.size() + (why == Fail::refused ? 4 : 1)) {
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
    case Fail::refused:
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
                      : why == Fail::refused         ? "upstream refused the stream"
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

}  // namespace px::proxy
