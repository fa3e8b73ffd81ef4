#include "acme/client.h"

#include <memory>
#include <set>

#include "core/log.h"
#include "core/strings.h"

namespace px::acme {

json local_problem(const std::string& type, const std::string& detail) { return {{"type", type}, {"detail", detail}}; }

std::string problem_summary(const json& p) {
  if (!p.is_object()) return "unknown problem";
  std::string s = p.value("type", std::string("problem")) + ": " + p.value("detail", std::string());
  if (p.contains("authorizations") && p["authorizations"].is_array())
    for (const auto& a : p["authorizations"]) {
      s += " (" + a.value("identifier", std::string("?")) + ": ";
      if (a.contains("error") && a["error"].is_object())
        s += a["error"].value("type", std::string()) + ": " + a["error"].value("detail", std::string());
      s += ")";
    }
  if (p.contains("subproblems") && p["subproblems"].is_array())
    for (const auto& sp : p["subproblems"])
      if (sp.is_object()) s += " [" + sp.value("type", std::string()) + ": " + sp.value("detail", std::string()) + "]";
  return s;
}

http::ClientRequest ca_request(std::string method, std::string url, std::string content_type, std::string body) {
  http::ClientRequest r;
  r.method = std::move(method);
  r.url = std::move(url);
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  r.user_agent = "px-acme/" PX_VERSION;
  return r;
}

namespace {

// A CA answer that is not what was asked for: its problem document, or one of ours.
json problem_of(const http::ClientResponse& r, const json& body, const std::string& doing) {
  if (r.status == 0) return local_problem("px:network", doing + ": " + r.error);
  if (body.is_object() && body.contains("type")) return body;
  return local_problem("px:unexpected", doing + ": HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 200));
}

int64_t retry_after_of(const http::ClientResponse& r) {
  std::string v = r.header("retry-after");
  uint64_t s;
  if (!v.empty() && parse_u64(trim(v), &s)) return static_cast<int64_t>(s);
  return 0;
}

}  // namespace

void Client::configure(std::string directory_url, std::string email) {
  if (directory_url != dir_url_) {
    dir_ = nullptr;
    nonce_.clear();
  }
  dir_url_ = std::move(directory_url);
  email_ = std::move(email);
}

void Client::set_account(std::string key_pem, std::string kid) {
  if (key_pem != key_pem_) {
    std::string err;
    key_pem_ = key_pem;
    if (!key_.load(key_pem_, &err)) PX_ERR("acme: %s", err.c_str());
  }
  kid_ = std::move(kid);
}

namespace {
struct After {
  uv_timer_t t;
  std::function<void()> fn;
};
std::set<After*>& pending_afters() {
  static std::set<After*> s;  // pxadmind's one loop thread
  return s;
}
}  // namespace

void after(uv_loop_t* loop, uint64_t ms, std::function<void()> fn) {
  auto* t = new After{{}, std::move(fn)};
  pending_afters().insert(t);
  uv_timer_init(loop, &t->t);
  t->t.data = t;
  uv_timer_start(
      &t->t,
      [](uv_timer_t* h) {
        auto* t = static_cast<After*>(h->data);
        pending_afters().erase(t);
        auto fn = std::move(t->fn);
        uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* h) { delete static_cast<After*>(h->data); });
        fn();
      },
      ms, 0);
}

void cancel_afters() {
  for (After* t : pending_afters())
    uv_close(reinterpret_cast<uv_handle_t*>(&t->t), [](uv_handle_t* h) { delete static_cast<After*>(h->data); });
  pending_afters().clear();
}

