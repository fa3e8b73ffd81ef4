#include "observe/trace.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "stream/stream.h"
#include "upstream/peer.h"

namespace px::proxy {

namespace {
// Writes a file whole (tmp, then rename) with mode 0600; "" or the error.
std::string write_private(const std::string& path, const std::string& text, bool sync) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return path + ": " + strerror(errno);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && (!sync || ::fsync(fd) == 0);
  int e = errno;
  if (::close(fd) != 0 && ok) ok = false, e = errno;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, e = errno;
  if (!ok) ::unlink(tmp.c_str());
  return ok ? "" : path + ": " + strerror(e);
}
}  // namespace

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxAheadS = 300;

std::string mac(const TraceKey& key, std::string_view id, std::string_view expires) {
  std::string msg = "px-trace:" + std::string(id) + "." + std::string(expires);
  uint8_t out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), key.data(), key.size(), reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), out, &len);
  return to_hex(out, len);
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 32) return false;
  for (char c : id)
    if (!isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

double ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

}  // namespace

std::string trace_token(const TraceKey& key, std::string_view id, int64_t expires) {
  std::string e = std::to_string(expires);
  return std::string(id) + "." + e + "." + mac(key, id, e);
}

std::string trace_check(std::string_view value, const TraceKey& key, int64_t now_s) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view tok = trim(value.substr(0, comma));
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    size_t d1 = tok.find('.'), d2 = d1 == std::string_view::npos ? d1 : tok.find('.', d1 + 1);
    if (d2 == std::string_view::npos) continue;
    std::string_view id = tok.substr(0, d1), exp = tok.substr(d1 + 1, d2 - d1 - 1), m = tok.substr(d2 + 1);
    uint64_t e = 0;
    if (!valid_id(id) || !parse_u64(exp, &e)) continue;
    if (static_cast<int64_t>(e) < now_s || static_cast<int64_t>(e) > now_s + kMaxAheadS) continue;
    std::string want = mac(key, id, exp);
    if (m.size() == want.size() && CRYPTO_memcmp(m.data(), want.data(), want.size()) == 0) return std::string(id);
  }
  return "";
}

bool trace_key_file(const std::string& path, bool make, TraceKey* key, std::string* error) {
  if (make) {
    RAND_bytes(key->data(), key->size());
    *error = write_private(path, to_hex(key->data(), key->size()) + "\n", true);
    return error->empty();
  }
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.size() != 64) {
    *error = path + ": not a trace key (is pxd running with this status_file?)";
    return false;
  }
  for (size_t i = 0; i < 32; i++) {
    unsigned v = 0;
    if (sscanf(text.c_str() + 2 * i, "%2x", &v) != 1) {
      *error = path + ": not a trace key";
      return false;
    }
    (*key)[i] = static_cast<uint8_t>(v);
  }
  return true;
}

void trace_begin(Stream* st) {
  Worker* w = st->w;
  if (!w->trace_enabled()) return;
  std::string id = trace_check(st->req.get(http::Hdr::x_px_trace), w->trace_key(), time(nullptr));
  if (id.empty()) {
    PX_INFO("trace: a request from %s carried an invalid or expired X-Px-Trace token: served untraced",
            st->client_ip.str().c_str());
    return;
  }
  st->trace = std::make_unique<Trace>();
  st->trace->id = std::move(id);
  st->view.trace = true;
}

void trace_route(Stream* st) {
  const route::Route* r = st->route;
  std::string_view hv = st->host;
  size_t colon = hv.rfind(':');
  if (!hv.empty() && hv.front() == '[')
    hv = hv.substr(0, hv.find(']') == std::string_view::npos ? hv.size() : hv.find(']') + 1);
  else if (colon != std::string_view::npos)
    hv = hv.substr(0, colon);
  std::string host(hv);
  for (auto& c : host) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  if (!host.empty() && host.back() == '.') host.pop_back();
  std::string why;
  for (const auto& h : r->spec.hosts) {
    if (h == host) {
      why = "host " + h + " (exact)";
      break;
    }
    if (h.size() > 2 && h.compare(0, 2, "*.") == 0 && host.size() > h.size() - 1 &&
        host.compare(host.size() - (h.size() - 1), h.size() - 1, h.substr(1)) == 0 && why.empty())
      why = "host " + h + " (wildcard: no exact host matched)";
  }
  if (why.empty()) why = "the default route (no route names host '" + host + "')";
  why += r->spec.path == "/" ? ", any path" : ", path prefix " + r->spec.path + " (the longest that matched)";
  st->trace->route_why = why;
}

