// A stream: one request/response exchange, from the parsed head to its end
// record, knowing no wire format. Routing, the filter phases, px's own answers,
// and end_stream(), the one place a stream ends. It talks to the client
// through its Downstream (downstream.h; HTTP/1: session.cpp); the upstream
// side is upstream.cpp, over the HTTP/1 client side in upconn.cpp.
#include <uv.h>

#include <cstring>

#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "observe/metrics.h"
#include "stream/cache.h"
#include "stream/stream.h"
#include "upstream/peer.h"
#include "upstream/upstream.h"

namespace px::proxy {

Stream::~Stream() {
  if (upreq) free_upstream_request(upreq);
}

void Stream::reset() {
  down = nullptr;
  request_id_len = 0;
  if (req.buf.capacity() > 64 * 1024) http::Head().buf.swap(req.buf);
  if (resp.buf.capacity() > 64 * 1024) http::Head().buf.swap(resp.buf);
  req.clear();
  resp.clear();
  if (upreq) clear_upstream_request(this);
  snap = nullptr;
  route = nullptr;
  pool = nullptr;
  up = nullptr;
  peer = nullptr;
  client_ip = net::IpAddr();
  tried = 0;
  body_received = max_body = start_ms = up_sent_us = 0;
  connect_us = ttfb_us = -1;
  req_body = http::Framing::none;
  status = 0;
  attempts = 0;
  fresh_retry_used = false;
  req_complete = resp_head_sent = resp_complete = local = head_request = body_bytes_sent = up_written = false;
  upgrade = tunnel = interim = false;
  abs_path = {};
  host = {};
  mask = 0;
  filter_failed = false;
  resp_phase_ran = head_refused = no_route = false;
  term_set = false;
  term = Termination::ok;
  bytes_in = bytes_out = 0;
  for (auto& us : phase_us) us = 0;
  wait_us = 0;
  held.clear();
  held_paused = false;
  view.fs.reset();
  view.trace = false;
  trace.reset();
  refresh = 0;
}

void adopt_request_id(Stream* st, std::string_view v) {
  bool ok = !v.empty() && v.size() <= sizeof st->request_id;
  for (char c : v) ok = ok && (isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (ok) {
    memcpy(st->request_id, v.data(), v.size());
    st->request_id_len = static_cast<uint8_t>(v.size());
  }
}

void make_request_id(Stream* st) {
  const http::Head& h = st->req;
  if (st->down->client->trusted_peer)
    for (size_t i = 0; i < h.headers.size() && st->request_id_len == 0; i++)
      if (h.headers[i].kind == http::Hdr::x_request_id) adopt_request_id(st, h.value(i));
  if (st->request_id_len == 0) {
    st->w->new_request_id(st->request_id);
    st->request_id_len = 32;
  }
}

lua::Verdict run_phase(lua::Engine* eng, lua::Phase p, int route_index, Stream* st, const http::Head* resp,
                       int status) {
  // What filters see of this stream (lua/request_view.h), filled just before they run.
  lua::RequestView& v = st->view;
  v.req = &st->req;
  v.uri = st->abs_path.empty() ? st->req.url() : st->abs_path;
  v.host = st->host;
  v.client_ip = st->client_ip;
  v.trusted_peer = st->down->client->trusted_peer;
  v.tls = st->down->client->tls;
  v.sni = st->down->client->sni;
  v.route = st->route;
  v.snap = st->snap ? st->snap->snap.get() : nullptr;
  v.auth_cache = &st->w->auth_cache();
  v.now_ms = st->w->now();
  v.resp = resp;
  v.status = status;
  v.request_id = [](void* s) { return stream_request_id(static_cast<Stream*>(s)); };
  v.owner = st;
  v.geo = &st->w->geo();
  // Phase times are the end record's: measured (two clock reads) only when something reads it.
  bool timed = st->trace || !st->w->observers().empty();
  uint64_t t0 = timed ? uv_hrtime() : 0;
  lua::Verdict r = eng->run(p, route_index, v);
  if (timed) st->phase_us[p] += static_cast<uint32_t>((uv_hrtime() - t0) / 1000);
  if (st->trace) [[unlikely]]
    eng->take_trace(p, &st->trace->filters);
  return r;
}

namespace {
net::IpAddr real_client_ip(const Stream* st);
void answer_from_filter(Stream* st, lua::Verdict rr);
void after_request_phase(Stream* st, lua::Verdict rr);
void not_found(Stream* st, bool has_body);
void proceed(Stream* st);
void wait_begin(Stream* st);
void wait_end(FilterWait* fw, const lua::FetchResult* r);
}  // namespace

void stream_begin(Stream* st) {
  Worker* w = st->w;
  const http::Head& h = st->req;
  st->start_ms = w->now();
  bool has_body = st->req_body != http::Framing::none;

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
  st->client_ip = real_client_ip(st);
  if (h.trace) [[unlikely]]
    trace_begin(st);
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
      return;
    }
  }
  const route::Route* r = snap ? snap->snap->match(host, path) : nullptr;
  if (!r) {
    not_found(st, has_body);
    return;
  }
  st->route = r;
  st->pool = &snap->pools[r->index];
  if (st->trace) [[unlikely]]
    trace_route(st);
  st->mask = snap->masks.empty() ? 0 : snap->masks[r->index];
  if (st->mask & lua::kMissingFilter) {
    PX_ERR("route %s: a filter it names is not loaded or refused its config; answering 500", r->spec.name.c_str());
    st->end_as(Termination::filter_error);
    reply_text(st, 500, "filter not available", has_body);
    return;
  }
  // Phase 2, request: access control, redirects, answers; a filter may wait (px.sleep, px.fetch).
  if (st->mask & (1 << lua::kRequest)) {
    after_request_phase(st, run_phase(eng, lua::kRequest, static_cast<int>(r->index), st));
    return;
  }
  proceed(st);
}