void Client::with_directory(std::function<void(std::string)> then) {
  if (dir_.is_object()) {
    then("");
    return;
  }
  http_.fetch(ca_request("GET", dir_url_), [this, then](http::ClientResponse r) {
    json d = json::parse(r.body, nullptr, false);
    if (r.status != 200 || !d.is_object() || !d.contains("newNonce") || !d.contains("newAccount") ||
        !d.contains("newOrder")) {
      then(r.status == 0 ? "directory " + dir_url_ + ": " + r.error
                         : "directory " + dir_url_ + ": HTTP " + std::to_string(r.status) + ", not an ACME directory");
      return;
    }
    dir_ = d;
    then("");
  });
}

void Client::with_nonce(std::function<void(std::string)> then) {
  if (!nonce_.empty()) {
    then("");
    return;
  }
  http_.fetch(ca_request("GET", dir_.value("newNonce", std::string())), [this, then](http::ClientResponse r) {
    nonce_ = r.header("replay-nonce");
    if (nonce_.empty())
      then(r.status == 0 ? "newNonce: " + r.error : "newNonce: HTTP " + std::to_string(r.status) + " without a nonce");
    else
      then("");
  });
}

void Client::post(const std::string& url, const std::string& payload, bool use_jwk, Reply reply, int attempt) {
  with_nonce([=, this](std::string err) {
    if (!err.empty()) {
      http::ClientResponse r;
      r.error = err;
      json none;
      reply(r, none);
      return;
    }
    std::string body = key_.sign(url, nonce_, use_jwk ? "" : kid_, payload);
    nonce_.clear();
    http_.fetch(ca_request("POST", url, "application/jose+json", body), [=, this](http::ClientResponse r) {
      std::string n = r.header("replay-nonce");
      if (!n.empty()) nonce_ = n;
      json j = json::parse(r.body, nullptr, false);
      if (j.is_discarded()) j = nullptr;
      // The CA forgot the account (a reset test CA, a deactivated account): register again, then retry.
      if (r.status >= 400 && !use_jwk && j.is_object() &&
          j.value("type", std::string()) == "urn:ietf:params:acme:error:accountDoesNotExist" && attempt < 5) {
        PX_WARN("acme: the CA does not know account %s; registering again", kid_.c_str());
        kid_.clear();
        with_account([=, this](json problem) {
          if (!problem.is_null()) {
            http::ClientResponse none;
            none.status = r.status;
            reply(none, problem);
            return;
          }
          post(url, payload, use_jwk, reply, attempt + 1);
        });
        return;
      }
      // RFC 8555 6.5: a badNonce answer carries a fresh nonce; try again with it.
      if (r.status == 400 && j.is_object() && j.value("type", std::string()) == "urn:ietf:params:acme:error:badNonce" &&
          attempt < 5) {
        PX_DEBUG("acme: badNonce from %s, retrying", url.c_str());
        post(url, payload, use_jwk, reply, attempt + 1);
        return;
      }
      reply(r, j);
    });
  });
}

void Client::with_account(std::function<void(json)> then) {
  with_directory([this, then](std::string err) {
    if (!err.empty()) {
      then(local_problem("px:network", err));
      return;
    }
    if (!kid_.empty()) {
      then(nullptr);
      return;
    }
    json req = {{"termsOfServiceAgreed", true}};
    if (!email_.empty()) req["contact"] = json::array({"mailto:" + email_});
    post(dir_["newAccount"].get<std::string>(), req.dump(), true, [this, then](http::ClientResponse& r, json& body) {
      std::string loc = r.header("location");
      if ((r.status == 201 || r.status == 200) && !loc.empty()) {
        kid_ = loc;
        PX_INFO("acme: account %s at %s", kid_.c_str(), dir_url_.c_str());
        if (on_account) on_account(kid_);
        then(nullptr);
      } else {
        then(problem_of(r, body, "newAccount"));
      }
    });
  });
}

// ---- one order ----

