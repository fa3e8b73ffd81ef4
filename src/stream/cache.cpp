// The stream's cache stage (cache.h): lookups, answers from stored responses, fills, revalidation, waiting for
// another request's fill.
#include "stream/cache.h"

#include <uv.h>

#include <algorithm>
#include <ctime>

#include "cache/policy.h"
#include "core/deferred.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "route/route.h"
#include "route/snapshot.h"
#include "stream/stream.h"
#include "upstream/upstream.h"

namespace px::proxy {

namespace {
constexpr size_t kPiece = 64 * 1024;  // a stored body larger than this is sent piece by piece (CacheRead)
constexpr uint64_t kPollMs = 10;      // waiters look at their key's claim this often

int64_t wall_now() { return static_cast<int64_t>(time(nullptr)); }

CacheStage* stage_of(const Stream* st) { return st->w->cache(); }

void add_field(http::Head& h, std::string_view n, std::string_view v) { h.add_field(n, v, http::classify(n)); }

// The fields of a response head as stored: what a relay would pass on, less Age (recomputed on every answer)
// and framing (a stored body has a known length), and less Set-Cookie when the route strips it.
std::string stored_head(const http::Head& h, bool strip_cookie, const http::Head* merge_from = nullptr) {
  std::string out;
  auto put = [&](const http::Head& src, size_t i) {
    out.append(src.name(i));
    out.append(": ");
    out.append(src.value(i));
    out.append("\r\n");
  };
  auto skip = [&](const http::Head& src, size_t i) {
    http::Hdr k = src.headers[i].kind;
    std::string_view n = src.name(i);
    if (http::hop_by_hop(k) || k == http::Hdr::content_length || src.listed_in_connection(n)) return true;
    if (iequals(n, "age") || iequals(n, "cache-status")) return true;
    return strip_cookie && iequals(n, "set-cookie");
  };
  // A 304's fields replace the stored ones of the same names (RFC 9111 4.3.4); the others stay.
  for (size_t i = 0; i < h.headers.size(); i++) {
    if (skip(h, i)) continue;
    if (merge_from && merge_from->find(h.name(i)) >= 0 && !iequals(h.name(i), "content-type") &&
        !iequals(h.name(i), "content-encoding") && !iequals(h.name(i), "content-range"))
      continue;
    put(h, i);
  }
  if (merge_from)
    for (size_t i = 0; i < merge_from->headers.size(); i++) {
      std::string_view n = merge_from->name(i);
      if (skip(*merge_from, i) || iequals(n, "content-type") || iequals(n, "content-encoding") ||
          iequals(n, "content-range") || iequals(n, "content-length"))
        continue;
      put(*merge_from, i);
    }
  return out;
}

cache::FileHeader header_for(const http::Head& resp, const cache::CacheControl& rs, const cache::StoreDecision& d,
                             int64_t request_time, int64_t now) {
  cache::FileHeader fh{};
  fh.status = resp.status;
  fh.response_time = now;
  fh.initial_age = cache::initial_age(resp, request_time, now);
  fh.lifetime = d.lifetime;
  fh.swr = rs.stale_while_revalidate;
  fh.sie = rs.stale_if_error;
  if (rs.no_cache) fh.flags |= cache::FileHeader::kNoCache;
  if (rs.must_revalidate || rs.s_maxage >= 0) fh.flags |= cache::FileHeader::kMustRevalidate;
  if (cache::authorization_allows(rs)) fh.flags |= cache::FileHeader::kAuthOk;
  return fh;
}

void release_obj(CacheCtx* c) {
  if (c->obj) {
    c->st->w->cache()->local.release(c->obj);
    c->obj = nullptr;
  }
}

void unclaim(CacheCtx* c) {
  if (!c->claimed) return;
  c->claimed = false;
  CacheStage* s = c->st->w->cache();
  s->store->unclaim(c->fill_hash);
  s->wake_soon();
}

// Cache-Status (RFC 9211): "px; hit; ttl=N" or "px; fwd=REASON; fwd-status=N; stored" / "; detail=WHY".
void status_field(CacheCtx* c, std::string fwd, int fwd_status, bool stored, int64_t ttl, bool has_ttl) {
  std::string& f = c->field;  // (fwd may have been this field: it is a copy)
  f = "px; ";
  if (fwd.empty()) {
    f += "hit";
  } else {
    f += "fwd=";
    f += fwd;
    if (fwd_status) f += "; fwd-status=" + std::to_string(fwd_status);
  }
  if (has_ttl) f += "; ttl=" + std::to_string(ttl);
  if (stored) f += "; stored";
  if (*c->detail) {
    f += "; detail=\"";
    f += c->detail;
    f += '"';
  }
}

}  // namespace

// ---- a large stored body, sent as the client takes it: the stream's Upstream while it lasts ----

class CacheRead final : public Upstream, public DeferredSend {
 public:
  Stream* st = nullptr;
  const char* p = nullptr;
  size_t left = 0;
  int fd = -1;       // the object's file, for sendfile (-1: none; the mapping's bytes are written instead)
  uint64_t off = 0;  // where p is in that file
  bool paused = false;
  void send_body(Stream*, const char*, size_t) override {}
  void send_end(Stream*) override {}
  void send_trailers(Stream*, const Fields&) override {}
  void flush(Stream*) override {}
  void abort(Stream* s) override {
    s->up = nullptr;
    s->cache->reader = nullptr;
    s->w->undefer_h2(this);
    delete this;
  }
  void pause_response(Stream*) override { paused = true; }
  void resume_response(Stream* s) override {
    paused = false;
    s->w->defer_h2(this);
  }
  void tunnel_send(Stream*, const char*, size_t) override {}
  void tunnel_end(Stream*) override {}
  // A piece now (in the stream's first call: the codec flushes it), the rest at the end of the loop iteration;
  // with a file to send from, all of it from there.
  void start() {
    if (fd < 0) piece();
    if (left) st->w->defer_h2(this);
  }
  void piece() {
    size_t n = std::min(left, kPiece);
    stream_response_body(st, p, n);
    advance(n);
  }
  void advance(size_t n) {
    p += n;
    off += n;
    left -= n;
  }
  void deferred_send() override {
    Stream* s = st;
    // sendfile(2) where the codec and transport can (HTTP/1 over plain TCP): the kernel takes the file's pages.
    while (fd >= 0 && left) {
      int64_t n = s->down->send_file(s, fd, off, left);
      if (n == Downstream::kGone) return;  // the client is gone: the stream ended (and aborted this)
      if (n == Downstream::kCannot) {
        fd = -1;  // (HTTP/2, TLS: the mapping's bytes instead)
        break;
      }
      if (n == 0) return;  // full: resume_response once there is room
      s->w->cache()->store->stats.sendfile_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      advance(static_cast<size_t>(n));
    }
    while (!paused && left) {
      piece();
      if (!s->down->flush(s)) return;  // the client is gone: the stream ended (and aborted this)
      if (s->up != this) return;
    }
    if (left) return;
    s->up = nullptr;
    s->cache->reader = nullptr;
    stream_response_end(s);
    Downstream* d = s->down;
    delete this;
    d->progress(s);
  }
};

// ---- the stage ----

CacheStage::CacheStage(Worker* worker, cache::Store* s, uint64_t memory, uint64_t max_obj)
    : local(s, memory), store(s), w(worker), max_object(max_obj) {
  uv_timer_init(w->loop(), &timer_);
  timer_.data = this;
}

CacheStage::~CacheStage() {
  while (free_) {
    CacheCtx* c = free_;
    free_ = c->next;
    delete c;
  }
}

void CacheStage::close() {
  std::vector<Stream*> left;
  left.swap(refreshes);
  for (Stream* st : left) {
    st->end_as(Termination::shutdown);
    st->down->reset(st);  // (ends the stream: Refresh::finish)
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

CacheCtx* CacheStage::take() {
  if (!free_) return new CacheCtx;
  CacheCtx* c = free_;
  free_ = c->next;
  free_count_--;
  c->next = nullptr;
  return c;
}

void CacheStage::give(CacheCtx* c) {
  c->reset();
  if (free_count_ >= 256) {
    delete c;
    return;
  }
  c->next = free_;
  free_ = c;
  free_count_++;
}

void CacheCtx::reset() {
  st = nullptr;
  next = prev = nullptr;
  key.clear();
  target_at = 0;
  vkey.clear();
  hash = fill_hash = 0;
  obj = nullptr;
  writer.abandon();
  vary.clear();
  head.clear();
  field.clear();
  validators[0].clear();
  validators[1].clear();
  wait_until = 0;
  request_time = 0;
  result = detail = "";
  reader = nullptr;
  claimed = waiting = waited = revalidating = absorb = invalidate = fill = false;
}

void CacheStage::wait(CacheCtx* c) {
  c->waiting = true;
  c->prev = nullptr;
  c->next = waiters_;
  if (waiters_) waiters_->prev = c;
  waiters_ = c;
  if (!running_) {
    running_ = true;
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<CacheStage*>(t->data)->tick(); }, kPollMs, kPollMs);
  }
}

void CacheStage::unwait(CacheCtx* c) {
  if (!c->waiting) return;
  c->waiting = false;
  if (c->prev) c->prev->next = c->next;
  if (c->next) c->next->prev = c->prev;
  if (waiters_ == c) waiters_ = c->next;
  c->next = c->prev = nullptr;
}

void CacheStage::wake_soon() {
  if (waiters_)
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<CacheStage*>(t->data)->tick(); }, 0, kPollMs);
}