namespace {
// No route matches: px's 404, dressed by the response-phase filters of pxd.conf's not_found_route (its
// error_pages). The stream stays a no-route one in its end record (no_route).
void not_found(Stream* st, bool has_body) {
  const std::string& name = st->w->cfg().not_found_route;
  if (!name.empty() && st->snap)
    for (const auto& rt : st->snap->snap->routes())
      if (rt->spec.name == name) {
        st->route = rt.get();
        st->no_route = true;
        st->mask = st->snap->masks.empty() ? 0 : st->snap->masks[rt->index] & (1 << lua::kResponse);
        break;
      }
  reply_text(st, 404, "no route for this host and path", has_body);
}

void after_request_phase(Stream* st, lua::Verdict rr) {
  if (rr == lua::Verdict::wait) {
    wait_begin(st);
    return;
  }
  if (rr != lua::Verdict::next) {
    answer_from_filter(st, rr);
    return;
  }
  proceed(st);
}

// After the request phase: limits, the cache, phases 3 and 4, the upstream exchange.
void proceed(Stream* st) {
  const route::Route* r = st->route;
  const http::Head& h = st->req;
  st->max_body = r->max_body_size;
  if (st->max_body && h.has_content_length && h.content_length > st->max_body) {
    reply_text(st, 413, "request body too large", true);
    return;
  }
  if (!st->down->continue_request(st)) {
    reply_text(st, 417, "unsupported Expect", true);
    return;
  }
  // The cache stage (cache.h): a stored response answers, or the request waits for another's fill of its key.
  if (r->spec.cache.enabled && st->w->cache() && cache_begin(st)) [[unlikely]]
    return;
  stream_go_upstream(st);
}
}  // namespace

void stream_go_upstream(Stream* st) {
  const route::Route* r = st->route;
  bool has_body = st->req_body != http::Framing::none;
  lua::Engine* eng = st->w->engine();
  // Phases 3 and 4, upstream_peer and upstream_request: which peer, and what it is sent.
  for (lua::Phase p : {lua::kPeer, lua::kUpstreamRequest})
    if (st->mask & (1 << p)) {
      if (run_phase(eng, p, static_cast<int>(r->index), st) != lua::Verdict::next) {
        st->end_as(Termination::filter_error);
        reply_text(st, 500, "filter error", has_body);
        return;
      }
    }
  if (!dispatch(st) || (st->held.empty() && !st->req_complete)) return;
  // Body that came while a filter waited.
  if (st->max_body && st->body_received > st->max_body) {
    reply_text(st, 413, "request body too large", true);
    return;
  }
  if (!st->held.empty()) st->up->send_body(st, st->held.data(), st->held.size());
  if (st->req_complete && has_body) st->up->send_end(st);
  st->up->flush(st);
  st->held.clear();
}

