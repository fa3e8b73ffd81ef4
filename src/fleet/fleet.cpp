#include "fleet/fleet.h"

#include <openssl/aead.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "core/log.h"
#include "core/strings.h"
#include "net/uv_transport.h"
#include "route/acl.h"
#include "route/route.h"
#include "route/stream.h"
#include "store/keys.h"
#include "tls/cert.h"

namespace px::fleet {

namespace {

constexpr uint64_t kApplyWaitMs = 10000;  // a committed write shows up here within this, or the write says so
constexpr uint64_t kRetryMs = 1000;       // a broken watch is made again after this
constexpr uint64_t kHealthMs = 5000;      // how often the follower asks etcd whether it is there

int64_t now_s() { return static_cast<int64_t>(std::time(nullptr)); }

uint64_t parse_rev(const std::string& v) {
  uint64_t r = 0;
  return parse_u64(v, &r) ? r : 0;  // 0: never joined, a full resync
}

// What pxadmind would have written under `key`: a value that came into etcd another way (etcdctl) and does
// not parse is not applied (the rest of the change is), and fleet status names it.
bool check_value(std::string_view key, const std::string& value, std::string* error) {
  namespace k = store::keys;
  auto name = [&](std::string_view prefix) { return key.substr(prefix.size()); };
  if (key.starts_with(k::kRoute)) {
    route::RouteSpec r;
    if (!route::parse_route_json(value, &r, error)) return false;
    if (r.name != name(k::kRoute)) {
      *error = "name: '" + r.name + "' is stored under another name";
      return false;
    }
    return true;
  }
  if (key.starts_with(k::kStream)) {
    route::StreamSpec st;
    return route::parse_stream_json(value, &st, error);
  }
  if (key.starts_with(k::kAcl)) {
    route::AclSpec a;
    return route::parse_acl_spec(value, &a, error);
  }
  if (key.starts_with(k::kCert)) {
    tls::Cert c;
    return tls::cert_from_record(name(k::kCert), value, &c, error);
  }
  if (key.starts_with(k::kHostPathIndex)) {
    if (route::valid_route_name(value)) return true;
    *error = "not a route name";
    return false;
  }
  if (key == k::kAuditSeq || key.starts_with(k::kChallenge)) {
    if (!value.empty() && value.size() < 4096) return true;
    *error = "empty or too long";
    return false;
  }
  for (std::string_view p : {k::kToken, k::kUser, k::kAudit, k::kAcmeAccount, k::kAcmeState})
    if (key.starts_with(p)) {
      json j = json::parse(value, nullptr, false);
      if (j.is_object()) return true;
      *error = "not a JSON object";
      return false;
    }
  *error = "not a key px stores";
  return false;
}

constexpr std::string_view kSealed = "pxenc1:";  // a sealed value: base64(nonce ‖ ciphertext ‖ tag)

bool secret_key(std::string_view key) {
  namespace k = store::keys;
  return key.starts_with(k::kCert) || key.starts_with(k::kAcmeAccount) || key.starts_with(k::kUser);
}

// The fleet key file: 32 bytes as they are, or written as 64 hex digits or base64 (a trailing newline is fine).
bool load_fleet_key(const std::string& file, std::string* out, std::string* error) {
  FILE* f = fopen(file.c_str(), "rb");
  if (!f) {
    *error = "--fleet-key " + file + ": cannot be read";
    return false;
  }
  char buf[256];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  std::string raw(buf, n);
  if (raw.size() == 32) {
    *out = raw;
    return true;
  }
  while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r' || raw.back() == ' ')) raw.pop_back();
  if (raw.size() == 64 && raw.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
    out->clear();
    for (size_t i = 0; i < 64; i += 2) out->push_back(static_cast<char>(std::stoi(raw.substr(i, 2), nullptr, 16)));
    return true;
  }
  if (unb64(raw, out) && out->size() == 32) return true;
  *error = "--fleet-key " + file +
           ": expected 32 bytes (raw, 64 hex digits or base64), such as made by "
           "head -c 32 /dev/urandom";
  return false;
}

}  // namespace

std::string Fleet::to_etcd(std::string_view store_key, const std::string& value) const {
  if (!secret_key(store_key)) return value;
  EVP_AEAD_CTX ctx;
  EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), reinterpret_cast<const uint8_t*>(fleet_key_.data()), 32,
                    EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr);
  std::string out(12 + value.size() + 16, '\0');
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  RAND_bytes(o, 12);
  size_t len = 0;
  EVP_AEAD_CTX_seal(&ctx, o + 12, &len, out.size() - 12, o, 12, reinterpret_cast<const uint8_t*>(value.data()),
                    value.size(), reinterpret_cast<const uint8_t*>(store_key.data()), store_key.size());
  EVP_AEAD_CTX_cleanup(&ctx);
  out.resize(12 + len);
  return std::string(kSealed) + b64(out);
}