void trace_pick(Stream* st, PeerState* p, bool fresh, bool by_filter, bool reused) {
  Trace& t = *st->trace;
  if (t.peers.empty() && st->pool) {
    uint64_t now = st->w->now();
    t.balancer = route::balance_name(st->route->pool.lb);
    for (size_t i = 0; i < st->pool->peers.size(); i++) {
      const PeerState* q = st->pool->peers[i];
      std::string s = q->key + ": ";
      if (!q->resolved)
        s += "out (its name does not resolve)";
      else if (q->hc_down)
        s += "out (failing its health check)";
      else if (now < q->down_until)
        s += "out for " + std::to_string(q->down_until - now) + " ms more (passive health: failures)";
      else
        s += "usable";
      s += ", weight " + std::to_string(st->route->pool.peers[i].weight) + ", " + std::to_string(q->active) +
           " active, " + std::to_string(q->idle_count) + " idle keep-alive";
      if (q->fails) s += ", " + std::to_string(q->fails) + " recent failures";
      t.peers.push_back(std::move(s));
    }
  }
  std::string why = fresh                ? "retry on a new connection to the same peer (a kept-alive one failed)"
                    : by_filter          ? "chosen by a filter (upstream_peer)"
                    : t.attempts.empty() ? "the balancer's pick"
                                         : "retry: the balancer's next pick";
  if (!fresh) why += reused ? ", over a kept-alive connection" : ", over a new connection";
  t.attempts.push_back({p->key, why, ""});
}

void trace_upstream_note(Stream* st, const std::string& note) {
  if (!st->trace->attempts.empty()) st->trace->attempts.back().why += "; " + note;
}

void trace_attempt_failed(Stream* st, const char* outcome) {
  if (!st->trace->attempts.empty()) st->trace->attempts.back().outcome = outcome;
}

void trace_write(const std::string& dir, const Trace& t, const EndRecord& r) {
  json j;
  j["id"] = t.id;
  j["request"] = {{"method", r.method}, {"host", r.host}, {"target", r.target}, {"request_id", r.request_id}};
  j["route"] = r.route.empty() ? json(nullptr) : json({{"name", r.route}, {"why", t.route_why}});
  json filters = json::array();
  for (const auto& f : t.filters)
    filters.push_back(
        {{"phase", lua::phase_name(f.phase)}, {"filter", f.filter}, {"verdict", f.verdict}, {"ms", f.ms}});
  j["filters"] = filters;
  json attempts = json::array();
  for (const auto& a : t.attempts)
    attempts.push_back({{"peer", a.peer}, {"why", a.why}, {"outcome", a.outcome.empty() ? "answered" : a.outcome}});
  j["upstream"] = {{"balancer", t.balancer},
                   {"peers", t.peers},
                   {"attempts", attempts},
                   {"status", r.upstream_status},
                   {"connect_ms", r.connect_us >= 0 ? json(ms(static_cast<uint64_t>(r.connect_us))) : json(nullptr)},
                   {"first_byte_ms", r.ttfb_us >= 0 ? json(ms(static_cast<uint64_t>(r.ttfb_us))) : json(nullptr)}};
  json phases = json::object();
  for (int p = 0; p < lua::kPhases; p++) phases[lua::phase_name(p)] = ms(r.phase_us[p]);
  j["phases_ms"] = phases;
  if (!r.cache.empty()) {  // the cache stage: what it did, and why a response was not stored
    j["cache"] = {{"result", r.cache}};
    if (!r.cache_detail.empty()) j["cache"]["detail"] = r.cache_detail;
  }
  j["filter_wait_ms"] = ms(r.wait_us);
  j["status"] = r.status;
  j["termination"] = termination_name(r.reason);
  j["duration_ms"] = r.duration_ms;
  j["bytes_in"] = r.bytes_in;
  j["bytes_out"] = r.bytes_out;
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::string err = write_private(dir + "/" + t.id + ".json", text, false);
  if (!err.empty()) PX_WARN("trace %s: %s", t.id.c_str(), err.c_str());
}

}  // namespace px::proxy
