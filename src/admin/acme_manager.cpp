#include "admin/acme_manager.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <signal.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

#include "acme/client.h"
#include "acme/dns.h"
#include "core/log.h"
#include "tls/cert.h"
#include "tls/ocsp.h"

namespace px::admin {

std::string acme_directory_url(const std::string& n) {
  if (n == "letsencrypt") return "https://acme-v02.api.letsencrypt.org/directory";
  if (n == "letsencrypt-staging") return "https://acme-staging-v02.api.letsencrypt.org/directory";
  return n;
}

namespace {

int64_t now_s() { return static_cast<int64_t>(time(nullptr)); }

double jitter() {  // 1.0 .. 1.2
  uint32_t r;
  RAND_bytes(reinterpret_cast<uint8_t*>(&r), sizeof r);
  return 1.0 + 0.2 * (r / 4294967295.0);
}

int64_t random_between(int64_t a, int64_t b) {
  if (b <= a) return a;
  uint64_t r;
  RAND_bytes(reinterpret_cast<uint8_t*>(&r), sizeof r);
  return a + static_cast<int64_t>(r % static_cast<uint64_t>(b - a));
}

// Timestamps in `list` newer than `window` seconds.
json recent(const json& list, int64_t window) {
  json out = json::array();
  int64_t t = now_s();
  if (list.is_array())
    for (const auto& v : list)
      if (v.is_number_integer() && t - v.get<int64_t>() < window) out.push_back(v);
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// The CA's published limits we stay under (Let's Encrypt's, the strictest common ones).
constexpr int kOrdersPer3h = 300;      // new orders per account per 3 hours
constexpr int kFailedPerHour = 5;      // failed validations per account and name set per hour
constexpr int kDuplicatesPerWeek = 5;  // certificates for the same names per 7 days
constexpr int64_t kAriDefaultRecheck = 6 * 3600;
constexpr int64_t kLockRecheck = 15;  // seconds: a fleet host that found another ordering looks again

}  // namespace

struct AcmeManager::Impl {
  uv_loop_t* loop;
  Admin& admin;
  AcmeOptions opt;
  http::Client http;
  acme::Client client;
  acme::Hooks hooks;
  uv_timer_t timer{};
  uint64_t seen_gen = UINT64_MAX;
  int64_t next_wake = 0;
  std::map<std::string, std::string> lock_noted;  // certificate → the fleet host logged as ordering it
  bool working = false;
  std::string account_id;
  json orders_3h = json::array();  // this account's recent orders (rate limit)

  Impl(uv_loop_t* l, Admin& a, AcmeOptions o) : loop(l), admin(a), opt(std::move(o)), http(l), client(http, l) {}