struct Client::Order : std::enable_shared_from_this<Order> {
  Client* c;
  Hooks* hooks;
  std::vector<std::string> names;
  std::string replaces;
  std::function<void(Outcome)> done;
  std::string url, finalize, cert_url;
  std::vector<std::string> authzs;
  size_t next_authz = 0;
  json failed_authz = json::array();
  // Cleanups owed to the hooks (challenge records, TXT records), undone at the end whatever happens.
  std::vector<std::string> http_tokens;
  std::vector<std::pair<std::string, std::string>> txt_records;
  std::string key_pem;
  uint64_t poll_ms = 0, polled_ms = 0;

  void fail(json problem, int64_t retry_after = 0) {
    Outcome o;
    o.problem = std::move(problem);
    if (failed_authz.size() && o.problem.is_object() && !o.problem.contains("authorizations"))
      o.problem["authorizations"] = failed_authz;
    o.retry_after = retry_after;
    finish(std::move(o));
  }
  void finish(Outcome o) {
    for (const auto& t : http_tokens) hooks->http01_remove(t);
    http_tokens.clear();
    auto self = shared_from_this();
    undo_txt([self, o = std::move(o)]() mutable {
      self->c->busy_ = false;
      self->done(std::move(o));
    });
  }
  void undo_txt(std::function<void()> then) {
    if (txt_records.empty()) {
      then();
      return;
    }
    std::string fqdn = txt_records.back().first, value = txt_records.back().second;
    txt_records.pop_back();
    auto self = shared_from_this();
    hooks->dns01(false, fqdn, value, [self, then, fqdn](std::string err) {
      if (!err.empty()) PX_WARN("acme: removing the TXT record at %s: %s", fqdn.c_str(), err.c_str());
      self->undo_txt(then);
    });
  }

  void start() {
    auto self = shared_from_this();
    c->with_account([self](json problem) {
      if (!problem.is_null()) return self->fail(problem);
      self->new_order(true);
    });
  }