bool Fleet::from_etcd(std::string_view store_key, std::string* value, std::string* error) const {
  if (!std::string_view(*value).starts_with(kSealed)) {
    if (!secret_key(store_key)) return true;
    *error = "a secret stored in etcd without the fleet key's seal";
    return false;
  }
  std::string sealed;
  if (!unb64(std::string_view(*value).substr(kSealed.size()), &sealed) || sealed.size() < 12 + 16) {
    *error = "a sealed value that is not base64 of nonce, ciphertext and tag";
    return false;
  }
  EVP_AEAD_CTX ctx;
  EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), reinterpret_cast<const uint8_t*>(fleet_key_.data()), 32,
                    EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr);
  std::string out(sealed.size(), '\0');
  size_t len = 0;
  const auto* in = reinterpret_cast<const uint8_t*>(sealed.data());
  bool ok =
      EVP_AEAD_CTX_open(&ctx, reinterpret_cast<uint8_t*>(out.data()), &len, out.size(), in, 12, in + 12,
                        sealed.size() - 12, reinterpret_cast<const uint8_t*>(store_key.data()), store_key.size()) == 1;
  EVP_AEAD_CTX_cleanup(&ctx);
  if (!ok) {
    *error = "sealed with another fleet key than this host's --fleet-key";
    return false;
  }
  out.resize(len);
  *value = std::move(out);
  return true;
}

// The follower: a loop on its own thread that keeps a watch on the fleet's prefix open and applies what it
// sends, and asks etcd every few seconds whether it is there (a watch on a member that vanished says nothing).
struct Fleet::Follower {
  Fleet* f;
  Etcd etcd;
  uv_loop_t loop{};
  uv_async_t wake{};
  uv_timer_t retry{}, health{};
  std::unique_ptr<http::Client> client;
  http::Client::Call* watch = nullptr;
  http::Client::Call* probe = nullptr;
  http::Client::Call* publishing = nullptr;
  uv_timer_t publish_timer{};
  uint64_t published_rev = UINT64_MAX;  // the applied revision the last publication said
  uint64_t last_publish = 0;            // when (the loop's clock, ms)
  bool published_reachable = false;
  JsonStream stream;
  bool stopping = false;
  bool resync_needed = false;
  bool broken = false;
  bool need_auth = false;  // etcd refused the token: authenticate before the next call

  // With etcd's authentication: a token before a call, and a new one when etcd refused the last.
  bool ensure_auth() {
    if (!etcd.uses_auth() || (etcd.has_token() && !need_auth)) return true;
    std::string err;
    if (!etcd.authenticate(&err)) {
      f->set_reachable(false, err);
      return false;
    }
    if (need_auth) PX_INFO("fleet %s: etcd auth token renewed", f->opt_.name.c_str());
    need_auth = false;
    return true;
  }

  explicit Follower(Fleet* fl) : f(fl), etcd(fl->etcd_.options()) {}

  void run() {
    uv_run(&loop, UV_RUN_DEFAULT);
    net::close_all_handles(&loop);
    net::release_thread_buffers();
  }