namespace {
bool lookup(Stream* st, CacheCtx* c);
}

void CacheStage::tick() {
  uint64_t now = w->now();
  // The waiters whose fill ended (its claim is gone) or whose time is up go on: answered from what the fill
  // stored, or upstream themselves (not as a fill: its result may be what could not be stored).
  CacheCtx* ready = nullptr;
  for (CacheCtx* c = waiters_; c;) {
    CacheCtx* n = c->next;
    if (now >= c->wait_until || !store->claimed(c->fill_hash, now)) {
      unwait(c);
      c->next = ready;
      ready = c;
    }
    c = n;
  }
  while (ready) {
    CacheCtx* c = ready;
    ready = c->next;
    c->next = nullptr;
    Stream* st = c->st;
    if (now >= c->wait_until) c->detail = "lock timeout";
    store->stats.coalesced.fetch_add(1, std::memory_order_relaxed);
    c->waited = true;
    if (!lookup(st, c)) stream_go_upstream(st);
    st->down->progress(st);
  }
  if (!waiters_ && running_) {
    running_ = false;
    uv_timer_stop(&timer_);
  }
}

// ---- the hooks ----

namespace {

// The key of the variant of c->key for this request's values of the Vary `names`: c->vkey and c->fill_hash.
void variant_key(Stream* st, CacheCtx* c, std::string_view names) {
  c->vkey = c->key;
  cache::vary_values(st->req, names, &c->vkey);
  c->fill_hash = stage_of(st)->store->hash(c->vkey);
}

// The stored response for the request (held: released with c->obj or by the caller): the key's own, or, when
// the key varies (*varied), its variant's for the request's values. c->fill_hash names the key asked for.
cache::Object* stored_for(Stream* st, CacheCtx* c, bool* varied) {
  cache::Local& local = stage_of(st)->local;
  cache::Object* o = local.get(c->hash, c->key);
  c->fill_hash = c->hash;
  *varied = o && o->marker();
  if (*varied) {
    variant_key(st, c, o->vary);
    local.release(o);
    o = local.get(c->fill_hash, c->vkey);
  }
  return o;
}

// A stale stored response is asked for again with its validators, when it has any.
void revalidate_with(CacheCtx* c, const cache::Object* o) {
  c->revalidating = !o->etag().empty() || !o->last_modified().empty();
  if (c->revalidating) {
    c->validators[0].assign(o->etag());
    c->validators[1].assign(o->last_modified());
  }
}

// A single byte range of a `len`-byte body (RFC 9110 14.1.2): first and last byte. none: no usable Range (the
// whole body is sent: several ranges, another unit, a syntax px does not read); unsatisfiable: 416.
enum class Ranged : uint8_t { none, one, unsatisfiable };
Ranged byte_range(const http::Head& req, const cache::Object* o, uint64_t* first, uint64_t* last) {
  std::string_view v = req.get(std::string_view("range"));
  uint64_t len = o->h.body_len;
  if (v.empty() || o->h.status != 200) return Ranged::none;
  // If-Range: the range applies only to the representation it names (a strong ETag, or the exact date).
  std::string_view ir = trim(req.get(std::string_view("if-range")));
  if (!ir.empty()) {
    std::string_view etag = o->etag();
    bool same = ir.front() == '"' ? ir == etag : ir == o->last_modified() && !o->last_modified().empty();
    if (!same) return Ranged::none;
  }
  v = trim(v);
  if (v.size() < 6 || !iequals(v.substr(0, 6), "bytes=") || v.find(',') != std::string_view::npos) return Ranged::none;
  v = trim(v.substr(6));
  size_t dash = v.find('-');
  if (dash == std::string_view::npos) return Ranged::none;
  std::string_view a = trim(v.substr(0, dash)), b = trim(v.substr(dash + 1));
  uint64_t x = 0, y = 0;
  if (a.empty()) {  // the last b bytes
    if (!parse_u64(b, &y) || y == 0) return b.empty() ? Ranged::none : Ranged::unsatisfiable;
    *first = len > y ? len - y : 0;
    *last = len - 1;
  } else {
    if (!parse_u64(a, &x) || (!b.empty() && (!parse_u64(b, &y) || y < x))) return Ranged::none;
    if (x >= len) return Ranged::unsatisfiable;
    *first = x;
    *last = b.empty() || y >= len ? len - 1 : y;
  }
  return len == 0 ? Ranged::unsatisfiable : Ranged::one;
}

// Answers the stream from a stored response (held by c->obj): into `h` (st->resp, or c->head after an
// upstream exchange, when st->resp is the upstream's head). after_upstream: that exchange ends the response.
void serve(Stream* st, CacheCtx* c, http::Head& h, bool after_upstream) {
  cache::Object* o = c->obj;
  int64_t now = wall_now();
  int64_t age = o->age(now);
  bool nm = cache::not_modified(st->req, o->etag(), o->last_modified());
  uint64_t first = 0, last = 0;
  Ranged rg = nm || st->head_request ? Ranged::none : byte_range(st->req, o, &first, &last);
  h.clear();
  h.buf = o->head.buf;
  h.headers = o->head.headers;
  if (nm || rg == Ranged::unsatisfiable) {  // RFC 9110 15.4.5: a 304 carries no content fields (nor a 416)
    size_t k = 0;
    for (size_t i = 0; i < h.headers.size(); i++) {
      std::string_view n = h.name(i);
      if (iequals(n, "content-type") || iequals(n, "content-encoding") || iequals(n, "content-language") ||
          iequals(n, "content-range"))
        continue;
      h.headers[k++] = h.headers[i];
    }
    h.headers.resize(k);
  }
  const char* body = o->body;
  uint64_t len = o->h.body_len;
  h.status = nm ? 304 : rg == Ranged::one ? 206 : rg == Ranged::unsatisfiable ? 416 : o->h.status;
  char num[64];
  if (rg == Ranged::one) {
    int n = snprintf(num, sizeof num, "bytes %llu-%llu/%llu", static_cast<unsigned long long>(first),
                     static_cast<unsigned long long>(last), static_cast<unsigned long long>(len));
    add_field(h, "Content-Range", std::string_view(num, static_cast<size_t>(n)));
    body += first;
    len = last - first + 1;
  } else if (rg == Ranged::unsatisfiable) {
    int n = snprintf(num, sizeof num, "bytes */%llu", static_cast<unsigned long long>(len));
    add_field(h, "Content-Range", std::string_view(num, static_cast<size_t>(n)));
    len = 0;
  }
  h.major = 1;
  h.minor = 1;
  h.keep_alive = true;
  h.has_content_length = !nm;
  h.content_length = nm ? 0 : len;
  int n = snprintf(num, sizeof num, "%lld", static_cast<long long>(age));
  add_field(h, "Age", std::string_view(num, static_cast<size_t>(n)));
  if (!nm) {  // (HTTP/1 frames the body itself and drops this one; HTTP/2 and a HEAD's answer carry it)
    n = snprintf(num, sizeof num, "%llu", static_cast<unsigned long long>(len));
    add_field(h, "Content-Length", std::string_view(num, static_cast<size_t>(n)));
  }
  if (!c->field.empty()) add_field(h, "Cache-Status", c->field);
  if (!stream_send_head(st, h)) {
    if (after_upstream) st->down->retract(st);
    stream_answer_instead(st);
    return;
  }
  if (st->head_request || nm || len == 0) {
    if (!after_upstream) stream_response_end(st);
    return;
  }
  if (len <= kPiece || after_upstream) {  // (after an exchange: its end is the response's)
    stream_response_body(st, body, len);
    if (!after_upstream) stream_response_end(st);
    return;
  }
  auto* r = new CacheRead;
  r->st = st;
  r->p = body;
  r->left = len;
  if (o->fd >= 0) {
    r->fd = o->fd;
    r->off = static_cast<uint64_t>(body - static_cast<const char*>(o->map));
  }
  c->reader = r;
  st->up = r;
  r->start();
}

// A request of nobody's, after a stale response was served (stale-while-revalidate): it revalidates the key
// through the stream like any other (phases, routing, balancing), and its response goes to the store only.
class Refresh final : public Downstream {
 public:
  ClientFacts facts;
  std::string sni;
  void send_head(Stream*, const ResponseHead&) override {}
  void send_body(Stream*, const char*, size_t) override {}
  void send_end(Stream*) override {}
  void send_trailers(Stream*, const Fields&) override {}
  void send_reply(Stream*, int, const Fields*, std::string_view) override {}
  bool continue_request(Stream*) override { return true; }
  void abandon_request(Stream*) override {}
  bool flush(Stream*) override { return true; }
  void progress(Stream* st) override {
    if (st->resp_complete && !ended_) finish(st);
  }
  void reset(Stream* st) override {
    if (!ended_) finish(st);
  }
  bool retract(Stream*) override { return true; }
  void pause_request(Stream*) override {}
  void resume_request(Stream*) override {}
  void open_tunnel(Stream* st, const char*, size_t) override { reset(st); }
  bool congested() const override { return false; }