// ---- a filter waits (Verdict::wait): the stream waits for it, then resumes the phase ----

struct FilterWait {
  uv_timer_t timer;
  uv_getnameinfo_t ni;  // px.reverse_dns: the PTR name, then
  uv_getaddrinfo_t ai;  // its addresses (forward confirmation)
  std::string name;
  net::IpAddr ip;
  bool dns = false;     // a lookup is under way (the libuv threadpool's: it cannot be taken back)
  bool orphan = false;  // the stream ended meanwhile: the lookup's callback frees this
  Stream* st = nullptr;
  http::Client::Call* call = nullptr;  // px.fetch to a host name
  FetchConn* fcall = nullptr;          // px.fetch to an address (kept-alive connections)
  uint64_t since = 0;                  // uv_hrtime
  bool timer_open = false;
};

namespace {
// Waits are pooled per worker thread (forward_auth waits on every request): a few hundred bytes each.
thread_local std::vector<std::unique_ptr<FilterWait>> t_free_waits;

FilterWait* wait_new() {
  if (t_free_waits.empty()) return new FilterWait;
  FilterWait* fw = t_free_waits.back().release();
  t_free_waits.pop_back();
  return fw;
}
// A wait with nothing of libuv's open any more: back to the pool.
void wait_recycle(FilterWait* fw) {
  if (t_free_waits.size() >= 64) {
    delete fw;
    return;
  }
  fw->name.clear();
  fw->dns = fw->orphan = fw->timer_open = false;
  fw->st = nullptr;
  fw->call = nullptr;
  fw->fcall = nullptr;
  t_free_waits.emplace_back(fw);
}

void wait_free(FilterWait* fw) {
  if (fw->dns) {
    fw->orphan = true;
    return;
  }
  if (fw->call) fw->st->w->fetch_client().cancel(fw->call);
  if (fw->fcall) fw->st->w->fetcher().cancel(fw->fcall);
  if (!fw->timer_open) {
    wait_recycle(fw);
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&fw->timer),
           [](uv_handle_t* h) { wait_recycle(static_cast<FilterWait*>(h->data)); });
}

// The wait is over (r: a fetch's answer; nullptr after a sleep): the filter goes on, and so does the stream.
void wait_end(FilterWait* fw, const lua::FetchResult* r) {
  Stream* st = fw->st;
  st->wait = nullptr;
  st->wait_us += static_cast<uint32_t>((uv_hrtime() - fw->since) / 1000);
  fw->call = nullptr;
  fw->fcall = nullptr;
  wait_free(fw);
  lua::Engine* eng = st->w->engine();
  bool timed = st->trace || !st->w->observers().empty();
  uint64_t t0 = timed ? uv_hrtime() : 0;
  lua::Verdict rr = eng->resume(lua::kRequest, st->view, r);
  if (timed) st->phase_us[lua::kRequest] += static_cast<uint32_t>((uv_hrtime() - t0) / 1000);
  if (st->trace) [[unlikely]]
    eng->take_trace(lua::kRequest, &st->trace->filters);
  if (rr != lua::Verdict::wait && st->held_paused) {
    st->held_paused = false;
    st->down->resume_request(st);
  }
  after_request_phase(st, rr);
  if (!st->wait) st->down->progress(st);
}

// px.reverse_dns: the PTR name of the address, kept only when it resolves back to the address.
void dns_end(FilterWait* fw, bool confirmed) {
  fw->dns = false;
  if (fw->orphan) {
    delete fw;
    return;
  }
  lua::FetchResult fr;
  fr.status = 1;
  if (confirmed) fr.body = fw->name;
  wait_end(fw, &fr);
}