  void init() {
    uv_loop_init(&loop);
    loop.data = this;
    uv_async_init(&loop, &wake, [](uv_async_t* a) {
      auto* self = static_cast<Follower*>(a->loop->data);
      self->stopping = true;
      self->client->cancel_all();
      uv_stop(a->loop);
    });
    uv_timer_init(&loop, &retry);
    uv_timer_init(&loop, &health);
    uv_timer_init(&loop, &publish_timer);
    client = std::make_unique<http::Client>(&loop);
    std::string err;
    etcd.setup(*client, &err);  // checked by Fleet::start
    uv_timer_start(
        &retry, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->start_watch(); }, 0, 0);
    uv_timer_start(
        &health, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->ask(); }, kHealthMs, kHealthMs);
    uv_timer_start(
        &publish_timer, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->publish(); }, 0, every());
  }

  // How often this host publishes its status (and at once on a change): a third of its lease.
  uint64_t every() const { return static_cast<uint64_t>(f->opt_.host_ttl_s) * 1000 / 3; }

  // This host's status under /px/<fleet>.hosts/<host>, on a fresh lease each time (the last one expires by
  // itself): a lease grant, then the put.
  void publish() {
    if (stopping || publishing || !ensure_auth()) return;
    json doc = f->status();
    last_publish = uv_now(&loop);
    published_rev = doc.value("applied_revision", uint64_t(0));
    published_reachable = doc["etcd"].value("reachable", false);
    if (!published_reachable && !watch) return;  // nothing to publish to
    if (f->facts_) doc.update(f->facts_());
    doc["version"] = PX_VERSION;
    doc["published"] = static_cast<int64_t>(std::time(nullptr));
    json grant = {{"TTL", std::to_string(f->opt_.host_ttl_s)}};
    publishing =
        client->fetch(etcd.request(etcd.preferred(), "/v3/lease/grant", grant), [this, doc](http::ClientResponse r) {
          publishing = nullptr;
          if (Etcd::token_refused(r.status, r.body)) need_auth = true;
          json g = json::parse(r.body, nullptr, false);
          if (stopping || r.status != 200 || !g.is_object() || !g.contains("ID")) return;
          json put = {{"key", b64(f->hosts_ + f->opt_.host)}, {"value", b64(doc.dump())}, {"lease", g["ID"]}};
          publishing = client->fetch(etcd.request(etcd.preferred(), "/v3/kv/put", put),
                                     [this](http::ClientResponse) { publishing = nullptr; });
        });
  }

  // Publishes again soon when what it said changed (a change applied, etcd lost or found).
  void maybe_publish() {
    json doc = f->status();
    if (doc.value("applied_revision", uint64_t(0)) == published_rev &&
        doc["etcd"].value("reachable", false) == published_reachable)
      return;
    // Soon, and at most once a second: under a stream of changes, what the others see may lag by a second.
    uint64_t since = uv_now(&loop) - last_publish;
    uint64_t delay = since >= 1000 ? 200 : std::max<uint64_t>(200, 1000 - since);
    if (uv_timer_get_due_in(&publish_timer) > delay)
      uv_timer_start(
          &publish_timer, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->publish(); }, delay, every());
  }

  void start_watch() {
    if (stopping || watch) return;
    if (!ensure_auth()) {
      uv_timer_start(
          &retry, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->start_watch(); }, kRetryMs, 0);
      return;
    }
    if (resync_needed) {
      std::string err;
      if (!f->resync(etcd, &err)) {
        f->set_reachable(false, err);
        uv_timer_start(
            &retry, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->start_watch(); }, kRetryMs, 0);
        return;
      }
      resync_needed = false;
    }
    uint64_t from;
    {
      std::lock_guard<std::mutex> g(f->mu_);
      from = f->applied_ + 1;
    }
    json body = {{"create_request",
                  {{"key", b64(f->prefix_)},
                   {"range_end", b64(prefix_end(f->prefix_))},
                   {"start_revision", std::to_string(from)},
                   {"progress_notify", true}}}};
    http::ClientRequest rq = etcd.request(etcd.preferred(), "/v3/watch", body);
    stream = JsonStream();
    broken = false;
    rq.on_body = [this](std::string_view bytes) {
      bool ok = stream.feed(bytes, [this](json& m) { on_message(m); });
      if (!ok) {
        f->set_reachable(false, "etcd watch: the answer is not a stream of JSON objects");
        broken = true;
      }
      return ok && !broken;
    };
    watch = client->fetch(std::move(rq), [this](http::ClientResponse r) {
      watch = nullptr;
      if (stopping) return;
      if (!broken) {
        std::string why = r.status == 0 ? r.error : "the watch ended (HTTP " + std::to_string(r.status) + ")";
        f->set_reachable(false, "etcd " + etcd.preferred_url() + ": " + why);
      }
      etcd.next();  // the next member
      uv_timer_start(
          &retry, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->start_watch(); },
          resync_needed ? 0 : kRetryMs, 0);
    });
  }

  void on_message(const json& m) {
    if (broken) return;
    auto res = m.find("result");
    if (res == m.end() || !res->is_object()) {
      std::string msg = m.contains("error") ? m["error"].dump() : m.dump();
      if (Etcd::token_refused(0, msg)) need_auth = true;
      f->set_reachable(false, "etcd watch: " + msg.substr(0, 300));
      broken = true;
      return;
    }
    if (uint64_t c = num(*res, "compact_revision")) {
      PX_WARN("fleet %s: etcd compacted its history past revision %llu: resynchronising", f->opt_.name.c_str(),
              static_cast<unsigned long long>(c));
      resync_needed = true;
      broken = true;
      return;
    }
    if (res->value("canceled", false)) {
      f->set_reachable(false, "etcd cancelled the watch: " + res->value("cancel_reason", std::string()));
      broken = true;
      return;
    }
    if (res->value("created", false)) {
      f->set_reachable(true, "");
      maybe_publish();
      return;
    }
    auto ev = res->find("events");
    if (ev == res->end() || ev->empty()) return;  // a progress notification
    std::string err;
    bool applied = f->apply_events(*ev, &err);
    maybe_publish();
    if (!applied) {
      PX_ERR("fleet %s: %s", f->opt_.name.c_str(), err.c_str());
      f->set_reachable(true, err);
      resync_needed = true;
      broken = true;
    }
  }

  // Is etcd there? A range of the serial key (count only) on the watch's member.
  void ask() {
    if (stopping || probe || !ensure_auth()) return;
    json body = {{"key", b64(f->serial_)}, {"count_only", true}};
    probe = client->fetch(etcd.request(etcd.preferred(), "/v3/kv/range", body), [this](http::ClientResponse r) {
      probe = nullptr;
      if (stopping) return;
      if (r.status == 200) {
        if (watch) f->set_reachable(true, "");
        return;
      }
      if (Etcd::token_refused(r.status, r.body)) {
        need_auth = true;  // renewed before the next call; the watch goes on
        return;
      }
      f->set_reachable(
          false, "etcd " + etcd.preferred_url() + ": " + (r.status ? "HTTP " + std::to_string(r.status) : r.error));
      if (watch) client->cancel(watch), watch = nullptr;
      etcd.next();
      uv_timer_start(
          &retry, [](uv_timer_t* t) { static_cast<Follower*>(t->loop->data)->start_watch(); }, 0, 0);
    });
  }
};