 private:
  void finish(Stream* st) {
    ended_ = true;
    auto& v = st->w->cache()->refreshes;
    v.erase(std::remove(v.begin(), v.end(), st), v.end());
    end_stream(st, false);
    delete this;
  }
  bool ended_ = false;
};

void start_refresh(Stream* from, CacheCtx* c) {
  Worker* w = from->w;
  auto* d = new Refresh;
  d->facts = *from->down->client;
  d->sni.assign(d->facts.sni);
  d->facts.sni = d->sni;
  d->client = &d->facts;
  Stream* st = w->get_stream();
  st->down = d;
  st->req.buf = from->req.buf;
  st->req.headers.clear();
  for (size_t i = 0; i < from->req.headers.size(); i++) {
    http::HeaderRef ref = from->req.headers[i];
    std::string_view n = from->req.name(i);
    // Not the client's conditions, range or cache directives: the refresh asks for the whole response.
    if (iequals(n, "range") || iequals(n, "if-range") || iequals(n, "cache-control") || iequals(n, "pragma") ||
        ref.kind == http::Hdr::x_px_trace)
      continue;
    st->req.headers.push_back(ref);
  }
  st->req.url_off = from->req.url_off;
  st->req.url_len = from->req.url_len;
  st->req.method = http::Method::get;
  st->req.method_code = from->req.method_code;
  st->req.has_method = true;
  st->req.major = from->req.major;
  st->req.minor = from->req.minor;
  st->req.keep_alive = true;
  st->req.host_index = -1;
  for (size_t i = 0; i < st->req.headers.size(); i++)
    if (st->req.headers[i].kind == http::Hdr::host) st->req.host_index = static_cast<int>(i);
  if (from->req.host_index >= 0 && st->req.host_index < 0) {  // an HTTP/2 request's :authority
    std::string_view hv = from->req.value(static_cast<size_t>(from->req.host_index));
    http::HeaderRef ref{static_cast<uint32_t>(st->req.buf.size()), 4, static_cast<uint32_t>(st->req.buf.size() + 4),
                        static_cast<uint32_t>(hv.size()), http::Hdr::host};
    st->req.buf.append("host");
    st->req.buf.append(hv);
    st->req.host_index = static_cast<int>(st->req.headers.size());
    st->req.headers.push_back(ref);
  }
  st->req_complete = true;
  st->refresh = c->fill_hash;  // (cache_begin: a revalidation fill of this key, which it holds the claim of)
  w->cache()->refreshes.push_back(st);
  stream_begin(st);
  d->progress(st);
}

// The stored response c->obj may answer a request whose upstream failed (RFC 5861 stale-if-error).
bool stale_if_error_allows(const Stream* st, const CacheCtx* c) {
  const cache::Object* o = c->obj;
  if (!o || (o->h.flags & cache::FileHeader::kMustRevalidate)) return false;
  int64_t window = o->h.sie >= 0 ? o->h.sie : st->route->spec.cache.stale_if_error;
  return o->age(wall_now()) - o->h.lifetime <= window;
}

// The stream's stored response, if one may answer it. true: answered (or waiting for a fill); false: it goes
// upstream (c says as what: a fill, a revalidation, or neither).
bool lookup(Stream* st, CacheCtx* c) {
  CacheStage* s = stage_of(st);
  cache::CacheControl rq = cache::parse_cache_control(st->req, true);
  const char* fwd = "uri-miss";
  bool varied;
  cache::Object* o = stored_for(st, c, &varied);
  if (varied) fwd = "vary-miss";
  bool auth = st->req.find(http::Hdr::authorization) >= 0;
  if (o && auth && !(o->h.flags & cache::FileHeader::kAuthOk)) {
    s->local.release(o);
    o = nullptr;
    c->detail = "authorization";
  }
  if (o && !st->route->purges.empty()) {  // pxctl cache purge: stored before a purge of its target, it is gone
    std::string_view target = std::string_view(c->key).substr(c->target_at);
    for (const auto& p : st->route->purges)
      if (o->h.stored_ms <= p.at && route::purge_matches(p.pattern, target)) {
        s->store->remove(o->hash, o->id);
        s->local.release(o);
        o = nullptr;
        c->detail = "purged";
        break;
      }
  }
  bool ranged = st->req.find(std::string_view("range")) >= 0;
  if (o) {
    cache::Stored sd;
    sd.lifetime = o->h.lifetime;
    sd.age = o->age(wall_now());
    sd.no_cache = o->h.flags & cache::FileHeader::kNoCache;
    sd.must_revalidate = o->h.flags & cache::FileHeader::kMustRevalidate;
    cache::Use use = cache::usable(sd, rq);
    c->obj = o;
    int64_t stale_by = sd.age - sd.lifetime;
    int64_t swr = o->h.swr >= 0 ? o->h.swr : st->route->spec.cache.stale_while_revalidate;
    bool refresh = use == cache::Use::revalidate && stale_by >= 0 && stale_by <= swr && swr > 0 && !sd.no_cache &&
                   !sd.must_revalidate && !rq.no_cache && rq.max_age != 0 && rq.min_fresh < 0;
    if (use != cache::Use::revalidate || refresh) {
      s->store->stats.hits.fetch_add(1, std::memory_order_relaxed);
      if (use != cache::Use::fresh) s->store->stats.stale.fetch_add(1, std::memory_order_relaxed);
      c->result = use == cache::Use::fresh ? "hit" : "stale";
      if (refresh) c->detail = "stale-while-revalidate";
      status_field(c, "", 0, false, sd.lifetime - sd.age, true);
      // One refresh of a stale response at a time: whoever claims the key starts it.
      uint64_t now = st->w->now();
      if (refresh && s->store->claim(c->fill_hash, now, now + st->route->spec.cache.lock_timeout_ms + 60000))
        start_refresh(st, c);
      serve(st, c, st->resp, false);
      return true;
    }
    // Stale (or no-cache): asked again, with its validators when it has them; kept for stale-if-error.
    revalidate_with(c, o);
    fwd = "stale";
  }
  s->store->stats.misses.fetch_add(1, std::memory_order_relaxed);
  c->result = "miss";       // (a stale one asked again: "revalidated" on a 304)
  if (rq.only_if_cached) {  // RFC 9111 5.2.1.7
    c->detail = "only-if-cached";
    reply_text(st, 504, "not in the cache (only-if-cached)", false);
    return true;
  }
  c->field = fwd;                    // (the Cache-Status is written at the response head)
  if (st->head_request || ranged) {  // goes upstream as it is, unstored, uncoalesced
    c->revalidating = false;
    release_obj(c);
    c->detail = ranged ? "range" : "method";
    return false;
  }
  c->fill = true;
  if (auth || c->waited) return false;  // (a response to one user's credentials is not shared while in flight)
  uint64_t now = st->w->now();
  uint64_t until = now + st->route->spec.cache.lock_timeout_ms;
  if (st->route->spec.cache.lock_timeout_ms == 0 || s->store->claim(c->fill_hash, now, until)) {
    c->claimed = st->route->spec.cache.lock_timeout_ms != 0;
    return false;
  }
  c->wait_until = until;
  s->wait(c);
  return true;
}

bool unsafe(http::Method m) {
  return m == http::Method::post || m == http::Method::put || m == http::Method::delete_ || m == http::Method::patch;
}
}  // namespace

