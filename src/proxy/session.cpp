// A session: one client connection. It reads requests through the HTTP/1
// parser, hands each to a stream (stream.cpp), writes the answers back in
// order, and handles keep-alive, pipelining, half-close, timeouts and closing.
#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"

namespace px::proxy {

void Session::start() {
  tr->set_user(this);
  set_timeout(Timeout::header);
  update_reading();
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
  if (t == Timeout::keepalive || !got_bytes) {
    // Idle keep-alive, or a connection that never sent a byte: just close.
    close();
    return;
  }
  if (stream && !stream->req_complete && !stream->resp_head_sent) {
    // Slowloris: the head (or the body) did not arrive in time.
    PX_DEBUG("client %s: request timed out", peer_ip.str().c_str());
    stream->end_as(Termination::client_timeout);
    if (stream->up) abort_upstream(stream);
    respond_local(408, "request timed out", true);
    stream->req_complete = true;
    flush(stream);
    after_event();
    return;
  }
  close();
}

void Session::on_eof() {
  if (closing) return;
  eof = true;
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
  eof = true;
  close();
}

void Session::on_data(const char* data, size_t n) {
  if (closing) return;
  got_bytes = true;
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
    stream->session = this;
    stream->parser.init(HTTP_REQUEST, this, &w->req_limits);
    stream->parser.attach(&stream->req);
    set_timeout(Timeout::header);
  }
  Stream* st = stream;
  http::Parser& parser = st->parser;
  in_parse = true;
  llhttp_errno_t err = parser.execute(data, len);
  in_parse = false;
  size_t consumed = len;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    consumed = static_cast<size_t>(parser.error_pos() - data);
  } else if (err != HPE_OK) {
    int status = parser.error_status();
    PX_DEBUG("client %s: bad request (%d): %s", peer_ip.str().c_str(), status, parser.error_reason());
    st->end_as(status == 413 ? Termination::local : Termination::bad_request);
    if (st->up) abort_upstream(st);
    if (!st->resp_head_sent)
      respond_local(status, parser.error_reason(), true);
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

void Session::flush(Stream* st) {
  if (closing) return;
  if (st->up) flush_upstream(st);
  if (closing || !st->out.empty()) {
    if (closing) return;
    st->bytes_out += st->out.size();
    int r = tr->write(st->out);
    if (r != 0) {
      close();
      return;
    }
    // Backpressure: a slow client stops the upstream from being read.
    if (st->up && tr->congested()) pause_upstream(st);
  }
}

int Session::on_body(const char* data, size_t len) {
  Stream* st = stream;
  st->body_received += len;
  if (st->local || st->resp_complete) {
    // Answered already: the rest of the body is read and dropped, up to a point.
    if (st->body_received > 1024 * 1024) return parser_fail(413, "request body dropped");
    return 0;
  }
  if (st->max_body && st->body_received > st->max_body) return parser_fail(413, "request body too large");
  forward_body(st, data, len);
  return 0;
}

int Session::parser_fail(int status, const char* reason) { return stream->parser.set_error(status, reason); }

int Session::on_complete() {
  Stream* st = stream;
  if (!st->local && !st->resp_complete && st->req_body == http::Framing::chunked) forward_body_end(st);
  st->req_complete = true;
  set_timeout(Timeout::none);
  // Reading goes on while the response is prepared (no epoll change per request):
  // pipelined bytes wait in `leftover`, and a client closing is noticed.
  // Upgrade requests: llhttp stops with HPE_PAUSED_UPGRADE; what follows is tunnel data.
  return st->upgrade ? 0 : HPE_PAUSED;
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
  end_stream();
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
  if (writes_done_close && tr->queued() == 0) {
    close();
    return;
  }
  if (stream && stream->up) resume_upstream(stream);
}

void Session::on_closed() { delete this; }

void Session::close() {
  if (closing) return;
  closing = true;
  if (stream) end_stream();
  set_timeout(Timeout::none);
  tr->close();  // on_closed() frees the session, on a later loop iteration
  if (counted) w->session_closed(this);
}

}  // namespace px::proxy