Fleet::Fleet(FleetOptions opt) : opt_(std::move(opt)), etcd_(opt_.etcd) {
  prefix_ = "/px/" + opt_.name + "/";
  serial_ = "/px/" + opt_.name + ".serial";
  hosts_ = "/px/" + opt_.name + ".hosts/";
  if (opt_.host.empty()) {
    char h[256] = {};
    gethostname(h, sizeof h - 1);
    opt_.host = h;
  }
}

Fleet::~Fleet() { stop(); }

void Fleet::set_applied(uint64_t rev) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (rev > applied_) applied_ = rev;
  }
  cv_.notify_all();
}

void Fleet::set_reachable(bool ok, const std::string& error) {
  std::lock_guard<std::mutex> g(mu_);
  if (ok != reachable_) {
    since_ = now_s();
    if (ok)
      PX_INFO("fleet %s: etcd reachable, applied revision %llu", opt_.name.c_str(),
              static_cast<unsigned long long>(applied_));
    else
      PX_WARN("fleet %s: %s; serving revision %llu", opt_.name.c_str(), error.c_str(),
              static_cast<unsigned long long>(applied_));
  }
  reachable_ = ok;
  if (!error.empty()) last_error_ = error;
}

bool Fleet::wait_applied(uint64_t rev, uint64_t ms) {
  std::unique_lock<std::mutex> g(mu_);
  return cv_.wait_for(g, std::chrono::milliseconds(ms), [&] { return applied_ >= rev; });
}

