// The HTTP/1 server codec (h1_server.h): requests through the HTTP/1 parser,
// each given to a stream; the stream's answers framed as HTTP/1 and written
// back in order, with keep-alive, pipelining, Expect, the upgrade hand-off and
// half-close. What belongs to the connection (its transport, timeouts and
// closing) is the Session's (conn/session.h).
#include "codec/h1_server.h"

#include <cstring>

#include "conn/session.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "stream/stream.h"
#include "upstream/upstream.h"

namespace px::proxy {

void release_h1_exchanges() { ExchangePool::drain(); }

void H1Server::release_exchange() {
  x_->out.clear();
  ExchangePool::give(x_);
  x_ = nullptr;
}

// ---- from the connection ----

void H1Server::on_data(const char* data, size_t n) {
  if (stream && stream->tunnel) {
    stream->bytes_in += n;
    if (stream->up)
      stream->up->tunnel_send(stream, data, n);
    else
      reset(stream);
    return;
  }
  if (stream && stream->req_complete) {
    // Pipelined bytes that arrived while a response is pending: keep them for later.
    c_->leftover.append(data, n);
    if (c_->leftover.size() > c_->w->cfg().max_header_size + net::kReadBuf) {
      c_->want_read = false;
      c_->update_reading();
    }
    return;
  }
  parse(data, n, false);
  after_event();
}

void H1Server::on_eof() {
  if (stream && stream->tunnel) {
    if (stream->up)
      stream->up->tunnel_end(stream);
    else
      reset(stream);
    return;
  }
  if (stream && stream->req_complete && !stream->resp_complete) {
    // A half-close after a whole request: the response still goes out, then we close.
    close_after = true;
    return;
  }
  // The client went away. Anything in flight for it is abandoned.
  c_->close();
}

bool H1Server::on_timeout(Timeout) {
  if (stream && !stream->req_complete && !stream->resp_head_sent) {
    // Slowloris: the head (or the body) did not arrive in time.
    PX_DEBUG("client %s: request timed out", c_->client.peer_ip.str().c_str());
    Stream* st = stream;
    st->end_as(Termination::client_timeout);
    reply_text(st, 408, "request timed out", true);
    st->req_complete = true;
    progress(st);
    return true;
  }
  return false;
}

void H1Server::on_drained() {
  if (stream && stream->up) stream->up->resume_response(stream);
}

void H1Server::close_streams() {
  if (stream) {
    Stream* st = stream;
    stream = nullptr;
    end_stream(st, true);
    release_exchange();
  }
}

bool H1Server::congested() const { return c_->tr->congested(); }

bool H1Server::idle() const { return stream == nullptr && c_->leftover.empty(); }

// ---- reading requests ----

void H1Server::parse(const char* data, size_t len, bool from_leftover) {
  if (!stream) {
    stream = c_->w->get_stream();
    x_ = ExchangePool::take();
    stream->down = this;
    stream->client_ip = c_->client.peer_ip;  // until the head says otherwise (X-Forwarded-For from a trusted proxy)
    head_left = false;
    resp_framing = http::Framing::none;
    x_->parser.init(http::Kind::request, this, &c_->w->req_limits);
    x_->parser.attach(&stream->req);
    c_->set_timeout(Timeout::header);
  }
  Stream* st = stream;
  http::Parser& parser = x_->parser;
  in_parse = true;
  http::Parsed err = parser.execute(data, len);
  in_parse = false;
  size_t consumed = len;
  if (err == http::Parsed::paused || err == http::Parsed::upgrade) {
    consumed = static_cast<size_t>(parser.error_pos() - data);
  } else if (err != http::Parsed::ok) {
    int status = parser.error_status();
    PX_DEBUG("client %s: bad request (%d): %s", c_->client.peer_ip.str().c_str(), status, parser.error_reason());
    st->end_as(status == 413 ? Termination::local : Termination::bad_request);
    if (st->up) st->up->abort(st);
    if (!st->resp_head_sent)
      reply_text(st, status, parser.error_reason(), true);
    else
      close_after = true;
    st->req_complete = true;
    if (!st->resp_complete) {
      // A response is already streaming: it cannot be completed cleanly.
      flush(st);
      c_->close();
      return;
    }
    close_after = true;
  }
  st->bytes_in += consumed;
  flush(st);
  if (c_->closing) return;
  if (from_leftover)
    c_->leftover.erase_front(consumed);
  else if (consumed < len)
    c_->leftover.append(data + consumed, len - consumed);
}

// ---- Downstream: the stream's answers, as HTTP/1 ----

bool H1Server::flush(Stream* st) {
  if (c_->closing) return false;
  if (st->up) st->up->flush(st);
  if (c_->closing) return false;
  if (!x_->out.empty()) {
    st->bytes_out += x_->out.size();
    int r = c_->tr->write(x_->out);
    if (r != 0) {
      c_->close();
      return false;
    }
    if (st->resp_head_sent) head_left = true;
    // Backpressure: a slow client stops the upstream from being read.
    if (st->up && c_->tr->congested()) st->up->pause_response(st);
  }
  return true;
}

int H1Server::on_body(const char* data, size_t len) {
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

int H1Server::parser_fail(int status, const char* reason) { return x_->parser.set_error(status, reason); }

int H1Server::on_head(http::Head& h) {
  Stream* st = stream;
  st->head_request = h.method == http::Method::head;
  st->upgrade = h.upgrade;
  if (h.chunked)
    st->req_body = http::Framing::chunked;
  else if (h.has_content_length && h.content_length > 0)
    st->req_body = http::Framing::length;
  if (!h.keep_alive || c_->w->draining()) close_after = true;
  c_->set_timeout(st->req_body != http::Framing::none ? Timeout::body : Timeout::none);
  stream_begin(st);
  return 0;
}

int H1Server::on_complete() {
  Stream* st = stream;
  stream_body_end(st);
  c_->set_timeout(Timeout::none);
  // Reading goes on while the response is prepared (no epoll change per request):
  // pipelined bytes wait in the connection's `leftover`, and a client closing is noticed.
  // Upgrade requests: the parser stops with Parsed::upgrade; what follows is tunnel data.
  return st->upgrade ? 0 : kPause;
}

void H1Server::after_event() {
  if (advancing_) {
    again_ = true;
    return;
  }
  advancing_ = true;
  do {
    again_ = false;
    if (c_->closing) break;
    Stream* st = stream;
    if (st && st->req_complete && st->resp_complete && !st->tunnel) {
      finish_stream();
      if (c_->closing) break;
    }
    if (!c_->closing && !c_->leftover.empty() && (!stream || !stream->req_complete) && !(stream && stream->tunnel)) {
      size_t before = c_->leftover.size();
      parse(c_->leftover.data(), c_->leftover.size(), true);
      if (!c_->closing && c_->leftover.size() != before) again_ = true;
    }
  } while (again_ && !c_->closing);
  advancing_ = false;
  if (!c_->closing) c_->update_reading();
}

void H1Server::finish_stream() {
  Stream* st = stream;
  if (!x_->out.empty()) flush(st);
  if (c_->closing) return;
  end_stream(st, false);
  stream = nullptr;
  release_exchange();
  if (close_after || c_->w->draining()) {
    c_->close_when_written();
    return;
  }
  c_->want_read = true;
  if (c_->leftover.empty()) {
    c_->leftover.clear();  // an idle connection keeps no buffer
    c_->set_timeout(Timeout::keepalive);
  } else {
    c_->set_timeout(Timeout::header);
  }
}

void H1Server::send_head(Stream* st, const ResponseHead& rh) {
  const http::Head& h = *rh.from;
  const http::Head& rq = st->req;
  bool no_body = st->head_request || h.status == 204 || h.status == 304 || h.status == 101;
  resp_framing = http::relay_framing(rq, h, st->head_request);
  if (http::close_after_relay(rq, h, resp_framing) || c_->w->draining()) close_after = true;
  std::string& o = x_->out.begin_scratch();
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
  x_->out.end_scratch();
}

void H1Server::send_body(Stream*, const char* data, size_t len) {
  if (resp_framing == http::Framing::chunked)
    http::write_chunk(x_->out, data, len);
  else
    x_->out.ref(data, len);
}

int64_t H1Server::send_file(Stream* st, int fd, uint64_t off, uint64_t len) {
  if (resp_framing == http::Framing::chunked || c_->closing) return kCannot;
  if (!x_->out.empty()) {  // the head (and anything before) first
    st->bytes_out += x_->out.size();
    if (c_->tr->write(x_->out) != 0) {
      c_->close();
      return kGone;
    }
    if (st->resp_head_sent) head_left = true;
  }
  if (c_->tr->queued() > 0) return 0;  // (on_drained resumes the stream's Upstream)
  int64_t n = c_->tr->send_file(fd, off, len);
  if (n > 0) {
    st->bytes_out += static_cast<uint64_t>(n);
    return n;
  }
  if (n == -EAGAIN) return 0;
  if (n == -ENOTSUP) return kCannot;
  c_->close();
  return kGone;
}

void H1Server::send_end(Stream* st) {
  if (st->tunnel) {
    // The upstream ended the tunnel: pass the close on once the client has everything.
    c_->close_when_written();
    return;
  }
  if (resp_framing == http::Framing::chunked && !trailers_sent) http::write_last_chunk(x_->out);
  trailers_sent = false;
}

void H1Server::send_trailers(Stream*, const Fields& trailers) {
  if (resp_framing != http::Framing::chunked) return;  // a length-framed (or HTTP/1.0) response cannot carry them
  http::write_last_chunk(x_->out, trailers);
  trailers_sent = true;
}

void H1Server::send_reply(Stream* st, int status, const Fields* fields, std::string_view body) {
  bool has_type = false;
  std::string& s = x_->out.begin_scratch();
  http::HeadWriter wr(s);
  wr.status_line(status);
  wr.field("Server", "px");
  wr.field("Date", c_->w->date());
  if (fields)
    for (const auto& [n, v] : *fields) {
      if (iequals(n, "content-length") || iequals(n, "connection") || iequals(n, "transfer-encoding")) continue;
      has_type = has_type || iequals(n, "content-type");
      wr.field(n, v);
    }
  if (!has_type && !body.empty()) wr.field("Content-Type", "text/plain; charset=utf-8");
  wr.end_response(http::Framing::length, body.size(), false, close_after, false);
  if (!st->head_request) s.append(body);
  x_->out.end_scratch();
}

bool H1Server::continue_request(Stream* st) {
  switch (http::expectation(st->req)) {
    case http::Expect::unsupported: return false;
    case http::Expect::continue_100:
      // px answers the expectation itself once the request passed routing and limits.
      if (st->req.minor == 1 && st->req_body != http::Framing::none) http::write_continue(x_->out);
      return true;
    case http::Expect::none: return true;
  }
  return true;
}

void H1Server::progress(Stream* st) {
  if (flush(st)) after_event();
}

void H1Server::reset(Stream* st) {
  if (flush(st)) c_->close();
}

bool H1Server::retract(Stream* st) {
  if (head_left) return false;
  x_->out.clear();
  st->resp_head_sent = false;
  resp_framing = http::Framing::none;
  return true;
}

void H1Server::pause_request(Stream*) {
  bp_paused = true;
  if (!in_parse) c_->update_reading();
}

void H1Server::resume_request(Stream*) {
  if (!bp_paused) return;
  bp_paused = false;
  c_->update_reading();
}

void H1Server::open_tunnel(Stream* st, const char* early, size_t len) {
  x_->out.ref(early, len);
  if (!flush(st)) return;
  if (!c_->leftover.empty()) {
    // What the client sent after its upgrade request belongs to the tunnel.
    st->up->tunnel_send(st, c_->leftover.data(), c_->leftover.size());  // the upstream that answered 101
    if (c_->closing) return;
    c_->leftover.clear();
  }
  c_->want_read = true;
  c_->set_timeout(Timeout::none);
  c_->update_reading();
}

}  // namespace px::proxy
