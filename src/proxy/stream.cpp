// A stream: one request/response exchange, from the parsed head to its end
// record. Routing, the filter phases, the head sent upstream, px's own answers,
// and end_stream(), the one place a stream ends. The connection it arrives on
// is session.cpp; the upstream side is upstream.cpp and upconn.cpp.
#include <uv.h>

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "http/h1.h"
#include "proxy/upstream.h"
#include "proxy/worker.h"

namespace px::proxy {

void Stream::reset() {
  session = nullptr;
  if (req.buf.capacity() > 64 * 1024) http::Head().buf.swap(req.buf);
  if (resp.buf.capacity() > 64 * 1024) http::Head().buf.swap(resp.buf);
  req.clear();
  resp.clear();
  out.clear();
  up_head.clear();
  if (pending_body.capacity() > 256 * 1024) std::string().swap(pending_body);
  pending_body.clear();
  snap = nullptr;
  route = nullptr;
  pool = nullptr;
  up = nullptr;
  peer = nullptr;
  client_ip = net::IpAddr();
  tried = 0;
  body_received = max_body = start_ms = 0;
  req_body = resp_body = http::Framing::none;
  status = 0;
  attempts = 0;
  fresh_retry_used = false;
  req_complete = resp_head_sent = resp_complete = local = head_request = body_bytes_sent = up_written = false;
  upgrade = tunnel = interim = false;
  abs_path = {};
  host = {};
  mask = 0;
  filter_failed = false;
  term_set = false;
  term = Termination::ok;
  bytes_in = bytes_out = 0;
  for (auto& us : phase_us) us = 0;
  view.fs.reset();
}

lua::Verdict run_phase(lua::Engine* eng, lua::Phase p, int route_index, Stream* st, const http::Head* resp,
                       int status) {
  // What filters see of this stream (lua/request_view.h), filled just before they run.
  lua::RequestView& v = st->view;
  Session* s = st->session;
  v.req = &st->req;
  v.uri = st->abs_path.empty() ? st->req.url() : st->abs_path;
  v.host = st->host;
  v.client_ip = st->client_ip;
  v.trusted_peer = s->trusted_peer;
  v.route = st->route;
  v.snap = st->snap ? st->snap->snap.get() : nullptr;
  v.auth_cache = &s->w->auth_cache();
  v.now_ms = s->w->now();
  v.resp = resp;
  v.status = status;
  uint64_t t0 = uv_hrtime();
  lua::Verdict r = eng->run(p, route_index, v);
  st->phase_us[p] += static_cast<uint32_t>((uv_hrtime() - t0) / 1000);
  return r;
}

int Session::on_head(http::Head& h) {
  Stream* st = stream;
  st->start_ms = w->now();
  st->head_request = h.method == HTTP_HEAD;
  st->upgrade = h.upgrade;
  if (h.chunked)
    st->req_body = http::Framing::chunked;
  else if (h.has_content_length && h.content_length > 0)
    st->req_body = http::Framing::length;
  if (!h.keep_alive || w->draining()) close_after = true;
  set_timeout(st->req_body != http::Framing::none ? Timeout::body : Timeout::none);

  // Where is this request going? Host header, or the authority of an absolute-form target.
  std::string_view host = h.host_index >= 0 ? h.value(static_cast<size_t>(h.host_index)) : std::string_view();
  std::string_view target = h.url();
  std::string_view path = target;
  if (target.size() > 7 && (iequals(target.substr(0, 7), "http://") || iequals(target.substr(0, 8), "https://"))) {
    std::string_view rest = target.substr(target[4] == ':' ? 7 : 8);
    size_t slash = rest.find_first_of("/?");
    host = rest.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
    st->abs_path = path;
  }
  // The codec has checked the target's form and the Host's grammar (http/grammar.h).
  st->host = host;
  st->client_ip = real_client_ip(h);
  lua::Engine* eng = w->engine();
  SnapRef* snap = w->current_snap();
  if (snap) {
    st->snap = snap;
    snap->refs++;
  }
  // Phase 1, early_request: the global filters (acme), before routing.
  if (eng && (eng->early_mask() & (1 << lua::kEarly)) && eng->early_wants(path)) {
    lua::Verdict rr = run_phase(eng, lua::kEarly, -1, st);
    if (rr != lua::Verdict::next) {
      answer_from_filter(st, rr);
      return 0;
    }
  }
  const route::Route* r = snap ? snap->snap->match(host, path) : nullptr;
  if (!r) {
    if (st->req_body != http::Framing::none) close_after = true;
    respond_local(404, "no route for this host and path", false);
    return 0;
  }
  st->route = r;
  st->pool = &snap->pools[r->index];
  st->mask = snap->masks.empty() ? 0 : snap->masks[r->index];
  if (st->mask & lua::kMissingFilter) {
    PX_ERR("route %s: a filter it names is not loaded or refused its config; answering 500", r->spec.name.c_str());
    st->end_as(Termination::filter_error);
    respond_local(500, "filter not available", st->req_body != http::Framing::none);
    return 0;
  }
  // Phase 2, request: access control, redirects, answers.
  if (st->mask & (1 << lua::kRequest)) {
    lua::Verdict rr = run_phase(eng, lua::kRequest, static_cast<int>(r->index), st);
    if (rr != lua::Verdict::next) {
      answer_from_filter(st, rr);
      return 0;
    }
  }
  st->max_body = r->max_body_size;
  if (st->max_body && h.has_content_length && h.content_length > st->max_body) {
    respond_local(413, "request body too large", true);
    return 0;
  }
  switch (http::expectation(h)) {
    case http::Expect::unsupported: respond_local(417, "unsupported Expect", true); return 0;
    case http::Expect::continue_100:
      // px answers the expectation itself once the request passed routing and limits.
      if (h.minor == 1 && st->req_body != http::Framing::none) http::write_continue(st->out);
      break;
    case http::Expect::none: break;
  }
  // Phases 3 and 4, upstream_peer and upstream_request: which peer, and what it is sent.
  for (lua::Phase p : {lua::kPeer, lua::kUpstreamRequest})
    if (st->mask & (1 << p)) {
      if (run_phase(eng, p, static_cast<int>(r->index), st) != lua::Verdict::next) {
        st->end_as(Termination::filter_error);
        respond_local(500, "filter error", st->req_body != http::Framing::none);
        return 0;
      }
    }
  build_upstream_head(st);
  dispatch(st);
  return 0;
}

void Session::answer_from_filter(Stream* st, lua::Verdict rr) {
  if (rr == lua::Verdict::failed) {
    st->end_as(Termination::filter_error);
    respond_local(500, "filter error", st->req_body != http::Framing::none);
    return;
  }
  lua::FilterState& fs = *st->view.fs;
  respond(fs.respond_status, &fs.respond_headers, fs.respond_body, st->req_body != http::Framing::none);
}

net::IpAddr Session::real_client_ip(const http::Head& h) const {
  if (!trusted_peer) return peer_ip;
  // Walk X-Forwarded-For from the right, skipping trusted proxies.
  net::IpAddr ip = peer_ip;
  for (size_t i = h.headers.size(); i-- > 0;) {
    if (h.headers[i].kind != http::Hdr::x_forwarded_for) continue;
    std::string_view v = h.value(i);
    while (!v.empty()) {
      size_t comma = v.rfind(',');
      std::string_view item = trim(comma == std::string_view::npos ? v : v.substr(comma + 1));
      net::IpAddr cand;
      if (!net::IpAddr::parse(item, &cand)) return ip;
      ip = cand;
      if (!w->cfg().trusted_proxies.contains(cand)) return ip;
      if (comma == std::string_view::npos) break;
      v = v.substr(0, comma);
    }
  }
  return ip;
}

void Session::build_upstream_head(Stream* st) {
  const http::Head& h = st->req;
  std::string& o = st->up_head;
  o.clear();
  http::HeadWriter wr(o);
  std::string_view path = st->abs_path.empty() ? h.url() : st->abs_path;
  bool need_slash;
  std::string_view sent = route::Snapshot::strip(*st->route, path, &need_slash);
  wr.request_line(h.method_name(), sent, need_slash);
  bool trusted = trusted_peer;
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
      default: break;
    }
    std::string_view n = h.name(i);
    if (edits && edited(n)) continue;  // replaced below by the filters' version
    if (static_cast<int>(i) == h.host_index) {
      host = h.value(i);
      if (st->abs_path.empty()) wr.field("Host", host);
      continue;
    }
    if (h.listed_in_connection(n)) continue;
    wr.field(n, h.value(i));
  }
  if (edits) lua::append_edited(wr, h, *edits);
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
  wr.begin_field("X-Forwarded-For");
  if (!xff.empty()) {
    wr.append(xff);
    wr.append(", ");
  }
  char ipbuf[64];
  wr.append(std::string_view(ipbuf, peer_ip.format(ipbuf)));
  wr.end_field();
  wr.field("X-Forwarded-Proto", xfproto.empty() ? std::string_view("http") : xfproto);
  wr.field("X-Forwarded-Host", xfhost.empty() ? host : xfhost);
  http::Framing framing = st->req_body == http::Framing::chunked ? http::Framing::chunked
                          : h.has_content_length                 ? http::Framing::length
                                                                 : http::Framing::none;
  wr.end_request(framing, h.content_length, st->upgrade ? h.get(http::Hdr::upgrade) : std::string_view());
}