// The value etcd holds for a key, opened and checked: false when it is refused (logged and kept in `rejected`).
bool Fleet::take(const std::string& etcd_key, std::string_view store_key, const json& kv, std::string* value,
                 std::map<std::string, std::string>* rejected) const {
  std::string why;
  if (!unb64(kv.value("value", ""), value))
    why = "the value is not base64";
  else if (from_etcd(store_key, value, &why))
    check_value(store_key, *value, &why);
  if (!why.empty()) {
    PX_ERR("fleet %s: etcd key %s refused: %s", opt_.name.c_str(), etcd_key.c_str(), why.c_str());
    (*rejected)[std::string(store_key)] = why;
    return false;
  }
  rejected->erase(std::string(store_key));
  return true;
}

// Every event of one watch answer in one local transaction, with the highest revision among them.
bool Fleet::apply_events(const json& events, std::string* error) {
  uint64_t top = 0;
  std::string k, v;
  std::map<std::string, std::string> rejected;
  {
    std::lock_guard<std::mutex> g(mu_);
    rejected = rejected_;
  }
  bool ok = st_->apply(
      [&](store::Store::Writer& w, std::string* e) {
        for (const json& ev : events) {
          const json& kv = ev.value("kv", json::object());
          if (!unb64(kv.value("key", ""), &k) || !k.starts_with(prefix_)) continue;
          std::string_view sk = std::string_view(k).substr(prefix_.size());
          top = std::max(top, num(kv, "mod_revision"));
          if (!store::keys::fleet_shared(sk)) continue;  // a host's own key is never taken from etcd
          if (ev.value("type", "PUT") == "DELETE") {
            rejected.erase(std::string(sk));
            if (!w.del(sk, e)) return false;
            continue;
          }
          if (!take(k, sk, kv, &v, &rejected)) continue;
          if (!w.put(sk, v, e)) return false;
        }
        return top == 0 || w.put(store::keys::kFleetRevision, std::to_string(top), e);
      },
      nullptr, error);
  if (!ok) return false;
  {
    std::lock_guard<std::mutex> g(mu_);
    rejected_ = std::move(rejected);
  }
  set_applied(top);
  return true;
}

// The whole prefix at one revision replaces every shared key here, in one transaction.
bool Fleet::resync(Etcd& etcd, std::string* error) {
  json out;
  json body = {{"key", b64(prefix_)}, {"range_end", b64(prefix_end(prefix_))}};
  if (!etcd.call("/v3/kv/range", body, &out, error)) return false;
  uint64_t rev = num(out.value("header", json::object()), "revision");
  std::string k, v;
  size_t n = 0;
  std::map<std::string, std::string> rejected;
  bool ok = st_->apply(
      [&](store::Store::Writer& w, std::string* e) {
        std::vector<std::string> old;
        if (!w.scan(
                "",
                [&](std::string_view key, std::string_view) {
                  if (store::keys::fleet_shared(key)) old.emplace_back(key);
                  return true;
                },
                e))
          return false;
        for (const std::string& key : old)
          if (!w.del(key, e)) return false;
        for (const json& kv : out.value("kvs", json::array())) {
          if (!unb64(kv.value("key", ""), &k) || !k.starts_with(prefix_)) continue;
          std::string_view sk = std::string_view(k).substr(prefix_.size());
          if (!store::keys::fleet_shared(sk)) continue;
          if (!take(k, sk, kv, &v, &rejected)) continue;
          if (!w.put(sk, v, e)) return false;
          n++;
        }
        return w.put(store::keys::kFleetRevision, std::to_string(rev), e);
      },
      nullptr, error);
  if (!ok) return false;
  {
    std::lock_guard<std::mutex> g(mu_);
    applied_ = rev;  // may go back: a resync after a restore takes etcd's word
    resyncs_++;
    rejected_ = std::move(rejected);
  }
  cv_.notify_all();
  PX_INFO("fleet %s: resynchronised %zu keys at etcd revision %llu", opt_.name.c_str(), n,
          static_cast<unsigned long long>(rev));
  return true;
}