bool cache_begin(Stream* st) {
  CacheStage* s = stage_of(st);
  const http::Head& rq = st->req;
  bool safe = rq.method == http::Method::get || rq.method == http::Method::head;
  if (!safe && !unsafe(rq.method)) return false;
  CacheCtx* c = s->take();
  c->st = st;
  st->cache = c;
  c->request_time = wall_now();
  const lua::FilterState* fs = st->view.fs.get();
  c->key = st->route->spec.name;
  c->key += '\n';
  if (fs && !fs->cache_key.empty()) {  // a filter's key (req:cache_key): purge patterns match it whole
    c->target_at = c->key.size();
    c->key += fs->cache_key;
  } else {
    c->key += st->down->client->tls ? "https://" : "http://";
    for (char ch : st->host) c->key.push_back(ascii_lower(ch));
    c->target_at = c->key.size();
    c->key += st->abs_path.empty() ? rq.url() : st->abs_path;
  }
  c->hash = s->store->hash(c->key);
  if (fs && fs->cache_bypass) {  // req:cache_bypass(): neither answered from the cache nor stored
    c->result = "bypass";
    c->field = "bypass";
    c->detail = "filter";
    return false;
  }
  if (!safe) {
    c->invalidate = true;
    c->result = "bypass";
    return false;
  }
  if (st->refresh) {  // a stale-while-revalidate refresh (start_refresh): it holds its key's claim
    c->fill_hash = st->refresh;
    c->claimed = c->fill = true;
    c->result = "refresh";
    bool varied;
    c->obj = stored_for(st, c, &varied);
    c->fill_hash = st->refresh;  // (the key its claim names)
    if (c->obj) revalidate_with(c, c->obj);
    c->field = "stale";
    return false;
  }
  // What the cache does not answer: a request with a body, an upgrade, or a precondition it does not evaluate
  // (these go upstream as they are, and their responses are not stored).
  if (st->req_body != http::Framing::none || st->upgrade || rq.find(std::string_view("if-match")) >= 0 ||
      rq.find(std::string_view("if-unmodified-since")) >= 0) {
    c->result = "bypass";
    c->field = "bypass";
    c->detail = st->req_body != http::Framing::none ? "request body" : st->upgrade ? "upgrade" : "precondition";
    return false;
  }
  return lookup(st, c);
}