void Session::respond_local(int status, std::string_view body, bool close) {
  std::string text(body);
  if (!text.empty()) text.push_back('\n');
  respond(status, nullptr, text, close);
}

void Session::respond(int status, const std::vector<std::pair<std::string, std::string>>* headers,
                      std::string_view body, bool close) {
  Stream* st = stream;
  if (st->up) abort_upstream(st);
  st->local = true;
  if (close) close_after = true;
  std::vector<std::pair<std::string, std::string>> hdrs;
  if (headers) hdrs = *headers;
  std::string filter_body;
  // Phase 5, response, also for answers px makes itself (a route's filters may add HSTS to a redirect).
  if (st->route && (st->mask & (1 << lua::kResponse)) && w->engine() && !st->filter_failed) {
    lua::Verdict rr = run_phase(w->engine(), lua::kResponse, static_cast<int>(st->route->index), st, nullptr, status);
    if (rr == lua::Verdict::failed) {
      st->end_as(Termination::filter_error);
      st->filter_failed = true;
      status = 500;
      hdrs.clear();
      filter_body = "filter error\n";
      body = filter_body;
    } else {
      if (st->view.fs->new_status) status = st->view.fs->new_status;
      if (!st->view.fs->resp_edits.empty()) hdrs = lua::apply_edits(hdrs, st->view.fs->resp_edits);
    }
  }
  st->status = static_cast<uint16_t>(status);
  bool has_type = false;
  for (const auto& [n, v] : hdrs) has_type = has_type || iequals(n, "content-type");
  std::string& s = st->out.begin_scratch();
  http::HeadWriter wr(s);
  wr.status_line(status);
  wr.field("Server", "px");
  wr.field("Date", w->date());
  for (const auto& [n, v] : hdrs) {
    if (iequals(n, "content-length") || iequals(n, "connection") || iequals(n, "transfer-encoding")) continue;
    wr.field(n, v);
  }
  if (!has_type && !body.empty()) wr.field("Content-Type", "text/plain; charset=utf-8");
  wr.end_response(http::Framing::length, body.size(), false, close_after, false);
  if (!st->head_request) s.append(body);
  st->out.end_scratch();
  st->resp_head_sent = true;
  st->resp_complete = true;
}