// This store's shared keys into an empty fleet: the serial key must not exist yet.
bool Fleet::seed(std::string* error) {
  std::vector<store::Change> all;
  if (!st_->read(
          [&](store::Store::Txn& t, std::string* e) {
            return t.scan(
                "",
                [&](std::string_view k, std::string_view v) {
                  if (store::keys::fleet_shared(k)) all.push_back({std::string(k), std::string(v), false});
                  return true;
                },
                e);
          },
          error))
    return false;
  // etcd takes at most --max-txn-ops (128 by default) operations per transaction: chunks, each checking that
  // the serial is still where the previous one left it.
  uint64_t serial_rev = 0;
  size_t i = 0;
  do {
    json compare = json::array(), success = json::array();
    if (serial_rev == 0)
      compare.push_back({{"key", b64(serial_)}, {"target", "VERSION"}, {"result", "EQUAL"}, {"version", "0"}});
    else
      compare.push_back({{"key", b64(serial_)},
                         {"target", "MOD"},
                         {"result", "EQUAL"},
                         {"mod_revision", std::to_string(serial_rev)}});
    for (size_t n = 0; i < all.size() && n < 100; i++, n++)
      success.push_back(
          {{"request_put", {{"key", b64(key(all[i].key))}, {"value", b64(to_etcd(all[i].key, all[i].value))}}}});
    success.push_back({{"request_put", {{"key", b64(serial_)}, {"value", b64(opt_.host)}}}});
    json out;
    if (!etcd_.call("/v3/kv/txn", {{"compare", compare}, {"success", success}}, &out, error)) return false;
    if (!out.value("succeeded", false)) {
      *error = "--fleet-join seed: fleet '" + opt_.name + "' already holds a configuration (" + serial_ +
               " exists); use --fleet-join replace to take it";
      return false;
    }
    serial_rev = num(out.value("header", json::object()), "revision");
  } while (i < all.size());
  PX_INFO("fleet %s: seeded %zu keys from this store", opt_.name.c_str(), all.size());
  return true;
}

bool Fleet::start(store::Store* st, std::string* error) {
  st_ = st;
  if (!etcd_.check(error)) return false;
  if (opt_.key_file.empty()) {
    *error =
        "--fleet-key: a fleet needs a key file to seal certificates' private keys and accounts in etcd "
        "(every host the same; make one with: head -c 32 /dev/urandom > fleet.key)";
    return false;
  }
  if (!load_fleet_key(opt_.key_file, &fleet_key_, error)) return false;
  {
    http::Client probe(nullptr);  // the files load (CAs, certificate, key) before anything is asked
    if (!etcd_.setup(probe, error)) return false;
  }
  uint64_t rev = 0;
  bool local = false;  // the store holds shared keys
  std::string err;
  if (!st_->read(
          [&](store::Store::Txn& t, std::string* e) {
            std::string v;
            bool found;
            if (!t.get(store::keys::kFleetRevision, &v, &found, e)) return false;
            if (found) rev = parse_rev(v);
            return t.scan(
                "",
                [&](std::string_view k, std::string_view) {
                  local = store::keys::fleet_shared(k);
                  return !local;
                },
                e);
          },
          error))
    return false;
  json out;
  bool reached = etcd_.call("/v3/kv/range", {{"key", b64(serial_)}, {"count_only", true}}, &out, &err);
  if (rev == 0) {
    // Never joined: etcd must answer, and a store with a configuration of its own joins only as told.
    if (!reached) {
      *error = err;
      return false;
    }
    if (local && opt_.join.empty()) {
      *error = "the local store holds a configuration and has never been in fleet '" + opt_.name +
               "': start with --fleet-join replace (take the fleet's) or --fleet-join seed (push this one into "
               "an empty fleet)";
      return false;
    }
    if (local && opt_.join == "seed" && !seed(error)) return false;
    if (!resync(etcd_, error)) return false;
  } else if (reached) {
    std::lock_guard<std::mutex> g(mu_);
    applied_ = rev;
  } else {
    std::lock_guard<std::mutex> g(mu_);
    applied_ = rev;
    PX_WARN("fleet %s: %s; serving the last applied revision %llu", opt_.name.c_str(), err.c_str(),
            static_cast<unsigned long long>(rev));
    last_error_ = err;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    reachable_ = reached;
    since_ = now_s();
  }
  st_->set_committer(this);
  follower_ = std::make_unique<Follower>(this);
  follower_->init();
  thread_ = std::thread([this] { follower_->run(); });
  PX_INFO("fleet %s: host %s following %s from revision %llu", opt_.name.c_str(), opt_.host.c_str(), prefix_.c_str(),
          static_cast<unsigned long long>(applied_));
  return true;
}