  void new_order(bool with_replaces) {
    json ids = json::array();
    for (const auto& n : names) ids.push_back({{"type", "dns"}, {"value", n}});
    json req = {{"identifiers", ids}};
    if (with_replaces && !replaces.empty() && c->dir_.contains("renewalInfo")) req["replaces"] = replaces;
    auto self = shared_from_this();
    c->post(c->dir_["newOrder"].get<std::string>(), req.dump(), false,
            [self, with_replaces](http::ClientResponse& r, json& b) {
              if (r.status != 201 || !b.is_object()) {
                // A CA that does not know the certificate we replace: order without saying so.
                if (with_replaces && b.is_object() && req_replaces_refused(b)) return self->new_order(false);
                return self->fail(problem_of(r, b, "newOrder"), retry_after_of(r));
              }
              self->url = r.header("location");
              self->finalize = b.value("finalize", std::string());
              for (const auto& a : b.value("authorizations", json::array()))
                self->authzs.push_back(a.get<std::string>());
              PX_INFO("acme: order %s for %s", self->url.c_str(), join_names(self->names).c_str());
              self->authorize();
            });
  }
  static bool req_replaces_refused(const json& b) {
    std::string t = b.value("type", std::string());
    return t == "urn:ietf:params:acme:error:alreadyReplaced" ||
           b.value("detail", std::string()).find("replaces") != std::string::npos;
  }
  static std::string join_names(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& n : v) s += (s.empty() ? "" : ", ") + n;
    return s;
  }

  // Authorizations, one after the other.
  void authorize() {
    if (next_authz >= authzs.size()) {
      poll_ms = 0;
      polled_ms = 0;
      return wait_order("ready");
    }
    look(authzs[next_authz], false);
  }

  // Fetches an authorization: valid → on to the next; pending → answer a challenge (first look), or look
  // again later (once answered, while the CA validates).
  void look(const std::string& az, bool answered) {
    auto self = shared_from_this();
    c->post(az, "", false, [self, az, answered](http::ClientResponse& r, json& b) {
      if (r.status != 200 || !b.is_object()) return self->fail(problem_of(r, b, "authorization"), retry_after_of(r));
      std::string status = b.value("status", std::string());
      if (status == "valid") {
        self->next_authz++;
        return self->authorize();
      }
      if (status != "pending" && !(answered && status == "processing")) return self->authz_failed(b);
      if (answered) {
        if (self->polled_ms >= self->c->poll_limit_ms)
          return self->fail(local_problem("px:timeout", "the CA did not validate " + az + " in time"));
        return self->c->after(self->next_poll(r), [self, az] { self->look(az, true); });
      }
      self->answer(az, b);
    });
  }

  void answer(const std::string& az, const json& b) {
    auto self = shared_from_this();
    bool wildcard = b.value("wildcard", false);
    std::string domain = b.contains("identifier") ? b["identifier"].value("value", std::string()) : "";
    bool dns = hooks->dns01 && (wildcard || hooks->prefer_dns);
    std::string want = dns ? "dns-01" : "http-01";
    json ch;
    for (const auto& x : b.value("challenges", json::array()))
      if (x.value("type", std::string()) == want) ch = x;
    if (!ch.is_object()) {
      std::string why = wildcard && !hooks->dns01
                            ? "*." + domain + " needs a DNS-01 challenge and no dns_hook is configured"
                            : "the CA offers no " + want + " challenge for " + domain;
      return fail(local_problem("px:noChallenge", why));
    }
    std::string token = ch.value("token", std::string());
    std::string ka = key_authorization(token, c->key_);
    std::string ch_url = ch.value("url", std::string());
    auto respond = [self, ch_url, az](std::string err) {
      if (!err.empty()) return self->fail(local_problem("px:challengeSetup", err));
      // RFC 8555 7.5.1: an empty object says "validate now".
      self->c->post(ch_url, "{}", false, [self, az](http::ClientResponse& r, json& b) {
        if (r.status != 200) return self->fail(problem_of(r, b, "challenge"), retry_after_of(r));
        self->poll_ms = 0;
        self->polled_ms = 0;
        self->look(az, true);
      });
    };
    if (dns) {
      std::string fqdn = "_acme-challenge." + domain;
      std::string value = dns01_value(ka);
      txt_records.emplace_back(fqdn, value);
      hooks->dns01(true, fqdn, value, respond);
    } else {
      http_tokens.push_back(token);
      hooks->http01_put(token, ka, respond);
    }
  }

  uint64_t next_poll(const http::ClientResponse& r) {
    poll_ms = poll_ms == 0 ? c->poll_first_ms : std::min(poll_ms * 2, c->poll_max_ms);
    int64_t ra = retry_after_of(r);
    uint64_t wait = ra > 0 ? std::min<uint64_t>(static_cast<uint64_t>(ra) * 1000, c->poll_max_ms) : poll_ms;
    polled_ms += wait;
    return wait;
  }

  void authz_failed(const json& b) {
    json entry = {{"identifier", b.contains("identifier") ? b["identifier"].value("value", std::string()) : ""},
                  {"status", b.value("status", std::string())}};
    for (const auto& ch : b.value("challenges", json::array()))
      if (ch.contains("error")) {
        entry["challenge"] = ch.value("type", std::string());
        entry["error"] = ch["error"];
      }
    failed_authz.push_back(entry);
    json p = local_problem(
        "urn:ietf:params:acme:error:unauthorized",
        "authorization for " + entry["identifier"].get<std::string>() + " is " + entry["status"].get<std::string>());
    if (entry.contains("error") && entry["error"].is_object()) {
      p["type"] = entry["error"].value("type", p["type"].get<std::string>());
      p["detail"] = entry["error"].value("detail", p["detail"].get<std::string>());
    }
    fail(p);
  }

  // Polls the order until it reaches `want` ("ready", then "valid").
  void wait_order(const std::string& want) {
    auto self = shared_from_this();
    c->post(url, "", false, [self, want](http::ClientResponse& r, json& b) {
      if (r.status != 200 || !b.is_object()) return self->fail(problem_of(r, b, "order"), retry_after_of(r));
      std::string status = b.value("status", std::string());
      if (status == "invalid") {
        json p = b.contains("error")
                     ? b["error"]
                     : local_problem("urn:ietf:params:acme:error:orderNotReady", "the order became invalid");
        return self->fail(p);
      }
      if (want == "ready" && status == "ready") return self->send_csr();
      if (want == "ready" && status == "valid") {  // finalized already (a reused order)
        self->cert_url = b.value("certificate", std::string());
        return self->download();
      }
      if (want == "valid" && status == "valid") {
        self->cert_url = b.value("certificate", std::string());
        return self->download();
      }
      if (self->polled_ms >= self->c->poll_limit_ms)
        return self->fail(local_problem("px:timeout", "the order stayed " + status));
      self->c->after(self->next_poll(r), [self, want] { self->wait_order(want); });
    });
  }

  void send_csr() {
    key_pem = new_key_pem();
    std::string der, err;
    if (!make_csr(names, key_pem, &der, &err)) return fail(local_problem("px:csr", err));
    json req = {{"csr", b64url(der)}};
    auto self = shared_from_this();
    c->post(finalize, req.dump(), false, [self](http::ClientResponse& r, json& b) {
      if (r.status != 200 || !b.is_object()) return self->fail(problem_of(r, b, "finalize"), retry_after_of(r));
      self->poll_ms = 0;
      self->polled_ms = 0;
      if (b.value("status", std::string()) == "valid") {
        self->cert_url = b.value("certificate", std::string());
        return self->download();
      }
      self->wait_order("valid");
    });
  }

  void download() {
    if (cert_url.empty()) return fail(local_problem("px:unexpected", "a valid order without a certificate URL"));
    auto self = shared_from_this();
    c->post(cert_url, "", false, [self](http::ClientResponse& r, json& b) {
      if (r.status != 200 || r.body.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
        return self->fail(problem_of(r, b, "certificate download"), retry_after_of(r));
      Outcome o;
      o.ok = true;
      o.chain_pem = r.body;
      o.key_pem = self->key_pem;
      self->finish(std::move(o));
    });
  }
};