bool cache_response_head(Stream* st, http::Head& h) {
  CacheCtx* c = st->cache;
  CacheStage* s = stage_of(st);
  if (c->invalidate) {
    // An unsafe method's success makes the stored response of its target stale: it goes (RFC 9111 4.4).
    if (h.status >= 200 && h.status < 400) s->store->remove(c->hash);
    return true;
  }
  if (!c->fill) {  // a HEAD miss, a bypass: relayed as it is
    status_field(c, c->field, h.status, false, 0, false);
    add_field(h, "Cache-Status", c->field);
    return true;
  }
  int64_t now = wall_now();
  std::string fwd = c->field;
  cache::CacheControl rs = cache::parse_cache_control(h, false);
  if (c->revalidating && h.status == 304) {
    // Still good: the stored response, refreshed by the 304's fields, answers (at cache_response_end).
    cache::Object* o = c->obj;
    s->store->stats.revalidated.fetch_add(1, std::memory_order_relaxed);
    c->result = "revalidated";
    std::string lines = stored_head(o->head, false, &h);
    http::Head view;
    cache::parse_head_lines(lines, &view);
    view.status = o->h.status;
    cache::CacheControl mrs = cache::parse_cache_control(view, false);
    cache::StoreDecision d = cache::decide_store(st->req, cache::CacheControl(), view, mrs, st->route->spec.cache, now);
    cache::FileHeader fh = header_for(view, mrs, d, c->request_time, now);
    fh.initial_age = cache::initial_age(h, c->request_time, now);  // the 304's Date and Age
    if (!*d.no) {
      cache::Writer& wr = c->writer;
      if (wr.begin(s->store, fh, o->key, "", lines, UINT64_MAX) &&
          (wr.route(s->store->tag(st->route->spec.name), st->route->spec.cache.max_size), true) &&
          wr.append(o->body, o->h.body_len) && wr.commit(o->hash))
        if (cache::Object* fresh = s->local.get(o->hash, o->key)) {  // answered with the refreshed fields
          release_obj(c);
          c->obj = fresh;
        }
    }
    c->detail = "";
    c->absorb = true;
    status_field(c, "stale", 304, false, fh.lifetime, true);
    return false;
  }
  if (c->obj && (h.status == 500 || h.status == 502 || h.status == 503 || h.status == 504) &&
      stale_if_error_allows(st, c)) {
    // The upstream fails: the stale response answers instead (RFC 5861), at the exchange's end.
    c->detail = "stale-if-error";
    c->result = "stale";
    s->store->stats.stale.fetch_add(1, std::memory_order_relaxed);
    status_field(c, "stale", h.status, false, c->obj->h.lifetime - c->obj->age(now), true);
    c->absorb = true;
    return false;
  }
  release_obj(c);  // (a revalidation answered with a new response: it replaces the stored one)
  cache::CacheControl rq = cache::parse_cache_control(st->req, true);
  cache::StoreDecision d = cache::decide_store(st->req, rq, h, rs, st->route->spec.cache, now);
  uint64_t max = st->route->spec.cache.max_object_size ? st->route->spec.cache.max_object_size : s->max_object;
  if (!*d.no && h.major == 1 && !h.has_content_length && !h.chunked) d.no = "length unknown (read until close)";
  if (!*d.no && h.has_content_length && h.content_length > max) d.no = "too large";
  bool store = !*d.no;
  if (store) {
    c->vary = cache::vary_names(h);
    if (!c->vary.empty())
      variant_key(st, c, c->vary);
    else
      c->fill_hash = c->hash;
    cache::FileHeader fh = header_for(h, rs, d, c->request_time, now);
    std::string lines = stored_head(h, d.strip_cookie);
    store = c->writer.begin(s->store, fh, c->vary.empty() ? c->key : c->vkey, "", lines, max);
    if (store) c->writer.route(s->store->tag(st->route->spec.name), st->route->spec.cache.max_size);
  }
  if (*d.no) c->detail = d.no;  // (else what the lookup said stays: purged, lock timeout)
  status_field(c, fwd, h.status, store, 0, false);
  add_field(h, "Cache-Status", c->field);
  return true;
}