void dns_begin(FilterWait* fw, const std::string& address) {
  sockaddr_storage sa{};
  net::IpAddr::parse(address, &fw->ip);
  if (address.find(':') != std::string::npos)
    uv_ip6_addr(address.c_str(), 0, reinterpret_cast<sockaddr_in6*>(&sa));
  else
    uv_ip4_addr(address.c_str(), 0, reinterpret_cast<sockaddr_in*>(&sa));
  fw->dns = true;
  fw->ni.data = fw;
  int r = uv_getnameinfo(
      fw->st->w->loop(), &fw->ni,
      [](uv_getnameinfo_t* req, int status, const char* host, const char*) {
        auto* f = static_cast<FilterWait*>(req->data);
        net::IpAddr as_ip;
        if (f->orphan || status != 0 || !host || net::IpAddr::parse(host, &as_ip)) {  // no name: a number back
          dns_end(f, false);
          return;
        }
        f->name = host;
        f->ai.data = f;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int r2 = uv_getaddrinfo(
            f->st->w->loop(), &f->ai,
            [](uv_getaddrinfo_t* q, int st2, addrinfo* res) {
              auto* g = static_cast<FilterWait*>(q->data);
              bool ok = false;
              for (addrinfo* a = st2 == 0 ? res : nullptr; a && !ok; a = a->ai_next)
                ok = net::IpAddr::from_sockaddr(a->ai_addr).b == g->ip.b;
              if (res) uv_freeaddrinfo(res);
              dns_end(g, ok);
            },
            f->name.c_str(), nullptr, &hints);
        if (r2 != 0) dns_end(f, false);
      },
      reinterpret_cast<const sockaddr*>(&sa), NI_NAMEREQD);
  if (r != 0) {
    fw->dns = false;
    lua::FetchResult fr;
    fr.status = 1;
    wait_end(fw, &fr);
  }
}

void wait_begin(Stream* st) {
  Worker* w = st->w;
  lua::FilterState& fs = *st->view.fs;
  FilterWait* fw = wait_new();
  fw->st = st;
  fw->since = uv_hrtime();
  st->wait = fw;  // reading goes on: body that comes meanwhile is held (stream_body), up to a point
  if (fs.wait == lua::FilterState::kSleep) {
    uv_timer_init(w->loop(), &fw->timer);
    fw->timer.data = fw;
    fw->timer_open = true;
    uv_timer_start(
        &fw->timer, [](uv_timer_t* t) { wait_end(static_cast<FilterWait*>(t->data), nullptr); }, fs.wait_ms, 0);
    return;
  }
  if (fs.wait == lua::FilterState::kDns) {
    dns_begin(fw, fs.fetch.url);
    return;
  }
  const lua::FetchCall& c = fs.fetch;
  const route::UpstreamTlsSpec& t = st->route->spec.upstream_tls;
  std::string tls_id;
  if (c.url.starts_with("https:")) tls_id = (t.verify ? "v " : "n ") + t.ca_file + " " + t.client_cert + " " + t.sni;
  {
    fw->fcall = w->fetcher().start(
        c, tls_id,
        [](void* ctx) -> SSL* {
          auto* f = static_cast<FilterWait*>(ctx);
          const lua::FetchCall& fc = f->st->view.fs->fetch;
          bool tls;
          std::string host, target;
          uint16_t port;
          http::split_url(fc.url, &tls, &host, &port, &target);
          const auto& spec = f->st->route->spec.upstream_tls;
          return f->st->w->new_client_ssl(spec, spec.sni.empty() ? host : spec.sni, "px.fetch " + fc.url);
        },
        [](void* ctx, lua::FetchResult& r) {
          auto* f = static_cast<FilterWait*>(ctx);
          f->fcall = nullptr;
          wait_end(f, &r);
        },
        fw);
    if (fw->fcall) return;  // else a host name: http::Client resolves it
  }
  http::ClientRequest rq;
  rq.method = c.method;
  rq.url = c.url;
  rq.body = c.body;
  for (std::string_view f = c.fields; !f.empty();) {  // "Name: value\r\n" lines
    size_t colon = f.find(": "), end = f.find("\r\n");
    rq.headers.emplace_back(f.substr(0, colon), f.substr(colon + 2, end - colon - 2));
    f.remove_prefix(end + 2);
  }
  rq.timeout_ms = c.timeout_ms;
  bool tls;
  std::string host, target;
  uint16_t port;
  if (http::split_url(c.url, &tls, &host, &port, &target) && tls &&
      !(rq.ssl = w->new_client_ssl(t, t.sni.empty() ? host : t.sni, "px.fetch " + c.url))) {
    lua::FetchResult fr;
    fr.error = "no TLS for " + c.url;
    wait_end(fw, &fr);
    return;
  }
  fw->call = w->fetch_client().fetch(std::move(rq), [fw](http::ClientResponse resp) {
    fw->call = nullptr;
    lua::FetchResult fr;
    fr.status = resp.status;
    fr.timeout = resp.failure == http::ClientFailure::timeout;
    fr.error = resp.status ? "" : (fr.timeout ? "timeout" : resp.error);
    fr.headers = std::move(resp.headers);
    fr.body = std::move(resp.body);
    wait_end(fw, &fr);
  });
}
}  // namespace