void Client::issue(std::vector<std::string> names, std::string replaces, Hooks* hooks,
                   std::function<void(Outcome)> done) {
  auto o = std::make_shared<Order>();
  o->c = this;
  o->hooks = hooks;
  o->names = std::move(names);
  o->replaces = std::move(replaces);
  o->done = std::move(done);
  busy_ = true;
  o->start();
}

void Client::renewal_info(const std::string& cert_id, std::function<void(RenewalWindow)> done) {
  with_directory([this, cert_id, done](std::string err) {
    RenewalWindow w;
    if (!err.empty() || !dir_.contains("renewalInfo")) {
      w.error = err.empty() ? "the CA offers no renewal information" : err;
      return done(w);
    }
    std::string base = dir_["renewalInfo"].get<std::string>();
    if (!base.empty() && base.back() != '/') base.push_back('/');
    http_.fetch(ca_request("GET", base + cert_id), [done](http::ClientResponse r) {
      RenewalWindow w;
      json b = json::parse(r.body, nullptr, false);
      w.retry_after = retry_after_of(r);
      if (r.status == 200 && b.is_object() && b.contains("suggestedWindow") && b["suggestedWindow"].is_object()) {
        const json& sw = b["suggestedWindow"];
        w.ok = sw.contains("start") && sw.contains("end") && sw["start"].is_string() && sw["end"].is_string() &&
               parse_rfc3339(sw["start"].get<std::string>(), &w.start) &&
               parse_rfc3339(sw["end"].get<std::string>(), &w.end) && w.end >= w.start;
      }
      if (!w.ok) w.error = r.status == 0 ? r.error : "renewalInfo: HTTP " + std::to_string(r.status);
      done(w);
    });
  });
}

}  // namespace px::acme
