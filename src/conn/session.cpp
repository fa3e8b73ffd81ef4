// A session: the HTTP/1 server side of one client connection. It reads
// requests through the HTTP/1 parser, hands each to a stream (stream.cpp), is
// that stream's Downstream (downstream.h): it frames the answers and writes
// them back in order, and handles keep-alive, pipelining, Expect, the upgrade
// hand-off, half-close, timeouts and closing.
#include <cstring>

#include "codec/h2.h"
#include "conn/session.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "stream/stream.h"
#include "tls/transport.h"
#include "upstream/upstream.h"

namespace px::proxy {

void Session::start() {
  tr->set_user(this);
  set_timeout(tls ? Timeout::handshake : Timeout::header);
  update_reading();
}

void Session::on_connected() {
  // TLS: the handshake is done; the request head has its own timeout from here.
  auto* t = static_cast<tls::TlsTransport*>(wrap.get());
  sni = t->sni();
  w->tls_handshakes.inc();
  set_timeout(Timeout::header);
  const uint8_t* proto = nullptr;
  unsigned proto_len = 0;
  SSL_get0_alpn_selected(t->ssl(), &proto, &proto_len);
  if (h2_allowed && proto_len == 2 && proto[0] == 'h' && proto[1] == '2') start_h2();
}

bool Session::idle() const { return h2 ? h2->idle() : stream == nullptr && leftover.empty(); }

void Session::start_h2() {
  h2_decided = true;
  h2 = new H2Conn(this);
  if (!h2->start()) {
    PX_ERR("client %s: HTTP/2 could not start", peer_ip.str().c_str());
    close();
  }
}

bool Session::on_client_hello(std::string_view sni, std::string_view hello) {
  if (!l4_passthrough(w, &tcp, peer_ip, sni, hello)) return false;
  close();  // the passthrough connection holds its own descriptor of the socket
  return true;
}

void Session::set_timeout(Timeout t) {
  if (timeout != Timeout::none) w->timeout_unlink(this);
  if (t != Timeout::none) w->timeout_link(this, t);
}

void Session::update_reading() {
  if (closing) return;
  bool want = want_read && !bp_paused && !eof;
  if (want)
    tr->read_start();
  else
    tr->read_stop();
}

void Session::on_timeout(Timeout t) {
  if (closing) return;
  if (h2) {
    h2->on_timeout(t);
    return;
  }
  if (t == Timeout::handshake) {
    PX_DEBUG("client %s: TLS handshake timed out", peer_ip.str().c_str());
    w->tls_handshake_timeouts.inc();
    close();
    return;
  }
  if (t == Timeout::keepalive || !got_bytes) {
    // Idle keep-alive, or a connection that never sent a byte: just close.
    close();
    return;
  }
  if (stream && !stream->req_complete && !stream->resp_head_sent) {
    // Slowloris: the head (or the body) did not arrive in time.
    PX_DEBUG("client %s: request timed out", peer_ip.str().c_str());
    Stream* st = stream;
    st->end_as(Termination::client_timeout);
    reply_text(st, 408, "request timed out", true);
    st->req_complete = true;
    progress(st);
    return;
  }
  close();
}

void Session::on_eof() {
  if (closing) return;
  eof = true;
  if (h2) {
    h2->on_eof();
    return;
  }
  if (stream && stream->tunnel) {
    tunnel_client_eof(stream);
    return;
  }
  if (stream && stream->req_complete && !stream->resp_complete) {
    // A half-close after a whole request: the response still goes out, then we close.
    close_after = true;
    return;
  }
  // The client went away. Anything in flight for it is abandoned.
  close();
}

void Session::on_error(int) {
  if (closing) return;
  if (tls) {
    auto* t = static_cast<tls::TlsTransport*>(wrap.get());
    if (!t->established()) w->tls_handshake_failures[static_cast<int>(t->failure_class())].inc();
  }
  eof = true;
  close();
}

// The client preface of HTTP/2 with prior knowledge (RFC 9113 3.3).
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

void Session::on_data(const char* data, size_t n) {
  if (closing) return;
  got_bytes = true;
  if (h2) {
    h2->on_data(data, n);
    return;
  }
  if (!h2_decided && h2_allowed && !tls) {
    // An h2c listener: the first bytes say whether this is HTTP/2 with prior knowledge.
    if (!leftover.empty()) leftover.append(data, n);
    std::string_view got = leftover.empty() ? std::string_view(data, n) : leftover.view();
    size_t k = std::min(got.size(), kPreface.size());
    if (got.substr(0, k) == kPreface.substr(0, k)) {
      if (got.size() < kPreface.size()) {
        if (leftover.empty()) leftover.append(data, n);
        return;  // wait for the rest of the preface
      }
      std::string first(got);
      leftover.clear();
      start_h2();
      if (h2) h2->on_data(first.data(), first.size());
      return;
    }
    h2_decided = true;
    if (!leftover.empty()) {
      parse(leftover.data(), leftover.size(), true);
      after_event();
      return;
    }
  }
  if (timeout == Timeout::body) set_timeout(Timeout::body);  // the body timeout is between reads
  if (stream && stream->tunnel) {
    stream->bytes_in += n;
    tunnel_from_client(stream, data, n);
    return;
  }
  if (stream && stream->req_complete) {
    // Pipelined bytes that arrived while a response is pending: keep them for later.
    leftover.append(data, n);
    if (leftover.size() > w->cfg().max_header_size + net::kReadBuf) {
      want_read = false;
      update_reading();
    }
    return;
  }
  parse(data, n, false);
  after_event();
}

void Session::parse(const char* data, size_t len, bool from_leftover) {
  if (!stream) {
    stream = w->get_stream();
    stream->down = this;
    stream->client_ip = peer_ip;  // until the head says otherwise (X-Forwarded-For from a trusted proxy)
    head_left = false;
    resp_framing = http::Framing::none;
    stream->parser.init(http::Kind::request, this, &w->req_limits);
    stream->parser.attach(&stream->req);
    set_timeout(Timeout::header);
  }
  Stream* st = stream;
  http::Parser& parser = st->parser;
  in_parse = true;
  http::Parsed err = parser.execute(data, len);
  in_parse = false;
  size_t consumed = len;
  if (err == http::Parsed::paused || err == http::Parsed::upgrade) {
    consumed = static_cast<size_t>(parser.error_pos() - data);
  } else if (err != http::Parsed::ok) {
    int status = parser.error_status();
    PX_DEBUG("client %s: bad request (%d): %s", peer_ip.str().c_str(), status, parser.error_reason());
    st->end_as(status == 413 ? Termination::local : Termination::bad_request);
    if (st->up) abort_upstream(st);
    if (!st->resp_head_sent)
      reply_text(st, status, parser.error_reason(), true);
    else
      close_after = true;
    st->req_complete = true;
    if (!st->resp_complete) {
      // A response is already streaming: it cannot be completed cleanly.
      flush(st);
      close();
      return;
    }
    close_after = true;
  }
  st->bytes_in += consumed;
  flush(st);
  if (closing) return;
  if (from_leftover)
    leftover.erase_front(consumed);
  else if (consumed < len)
    leftover.append(data + consumed, len - consumed);
}

bool Session::flush(Stream* st) {
  if (closing) return false;
  if (st->up) flush_upstream(st);
  if (closing) return false;
  if (!st->out.empty()) {
    st->bytes_out += st->out.size();
    int r = tr->write(st->out);
    if (r != 0) {
      close();
      return false;
    }
    if (st->resp_head_sent) head_left = true;
    // Backpressure: a slow client stops the upstream from being read.
    if (st->up && tr->congested()) pause_upstream(st);
  }
  return true;
}

int Session::on_body(const char* data, size_t len) {
  switch (stream_body(stream, data, len)) {
    case BodyTake::taken: return 0;
    case BodyTake::unwanted:
      // Answered already: the rest of the body is read and dropped, up to a point.
      if (stream->body_received > 1024 * 1024) return parser_fail(413, "request body dropped");
      return 0;
    case BodyTake::too_large: return parser_fail(413, "request body too large");
  }
  return 0;
}

int Session::parser_fail(int status, const char* reason) { return stream->parser.set_error(status, reason); }

int Session::on_head(http::Head& h) {
  Stream* st = stream;
  st->head_request = h.method == http::Method::head;
  st->upgrade = h.upgrade;
  if (h.chunked)
    st->req_body = http::Framing::chunked;
  else if (h.has_content_length && h.content_length > 0)
    st->req_body = http::Framing::length;
  if (!h.keep_alive || w->draining()) close_after = true;
  set_timeout(st->req_body != http::Framing::none ? Timeout::body : Timeout::none);
  stream_begin(st);
  return 0;
}

int Session::on_complete() {
  Stream* st = stream;
  stream_body_end(st);
  set_timeout(Timeout::none);
  // Reading goes on while the response is prepared (no epoll change per request):
  // pipelined bytes wait in `leftover`, and a client closing is noticed.
  // Upgrade requests: the parser stops with Parsed::upgrade; what follows is tunnel data.
  return st->upgrade ? 0 : kPause;
}

void Session::after_event() {
  if (advancing_) {
    again_ = true;
    return;
  }
  advancing_ = true;
  do {
    again_ = false;
    if (closing) break;
    Stream* st = stream;
    if (st && st->req_complete && st->resp_complete && !st->tunnel) {
      finish_stream();
      if (closing) break;
    }
    if (!closing && !leftover.empty() && (!stream || !stream->req_complete) && !(stream && stream->tunnel)) {
      size_t before = leftover.size();
      parse(leftover.data(), leftover.size(), true);
      if (!closing && leftover.size() != before) again_ = true;
    }
  } while (again_ && !closing);
  advancing_ = false;
  if (!closing) update_reading();
}

void Session::finish_stream() {
  Stream* st = stream;
  if (!st->out.empty()) flush(st);
  if (closing) return;
  end_stream(st, false);
  stream = nullptr;
  if (close_after || w->draining()) {
    close_when_written();
    return;
  }
  want_read = true;
  if (leftover.empty()) {
    leftover.clear();  // an idle connection keeps no buffer
    set_timeout(Timeout::keepalive);
  } else {
    set_timeout(Timeout::header);
  }
}

void Session::close_when_written() {
  want_read = false;
  update_reading();
  if (tr->queued() == 0)
    close();
  else
    writes_done_close = true;
}

void Session::on_drained() {
  if (closing) return;
  if (h2 && !writes_done_close) {
    h2->on_drained();
    return;
  }
  if (writes_done_close && tr->queued() == 0) {
    close();
    return;
  }
  if (stream && stream->up) resume_upstream(stream);
}

void Session::on_closed() {
  delete h2;
  delete this;
}

// ---- Downstream: the stream's answers, as HTTP/1 ----

void Session::send_head(Stream* st, const ResponseHead& rh) {
  const http::Head& h = *rh.from;
  const http::Head& rq = st->req;
  bool no_body = st->head_request || h.status == 204 || h.status == 304 || h.status == 101;
  resp_framing = http::relay_framing(rq, h, st->head_request);
  if (http::close_after_relay(rq, h, resp_framing) || w->draining()) close_after = true;
  std::string& o = st->out.begin_scratch();
  http::HeadWriter wr(o);
  wr.status_line(rh.status);
  for (size_t i = 0; i < h.headers.size(); i++) {
    if (!http::keep_response_field(h.headers[i].kind, h.status, no_body)) continue;
    std::string_view n = h.name(i);
    if (rh.edits) {
      bool touched = false;
      for (const auto& e : *rh.edits) touched = touched || iequals(e.name, n);
      if (touched) continue;  // written below, as the filters left it
    }
    if (h.listed_in_connection(n) && !(h.status == 101 && h.headers[i].kind == http::Hdr::upgrade)) continue;
    wr.field(n, h.value(i));
  }
  if (rh.edits) lua::append_edited(wr, h, *rh.edits);
  wr.end_response(resp_framing, h.content_length, h.status == 101, close_after, rq.minor == 0);
  st->out.end_scratch();
}

void Session::send_body(Stream* st, const char* data, size_t len) {
  if (resp_framing == http::Framing::chunked)
    http::write_chunk(st->out, data, len);
  else
    st->out.ref(data, len);
}

void Session::send_end(Stream* st) {
  if (st->tunnel) {
    // The upstream ended the tunnel: pass the close on once the client has everything.
    close_when_written();
    return;
  }
  if (resp_framing == http::Framing::chunked) http::write_last_chunk(st->out);
}

void Session::send_reply(Stream* st, int status, const Fields* fields, std::string_view body) {
  bool has_type = false;
  std::string& s = st->out.begin_scratch();
  http::HeadWriter wr(s);
  wr.status_line(status);
  wr.field("Server", "px");
  wr.field("Date", w->date());
  if (fields)
    for (const auto& [n, v] : *fields) {
      if (iequals(n, "content-length") || iequals(n, "connection") || iequals(n, "transfer-encoding")) continue;
      has_type = has_type || iequals(n, "content-type");
      wr.field(n, v);
    }
  if (!has_type && !body.empty()) wr.field("Content-Type", "text/plain; charset=utf-8");
  wr.end_response(http::Framing::length, body.size(), false, close_after, false);
  if (!st->head_request) s.append(body);
  st->out.end_scratch();
}

bool Session::continue_request(Stream* st) {
  switch (http::expectation(st->req)) {
    case http::Expect::unsupported: return false;
    case http::Expect::continue_100:
      // px answers the expectation itself once the request passed routing and limits.
      if (st->req.minor == 1 && st->req_body != http::Framing::none) http::write_continue(st->out);
      return true;
    case http::Expect::none: return true;
  }
  return true;
}

void Session::progress(Stream* st) {
  if (flush(st)) after_event();
}

void Session::reset(Stream* st) {
  if (flush(st)) close();
}

bool Session::retract(Stream* st) {
  if (head_left) return false;
  st->out.clear();
  st->resp_head_sent = false;
  resp_framing = http::Framing::none;
  return true;
}

void Session::pause_request(Stream*) {
  bp_paused = true;
  if (!in_parse) update_reading();
}

void Session::resume_request(Stream*) {
  if (!bp_paused) return;
  bp_paused = false;
  update_reading();
}

void Session::open_tunnel(Stream* st, const char* early, size_t len) {
  st->out.ref(early, len);
  if (!flush(st)) return;
  if (!leftover.empty()) {
    // What the client sent after its upgrade request belongs to the tunnel.
    tunnel_from_client(st, leftover.data(), leftover.size());
    if (closing) return;
    leftover.clear();
  }
  want_read = true;
  set_timeout(Timeout::none);
  update_reading();
}

void Session::close() {
  if (closing) return;
  closing = true;
  if (stream) {
    Stream* st = stream;
    stream = nullptr;
    end_stream(st, true);
  }
  if (h2) h2->close_streams();
  set_timeout(Timeout::none);
  tr->close();  // on_closed() frees the session, on a later loop iteration
  if (counted) w->session_closed(this);
}

}  // namespace px::proxy