void Session::end_stream() {
  Stream* st = stream;
  if (st->up) abort_upstream(st);
  if (!st->term_set) {
    if (closing && !st->tunnel && !(st->req_complete && st->resp_complete))
      st->end_as(w->stopping() ? Termination::shutdown : Termination::client_closed);
    else
      st->end_as(st->local ? Termination::local : Termination::ok);
  }
  lua::Engine* eng = w->engine();
  // The first observer: phase 6, logging (after the exchange, read-only).
  if (st->view.fs && eng && st->route && (st->mask & (1 << lua::kLogging)))
    run_phase(eng, lua::kLogging, static_cast<int>(st->route->index), st, st->local ? nullptr : &st->resp, st->status);
  if (!w->observers().empty()) {  // the record is made only when someone reads it
    EndRecord r;
    r.route = st->route ? std::string_view(st->route->spec.name) : std::string_view();
    r.peer = st->peer ? std::string_view(st->peer->key) : std::string_view();
    r.method = st->req.method_name();
    r.host = st->host;
    r.target = st->req.url();
    r.client = st->client_ip;
    r.status = st->status;
    r.upstream_status = st->local ? 0 : st->resp.status;
    r.attempts = st->attempts;
    r.reason = st->term;
    r.bytes_in = st->bytes_in;
    r.bytes_out = st->bytes_out;
    r.start_ms = st->start_ms;
    r.duration_ms = st->start_ms ? w->now() - st->start_ms : 0;
    r.stream = st;
    for (int p = 0; p < lua::kPhases; p++) r.phase_us[p] = st->phase_us[p];
    for (EndObserver* o : w->observers()) o->on_stream_end(r);
  }
  if (st->view.fs && eng) eng->done(st->view);
  if (st->snap) w->release_snap(st->snap);
  stream = nullptr;
  w->put_stream(st);
}

}  // namespace px::proxy