bool cache_response_body(Stream* st, const char* data, size_t len) {
  CacheCtx* c = st->cache;
  if (c->absorb) return false;  // (a 304 has no body; the stored one is sent at its end)
  if (c->writer.active() && !c->writer.append(data, len)) c->detail = "too large or not written";
  return true;
}

void cache_response_end(Stream* st) {
  CacheCtx* c = st->cache;
  CacheStage* s = stage_of(st);
  if (c->absorb) {
    c->absorb = false;
    serve(st, c, c->head, true);
  }
  if (c->writer.active()) {
    if (!c->vary.empty()) {
      // The key's marker names the Vary fields; each variant is its own object.
      cache::FileHeader fh{};
      fh.flags = cache::FileHeader::kVaryMarker;
      fh.response_time = wall_now();
      cache::Writer m;
      if (m.begin(s->store, fh, c->key, c->vary, "", 0)) {
        m.route(s->store->tag(st->route->spec.name), st->route->spec.cache.max_size);
        m.commit(c->hash);
      }
    }
    c->writer.commit(c->fill_hash);
  }
  unclaim(c);
}

void cache_end(Stream* st) {
  CacheCtx* c = st->cache;
  CacheStage* s = stage_of(st);
  if (st->route && !st->no_route)
    for (int i = 0; i < kCacheResults; i++)
      if (std::string_view(c->result) == kCacheResultNames[i]) {
        CacheRouteCounts& rc = s->counts[st->route->metrics_slot];
        rc.results[i].inc();
        if (i <= 2 && c->obj) rc.served_bytes.add(st->bytes_out);
        break;
      }
  s->unwait(c);
  if (c->reader) c->reader->abort(st);
  c->writer.abandon();  // an unfinished fill: never stored
  unclaim(c);
  release_obj(c);
  st->cache = nullptr;
  s->give(c);
}