BodyTake stream_body(Stream* st, const char* data, size_t len) {
  st->body_received += len;
  if (st->wait) {  // a filter waits: the body is held until it goes on; past kHoldMax, reading pauses
    st->held.append(data, len);
    if (st->held.size() > kHoldMax && !st->held_paused) {
      st->held_paused = true;
      st->down->pause_request(st);
    }
    return BodyTake::taken;
  }
  if (st->local || st->resp_complete) return BodyTake::unwanted;
  if (st->max_body && st->body_received > st->max_body) return BodyTake::too_large;
  if (!st->up) return BodyTake::unwanted;  // no exchange (it failed and px answered)
  st->up->send_body(st, data, len);
  return BodyTake::taken;
}

void stream_body_trailers(Stream* st, const Fields& trailers) {
  if (st->req_body != http::Framing::none && !st->local && !st->resp_complete && st->up)
    st->up->send_trailers(st, trailers);
}

void stream_body_end(Stream* st) {
  if (st->req_body != http::Framing::none && !st->local && !st->resp_complete && st->up) st->up->send_end(st);
  st->req_complete = true;
}

namespace {
void answer_from_filter(Stream* st, lua::Verdict rr) {
  bool has_body = st->req_body != http::Framing::none;
  if (rr == lua::Verdict::failed) {
    st->end_as(Termination::filter_error);
    reply_text(st, 500, "filter error", has_body);
    return;
  }
  lua::FilterState& fs = *st->view.fs;
  reply(st, fs.respond_status, &fs.respond_headers, fs.respond_body, has_body);
}

net::IpAddr real_client_ip(const Stream* st) {
  const Downstream* d = st->down;
  if (!d->client->trusted_peer) return d->client->peer_ip;
  // Walk X-Forwarded-For from the right, skipping trusted proxies.
  const http::Head& h = st->req;
  net::IpAddr ip = d->client->peer_ip;
  for (size_t i = h.headers.size(); i-- > 0;) {
    if (h.headers[i].kind != http::Hdr::x_forwarded_for) continue;
    std::string_view v = h.value(i);
    while (!v.empty()) {
      size_t comma = v.rfind(',');
      std::string_view item = trim(comma == std::string_view::npos ? v : v.substr(comma + 1));
      net::IpAddr cand;
      if (!net::IpAddr::parse(item, &cand)) return ip;
      ip = cand;
      if (!st->w->cfg().trusted_proxies.contains(cand)) return ip;
      if (comma == std::string_view::npos) break;
      v = v.substr(0, comma);
    }
  }
  return ip;
}

}  // namespace

void reply_text(Stream* st, int status, std::string_view text, bool drop_body) {
  std::string body(text);
  if (!body.empty()) body.push_back('\n');
  reply(st, status, nullptr, body, drop_body);
}

void reply(Stream* st, int status, const Fields* fields, std::string_view body, bool drop_body) {
  Worker* w = st->w;
  if (st->cache && status >= 502 && status <= 504 && cache_stale_if_error(st, status)) [[unlikely]]
    return;
  if (st->up) st->up->abort(st);
  st->local = true;
  if (drop_body) st->down->abandon_request(st);
  Fields edited, original;
  std::string filter_body;
  // Phase 5, response, also for answers px makes itself (a route's filters may add HSTS to a redirect, or
  // answer in their own way: an error page).
  if (st->route && (st->mask & (1 << lua::kResponse)) && w->engine() && !st->filter_failed && !st->resp_phase_ran) {
    st->resp_phase_ran = true;
    if (st->view.fs && fields == &st->view.fs->respond_headers) {
      // A filter's answer from the request phase: a px.respond in this phase starts another in the same place.
      original = *fields;
      fields = &original;
      filter_body.assign(body.data(), body.size());
      body = filter_body;
    }
    lua::Verdict rr = run_phase(w->engine(), lua::kResponse, static_cast<int>(st->route->index), st, nullptr, status);
    if (rr == lua::Verdict::failed) {
      st->end_as(Termination::filter_error);
      st->filter_failed = true;
      status = 500;
      fields = nullptr;
      filter_body = "filter error\n";
      body = filter_body;
    } else if (rr == lua::Verdict::answered) {
      lua::FilterState& fs = *st->view.fs;
      status = fs.respond_status;
      fields = &fs.respond_headers;
      body = fs.respond_body;
    } else {
      if (st->view.fs->new_status) status = st->view.fs->new_status;
      if (!st->view.fs->resp_edits.empty()) {
        edited = lua::apply_edits(fields ? *fields : Fields(), st->view.fs->resp_edits);
        fields = &edited;
      }
    }
  }
  st->status = static_cast<uint16_t>(status);
  Fields grpc;
  if (status >= 300 && grpc_answer(st)) {
    // A gRPC client reads only gRPC statuses: the answer is HTTP 200 in trailers-only form (grpc-status and
    // grpc-message in the one HEADERS frame). The end record keeps the HTTP status it stands for.
    grpc_fields(status, body, fields, &grpc);
    st->down->send_reply(st, 200, &grpc, std::string_view());
  } else {
    st->down->send_reply(st, status, fields, body);
  }
  st->resp_head_sent = true;
  st->resp_complete = true;
}