  bool start(std::string* error) {
    opt.directory = acme_directory_url(opt.directory);
    if (!http.set_ca_file(opt.ca_file, error)) {
      *error = "--acme-ca: " + *error;
      return false;
    }
    if (opt.dns_resolver.empty()) opt.dns_resolver = acme::system_resolver();
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(opt.directory.data()), opt.directory.size(), md);
    static const char* hex = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
      account_id.push_back(hex[md[i] >> 4]);
      account_id.push_back(hex[md[i] & 15]);
    }
    json acct = admin.acme_account(account_id);
    if (!acct.is_object() || !acct.contains("key")) {
      acct = {{"directory", opt.directory},
              {"key", acme::new_key_pem()},
              {"kid", ""},
              {"email", opt.email},
              {"created", now_s()}};
      if (!admin.save_acme_account(account_id, acct)) {
        *error = "the ACME account key could not be stored";
        return false;
      }
    }
    client.configure(opt.directory, opt.email);
    client.set_account(acct["key"].get<std::string>(), acct.value("kid", std::string()));
    client.on_account = [this](const std::string& kid) {
      json a = admin.acme_account(account_id);
      if (!a.is_object()) return;
      a["kid"] = kid;
      admin.save_acme_account(account_id, a);
    };
    hooks.prefer_dns = opt.prefer_dns;
    hooks.http01_put = [this](const std::string& token, const std::string& ka, acme::Done done) {
      Result r = admin.put_challenge(token, {{"key_authorization", ka}}, "acme");
      if (r.status >= 300) return done("the challenge record could not be stored: " + r.body.dump());
      wait_pxd(admin.generation(), now_s() + 10, std::move(done));
    };
    hooks.http01_remove = [this](const std::string& token) { admin.remove_challenge(token, "acme"); };
    if (!opt.dns_hook.empty())
      hooks.dns01 = [this](bool add, const std::string& fqdn, const std::string& value, acme::Done done) {
        acme::run_hook(loop, opt.dns_hook, {add ? "add" : "del", fqdn, value}, 120000,
                       [this, add, fqdn, value, done](std::string err) {
                         if (!err.empty() || !add) return done(err);
                         wait_txt(fqdn, value, now_s() + static_cast<int64_t>(opt.dns_timeout_s), done);
                       });
      };
    uv_timer_init(loop, &timer);
    timer.data = this;
    uv_timer_start(
        &timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->tick(); }, 200, 1000);
    PX_INFO("acme: CA %s%s", opt.directory.c_str(), opt.dns_hook.empty() ? "" : ", DNS-01 through the dns hook");
    return true;
  }

  // HTTP-01: the CA may ask as soon as we answer the challenge, so wait until every running pxd serves `gen`.
  void wait_pxd(uint64_t gen, int64_t deadline, acme::Done done) {
    bool behind = false;
    for (const auto& f : opt.pxd_status_files) {
      json s = pxd_status(f);
      if (s["running"].get<bool>() && s.value("generation", uint64_t(0)) < gen) behind = true;
    }
    if (!behind && opt.fleet_serves && !opt.fleet_serves()) behind = true;
    if (!behind) return done("");
    if (now_s() > deadline) {
      PX_WARN(
          "acme: pxd (or a host of the fleet) has not loaded the challenge record yet; answering the "
          "challenge anyway");
      return done("");
    }
    acme::after(loop, 50, [this, gen, deadline, done] { wait_pxd(gen, deadline, done); });
  }

  void wait_txt(const std::string& fqdn, const std::string& value, int64_t deadline, acme::Done done) {
    acme::query_txt(loop, opt.dns_resolver, fqdn, 3000,
                    [this, fqdn, value, deadline, done](std::vector<std::string> values, std::string err) {
                      if (std::find(values.begin(), values.end(), value) != values.end()) return done("");
                      if (now_s() >= deadline)
                        return done("the TXT record at " + fqdn + " did not become visible at " + opt.dns_resolver +
                                    (err.empty() ? "" : " (" + err + ")"));
                      acme::after(loop, 1000,
                                  [this, fqdn, value, deadline, done] { wait_txt(fqdn, value, deadline, done); });
                    });
  }

  void tick() {
    if (working) return;
    uint64_t gen = admin.generation();
    int64_t t = now_s();
    if (gen == seen_gen && t < next_wake) return;
    seen_gen = gen;
    next_wake = t + 3600;
    auto wanted = admin.acme_wanted();
    // States no route asks for any more go (their certificates stay until removed).
    Result all = admin.list_certs();
    for (const auto& c : all.body)
      if (c.value("managed", std::string()) == "acme" && !wanted.count(c.value("name", std::string())))
        admin.save_acme_state(c["name"].get<std::string>(), nullptr);
    for (const auto& [name, names] : wanted)
      if (consider(name, names)) return;  // one piece of work at a time
    for (const auto& c : all.body)
      if (c.contains("serial") && refresh_ocsp(c["name"].get<std::string>())) return;
  }

  // OCSP stapling: a response for every stored certificate that names a responder, fetched again halfway
  // to its nextUpdate; pxd staples it while it is current. Failures are retried hourly and logged.
  std::map<std::string, int64_t> ocsp_retry;  // name + serial → not before
  bool refresh_ocsp(const std::string& name) {
    Result c = admin.get_cert(name);
    if (c.status != 200) return false;
    std::string pem = c.body.value("cert", std::string()), serial = c.body.value("serial", std::string());
    std::string url = tls::ocsp_url(pem);
    if (url.empty()) return false;
    int64_t t = now_s();
    int64_t tu = c.body.value("ocsp_this_update", int64_t(0)), nu = c.body.value("ocsp_next_update", int64_t(0));
    int64_t due = !c.body.contains("ocsp_this_update") ? t : nu ? tu + (nu - tu) / 2 : tu + 12 * 3600;
    std::string key = name + "/" + serial;
    due = std::max(due, ocsp_retry.count(key) ? ocsp_retry[key] : int64_t(0));
    if (due > t) {
      next_wake = std::min(next_wake, due);
      return false;
    }
    std::string der, err;
    if (!tls::ocsp_request(pem, &der, &err)) {
      ocsp_retry[key] = t + 86400;
      PX_WARN("ocsp: certificate %s: %s", name.c_str(), err.c_str());
      return false;
    }
    working = true;
    http.fetch(acme::ca_request("POST", url, "application/ocsp-request", der),
               [this, name, serial, pem, key, url](http::ClientResponse r) {
                 tls::OcspStatus st;
                 std::string err;
                 int64_t t = now_s();
                 if (r.status != 200)
                   err = r.status == 0 ? r.error : "HTTP " + std::to_string(r.status);
                 else if (tls::ocsp_check(r.body, pem, t, &st, &err) &&
                          admin.set_cert_ocsp(name, serial, r.body, st.this_update, st.next_update))
                   PX_INFO("ocsp: certificate %s: a good response until %s is stapled", name.c_str(),
                           st.next_update ? tls::format_time(st.next_update).c_str() : "its next refresh");
                 if (!err.empty()) {
                   ocsp_retry[key] = t + 3600;
                   PX_WARN("ocsp: certificate %s: %s: %s; retrying in an hour", name.c_str(), url.c_str(), err.c_str());
                 }
                 working = false;
                 seen_gen = UINT64_MAX;
               });
    return true;
  }

  void save_if_changed(const std::string& name, const json& before, const json& after) {
    if (before != after) admin.save_acme_state(name, after);
  }

  // Starts work for `name` when it is due (true), else notes when it will be.
  bool consider(const std::string& name, const std::vector<std::string>& names) {
    int64_t t = now_s();
    json before = admin.acme_state(name);
    json st = before.is_object() ? before : json{{"name", name}, {"status", "pending"}};
    st["names"] = names;
    Result cert = admin.get_cert(name);
    bool have = cert.status == 200 && cert.body.contains("not_after");
    if (have && cert.body.value("source", std::string()) == "custom") {
      st["status"] = "custom";
      st["last_error"] = acme::local_problem(
          "px:customCertificate", "a certificate named " + name +
                                      " was uploaded: ACME leaves it alone (pxctl cert rm " + name + " hands it over)");
      st.erase("next_attempt");
      st["forced"] = false;
      save_if_changed(name, before, st);
      return false;
    }
    bool forced = st.value("forced", false);
    int64_t due;
    std::string why;
    std::string replaces;
    if (!have) {
      due = t;
      why = "no certificate yet";
    } else if (sorted(cert.body.value("names", std::vector<std::string>())) != sorted(names)) {
      due = t;
      why = "its names changed";
    } else {
      std::string pem = cert.body.value("cert", std::string());
      std::string id = acme::ari_cert_id(pem);
      json& ari = st["ari"];
      if (!ari.is_object() || ari.value("cert_id", std::string()) != id) ari = {{"cert_id", id}, {"next_check", 0}};
      if (!id.empty() && ari.value("next_check", int64_t(0)) <= t) {
        check_renewal_info(name, id, before, st);
        return true;
      }
      int64_t nb = cert.body.value("not_before", int64_t(0)), na = cert.body.value("not_after", int64_t(0));
      if (ari.contains("renew_at")) {
        due = ari["renew_at"].get<int64_t>();
        why = "the CA's renewal window opened";
      } else {
        // Two thirds of the lifetime, plus up to a twentieth of it, fixed per certificate (from its serial) so
        // that many certificates issued together do not all renew in the same minute.
        uint64_t h = std::hash<std::string>{}(cert.body.value("serial", std::string()));
        int64_t spread = (na - nb) / 20;
        due = nb + (na - nb) * 2 / 3 + (spread > 0 ? static_cast<int64_t>(h % static_cast<uint64_t>(spread)) : 0);
        why = "two thirds of its lifetime passed";
      }
      if (!id.empty()) replaces = id;
      if (forced) {
        due = t;
        why = "a renewal was asked for";
      }
    }
    // After a failed attempt (whatever started it), the next comes at the backed-off time, and the log says
    // so, with the reason the first attempt of the series had.
    std::string reason = why;
    if (!forced && st.value("failures", 0) > 0) {
      due = st.value("next_attempt", t);
      int failures = st.value("failures", 0);
      reason = st.value("reason", why);
      why = "a retry after " +
            (failures == 1 ? std::string("a failed attempt") : std::to_string(failures) + " failed attempts") +
            ", at its backed-off time; first ordered because " + reason;
    }
    // The CA's limits: hold back rather than be refused.
    std::string limit;
    json failed = recent(st.value("failed", json::array()), 3600);
    json issued = recent(st.value("issued", json::array()), 7 * 86400);
    orders_3h = recent(orders_3h, 3 * 3600);
    if (static_cast<int>(failed.size()) >= kFailedPerHour) {
      due = std::max(due, failed[0].get<int64_t>() + 3600);
      limit = std::to_string(kFailedPerHour) + " failed validations in an hour";
    }
    if (have && static_cast<int>(issued.size()) >= kDuplicatesPerWeek) {
      due = std::max(due, issued[0].get<int64_t>() + 7 * 86400);
      limit = std::to_string(kDuplicatesPerWeek) + " certificates for the same names in a week";
    }
    if (static_cast<int>(orders_3h.size()) >= kOrdersPer3h) {
      due = std::max(due, orders_3h[0].get<int64_t>() + 3 * 3600);
      limit = std::to_string(kOrdersPer3h) + " orders in 3 hours";
    }
    st["failed"] = failed;
    st["issued"] = issued;
    if (due > t) {
      if (forced && !limit.empty()) {
        st["forced"] = false;
        st["last_error"] = acme::local_problem("px:rateLimited", "not renewed now: the CA allows at most " + limit +
                                                                     "; next attempt at " + tls::format_time(due));
      }
      st["next_attempt"] = due;
      if (st.value("status", std::string()) == "ordering") st["status"] = have ? "valid" : "failed";
      save_if_changed(name, before, st);
      next_wake = std::min(next_wake, due);
      return false;
    }
    std::string serving =
        have ? "the current certificate serves until " + cert.body.value("not_after_text", std::string())
             : "no certificate serves these names yet";
    std::string holder;
    if (opt.lock && !opt.lock(name, &holder)) {
      // Another host of the fleet orders it: its certificate reaches this store through etcd.
      if (holder != lock_noted[name])
        PX_INFO("acme: certificate %s is being ordered by %s", name.c_str(), holder.c_str());
      lock_noted[name] = holder;
      next_wake = std::min(next_wake, t + kLockRecheck);
      return false;
    }
    lock_noted.erase(name);
    order(name, names, st, replaces, reason, why + "; " + serving);
    return true;
  }

  void check_renewal_info(const std::string& name, const std::string& id, json before, json st) {
    working = true;
    client.renewal_info(id, [this, name, before, st](acme::RenewalWindow w) mutable {
      int64_t t = now_s();
      json& ari = st["ari"];
      if (w.ok) {
        ari["start"] = w.start;
        ari["end"] = w.end;
        // A random moment inside the window (RFC 9773 4.2); a window in the past means now.
        ari["renew_at"] = w.end <= t ? t : random_between(std::max(w.start, t), w.end);
        st["renewal_window"] = tls::format_time(w.start) + " to " + tls::format_time(w.end);
        ari.erase("error");
      } else {
        ari["error"] = w.error;
        ari.erase("renew_at");
      }
      int64_t again = w.retry_after > 0 ? std::min<int64_t>(w.retry_after, 86400) : kAriDefaultRecheck;
      ari["next_check"] = t + std::max<int64_t>(again, 60);
      save_if_changed(name, before, st);
      working = false;
      seen_gen = UINT64_MAX;
    });
  }

  // reason: why this series of attempts began (kept across retries); why: the log's account of this attempt.
  void order(const std::string& name, const std::vector<std::string>& names, json st, const std::string& replaces,
             const std::string& reason, const std::string& why) {
    working = true;
    int64_t t = now_s();
    st["status"] = "ordering";
    st["reason"] = reason;
    st["last_attempt"] = t;
    st.erase("next_attempt");
    orders_3h.push_back(t);
    admin.save_acme_state(name, st);
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    PX_INFO("acme: ordering a certificate %s for %s (%s)", name.c_str(), list.c_str(), why.c_str());
    client.issue(names, replaces, &hooks, [this, name, list](acme::Outcome o) {
      json st = admin.acme_state(name);
      if (!st.is_object()) st = {{"name", name}};
      int64_t t = now_s();
      if (o.ok) {
        Result r = admin.put_cert(name, {{"cert", o.chain_pem}, {"key", o.key_pem}, {"source", "acme"}}, "acme");
        if (r.status >= 300) {
          o.ok = false;
          o.problem = acme::local_problem("px:badCertificate", "the CA's certificate was refused: " +
                                                                   r.body["error"].value("message", std::string()));
        } else {
          st["status"] = "valid";
          st["failures"] = 0;
          st.erase("reason");
          st.erase("last_error");
          st["forced"] = false;
          st.erase("ari");
          st.erase("renewal_window");
          json issued = recent(st.value("issued", json::array()), 7 * 86400);
          issued.push_back(t);
          st["issued"] = issued;
          admin.save_acme_state(name, st);
          PX_INFO("acme: certificate %s issued for %s, valid until %s", name.c_str(), list.c_str(),
                  r.body.value("not_after_text", std::string()).c_str());
        }
      }
      if (!o.ok) {
        int failures = st.value("failures", 0) + 1;
        uint64_t delay = opt.retry_min_s;
        for (int i = 1; i < failures && delay < opt.retry_max_s; i++) delay *= 2;
        delay = std::min(delay, opt.retry_max_s);
        int64_t wait = o.retry_after > 0 ? o.retry_after : static_cast<int64_t>(static_cast<double>(delay) * jitter());
        st["status"] = "failed";
        st["failures"] = failures;
        st["last_error"] = o.problem;
        st["forced"] = false;
        st["next_attempt"] = t + wait;
        // The CA's failed-validation limit counts what the CA refused, not what never reached it.
        json failed = recent(st.value("failed", json::array()), 3600);
        if (o.problem.value("type", std::string()).rfind("urn:ietf:params:acme:error:", 0) == 0) failed.push_back(t);
        st["failed"] = failed;
        Result now = admin.get_cert(name);  // (200 with only the ACME state when there is no certificate)
        bool serving = now.status == 200 && now.body.contains("not_after");
        admin.save_acme_state(name, st, "cert.acme_failed",
                              {{"names", st["names"]}, {"problem", o.problem}, {"next_attempt", t + wait}});
        PX_ERR("acme: certificate %s for %s failed: %s; %s; next attempt in %lld s", name.c_str(), list.c_str(),
               acme::problem_summary(o.problem).c_str(),
               serving ? "the current certificate keeps serving" : "nothing is served for these names yet",
               static_cast<long long>(wait));
      }
      if (opt.on_order) opt.on_order(o.ok, o.ok ? std::string() : o.problem.value("type", std::string()));
      if (opt.unlock) opt.unlock(name);
      working = false;
      seen_gen = UINT64_MAX;
    });
  }
};

AcmeManager::AcmeManager(uv_loop_t* loop, Admin& admin, AcmeOptions opt)
    : impl_(std::make_unique<Impl>(loop, admin, std::move(opt))) {}
AcmeManager::~AcmeManager() = default;
bool AcmeManager::start(std::string* error) { return impl_->start(error); }
void AcmeManager::stop() {
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&impl_->timer)) || impl_->timer.data) {
    uv_timer_stop(&impl_->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&impl_->timer), nullptr);
    impl_->timer.data = nullptr;
  }
  impl_->http.cancel_all();
  acme::cancel_afters();
}

}  // namespace px::admin