bool cache_stale_if_error(Stream* st, int status) {
  CacheCtx* c = st->cache;
  if (c->invalidate || c->absorb || st->resp_head_sent || !stale_if_error_allows(st, c)) return false;
  if (st->up) st->up->abort(st);
  c->detail = "stale-if-error";
  c->result = "stale";
  stage_of(st)->store->stats.stale.fetch_add(1, std::memory_order_relaxed);
  status_field(c, "stale", status, false, c->obj->h.lifetime - c->obj->age(wall_now()), true);
  c->writer.abandon();
  serve(st, c, c->head, false);
  return true;
}

void cache_no_store(Stream* st) {
  CacheCtx* c = st->cache;
  if (!c->writer.active()) return;
  c->writer.abandon();
  c->detail = "filter";
  // The head has not left: its Cache-Status no longer says "stored".
  http::Head& h = st->resp;
  for (size_t i = h.headers.size(); i-- > 0;)
    if (h.name(i) == "Cache-Status") {
      h.headers.erase(h.headers.begin() + static_cast<long>(i));
      break;
    }
  size_t cut = c->field.find("; stored");
  if (cut != std::string::npos) c->field.erase(cut, 8);
  c->field += "; detail=\"filter\"";
  add_field(h, "Cache-Status", c->field);
}

bool cache_drops_field(const Stream* st, std::string_view n) {
  return st->cache->fill && (iequals(n, "if-none-match") || iequals(n, "if-modified-since"));
}

std::string_view cache_result(const Stream* st) { return st->cache ? st->cache->result : ""; }
std::string_view cache_detail(const Stream* st) { return st->cache ? st->cache->detail : ""; }

}  // namespace px::proxy