bool grpc_answer(const Stream* st) {
  if (st->route && !st->route->spec.upstreams.empty() && st->route->spec.upstreams[0].grpc) return true;
  std::string_view ct = st->req.get(std::string_view("content-type"));
  return ct.size() >= 16 && iequals(ct.substr(0, 16), "application/grpc") &&
         (ct.size() == 16 || ct[16] == '+' || ct[16] == ';');  // (not gRPC-Web's application/grpc-web)
}

int grpc_status_for(int http_status) {
  switch (http_status) {
    case 400: return 13;  // INTERNAL (gRPC's HTTP-to-status mapping)
    case 401: return 16;  // UNAUTHENTICATED
    case 403: return 7;   // PERMISSION_DENIED
    case 404:
    case 405:
    case 501: return 12;  // UNIMPLEMENTED
    case 408:
    case 504: return 4;  // DEADLINE_EXCEEDED (a timeout)
    case 413:
    case 429:
    case 431: return 8;  // RESOURCE_EXHAUSTED (a limit: body size, rate)
    case 502:
    case 503: return 14;  // UNAVAILABLE (no peer reachable, draining)
    case 500: return 13;  // INTERNAL
    default: return 2;    // UNKNOWN
  }
}

void grpc_fields(int status, std::string_view text, const Fields* fields, Fields* out) {
  out->clear();
  if (fields)
    for (const auto& [n, v] : *fields)  // (Retry-After, WWW-Authenticate, a filter's own, ...)
      if (!iequals(n, "content-type") && !iequals(n, "content-length")) out->emplace_back(n, v);
  out->emplace_back("content-type", "application/grpc");
  out->emplace_back("grpc-status", std::to_string(grpc_status_for(status)));
  // grpc-message: percent-encoded outside printable ASCII (and '%' itself), as the gRPC spec says.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  std::string msg;
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      msg.push_back(static_cast<char>(c));
    } else {
      msg.push_back('%');
      msg.push_back(kHex[c >> 4]);
      msg.push_back(kHex[c & 15]);
    }
  }
  if (!msg.empty()) out->emplace_back("grpc-message", std::move(msg));
}

bool stream_response_head(Stream* st, const http::Head& h) {
  if (st->cache && !cache_response_head(st, st->resp)) [[unlikely]]
    return true;  // the cache answers instead (at the response's end)
  return stream_send_head(st, h);
}

bool stream_send_head(Stream* st, const http::Head& h) {
  // Phase 5, response: filters may change the status and headers before the head leaves.
  ResponseHead rh;
  rh.status = h.status;
  rh.from = &h;
  if ((st->mask & (1 << lua::kResponse)) && h.status != 101) {
    st->resp_phase_ran = true;
    lua::Verdict rr = run_phase(st->w->engine(), lua::kResponse, static_cast<int>(st->route->index), st, &h, h.status);
    if (rr != lua::Verdict::next) {  // stream_answer_instead sends the filter's answer, or a 500
      st->head_refused = true;
      if (rr == lua::Verdict::failed) {
        st->filter_failed = true;
        st->end_as(Termination::filter_error);
      }
      return false;
    }
    if (st->view.fs->new_status) rh.status = st->view.fs->new_status;
    if (!st->view.fs->resp_edits.empty()) rh.edits = &st->view.fs->resp_edits;
    if (st->view.fs->cache_no_store && st->cache) cache_no_store(st);
  }
  st->down->send_head(st, rh);
  st->resp_head_sent = true;
  st->status = static_cast<uint16_t>(rh.status);
  return true;
}

