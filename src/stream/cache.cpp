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
#include "stream/stream.h"
#include "upstream/upstream.h"

namespace px::proxy {

namespace {
constexpr size_t kPiece = 256 * 1024;  // a stored body larger than this is sent piece by piece (CacheRead)
constexpr uint64_t kPollMs = 10;       // waiters look at their key's claim this often

int64_t wall_now() { return static_cast<int64_t>(time(nullptr)); }

CacheStage* stage_of(const Stream* st) { return st->w->cache(); }

void add_field(http::Head& h, std::string_view n, std::string_view v) {
  http::HeaderRef ref;
  ref.name_off = static_cast<uint32_t>(h.buf.size());
  ref.name_len = static_cast<uint32_t>(n.size());
  h.buf.append(n);
  ref.value_off = static_cast<uint32_t>(h.buf.size());
  ref.value_len = static_cast<uint32_t>(v.size());
  h.buf.append(v);
  ref.kind = http::classify(n);
  h.headers.push_back(ref);
}

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
  bool paused = false;
  CacheRead* next_free = nullptr;
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
  // A piece now (in the stream's first call: the codec flushes it), the rest at the end of the loop iteration.
  void start() {
    piece();
    if (left) st->w->defer_h2(this);
  }
  void piece() {
    size_t n = std::min(left, kPiece);
    stream_response_body(st, p, n);
    p += n;
    left -= n;
  }
  void deferred_send() override {
    Stream* s = st;
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

void CacheStage::close() { uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr); }

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

// Answers the stream from a stored response (held by c->obj): into `h` (st->resp, or c->head after a
// revalidation, when st->resp is the upstream's 304).
void serve(Stream* st, CacheCtx* c, http::Head& h, bool after_upstream) {
  cache::Object* o = c->obj;
  int64_t now = wall_now();
  int64_t age = o->age(now);
  bool nm = cache::not_modified(st->req, o->etag(), o->last_modified());
  h.clear();
  h.buf = o->head.buf;
  h.headers = o->head.headers;
  if (nm) {  // RFC 9110 15.4.5: the 304 carries what a 200 would of these, and no content fields
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
  h.status = nm ? 304 : o->h.status;
  h.major = 1;
  h.minor = 1;
  h.keep_alive = true;
  h.has_content_length = !nm;
  h.content_length = o->h.body_len;
  char num[24];
  int len = snprintf(num, sizeof num, "%lld", static_cast<long long>(age));
  add_field(h, "Age", std::string_view(num, static_cast<size_t>(len)));
  if (!nm) {  // (HTTP/1 frames the body itself and drops this one; HTTP/2 and a HEAD's answer carry it)
    len = snprintf(num, sizeof num, "%llu", static_cast<unsigned long long>(o->h.body_len));
    add_field(h, "Content-Length", std::string_view(num, static_cast<size_t>(len)));
  }
  if (!c->field.empty()) {
    add_field(h, "Cache-Status", c->field);
  }
  if (!stream_send_head(st, h)) {
    if (after_upstream) st->down->retract(st);
    stream_answer_instead(st);
    return;
  }
  if (st->head_request || nm || o->h.body_len == 0) {
    if (!after_upstream) stream_response_end(st);
    return;
  }
  if (o->h.body_len <= kPiece || after_upstream) {  // (after a 304: the upstream's exchange frames the end)
    stream_response_body(st, o->body, o->h.body_len);
    if (!after_upstream) stream_response_end(st);
    return;
  }
  auto* r = new CacheRead;
  r->st = st;
  r->p = o->body;
  r->left = o->h.body_len;
  c->reader = r;
  st->up = r;
  r->start();
}

// The stream's stored response, if one may answer it. true: answered (or waiting for a fill); false: it goes
// upstream (c says as what: a fill, a revalidation, or neither).
bool lookup(Stream* st, CacheCtx* c) {
  CacheStage* s = stage_of(st);
  cache::CacheControl rq = cache::parse_cache_control(st->req, true);
  const char* fwd = "uri-miss";
  cache::Object* o = s->local.get(c->hash, c->key);
  c->fill_hash = c->hash;
  if (o && o->marker()) {  // the key varies: its variant for this request's values
    c->vkey = c->key;
    cache::vary_values(st->req, o->vary, &c->vkey);
    s->local.release(o);
    c->fill_hash = s->store->hash(c->vkey);
    o = s->local.get(c->fill_hash, c->vkey);
    fwd = "vary-miss";
  }
  bool auth = st->req.find(http::Hdr::authorization) >= 0;
  if (o && auth && !(o->h.flags & cache::FileHeader::kAuthOk)) {
    s->local.release(o);
    o = nullptr;
    c->detail = "authorization";
  }
  if (o) {
    cache::Stored sd;
    sd.lifetime = o->h.lifetime;
    sd.age = o->age(wall_now());
    sd.no_cache = o->h.flags & cache::FileHeader::kNoCache;
    sd.must_revalidate = o->h.flags & cache::FileHeader::kMustRevalidate;
    cache::Use use = cache::usable(sd, rq);
    c->obj = o;
    if (use != cache::Use::revalidate) {
      s->store->stats.hits.fetch_add(1, std::memory_order_relaxed);
      c->result = use == cache::Use::fresh ? "hit" : "stale";
      status_field(c, "", 0, false, sd.lifetime - sd.age, true);
      serve(st, c, st->resp, false);
      return true;
    }
    // Stale (or no-cache): asked again, with its validators when it has them.
    std::string_view etag = o->etag(), lm = o->last_modified();
    if (!etag.empty() || !lm.empty()) {
      c->revalidating = true;
      c->validators[0].assign(etag);
      c->validators[1].assign(lm);
    } else {
      release_obj(c);
    }
    fwd = "stale";
  }
  s->store->stats.misses.fetch_add(1, std::memory_order_relaxed);
  c->result = c->revalidating ? "stale" : "miss";
  if (rq.only_if_cached) {  // RFC 9111 5.2.1.7
    c->detail = "only-if-cached";
    reply_text(st, 504, "not in the cache (only-if-cached)", false);
    return true;
  }
  c->field = fwd;          // (the Cache-Status is written at the response head)
  if (st->head_request) {  // goes upstream as it is, unstored, uncoalesced
    c->revalidating = false;
    release_obj(c);
    c->detail = "method";
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
  c->key = st->route->spec.name;
  c->key += '\n';
  c->key += st->down->client->tls ? "https://" : "http://";
  for (char ch : st->host) c->key.push_back(ascii_lower(ch));
  c->key += st->abs_path.empty() ? rq.url() : st->abs_path;
  c->hash = s->store->hash(c->key);
  if (!safe) {
    c->invalidate = true;
    c->result = "bypass";
    return false;
  }
  // What the cache does not answer: a request with a body, an upgrade, a range or a precondition it does not
  // evaluate (these go upstream as they are, and their responses are not stored).
  if (st->req_body != http::Framing::none || st->upgrade || rq.find(std::string_view("range")) >= 0 ||
      rq.find(std::string_view("if-match")) >= 0 || rq.find(std::string_view("if-unmodified-since")) >= 0 ||
      rq.find(std::string_view("if-range")) >= 0) {
    c->result = "bypass";
    c->field = "bypass";
    c->detail = st->req_body != http::Framing::none       ? "request body"
                : st->upgrade                             ? "upgrade"
                : rq.find(std::string_view("range")) >= 0 ? "range"
                                                          : "precondition";
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
      if (wr.begin(s->store, fh, o->key, "", lines, UINT64_MAX) && wr.append(o->body, o->h.body_len) &&
          wr.commit(o->hash))
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
  release_obj(c);  // (a revalidation answered with a new response: it replaces the stored one)
  cache::CacheControl rq = cache::parse_cache_control(st->req, true);
  cache::StoreDecision d = cache::decide_store(st->req, rq, h, rs, st->route->spec.cache, now);
  uint64_t max = st->route->spec.cache.max_object_size ? st->route->spec.cache.max_object_size : s->max_object;
  if (!*d.no && h.major == 1 && !h.has_content_length && !h.chunked) d.no = "length unknown (read until close)";
  if (!*d.no && h.has_content_length && h.content_length > max) d.no = "too large";
  bool store = !*d.no;
  if (store) {
    c->vary = cache::vary_names(h);
    if (!c->vary.empty()) {
      c->vkey = c->key;
      cache::vary_values(st->req, c->vary, &c->vkey);
      c->fill_hash = s->store->hash(c->vkey);
    } else {
      c->fill_hash = c->hash;
    }
    cache::FileHeader fh = header_for(h, rs, d, c->request_time, now);
    std::string lines = stored_head(h, d.strip_cookie);
    store = c->writer.begin(s->store, fh, c->vary.empty() ? c->key : c->vkey, "", lines, max);
  }
  c->detail = d.no;
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
      if (m.begin(s->store, fh, c->key, c->vary, "", 0)) m.commit(c->hash);
    }
    c->writer.commit(c->fill_hash);
  }
  unclaim(c);
}

void cache_end(Stream* st) {
  CacheCtx* c = st->cache;
  CacheStage* s = stage_of(st);
  s->unwait(c);
  if (c->reader) c->reader->abort(st);
  c->writer.abandon();  // an unfinished fill: never stored
  unclaim(c);
  release_obj(c);
  st->cache = nullptr;
  s->give(c);
}

bool cache_drops_field(const Stream* st, std::string_view n) {
  return st->cache->fill && (iequals(n, "if-none-match") || iequals(n, "if-modified-since"));
}

std::string_view cache_result(const Stream* st) { return st->cache ? st->cache->result : ""; }
std::string_view cache_detail(const Stream* st) { return st->cache ? st->cache->detail : ""; }

}  // namespace px::proxy