void Fleet::stop() {
  if (!thread_.joinable()) return;
  uv_async_send(&follower_->wake);
  thread_.join();
  follower_->client.reset();
  uv_loop_close(&follower_->loop);
  follower_.reset();
  if (st_) st_->set_committer(nullptr);
}

store::WriteFail Fleet::commit(uint64_t base, const std::vector<store::Change>& changes, std::string* error) {
  json success = json::array();
  for (const store::Change& c : changes) {
    if (c.del)
      success.push_back({{"request_delete_range", {{"key", b64(key(c.key))}}}});
    else
      success.push_back({{"request_put", {{"key", b64(key(c.key))}, {"value", b64(to_etcd(c.key, c.value))}}}});
  }
  success.push_back({{"request_put", {{"key", b64(serial_)}, {"value", b64(opt_.host)}}}});
  json body = {
      {"compare",
       {{{"key", b64(serial_)}, {"target", "MOD"}, {"result", "LESS"}, {"mod_revision", std::to_string(base + 1)}}}},
      {"success", success},
      {"failure", {{{"request_range", {{"key", b64(serial_)}}}}}}};
  json out;
  if (!etcd_.call("/v3/kv/txn", body, &out, error)) {
    if (error->starts_with("etcd unreachable")) set_reachable(false, *error);
    return store::WriteFail::unavailable;
  }
  if (out.value("succeeded", false)) {
    uint64_t rev = num(out.value("header", json::object()), "revision");
    if (wait_applied(rev, kApplyWaitMs)) return store::WriteFail::none;
    *error = "etcd committed the change at revision " + std::to_string(rev) +
             ", and this host has not applied it yet (its watch on etcd is behind)";
    return store::WriteFail::unavailable;
  }
  // Another write reached the fleet first: catch up to it, and the write runs again.
  uint64_t theirs = 0;
  for (const json& r : out.value("responses", json::array()))
    for (const json& kv : r.value("response_range", json::object()).value("kvs", json::array()))
      theirs = std::max(theirs, num(kv, "mod_revision"));
  if (wait_applied(theirs, kApplyWaitMs)) return store::WriteFail::conflict;
  *error = "the fleet changed at revision " + std::to_string(theirs) + " and this host has not applied it yet";
  return store::WriteFail::unavailable;
}

// The lock's lease outlives any order (an HTTP-01 order takes seconds, a DNS-01 one at most --dns-timeout and
// the CA's polling): a host that dies while ordering frees the name when it expires.
constexpr int kAcmeLockTtl = 900;