void stream_answer_instead(Stream* st) {
  bool drop_body = !st->req_complete;
  if (st->filter_failed) {
    reply_text(st, 500, "filter error", drop_body);
    return;
  }
  lua::FilterState& fs = *st->view.fs;
  reply(st, fs.respond_status, &fs.respond_headers, fs.respond_body, drop_body);  // (the response phase ran)
}

void end_stream(Stream* st, bool cut) {
  Worker* w = st->w;
  if (st->up) st->up->abort(st);
  if (st->wait) {  // the client left while a filter waited: the filter is let go (Engine::done)
    st->wait_us += static_cast<uint32_t>((uv_hrtime() - st->wait->since) / 1000);
    wait_free(st->wait);
    st->wait = nullptr;
  }
  if (!st->term_set) {
    if (cut && !st->tunnel && !(st->req_complete && st->resp_complete))
      st->end_as(w->stopping() ? Termination::shutdown : Termination::client_closed);
    else
      st->end_as(st->local ? Termination::local : Termination::ok);
  }
  lua::Engine* eng = w->engine();
  // The first observer: phase 6, logging (after the exchange, read-only).
  if (st->view.fs && eng && st->route && (st->mask & (1 << lua::kLogging)))
    run_phase(eng, lua::kLogging, static_cast<int>(st->route->index), st, st->local ? nullptr : &st->resp, st->status);
  bool recording =
      st->route && !st->no_route && st->route->spec.record.count && w->recorder();  // pxctl route set --record
  if (!w->observers().empty() || st->trace || recording) {  // the record is made only when someone reads it
    EndRecord r;
    const route::Route* route = st->no_route ? nullptr : st->route;
    r.route = route ? std::string_view(route->spec.name) : std::string_view();
    r.peer = st->peer ? std::string_view(st->peer->key) : std::string_view();
    r.peer_slot = st->peer ? st->peer->metrics_slot : static_cast<uint16_t>(kPeerSlotNone);
    r.upstream_proto = st->peer ? (st->peer->h2 ? 2 : 1) : 0;
    r.connect_us = st->connect_us;
    r.ttfb_us = st->ttfb_us;
    r.method = st->req.method_name();
    r.host = st->host;
    r.target = st->req.url();
    r.referer = st->req.get(http::Hdr::referer);
    r.user_agent = st->req.get(http::Hdr::user_agent);
    r.http_major = st->req.major;
    r.http_minor = st->req.minor;
    r.tls = st->down->client->tls;
    r.sni = st->down->client->sni;
    r.quiet = st->route && !st->route->spec.access_log;
    r.request_id = std::string_view(st->request_id, st->request_id_len);
    r.metrics_slot = route ? route->metrics_slot : static_cast<uint16_t>(kSlotNone);
    r.client = st->client_ip;
    r.status = st->status;
    r.upstream_status = st->local || !st->peer ? 0 : st->resp.status;
    r.cache = cache_result(st);
    r.cache_detail = cache_detail(st);
    r.attempts = st->attempts;
    r.reason = st->term;
    r.bytes_in = st->bytes_in;
    r.bytes_out = st->bytes_out;
    r.start_ms = st->start_ms;
    r.duration_ms = st->start_ms ? w->now() - st->start_ms : 0;
    r.stream = st;
    for (int p = 0; p < lua::kPhases; p++) r.phase_us[p] = st->phase_us[p];
    r.wait_us = st->wait_us;
    for (EndObserver* o : w->observers()) o->on_stream_end(r);
    if (recording) [[unlikely]]
      w->recorder()->on_stream_end(r);
    if (st->trace) [[unlikely]]
      trace_write(w->trace_dir(), *st->trace, r);
  }
  if (st->view.fs && eng) eng->done(st->view);
  if (st->cache) cache_end(st);
  if (st->snap) w->release_snap(st->snap);
  w->put_stream(st);
}

}  // namespace px::proxy