bool Fleet::lock_acme(const std::string& name, std::string* holder) {
  std::string err;
  json g;
  if (!etcd_.call("/v3/lease/grant", {{"TTL", std::to_string(kAcmeLockTtl)}}, &g, &err) || !g.contains("ID")) {
    *holder = "nobody known (" + err + ")";
    return false;
  }
  std::string lock = "/px/" + opt_.name + ".locks/acme/" + name;
  json body = {{"compare", {{{"key", b64(lock)}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}}}},
               {"success", {{{"request_put", {{"key", b64(lock)}, {"value", b64(opt_.host)}, {"lease", g["ID"]}}}}}},
               {"failure", {{{"request_range", {{"key", b64(lock)}}}}}}};
  json out;
  if (!etcd_.call("/v3/kv/txn", body, &out, &err)) {
    *holder = "nobody known (" + err + ")";
    return false;
  }
  if (out.value("succeeded", false)) {
    acme_leases_[name] = g["ID"].is_string() ? g["ID"].get<std::string>() : g["ID"].dump();
    return true;
  }
  json ignored;
  etcd_.call("/v3/lease/revoke", {{"ID", g["ID"]}}, &ignored, &err);
  holder->clear();
  for (const json& r : out.value("responses", json::array()))
    for (const json& kv : r.value("response_range", json::object()).value("kvs", json::array()))
      unb64(kv.value("value", ""), holder);
  if (holder->empty()) *holder = "another host";
  return false;
}

void Fleet::unlock_acme(const std::string& name) {
  auto it = acme_leases_.find(name);
  if (it == acme_leases_.end()) return;
  json out;
  std::string err;
  if (!etcd_.call("/v3/lease/revoke", {{"ID", it->second}}, &out, &err))
    PX_WARN("fleet %s: the ACME lock on %s stays until its lease expires: %s", opt_.name.c_str(), name.c_str(),
            err.c_str());
  acme_leases_.erase(it);
}

bool Fleet::all_serve() {
  uint64_t mine;
  {
    std::lock_guard<std::mutex> g(mu_);
    mine = applied_;
  }
  json h = hosts();
  if (h.contains("error")) return false;
  for (const json& host : h["hosts"]) {
    if (host.value("applied_revision", uint64_t(0)) < mine) return false;
    for (const json& p : host.value("pxd", json::array()))
      if (p.value("running", false) && !p.value("in_sync", false)) return false;
  }
  return true;
}

json Fleet::hosts() {
  json out = {{"self", status()}, {"hosts", json::array()}};
  json r;
  std::string err;
  if (!etcd_.call("/v3/kv/range", {{"key", b64(hosts_)}, {"range_end", b64(prefix_end(hosts_))}}, &r, &err)) {
    out["error"] = err;
    return out;
  }
  // The fleet's revision: the serial's (the last write through px), not etcd's, which host publications move.
  json s;
  uint64_t fleet_rev = 0;
  if (etcd_.call("/v3/kv/range", {{"key", b64(serial_)}}, &s, &err))
    for (const json& kv : s.value("kvs", json::array())) fleet_rev = num(kv, "mod_revision");
  out["revision"] = fleet_rev;
  std::string v;
  for (const json& kv : r.value("kvs", json::array())) {
    if (!unb64(kv.value("value", ""), &v)) continue;
    json h = json::parse(v, nullptr, false);
    if (!h.is_object()) continue;
    uint64_t applied = h.value("applied_revision", uint64_t(0));
    h["lag"] = applied >= fleet_rev ? 0 : fleet_rev - applied;
    out["hosts"].push_back(std::move(h));
  }
  return out;
}

json Fleet::status() {
  std::lock_guard<std::mutex> g(mu_);
  char t[32] = "";
  time_t s = static_cast<time_t>(since_);
  tm tmv;
  gmtime_r(&s, &tmv);
  strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return {{"name", opt_.name},
          {"host", opt_.host},
          {"prefix", prefix_},
          {"applied_revision", applied_},
          {"resyncs", resyncs_},
          {"rejected", rejected_},
          {"etcd",
           {{"endpoints", opt_.etcd.endpoints},
            {"reachable", reachable_},
            {"since", t},
            {"since_unix", since_},
            {"last_error", last_error_}}}};
}

}  // namespace px::fleet
